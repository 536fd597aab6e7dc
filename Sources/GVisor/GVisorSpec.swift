import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// What the installed runsc can enforce, from the configuration and `runsc help platforms`.
struct GVisorFeatures: Sendable, Equatable {
    /// `--platform` values the binary knows (`ptrace`, `kvm`, `systrap`).
    var platforms: [String]
    /// Whether seccomp `errnoRet`/`defaultErrnoRet` other than EPERM are honoured.
    var seccompErrnoRet: Bool
    /// Whether runsc would refuse a pod's network namespace as "the root network namespace":
    /// runsc before release-20240801 decides that from /proc/sys/net/core/rmem_default
    /// existing (gVisor issue 10704), and this kernel shows that file in every network
    /// namespace. The backend then hides that directory from runsc's create and start
    /// (`ss_spawn_hiding_net_core`), after checking itself that the namespace is not the host's.
    var misreadsPodNetns: Bool = false
}

/// The bundle a gVisor container is created from: checks of what runsc would silently not
/// enforce, and the config.json runsc is given (written into the container's state directory).
enum GVisorSpec {
    /// The seccomp actions runsc's OCI converter knows (runsc/specutils/seccomp: KnownActions).
    static let seccompActions: Set<String> = [
        "SCMP_ACT_KILL", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
    ]
    static let seccompOperators: Set<String> = [
        "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ",
    ]

    /// Refuses what runsc would run weaker than asked, naming the field. A container of a pod
    /// (`podContainer`) may join namespaces by path: `GVisorBackend.checkPodContainer` checks
    /// they are its sandbox's.
    /// - Throws: `RuntimeError`.
    static func check(_ spec: Spec, options: CreateOptions, features: GVisorFeatures, podContainer: Bool = false) throws
    {
        if options.preserveFds > 0 {
            throw RuntimeError(
                .unsupported, field: "--preserve-fds",
                "runsc cannot pass extra file descriptors to the workload (gVisor level)")
        }
        for kind in ["createContainer", "startContainer"] {
            let hooks = kind == "createContainer" ? spec.hooks?.createContainer : spec.hooks?.startContainer
            if !(hooks ?? []).isEmpty {
                throw RuntimeError(
                    .unsupported, field: "hooks.\(kind)",
                    "runs inside the container's namespaces, which gVisor does not expose to the host; not supported at the gVisor level"
                )
            }
        }
        for (i, ns) in (spec.linux?.namespaces ?? []).enumerated() {
            let joined = !(ns.path ?? "").isEmpty
            if ns.type == "user" {
                throw RuntimeError(
                    .unsupported, field: "linux.namespaces[\(i)]",
                    "user: runsc ignores linux.uidMappings (its sandbox runs as an unprivileged host user in a user namespace of its own); remove the user namespace for the gVisor level"
                )
            }
            if joined && ns.type != "network" && !podContainer {
                throw RuntimeError(
                    .unsupported, field: "linux.namespaces[\(i)].path",
                    "runsc cannot join a \(ns.type) namespace by path (only network)")
            }
        }
        for (i, m) in (spec.mounts ?? []).enumerated() {
            // runsc ignores options it does not know (with a warning): `rro` would mount writable.
            let recursive = MountOptions(m.options ?? []).recursiveNames
            if !recursive.isEmpty {
                throw RuntimeError(
                    .unsupported, field: "mounts[\(i)].options",
                    "\(recursive.joined(separator: ", ")) (recursive mount attributes) are not enforced by runsc; not supported at the gVisor level"
                )
            }
        }
        _ = try networkMode(spec)
        if let seccomp = spec.linux?.seccomp { try checkSeccomp(seccomp, features: features) }
        try checkUmask(spec.process, field: "process")
    }

    /// The umask runsc starts every process with (its init and exec'd ones), whatever
    /// `process.user.umask` says: the installed runsc does not read the field.
    static let runscUmask: UInt32 = 0o022

    /// config.md#posix-platform-user `umask`: only runsc's own value holds at the gVisor level.
    /// - Throws: `RuntimeError` naming `<field>.user.umask` for any other value.
    static func checkUmask(_ process: OCI.Process?, field: String) throws {
        guard let mask = process?.user.umask, mask != runscUmask else { return }
        throw RuntimeError(
            .unsupported, field: "\(field).user.umask",
            "\(mask) (0\(String(mask, radix: 8))) is not applied at the gVisor level: runsc starts every process with umask 0022 and ignores the field; remove it or set it to 18 (0022)"
        )
    }

