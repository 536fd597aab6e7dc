import Errors

/// The error of the SeccompFilters domain: an invalid seccomp profile or a step of compiling or
/// serving one that failed.
///
/// `description` reads `linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_BOGUS"`:
/// `field` names the profile entry at fault (OCI `linux.seccomp…`, or the Docker profile's own
/// path `syscalls[3]…` prefixed with the file), `message` says what is wrong with it.
public struct SeccompError: CodedError, Sendable, Equatable {
    public enum Code: String, ErrorCode {
        /// The profile (OCI `linux.seccomp` or a Docker-format file) is malformed or names an
        /// unknown action, architecture, flag, operator, syscall or errno.
        case invalidProfile
        /// A valid profile the compiler or the runtime cannot enforce as written.
        case unsupported
        /// A libseccomp call (or the pipe it exports through) failed; `errno` when it said why.
        case libseccompFailed
        /// A BPF program that is not well formed (not whole instructions, a bad jump).
        case invalidProgram

        public var category: ErrorCategory {
            switch self {
            case .invalidProfile: .invalidArgument
            case .unsupported: .unsupported
            case .libseccompFailed, .invalidProgram: .internal
            }
        }
    }

    public static let domain = "seccomp"
    public var code: Code
    public var field: String?
    public var message: String
    public var operation: String?
    public var errno: Int32?

    public init(_ code: Code, _ message: String, field: String? = nil, operation: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        field.map { "\($0): \(message)" } ?? message
    }
}
