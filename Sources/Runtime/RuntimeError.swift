import Errors

/// The error of the Runtime domain (the OCI runtime): a lifecycle verb on a container in the
/// wrong state, a config.json field the runtime refuses, or a helper that failed.
///
/// `description` is `field: message` (`linux.sysctl: "kernel.hostname" conflicts with the
/// hostname field; set hostname instead`), or `message` alone. The messages containerd,
/// podman and docker match on are made only by the constructors of `ClientWordings.swift`.
/// System calls that fail throw `SysError`, cgroup files `CgroupError`.
public struct RuntimeError: CodedError, Sendable {
    public enum Code: String, ErrorCode {
        /// The container id is not one the runtime accepts.
        case invalidID
        /// No container of that id exists.
        case notFound
        /// A container (or sandbox) of that id exists already.
        case alreadyExists
        /// The container (or its init) is not running.
        case notRunning
        /// The container is not paused.
        case notPaused
        /// The container is not stopped (delete).
        case notStopped
        /// The container is running already (start).
        case alreadyRunning
        /// The container has stopped (start, update).
        case stopped
        /// The container, or the pod sandbox it runs in, is paused.
        case paused
        /// A config.json field, or an option of the verb (`--console-socket`), is wrong.
        case invalidSpec
        /// `process.args[0]` names no executable file.
        case executableNotFound
        /// What the bundle holds would let the container reach outside its root (a symlinked
        /// /dev, a cwd that resolves outside it, a symlink loop): refused.
        case refused
        /// Valid input this runtime, host or backend cannot enforce.
        case unsupported
        /// A hook exited non-zero or timed out.
        case hookFailed
        /// The container's init or exec helper reported a failure, died, or broke the protocol.
        case initFailed
        /// A container's state file cannot be read.
        case corruptState
        /// The runtime configuration (`/etc/safespace/runtime.json`, its annotations) is wrong.
        case invalidConfiguration
        /// The node has none left (host id ranges).
        case exhausted
        /// The node failed outside a system call (mounts that stay, an unsealed binary).
        case hostFailure
        /// TRANSITIONAL: a message-only `RuntimeError(_:)` not yet given a code (the sites left
        /// in ContainerRuntime.swift and GVisor*.swift). Removed with the last of them.
        case unspecified

        public var category: ErrorCategory {
            switch self {
            case .invalidID, .invalidSpec, .executableNotFound, .refused: .invalidArgument
            case .notFound: .notFound
            case .alreadyExists: .alreadyExists
            case .notRunning, .notPaused, .notStopped, .alreadyRunning, .stopped, .paused: .failedPrecondition
            case .unsupported: .unsupported
            case .exhausted: .resourceExhausted
            case .hookFailed, .initFailed, .corruptState, .invalidConfiguration, .hostFailure, .unspecified: .internal
            }
        }
    }

    public static let domain = "runtime"
    public var code: Code
    public var field: String?
    /// What is wrong, without the field.
    public var message: String
    public var operation: String?
    public var errno: Int32?
    public var cause: (any Error)?

    /// - Parameters:
    ///   - field: the OCI field at fault (`linux.namespaces[2].path`); `description` starts with it.
    ///   - message: what is wrong with it.
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

    /// TRANSITIONAL, for the message-only sites left in ContainerRuntime.swift and
    /// GVisor*.swift (being rewritten elsewhere): code `.unspecified`, the whole message as
    /// given. Convert each to `init(_:field:_:)` or a `ClientWordings` constructor, then
    /// delete this initializer and `.unspecified`.
    public init(_ message: String) {
        self.init(.unspecified, message)
    }

    public var description: String {
        field.map { "\($0): \(message)" } ?? message
    }
}
