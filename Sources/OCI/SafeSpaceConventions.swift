/// What SafeSpace writes into a `config.json` beyond the runtime-spec, and reads back: the
/// security level names, the `llmsafespace.dev/*` annotation keys, and the default masked and
/// read-only paths. Defined here, in the lowest module both sides import, so the policy that
/// writes a bundle (Sandbox) and the runtime that reads it (Runtime) share one definition.

/// A security level: `spec.securityLevel` of a Sandbox (llmsafespace.dev/v1), the annotation
/// `llmsafespace.dev/security-level` of a bundle, `securityLevel` of the runtime configuration.
///
/// What each level turns on is the Sandbox module's (`SecurityLevel.profile`); how the runtime
/// picks one is the Runtime module's (`RuntimeConfiguration.configuredLevel`). `custom` runs on
/// the native backend like `standard`.
public enum SecurityLevel: String, Codable, CaseIterable, Sendable, Comparable {
    case standard, high, custom

    /// The level of a sandbox or bundle that names none.
    public static let `default` = SecurityLevel.standard

    /// The backend a level runs on: gVisor for `high`, else this runtime's own.
    public var backend: Backend { self == .high ? .gvisor : .native }

    /// standard = custom < high: a bundle's annotation can only raise the configured level.
    var rank: Int { self == .high ? 1 : 0 }
    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
}

/// Which implementation runs a container; kept in its state so every later verb goes to the
/// same one.
public enum Backend: String, Codable, Sendable {
    /// Namespaces, cgroups, seccomp and the init helper of this runtime.
    case native
    /// runsc (gVisor) on the same bundle: a user-space kernel between workload and host.
    case gvisor
}

/// Annotation keys SafeSpace writes into `config.json` (`annotations`, config.md#annotations).
public enum SafeSpaceAnnotation {
    public static let name = "llmsafespace.dev/sandbox-name"
    public static let namespace = "llmsafespace.dev/sandbox-namespace"
    public static let runtime = "llmsafespace.dev/runtime"
    /// A `SecurityLevel` raw value; the runtime picks the backend from it.
    public static let securityLevel = "llmsafespace.dev/security-level"
    public static let timeout = "llmsafespace.dev/timeout"
    /// The ephemeral storage cap in bytes (not an OCI field: the caller's volume enforces it).
    public static let ephemeralStorage = "llmsafespace.dev/ephemeral-storage"
    /// `auto` (`userNamespaceAuto`) on a new user namespace without mappings: the runtime
    /// allocates the namespace's host id range (Runtime's `UserNamespaceRange`, `IDAllocator`).
    public static let userNamespace = "llmsafespace.dev/userns"
    public static let userNamespaceAuto = "auto"
}

/// `runc spec`'s defaults (runc libcontainer/specconv/example.go).
public enum RuncDefaults {
    /// config-linux.md#masked-paths.
    public static let maskedPaths = [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
    ]
    /// config-linux.md#readonly-paths.
    public static let readonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
}
