import Errors
import Glibc

/// The error of the LinuxKernel domain: a failed system call (the operation, the path or object
/// it acted on, and errno), or a value the kernel interface refuses before any call (an unknown
/// capability or rlimit name, a mount attribute this kernel lacks).
///
/// `description` reads like `mount proc on /proc: Operation not permitted (EPERM)`, or
/// `process.capabilities.bounding: unknown capability "CAP_BOGUS"` when `message` is set;
/// `field`, when set, names the OCI or Sandbox field whose value made the call fail.
public struct SysError: CodedError, Sendable {
    public enum Code: String, ErrorCode {
        /// A system call failed; `errno` says why.
        case syscall
        /// A name or number the kernel interface does not know (a capability, an rlimit).
        case invalidValue
        /// This kernel lacks the call or the attribute asked for.
        case unsupported
        /// The caller lacks the capability the call needs (CAP_SYS_RESOURCE).
        case permissionDenied
        /// A safety check refused the operation (a mount point inside a tree to remove).
        case refused
        /// A file the node keeps (a lease) does not hold what it should.
        case corruptFile

        public var category: ErrorCategory {
            switch self {
            case .syscall: .internal
            case .invalidValue: .invalidArgument
            case .unsupported: .unsupported
            case .permissionDenied: .permissionDenied
            case .refused: .failedPrecondition
            case .corruptFile: .internal
            }
        }
    }

    public static let domain = "kernel"
    public var code: Code
    public var operation: String?
    public var path: String?
    public var errno: Int32?
    public var field: String?
    /// The reason in words, replacing `operation path: strerror(errno)` in `description`.
    public var message: String?

    /// A system call that failed with `errno`.
    public init(_ operation: String?, path: String? = nil, errno: Int32? = Glibc.errno, field: String? = nil) {
        self.code = .syscall
        self.operation = operation
        self.path = path
        self.errno = errno
        self.field = field
    }

    /// A failure `message` explains (`description` is `field: message`).
    public init(
        _ code: Code, field: String? = nil, _ message: String, operation: String? = nil, path: String? = nil,
        errno: Int32? = nil
    ) {
        self.code = code
        self.operation = operation
        self.path = path
        self.errno = errno
        self.field = field
        self.message = message
    }

    public var description: String {
        var s = field.map { "\($0): " } ?? ""
        if let message { return s + message }
        s += operation ?? ""
        if let path { s += " \(path)" }
        if let errno {
            s += ": \(String(cString: strerror(errno)))"
            if let name = ErrnoNames.name(errno) { s += " (\(name))" }
        }
        return s
    }
}

/// Runs `body` until it does not fail with EINTR; throws `SysError` on -1.
@discardableResult
public func sys<T: BinaryInteger>(_ operation: String, path: String? = nil, _ body: () -> T) throws -> T {
    while true {
        let r = body()
        if r >= 0 { return r }
        if errno == EINTR { continue }
        throw SysError(operation, path: path)
    }
}
