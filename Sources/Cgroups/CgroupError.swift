import Errors
import Glibc
import LinuxKernel

/// The error of the Cgroups domain: a cgroup operation that failed, which step, on which file
/// or OCI field, and the errno.
///
/// Messages name the file and, where one is at fault, the OCI field, e.g.
/// `linux.resources.memory.limit: write memory.limit_in_bytes: EINVAL (Invalid argument) [/sys/fs/cgroup/memory/a/memory.limit_in_bytes]`
/// or `linux.resources.memory.swap: 100 is smaller than linux.resources.memory.limit (200)`.
public struct CgroupError: CodedError, Sendable, Equatable {
    public enum Code: String, ErrorCode {
        /// A read, write, mkdir, rmdir, kill or bpf(2) on cgroupfs failed; `errno` says why.
        case syscall
        /// An OCI `linux.resources` value (or a cgroup path) the drivers refuse.
        case invalidValue
        /// This host lacks what the value needs: a controller, cgroup v2, swap accounting.
        case unsupported
        /// The cgroup holds processes, or is frozen, where it must not.
        case inUse
        /// The cgroup did not reach the state asked for in time (frozen, thawed, removed).
        case timedOut

        public var category: ErrorCategory {
            switch self {
            case .syscall, .timedOut: .internal
            case .invalidValue: .invalidArgument
            case .unsupported: .unsupported
            case .inUse: .failedPrecondition
            }
        }
    }

    public static let domain = "cgroups"
    public var code: Code
    /// The step that failed: `read`, `write`, `mkdir`, `rmdir`, `kill`, `resolve`, `apply`, `create`.
    public var operation: String?
    /// The file or directory involved; empty for a pure validation error.
    public var path: String
    /// The errno the kernel returned; nil when the error is not from a syscall.
    public var errno: Int32?
    /// The OCI field at fault (`linux.resources.pids.limit`).
    public var field: String?
    /// What is wrong, after the field.
    public var message: String

    public init(
        _ code: Code = .syscall, operation: String, path: String = "", errno: Int32? = nil,
        field: String? = nil, message: String = ""
    ) {
        self.code = code
        self.operation = operation
        self.path = path
        self.errno = errno
        self.field = field
        self.message = message
    }

    /// A validation error: `field: reason`, no syscall involved.
    static func invalid(_ field: String, _ reason: String) -> CgroupError {
        CgroupError(.invalidValue, operation: "apply", field: field, message: reason)
    }

    /// A value this host cannot apply: `field: reason`, no syscall involved.
    static func unsupported(_ field: String, _ reason: String) -> CgroupError {
        CgroupError(.unsupported, operation: "apply", field: field, message: reason)
    }

    public var description: String {
        let context = [field ?? "", message].filter { !$0.isEmpty }.joined(separator: ": ")
        guard let errno, errno != 0 else {
            return path.isEmpty ? context : "\(context) [\(path)]"
        }
        let prefix = context.isEmpty ? "" : "\(context): "
        let file = path.split(separator: "/").last.map(String.init) ?? path
        return
            "\(prefix)\(operation ?? "") \(file): \(CgroupError.errnoName(errno)) (\(CgroupError.strerror(errno))) [\(path)]"
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
