import Glibc
import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The node's runtime configuration: `/etc/safespace/runtime.json` (or `$SAFESPACE_RUNTIME_CONFIG`),
/// every key optional; a missing file means the defaults.
///
/// ```json
/// {
///   "securityLevel": "standard",
///   "rootSecurityLevels": {"/run/safespace-high": "high"},
///   "gvisor": {"runsc": "/usr/bin/runsc", "platform": "ptrace", "seccompErrnoRet": false, "execSeccomp": false},
///   "leases": "/run/safespace-leases",
///   "userNamespaces": {"firstHostID": 1073741824, "ranges": 4096},
///   "sandboxDefaults": {"cpu": "1", "memory": "1Gi", "ephemeralStorage": "1Gi", "pids": 512, "nofile": 512}
/// }
/// ```
///
/// `sandboxDefaults` is not the runtime's: the limits `safespace run` (and the daemon) give a
/// Sandbox whose `spec.resources` names none, read by the Resources module's `SandboxDefaults`.
///
/// A RuntimeClass handler that is always `high` is a containerd runtime entry with
/// `BinaryName = safespace-runtime` and its own `Root` listed in `rootSecurityLevels`, or a
/// wrapper that sets `SAFESPACE_SECURITY_LEVEL=high`. A bundle's annotation
/// `llmsafespace.dev/security-level` can raise the configured level, never lower it.
public struct RuntimeConfiguration: Codable, Sendable, Equatable {
    public static let defaultPath = "/etc/safespace/runtime.json"
    /// Environment variables read by `load`.
    public static let pathVariable = "SAFESPACE_RUNTIME_CONFIG"
    public static let levelVariable = "SAFESPACE_SECURITY_LEVEL"

    /// Level of bundles that ask for none: `standard` (default) or `high`.
    public var securityLevel: String?
    /// `--root` -> level, for a handler whose state root is its own.
    public var rootSecurityLevels: [String: String]?
    public var gvisor: GVisorConfiguration?
    public var userNamespaces: UserNamespaceConfiguration?
    /// Directory of the node's `LeaseStore` (host id ranges, pinned CPUs); default
    /// `/run/safespace-leases`.
    public var leases: String?

    public init(
        securityLevel: String? = nil, rootSecurityLevels: [String: String]? = nil, gvisor: GVisorConfiguration? = nil,
        userNamespaces: UserNamespaceConfiguration? = nil, leases: String? = nil
    ) {
        self.securityLevel = securityLevel
        self.rootSecurityLevels = rootSecurityLevels
        self.gvisor = gvisor
        self.userNamespaces = userNamespaces
        self.leases = leases
    }

    /// `gvisor` of the file.
    public struct GVisorConfiguration: Codable, Sendable, Equatable {
        /// runsc binary; default /usr/bin/runsc, else the first `runsc` on PATH.
        public var runsc: String?
        /// `--platform`: default systrap when the installed runsc lists it, else ptrace.
        public var platform: String?
        /// Whether the installed runsc honours seccomp `errnoRet`/`defaultErrnoRet` (no release
        /// before gVisor PR 14721 does: they answer EPERM). Default false: such profiles are refused.
        public var seccompErrnoRet: Bool?
        /// Extra global flags given to every runsc call (e.g. `--debug-log=/var/log/runsc/`).
        public var flags: [String]?
        /// Whether the installed runsc gives the container's OCI seccomp profile to processes
        /// started by `runsc exec` (gVisor PR 12692, 2026; the release of 2022-12-19 gives it to
        /// the init only). Default false: exec into a container with `linux.seccomp` is refused.
        public var execSeccomp: Bool?

        public init(
            runsc: String? = nil, platform: String? = nil, seccompErrnoRet: Bool? = nil, flags: [String]? = nil,
            execSeccomp: Bool? = nil
        ) {
            self.runsc = runsc
            self.platform = platform
            self.seccompErrnoRet = seccompErrnoRet
            self.flags = flags
            self.execSeccomp = execSeccomp
        }
    }

    /// `userNamespaces` of the file: where host id ranges come from (see `IDAllocator`).
    public struct UserNamespaceConfiguration: Codable, Sendable, Equatable {
        /// Where an earlier version kept the ranges (one file per range; default
        /// /run/safespace-idmap): still honoured (`IDAllocator.legacyDirectories`), never written.
        public var directory: String?
        public var firstHostID: UInt32?
        public var ranges: Int?

        public init(directory: String? = nil, firstHostID: UInt32? = nil, ranges: Int? = nil) {
            self.directory = directory
            self.firstHostID = firstHostID
            self.ranges = ranges
        }
    }

