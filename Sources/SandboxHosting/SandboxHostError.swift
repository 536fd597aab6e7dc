import Errors
import Glibc
import SandboxSpec

/// The error of the SandboxHosting domain: the node side of a sandbox failed (a mount, a
/// directory, the rootfs store, the node's defaults), or releases of `cleanup()` failed.
///
/// `description` is `field: message`, or `message` alone; for `.cleanupFailed` one
/// `cleanup: <step>: <error>` line per failed release.
public struct SandboxHostError: CodedError {
    public enum Code: String, ErrorCode {
        /// The plan cannot be hosted as given (no name or runtime, a rootfs path overlayfs
        /// cannot take, an invalid runtime name).
        case invalidPlan
        /// `spec.runtime` names no rootfs installed on this node.
        case runtimeNotFound
        /// A live sandbox holds `metadata.name` (its bundle directory and lease).
        case nameInUse
        /// The node's configuration (sandbox defaults, the rootfs store) is wrong.
        case invalidConfiguration
        /// The sandbox was cleaned up; it cannot be created again.
        case cleanedUp
        /// Valid input this host cannot enforce as configured (egress rules without an egress filter).
        case unsupported
        /// A step of the host failed (mkdir, mount, chown, a file); `errno` when a call said why.
        case failed
        /// Releases of `cleanup()` failed (`failures`); each is retried by the next call.
        case cleanupFailed

        public var category: ErrorCategory {
            switch self {
            case .invalidPlan: .invalidArgument
            case .runtimeNotFound: .notFound
            case .nameInUse: .alreadyExists
            case .cleanedUp: .failedPrecondition
            case .unsupported: .unsupported
            case .invalidConfiguration, .failed, .cleanupFailed: .internal
            }
        }
    }

    public static let domain = "host"
    public var code: Code
    public var field: String?
    public var message: String
    public var operation: String?
    public var errno: Int32?
    public var cause: (any Error)?
    /// For `.cleanupFailed`: what was being released (e.g. "bundle /run/safespace-bundles/x")
    /// and why it failed, newest first.
    public var failures: [(step: String, error: any Error)] = []

    public init(
        _ code: Code, field: String? = nil, _ message: String,
        operation: String? = nil, errno: Int32? = nil, cause: (any Error)? = nil
    ) {
        self.code = code
        self.field = field
        self.message = message
        self.operation = operation
        self.errno = errno
        self.cause = cause
    }

    /// `spec.runtime: <error>` for a runtime the rootfs store cannot give.
    init(runtime error: any Error) {
        let code: Code =
            switch (error as? RootfsError)?.code {
            case .notInstalled?: .runtimeNotFound
            case .invalidRuntime?: .invalidPlan
            default: .invalidConfiguration
            }
        self.init(code, field: "spec.runtime", "\(error)", cause: error)
    }

    /// `.failed`: `what: strerror(errno)` for the call that just failed.
    static func failed(_ what: String, operation: String, errno code: Int32 = Glibc.errno) -> SandboxHostError {
        SandboxHostError(.failed, "\(what): \(String(cString: strerror(code)))", operation: operation, errno: code)
    }

    /// `.cleanupFailed` with `failures`.
    init(cleanup failures: [(step: String, error: any Error)]) {
        self.init(
            .cleanupFailed, failures.map { "cleanup: \($0.step): \($0.error)" }.joined(separator: "\n"),
            operation: "cleanup")
        self.failures = failures
    }

    /// One `cleanup: <step>: <error>` line per failed release (`.cleanupFailed`), else the
    /// description.
    public var lines: [String] {
        failures.isEmpty ? [description] : failures.map { "cleanup: \($0.step): \($0.error)" }
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }
}
