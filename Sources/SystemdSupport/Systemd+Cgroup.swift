import CSystemd
import Glibc

/// cgroup v2 delegation (systemd.resource-control(5) `Delegate=`, and systemd's "Control Group
/// APIs and Delegation"): a unit with `Delegate=yes` owns the subtree below its cgroup, but
/// cgroup v2 allows no processes in a cgroup that enables controllers for its children, so
/// the daemon moves itself into a leaf of its own before making sandbox cgroups beside it.
/// systemd >= 254 does that itself with `DelegateSubgroup=`.
extension Systemd {
    /// Errors of the cgroup helpers: the step and the errno.
    public struct CgroupError: Error, Sendable, Equatable, CustomStringConvertible {
        public var operation: String
        public var path: String
        public var errno: Int32
        public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
    }

    /// This process's cgroup v2 path, from the `0::` line of /proc/self/cgroup (e.g.
    /// `/system.slice/safespaced.service`); nil on a cgroup v1-only host.
    public static func ownCgroup() -> String? {
        guard let text = try? readFile("/proc/self/cgroup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return nil
    }

    /// Whether systemd delegated the cgroup at `path` (relative to `root`): the
    /// `trusted.delegate` (or, for user managers, `user.delegate`) extended attribute set to
    /// "1", which systemd >= 251 puts on the cgroup of a `Delegate=yes` unit.
    public static func isDelegated(cgroup path: String, root: String = "/sys/fs/cgroup") -> Bool {
        for name in ["trusted.delegate", "user.delegate"] {
            var value = [UInt8](repeating: 0, count: 8)
            let n = getxattr(root + path, name, &value, value.count)
            if n > 0, value[0] == UInt8(ascii: "1") { return true }
        }
        return false
    }

    /// Moves this whole process (every thread: cgroup.procs) into `<own cgroup>/<name>`,
    /// creating it (0755). Call it first thing, before any thread or child exists elsewhere.
    /// - Returns: the new cgroup path (e.g. `/system.slice/safespaced.service/supervisor`).
    /// - Throws: `CgroupError` (no cgroup v2, mkdir, the write to cgroup.procs).
    @discardableResult
    public static func enterSubgroup(_ name: String, root: String = "/sys/fs/cgroup") throws -> String {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
            throw CgroupError(operation: "subgroup name", path: name, errno: EINVAL)
        }
        guard let own = ownCgroup() else {
            throw CgroupError(operation: "read", path: "/proc/self/cgroup", errno: ENOENT)
        }
        let target = (own == "/" ? "" : own) + "/" + name
        let dir = root + target
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw CgroupError(operation: "mkdir", path: dir, errno: errno)
        }
        let fd = open(dir + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CgroupError(operation: "open", path: dir + "/cgroup.procs", errno: errno) }
        defer { close(fd) }
        let pid = Array("\(getpid())\n".utf8)
        guard write(fd, pid, pid.count) == pid.count else {
            throw CgroupError(operation: "write", path: dir + "/cgroup.procs", errno: errno)
        }
        return target
    }

    private static func readFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CgroupError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buffer[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
