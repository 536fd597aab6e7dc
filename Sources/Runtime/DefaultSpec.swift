import Glibc
import LinuxKernel
import OCI

/// The config.json `spec` writes: runc's default, field for field (`runc spec` and
/// `runc spec --rootless`, runc libcontainer/specconv/example.go `Example` and `ToRootless`).
///
/// It is a starting point for people and tools that patch it, so it keeps runc's shape: a
/// terminal `sh`, runc's five namespaces (no cgroup namespace), mounts, masked and read-only
/// paths, the three capabilities in all four sets, `RLIMIT_NOFILE` 1024 and a deny-all device
/// rule. Two values differ on purpose (README, "`spec`"): `ociVersion` is the runtime-spec
/// version this runtime implements, and `hostname` names this runtime. SafeSpace's own
/// hardening (seccomp, dropped capabilities, a cgroup namespace, limits) belongs to the
/// bundles `safespace run` writes (SandboxSpec's `SandboxPolicy`), not to this template.
public enum DefaultSpec {
    /// runc's default capability set: `bounding`, `effective`, `permitted` and `ambient`.
    public static let capabilities = [
        "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE",
    ]

    /// The hostname of the template (runc's is `runc`).
    public static let hostname = "safespace"

    /// runc's template.
    /// - Parameters:
    ///   - rootless: `runc spec --rootless`: no network namespace, a user namespace mapping
    ///     container root to `uid`/`gid` (one id each), `/sys` bound from the host (`rbind`),
    ///     no `uid=`/`gid=` mount options, no `linux.resources`.
    ///   - uid: the host uid of container root for `rootless` (runc: the caller's euid).
    ///   - gid: the host gid likewise (runc: the caller's egid).
    public static func runc(rootless: Bool = false, uid: UInt32 = geteuid(), gid: UInt32 = getegid()) -> Spec {
        var process = Process(
            terminal: true, user: User(uid: 0, gid: 0), args: ["sh"],
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            cwd: "/",
            capabilities: Capabilities(
                bounding: capabilities, effective: capabilities, permitted: capabilities, ambient: capabilities),
            rlimits: [Rlimit(type: "RLIMIT_NOFILE", hard: 1024, soft: 1024)], noNewPrivileges: true)
        process.user.additionalGids = nil
        var mounts = [
            Mount(destination: "/proc", type: "proc", source: "proc"),
            Mount(
                destination: "/dev", type: "tmpfs", source: "tmpfs",
                options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            Mount(
                destination: "/dev/pts", type: "devpts", source: "devpts",
                options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            Mount(
                destination: "/dev/shm", type: "tmpfs", source: "shm",
                options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            Mount(
                destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            Mount(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
            Mount(
                destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup",
                options: ["nosuid", "noexec", "nodev", "relatime", "ro"]),
        ]
        var linux = Linux(
            namespaces: ["pid", "network", "ipc", "uts", "mount"].map { Namespace(type: $0) },
            resources: Resources(devices: [Resources.DeviceCgroup(allow: false, access: "rwm")]),
            maskedPaths: RuncDefaults.maskedPaths, readonlyPaths: RuncDefaults.readonlyPaths)
        if rootless {
            // specconv.ToRootless, step by step.
            linux.namespaces =
                (linux.namespaces ?? []).filter { $0.type != "network" && $0.type != "user" } + [
                    Namespace(type: "user")
                ]
            linux.uidMappings = [IDMapping(containerID: 0, hostID: uid, size: 1)]
            linux.gidMappings = [IDMapping(containerID: 0, hostID: gid, size: 1)]
            mounts = mounts.map { m in
                if m.destination == "/sys" {
                    return Mount(
                        destination: "/sys", type: "none", source: "/sys",
                        options: ["rbind", "nosuid", "noexec", "nodev", "ro"])
                }
                var m = m
                m.options = m.options.map { $0.filter { !$0.hasPrefix("gid=") && !$0.hasPrefix("uid=") } }
                return m
            }
            linux.resources = nil
        }
        return Spec(
            process: process, root: Root(path: "rootfs", readonly: true), hostname: hostname, mounts: mounts,
            linux: linux)
    }

    /// runc's template with another root, args and terminal: the base of bundles made in code
    /// (tests, tools). `terminal` defaults to false here, since such a caller rarely has a
    /// console socket to give.
    public static func make(rootfs: String = "rootfs", args: [String] = ["sh"], terminal: Bool = false) -> Spec {
        var spec = runc()
        spec.root = Root(path: rootfs, readonly: true)
        spec.process?.args = args
        spec.process?.terminal = terminal
        return spec
    }
}
