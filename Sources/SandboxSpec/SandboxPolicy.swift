import NodeResources
import OCI

/// Policy: a validated `Sandbox` -> an OCI runtime-spec `config.json`.
///
/// Every security decision made from a `Sandbox` ends here as a field of the spec, so it
/// can be read, tested and diffed. The defaults follow `runc spec` where they overlap
/// (mounts, masked and read-only paths), and are stricter elsewhere: no capabilities at
/// all, no new privileges, a non-root user with no supplementary groups.
#if canImport(Glibc)
    import Glibc
#endif

/// What `SandboxPolicy.bundle` produces: the spec, and what the caller must prepare.
public struct BundlePlan: Sendable, Equatable {
    public var spec: Spec
    /// The limits the sandbox runs with (`spec.resources` completed with the node's defaults):
    /// `spec.linux.resources` holds CPU, memory and pids; the caller must put every writable
    /// path, `/dev/shm` and a writable layer on one volume of `ephemeralStorageBytes`
    /// (`EphemeralStorage`) and pin the CPUs of `cpuPinning`.
    public var limits: SandboxLimits
    /// The root is writable (`spec.filesystem.readOnlyRoot: false`): the caller must make
    /// `spec.root.path` a private writable layer over the shared rootfs (an overlay with its
    /// upper dir on a tmpfs of `SandboxPolicy.writableLayerSize`), so that writes never reach
    /// the store's rootfs and vanish with the sandbox.
    public var writableLayer: Bool
}

/// The translation of a `Sandbox` into an OCI bundle spec.
public enum SandboxPolicy {
    /// uid and gid of a sandbox that names none.
    public static let defaultUser: UInt32 = 1000
    public static let defaultGroup: UInt32 = 1000

    /// Writable paths of a sandbox whose `spec.filesystem.writablePaths` is absent.
    public static let defaultWritablePaths = ["/tmp", "/workspace"]

    /// tmpfs size of each writable path (a tmpfs counts against memory, so every one has a
    /// size): `/workspace` 256 MiB, where code and data of a task go; every other path,
    /// `/tmp` included, 64 MiB. The caller replaces them with directories of the sandbox's one
    /// ephemeral storage volume (`BundlePlan.limits`), whose size caps their total.
    public static func tmpfsSize(for path: String) -> String {
        path == "/workspace" ? "256m" : "64m"
    }

    /// Size of the tmpfs that holds the writable layer of a writable root.
    public static let writableLayerSize = "1g"

    /// `RLIMIT_NOFILE` soft and hard limit of a node without `sandboxDefaults.nofile`, lowered
    /// to the caller's hard limit when that is lower (raising it needs CAP_SYS_RESOURCE).
    public static let nofileLimit: UInt64 = SandboxDefaults().nofile

    public static let defaultPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    public static let sandboxHome = "/home/sandbox"

    /// Annotation keys written into `config.json` (the OCI module's, which the runtime reads).
    public typealias Annotation = SafeSpaceAnnotation

    /// runtime-spec config-linux.md#masked-paths: `runc spec`'s list, plus powercap
    /// (energy counters are a side channel, as newer runc and moby mask it).
    public static let maskedPaths = RuncDefaults.maskedPaths + ["/sys/devices/virtual/powercap"]

    /// runtime-spec config-linux.md#readonly-paths: `runc spec`'s list.
    public static let readonlyPaths = RuncDefaults.readonlyPaths

    /// Namespaces every sandbox gets, all new (no `path`). The user namespace is the security
    /// level's to add (`SecurityLevelPolicy.apply`).
    public static let namespaces: [NamespaceType] = [.pid, .network, .ipc, .uts, .mount, .cgroup]

