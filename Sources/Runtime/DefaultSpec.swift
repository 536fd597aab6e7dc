import Glibc
import LinuxKernel
import OCI

/// The config.json `spec` writes: runc's default (`runc spec`), a non-terminal `sh`.
public enum DefaultSpec {
    /// runc's default capability set (the Docker default).
    public static let capabilities = [
        "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE",
    ]

    public static func make(rootfs: String = "rootfs", args: [String] = ["sh"], terminal: Bool = false) -> Spec {
        var process = Process(
            terminal: terminal, user: User(uid: 0, gid: 0), args: args,
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            cwd: "/",
            capabilities: Capabilities(bounding: capabilities, effective: capabilities, permitted: capabilities),
            rlimits: [Rlimit(type: "RLIMIT_NOFILE", hard: 1024, soft: 1024)], noNewPrivileges: true)
        process.user.additionalGids = nil
        let mounts = [
            Mount(destination: "/proc", type: "proc", source: "proc"),
            Mount(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            Mount(destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            Mount(destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            Mount(destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]),
            Mount(destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
            Mount(destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"]),
        ]
        let linux = Linux(
            namespaces: ["pid", "network", "ipc", "uts", "mount", "cgroup"].map { Namespace(type: $0) },
            maskedPaths: RuncDefaults.maskedPaths, readonlyPaths: RuncDefaults.readonlyPaths)
        return Spec(process: process, root: Root(path: rootfs, readonly: true), hostname: "safespace", mounts: mounts, linux: linux)
    }
}
