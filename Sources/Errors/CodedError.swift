/// The shape every SafeSpace error has, whatever module throws it.
///
/// Owns: `CodedError` (code, field, operation, errno, cause), `ErrorCode` (one enum of stable
/// names per domain) and `ErrorCategory` (what kind of failure a code is). Imports nothing:
/// every module with an error type depends on it, and a front end (the CLIs, the daemon)
/// handles the errors of all domains through it, e.g. the daemon's
/// `{"error": {"code": "runtime.notFound", "message": "...", "field": "..."}}` with the HTTP
/// status of `category`.

/// What kind of failure a code is, across domains: the one switch a front end needs to choose
/// an exit status, an HTTP status or a gRPC status code.
public enum ErrorCategory: String, Sendable, CaseIterable {
    /// The input is wrong: a field of config.json or of a Sandbox, a flag (HTTP 400).
    case invalidArgument
    /// The object named does not exist: a container, a runtime, a file (HTTP 404).
    case notFound
    /// An object of that name exists already (HTTP 409).
    case alreadyExists
    /// The object is not in a state the operation needs: not running, stopped, paused (HTTP 409).
    case failedPrecondition
    /// The node has none left: CPUs, uid ranges, disk (HTTP 503).
    case resourceExhausted
    /// The caller lacks a privilege the operation needs: root, a capability (HTTP 403).
    case permissionDenied
    /// Valid input this node or backend cannot enforce; refused rather than ignored (HTTP 501).
    case unsupported
    /// The node failed: a system call, a helper process, a corrupt file (HTTP 500).
    case `internal`
}

/// The codes of one domain: an enum whose raw values are stable names (`notFound`), never
/// renamed once shipped, since clients and logs match on them.
public protocol ErrorCode: RawRepresentable<String>, Sendable, Hashable, CaseIterable {
    /// What kind of failure this code is.
    var category: ErrorCategory { get }
}

/// An error of one domain (module) in the common shape.
///
/// `description` is the message a person or a client reads, e.g.
/// `linux.resources.memory.limit: write memory.max: EINVAL (Invalid argument) [/sys/fs/cgroup/a/memory.max]`:
/// it starts with `field` when there is one. The properties are for programs: a front end maps
/// `code` (or its `category`) to a status and shows `field` apart.
public protocol CodedError: Error, CustomStringConvertible {
    associatedtype Code: ErrorCode
    /// The domain's name, the prefix of `codeName`: `kernel`, `cgroups`, `seccomp`,
    /// `resources`, `sandbox`, `rootfs`, `runtime`, `host`, `cli`.
    static var domain: String { get }
    /// What went wrong, as a stable name.
    var code: Code { get }
    /// The OCI or Sandbox field at fault (`linux.resources.memory.limit`,
    /// `spec.resources.cpu`); nil when no field is (a syscall that failed for other reasons).
    var field: String? { get }
    /// The step that failed (`mount`, `setns`, `write`); nil for a validation error.
    var operation: String? { get }
    /// The errno a system call failed with; nil when no system call failed.
    var errno: Int32? { get }
    /// The underlying error, when this one wraps another.
    var cause: (any Error)? { get }
}

extension CodedError {
    /// `domain.code`, e.g. `runtime.notFound`: unique across domains.
    public var codeName: String { "\(Self.domain).\(code.rawValue)" }
    /// The category of `code`.
    public var category: ErrorCategory { code.category }
    /// None by default: the domains whose errors wrap another store it.
    public var cause: (any Error)? { nil }
}