    /// A process for `exec` into a running gVisor container whose spec is `container`.
    ///
    /// runsc before gVisor PR 12692 (2026) gives the container's `linux.seccomp` profile to its
    /// init only: `runsc exec` starts a process without a filter, weaker than the container.
    /// Such an exec is refused, never run silently without the profile, unless
    /// `execSeccomp` (the configuration's `gvisor.execSeccomp`: this runsc applies it).
    /// Processes the workload itself forks inherit the filter, as on Linux.
    /// - Throws: `RuntimeError` naming `linux.seccomp` or `process.user.umask`.
    static func checkExec(process: OCI.Process, container: Spec, id: String, execSeccomp: () throws -> Bool) throws {
        try checkUmask(process, field: "process")
        if container.linux?.seccomp != nil, try !execSeccomp() {
            throw RuntimeError(
                .unsupported, field: "linux.seccomp",
                "container \(id) has a seccomp profile, which the installed runsc applies to its init only; a process started by exec would run without it at the gVisor level, so exec is refused (run the command from the workload, create the container without linux.seccomp, or set gvisor.execSeccomp in \(RuntimeConfiguration.defaultPath) once runsc applies it to exec'd processes, gVisor PR 12692)"
            )
        }
    }

    /// runsc `--network`: `sandbox` (gVisor's netstack on the interfaces of a joined network
    /// namespace, e.g. a pod's), or `none` (loopback only) for a new one.
    /// - Throws: `RuntimeError` for a spec without a network namespace (the host's network).
    static func networkMode(_ spec: Spec) throws -> String {
        guard let ns = spec.linux?.namespaces?.first(where: { $0.type == "network" }) else {
            throw RuntimeError(
                .unsupported, field: "linux.namespaces",
                "the gVisor level needs a network namespace; runsc --network=host would hand the host's network to the sandbox"
            )
        }
        return (ns.path ?? "").isEmpty ? "none" : "sandbox"
    }

    /// runtime-spec config-linux.md#seccomp against runsc's converter.
    static func checkSeccomp(_ seccomp: Seccomp, features: GVisorFeatures) throws {
        let field = "linux.seccomp"
        if seccomp.listenerPath != nil {
            throw RuntimeError(.unsupported, field: "\(field).listenerPath", "runsc has no seccomp user notification")
        }
        func checkAction(_ action: String, errnoRet: UInt32?, field: String) throws {
            guard seccompActions.contains(action) else {
                throw RuntimeError(
                    .unsupported, field: field,
                    "\(action) is not enforced by runsc (it knows \(seccompActions.sorted().joined(separator: ", ")))")
            }
            if let errnoRet, errnoRet != UInt32(EPERM), !features.seccompErrnoRet,
                action == "SCMP_ACT_ERRNO" || action == "SCMP_ACT_TRACE"
            {
                throw RuntimeError(
                    .unsupported, field: field,
                    "errno \(errnoRet) cannot be enforced: the installed runsc answers EPERM for every \(action) (set gvisor.seccompErrnoRet in the runtime configuration once runsc honours errnoRet)"
                )
            }
        }
        try checkAction(seccomp.defaultAction, errnoRet: seccomp.defaultErrnoRet, field: "\(field).defaultAction")
        for (i, rule) in (seccomp.syscalls ?? []).enumerated() {
            try checkAction(rule.action, errnoRet: rule.errnoRet, field: "\(field).syscalls[\(i)]")
            for (j, arg) in (rule.args ?? []).enumerated() where !seccompOperators.contains(arg.op) {
                throw RuntimeError(
                    .unsupported, field: "\(field).syscalls[\(i)].args[\(j)].op", "\(arg.op) is not enforced by runsc")
            }
        }
    }

    /// Writes `spec` as `<directory>/config.json` (mode 0600), a new file in the directory the
    /// create just made in the container's state directory. No fsync(2) and no rename: runsc
    /// reads it once, in this create, and after a crash the container is gone with it.
    /// - Throws: `SysError` from open(2) (O_EXCL: never through an existing file) or write(2).
    static func writeRunscConfig(_ directory: String, _ spec: Spec) throws {
        let path = directory + "/config.json"
        let bytes = Array(try JSONEncoder().encode(spec))
        let fd = try sys("open", path: path) { open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        defer { close(fd) }
        try Files.writeAll(fd: fd, bytes, path: path)
    }

    /// The config.json runsc gets: the bundle's, with the root and bind sources made absolute,
    /// the hooks taken out (this runtime runs them, as for the native backend), the resources
    /// taken out (this runtime applied them to the cgroup, which runsc then finds made and
    /// only joins), and `cgroupsPath` set to the cgroup this runtime made, so the sandbox and
    /// its gofer land in it.
    static func runscSpec(_ spec: Spec, bundle: String, rootfs: String, cgroupsPath: String) -> Spec {
        var out = spec
        out.root?.path = rootfs
        out.hooks = nil
        out.mounts = spec.mounts?.map { m in
            var m = m
            let options = MountOptions(m.options ?? [])
            if let source = m.source, !source.hasPrefix("/"), m.type == "bind" || options.isBind {
                m.source = cleanPath(bundle + "/" + source)
            }
            return m
        }
        if out.linux == nil { out.linux = Linux() }
        out.linux?.resources = nil
        out.linux?.cgroupsPath = cgroupsPath
        return out
    }
}