    /// The bundle spec of `sandbox`.
    ///
    /// - Parameters:
    ///   - sandbox: validated here first; an invalid one is never translated.
    ///   - rootfs: absolute path the runtime uses as the root (`root.path`). For a writable
    ///     root (`BundlePlan.writableLayer`), the mount point of the caller's overlay.
    ///   - id: container id (the sandbox name); the cgroup is `safespace/<id>`.
    ///   - args: the workload's command line; must not be empty.
    ///   - env: `KEY=VALUE` entries added to, or replacing, the defaults.
    ///   - nofileHardLimit: the caller's `RLIMIT_NOFILE` hard limit; nil reads it with getrlimit(2).
    ///   - seccompProfiles: where profile files and SandboxProfiles are looked up.
    ///   - defaults: the node's limits for what `spec.resources` leaves out, pids.max and
    ///     RLIMIT_NOFILE (`SandboxDefaults.load()`); the built-in ones when not given.
    ///   - capacity: the node's CPUs and RAM; nil reads them (`NodeCapacity.read()`).
    /// - Throws: `SandboxError` from `Sandbox.validate()`, or naming `args` / `env[i]`, the
    ///   field that chose a seccomp profile that cannot be used, or `spec.resources.cpu` /
    ///   `.memory` (or `sandboxDefaults.*`) for a limit above the node's capacity.
    public static func bundle(
        for sandbox: Sandbox, rootfs: String, id: String, args: [String], env: [String] = [],
        nofileHardLimit: UInt64? = nil, seccompProfiles: SeccompProfiles = SeccompProfiles(),
        defaults: SandboxDefaults = SandboxDefaults(), capacity: NodeCapacity? = nil
    ) throws(SandboxError) -> BundlePlan {
        try sandbox.validate()
        if args.isEmpty { throw SandboxError(.missingField, field: "args", "a command to run is required") }
        if let problem = Sandbox.dns1123LabelProblem(id) { throw SandboxError(.invalidValue, field: "id", problem) }
        guard rootfs.hasPrefix("/") else {
            throw SandboxError(.invalidValue, field: "rootfs", "\(quoted(rootfs)) is not an absolute path")
        }

        let spec = sandbox.spec
        let user = spec.securityContext?.runAsUser.map { UInt32($0) } ?? defaultUser
        let group = spec.securityContext?.runAsGroup.map { UInt32($0) } ?? defaultGroup
        let readOnlyRoot = spec.filesystem?.readOnlyRoot ?? true
        let writable = writablePaths(of: sandbox)
        let hardLimit = nofileHardLimit ?? callerNofileHardLimit()
        let nofile = min(defaults.nofile, hardLimit)
        let node: NodeCapacity
        if let capacity {
            node = capacity
        } else {
            do { node = try NodeCapacity.read() } catch { throw SandboxError(error) }
        }
        let limits = try sandbox.effectiveLimits(defaults: defaults, capacity: node)

        let process = Process(
            terminal: false,
            user: User(uid: user, gid: group, additionalGids: []),
            args: args,
            env: try environment(writable: writable, readOnlyRoot: readOnlyRoot, extra: env),
            cwd: workingDirectory(writable: writable),
            // All five sets empty: the workload holds no capability, even if it could become
            // uid 0 somehow. config.md#linux-process
            capabilities: Capabilities(bounding: [], effective: [], inheritable: [], permitted: [], ambient: []),
            rlimits: [Rlimit(type: "RLIMIT_NOFILE", hard: nofile, soft: nofile)],
            noNewPrivileges: true)

        var annotations = [
            Annotation.name: sandbox.metadata.name ?? id,
            Annotation.runtime: spec.runtime ?? Sandbox.defaultRuntime,
            Annotation.securityLevel: spec.securityLevel ?? SecurityLevel.standard.rawValue,
        ]
        if let namespace = sandbox.metadata.namespace { annotations[Annotation.namespace] = namespace }
        if let timeout = spec.timeout { annotations[Annotation.timeout] = String(timeout) }
        if let bytes = limits.ephemeralStorageBytes { annotations[Annotation.ephemeralStorage] = String(bytes) }

        let linux = Linux(
            namespaces: namespaces.map { Namespace(type: $0.rawValue) },
            cgroupsPath: "safespace/\(id)",
            // spec.resources or the node's defaults, pids.max, and every device denied in the
            // devices cgroup; the runtime allows its default set (/dev/null, zero, full,
            // random, urandom, tty, ptmx), as runc does (Sandbox+Resources.swift).
            resources: resources(limits: limits, defaults: defaults),
            maskedPaths: maskedPaths,
            readonlyPaths: readonlyPaths)

        var result = Spec(
            process: process,
            root: Root(path: rootfs, readonly: readOnlyRoot),
            hostname: sandbox.metadata.name ?? id,
            mounts: systemMounts + writableMounts(writable, user: user, group: group),
            annotations: annotations,
            linux: linux)
        // The security level last: backend, user namespace, seccomp source (SecurityLevel.swift).
        result.linux?.seccomp = try seccomp(
            for: sandbox, capabilities: process.capabilities?.bounding ?? [], profiles: seccompProfiles)
        SecurityLevelPolicy.apply(sandbox, to: &result)
        return BundlePlan(spec: result, limits: limits, writableLayer: !readOnlyRoot)
    }