    /// Reads the configuration: `$SAFESPACE_RUNTIME_CONFIG`, else /etc/safespace/runtime.json.
    /// - Throws: `RuntimeError` `.invalidConfiguration` naming the file for unreadable or
    ///   malformed JSON (a missing default file is not an error).
    public static func load(environment: [String: String] = processEnvironment()) throws -> RuntimeConfiguration {
        let explicit = environment[pathVariable].flatMap { $0.isEmpty ? nil : $0 }
        let path = explicit ?? defaultPath
        guard Files.exists(path) else {
            if explicit != nil { throw RuntimeError(.invalidConfiguration, "\(pathVariable)=\(path): no such file") }
            return RuntimeConfiguration()
        }
        let bytes: [UInt8]
        do { bytes = try Files.read(path) } catch {
            throw RuntimeError(.invalidConfiguration, "\(path): \(error)", operation: "read", cause: error)
        }
        do {
            return try JSONDecoder().decode(RuntimeConfiguration.self, from: Data(bytes))
        } catch {
            throw RuntimeError(
                .invalidConfiguration, "\(path): \(describe(decodingError: error))", operation: "decode", cause: error)
        }
    }

    /// The level a bundle gets before its own annotation: `$SAFESPACE_SECURITY_LEVEL`, else the
    /// `rootSecurityLevels` entry of `root` or of the nearest directory above it (containerd's
    /// shim passes `--root <handler Root>/<namespace>`, so `/run/safespace-high` covers every
    /// containerd namespace), else `securityLevel`, else standard.
    /// - Throws: `RuntimeError` `.invalidConfiguration` for a value that is not a level.
    public func configuredLevel(root: String, environment: [String: String] = processEnvironment()) throws
        -> SecurityLevel
    {
        if let value = environment[Self.levelVariable], !value.isEmpty {
            return try SecurityLevel.parse(value, field: Self.levelVariable)
        }
        let cleanRoot = cleanPath(root)
        let covering = (rootSecurityLevels ?? [:]).map { (key: cleanPath($0.key), value: $0.value) }
            .filter { $0.key == cleanRoot || cleanRoot.hasPrefix($0.key == "/" ? "/" : $0.key + "/") }
        if let entry = covering.max(by: { $0.key.count < $1.key.count }) {
            return try SecurityLevel.parse(entry.value, field: "rootSecurityLevels[\(entry.key)]")
        }
        if let value = securityLevel { return try SecurityLevel.parse(value, field: "securityLevel") }
        return .standard
    }

    /// The node's lease store: `leases`, else `/run/safespace-leases`.
    public var leaseStore: LeaseStore { LeaseStore(directory: leases ?? LeaseStore.defaultDirectory) }

    /// Whether the leases an earlier version kept at its default places are read too: true
    /// unless `leases` is set (a node configured for the lease store, or a test's own).
    public var readsLegacyLeases: Bool { leases == nil }

    /// The allocator of host id ranges this configuration names, in `leaseStore`.
    public var idAllocator: IDAllocator {
        let legacy = userNamespaces?.directory ?? (readsLegacyLeases ? IDAllocator.legacyDirectory : nil)
        return IDAllocator(
            store: leaseStore,
            firstHostID: userNamespaces?.firstHostID ?? IDAllocator.defaultFirstHostID,
            ranges: userNamespaces?.ranges ?? IDAllocator.defaultRanges,
            legacyDirectories: legacy.map { [$0] } ?? [])
    }
}

/// How the runtime reads a level (the type is the OCI module's, shared with the Sandbox policy).
extension SecurityLevel {
    static func parse(_ value: String, field: String, code: RuntimeError.Code = .invalidConfiguration) throws
        -> SecurityLevel
    {
        guard let level = SecurityLevel(rawValue: value) else {
            throw RuntimeError(code, field: field, "\"\(value)\" is not a security level (standard, high, custom)")
        }
        return level
    }

    /// The effective level of a bundle: the configured one, raised by its annotation
    /// (`SafeSpaceAnnotation.securityLevel`).
    /// - Throws: `RuntimeError` `.invalidSpec` naming the annotation for an unknown value.
    static func effective(configured: SecurityLevel, annotations: [String: String]?) throws -> SecurityLevel {
        let annotation = SafeSpaceAnnotation.securityLevel
        guard let value = annotations?[annotation] else { return configured }
        let asked = try parse(value, field: "annotations[\(annotation)]", code: .invalidSpec)
        return max(configured, asked)
    }
}

/// The process's environment as a dictionary.
public func processEnvironment() -> [String: String] {
    var out: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
        p += 1
    }
    return out
}
