import Errors

/// The error of the SandboxNetwork domain: a sandbox's network (address pool, network
/// namespace, veth, nftables table) could not be made or removed, or what was asked cannot be
/// enforced on this node.
///
/// `description` is `field: message`, or `message` alone.
public struct NetworkError: CodedError {
    public enum Code: String, ErrorCode {
        /// The input is wrong: a CIDR, a port, a pool, a sandbox name.
        case invalidValue
        /// Valid input this node cannot enforce as configured (forwarding off for `cidr` rules).
        case unsupported
        /// Every subnet of the pool is leased.
        case poolExhausted
        /// A live process holds the network of a sandbox of that name.
        case inUse
        /// A kernel call (rtnetlink, mount, nftables) failed; `errno` when one said why.
        case failed
    }

    public static let domain = "network"
    public var code: Code
    public var field: String?
    public var message: String
    public var operation: String?
    public var errno: Int32?

    public init(_ code: Code, field: String? = nil, _ message: String, operation: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.field = field
        self.message = message
        self.operation = operation
        self.errno = errno
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }
}

extension NetworkError.Code {
    public var category: ErrorCategory {
        switch self {
        case .invalidValue: .invalidArgument
        case .unsupported: .unsupported
        case .poolExhausted: .resourceExhausted
        case .inUse: .alreadyExists
        case .failed: .internal
        }
    }
}