    /// `bundle(...).spec`.
    public static func bundleSpec(
        for sandbox: Sandbox, rootfs: String, id: String, args: [String], env: [String] = [],
        nofileHardLimit: UInt64? = nil, defaults: SandboxDefaults = SandboxDefaults(), capacity: NodeCapacity? = nil
    ) throws(SandboxError) -> Spec {
        try bundle(
            for: sandbox, rootfs: rootfs, id: id, args: args, env: env, nofileHardLimit: nofileHardLimit,
            defaults: defaults, capacity: capacity
        ).spec
    }

    /// The writable paths of `sandbox`, defaults applied, parents before children.
    public static func writablePaths(of sandbox: Sandbox) -> [String] {
        let paths = sandbox.spec.filesystem?.writablePaths ?? defaultWritablePaths
        // Stable sort by depth: a parent tmpfs must be mounted before one inside it.
        return paths.enumerated()
            .sorted {
                ($0.element.split(separator: "/").count, $0.offset) < (
                    $1.element.split(separator: "/").count, $1.offset
                )
            }
            .map(\.element)
    }

    /// runtime-spec config.md#mounts: the kernel filesystems, as `runc spec` mounts them
    /// (without /sys/fs/cgroup: the workload has no use for the cgroup tree). /dev/shm is 64 MiB
    /// here; the caller puts it on the ephemeral storage volume, inside the sandbox's cap.
    public static let systemMounts: [Mount] = [
        Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
        Mount(
            destination: "/dev", type: "tmpfs", source: "tmpfs",
            options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount(
            destination: "/dev/pts", type: "devpts", source: "devpts",
            options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount(
            destination: "/dev/shm", type: "tmpfs", source: "shm",
            options: ["nosuid", "noexec", "nodev", "mode=1777", "size=64m"]),
        Mount(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
        Mount(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
    ]

    /// One tmpfs per writable path: `/tmp` sticky and world-writable like a host's; every
    /// other path owned by the sandbox user, mode 0755. All nosuid,nodev, each with a size.
    static func writableMounts(_ paths: [String], user: UInt32, group: UInt32) -> [Mount] {
        paths.map { path in
            var options = ["nosuid", "nodev"]
            if path == "/tmp" {
                options += ["mode=1777"]
            } else {
                options += ["mode=0755", "uid=\(user)", "gid=\(group)"]
            }
            options.append("size=\(tmpfsSize(for: path))")
            return Mount(destination: path, type: "tmpfs", source: "tmpfs", options: options)
        }
    }

    /// `/workspace` when writable, else `/tmp` when writable, else `/`.
    static func workingDirectory(writable: [String]) -> String {
        if writable.contains("/workspace") { return "/workspace" }
        if writable.contains("/tmp") { return "/tmp" }
        return "/"
    }

    /// PATH, HOME, LANG, then `extra` (which may replace them). HOME is /home/sandbox when
    /// that is writable (a writable root, or a writable path at or above it), else /tmp when
    /// that is writable, else /.
    static func environment(writable: [String], readOnlyRoot: Bool, extra: [String]) throws(SandboxError) -> [String] {
        let homeWritable = !readOnlyRoot || writable.contains { sandboxHome == $0 || sandboxHome.hasPrefix($0 + "/") }
        let home = homeWritable ? sandboxHome : (writable.contains("/tmp") ? "/tmp" : "/")
        var entries: [(String, String)] = [("PATH", defaultPATH), ("HOME", home), ("LANG", "C.UTF-8")]
        for (index, entry) in extra.enumerated() {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex, !entry.contains("\0") else {
                throw SandboxError(.invalidValue, field: "env[\(index)]", "\(quoted(entry)) is not KEY=VALUE")
            }
            let key = String(entry[..<equals])
            let value = String(entry[entry.index(after: equals)...])
            if let existing = entries.firstIndex(where: { $0.0 == key }) {
                entries[existing].1 = value
            } else {
                entries.append((key, value))
            }
        }
        return entries.map { "\($0.0)=\($0.1)" }
    }

    /// The calling process's `RLIMIT_NOFILE` hard limit.
    static func callerNofileHardLimit() -> UInt64 {
        #if canImport(Glibc)
            var limit = rlimit()
            if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
                return UInt64(limit.rlim_max)
            }
        #endif
        return nofileLimit
    }
}
