import Glibc
import LinuxKernel

/// A cgroup operation that failed: which step, on which file or OCI field, and the errno.
///
/// Messages name the file and, where one is at fault, the OCI field, e.g.
/// `linux.resources.memory.limit: write memory.limit_in_bytes: EINVAL (Invalid argument) [/sys/fs/cgroup/memory/a/memory.limit_in_bytes]`
/// or `linux.resources.memory.swap: 100 is smaller than linux.resources.memory.limit (200)`.
public struct CgroupError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The step that failed: `read`, `write`, `mkdir`, `rmdir`, `kill`, `resolve`, `apply`, `create`.
    public var operation: String
    /// The file or directory involved; empty for a pure validation error.
    public var path: String
    /// The errno the kernel returned; 0 when the error is not from a syscall.
    public var errno: Int32
    /// Context, usually beginning with the OCI field at fault (`linux.resources.pids.limit`).
    public var message: String

    public init(operation: String, path: String = "", errno: Int32 = 0, message: String = "") {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.message = message
    }

    /// A validation error: `field: reason`, no syscall involved.
    static func invalid(_ field: String, _ reason: String) -> CgroupError {
        CgroupError(operation: "apply", message: "\(field): \(reason)")
    }

    public var description: String {
        guard errno != 0 else {
            return path.isEmpty ? message : "\(message) [\(path)]"
        }
        let prefix = message.isEmpty ? "" : "\(message): "
        let file = path.split(separator: "/").last.map(String.init) ?? path
        return "\(prefix)\(operation) \(file): \(CgroupError.errnoName(errno)) (\(CgroupError.strerror(errno))) [\(path)]"
    }

    /// The symbolic name of an errno (`EINVAL`), or `errno N` for one not listed.
    public static func errnoName(_ code: Int32) -> String {
        ErrnoNames.name(code) ?? "errno \(code)"
    }

    static func strerror(_ code: Int32) -> String {
        guard let text = Glibc.strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }
}
