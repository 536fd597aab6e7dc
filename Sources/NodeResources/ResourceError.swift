import Errors

/// The error of the NodeResources domain: a sandbox resource request that cannot be honoured,
/// or a node resource (CPU leases, volumes) that failed: the `Sandbox` field at fault
/// (`spec.resources.memory`), what is wrong, and the errno when a syscall failed.
public struct ResourceError: CodedError, Sendable, Equatable {
    public enum Code: String, ErrorCode {
        /// Not a quantity, below the minimum, or otherwise not a value the field takes.
        case invalidValue
        /// More than this node has at all (CPUs, RAM, free disk): it can never be given.
        case exceedsNode
        /// Fewer free than asked for now (pinnable CPUs).
        case exhausted
        /// A volume of that sandbox exists already.
        case alreadyExists
        /// The node's sandbox defaults (`sandboxDefaults` of the runtime configuration) are wrong.
        case invalidConfiguration
        /// A tool the node needs is not installed (mkfs.ext4).
        case missingTool
        /// A system call, a file or a helper failed; `errno` when a call said why.
        case failed

        public var category: ErrorCategory {
            switch self {
            case .invalidValue, .exceedsNode: .invalidArgument
            case .exhausted: .resourceExhausted
            case .alreadyExists: .alreadyExists
            case .missingTool: .unsupported
            case .invalidConfiguration, .failed: .internal
            }
        }
    }

    public static let domain = "resources"
    public var code: Code
    public var field: String?
    public var message: String
    public var operation: String?
    public var errno: Int32?

    public init(_ code: Code, field: String, _ message: String, operation: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.field = field
        self.message = message
        self.operation = operation
        self.errno = errno
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }
}
