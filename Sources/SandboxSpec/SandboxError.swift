import Errors

/// Errors of the `Sandbox` resource: every one names the field at fault.

/// One problem with one field of a `Sandbox`, e.g. `spec.filesystm: unknown field`.
public struct FieldIssue: Sendable, Equatable, CustomStringConvertible {
    /// What kind of rule the field broke; the code of a `SandboxError`.
    public enum Kind: String, ErrorCode {
        /// The document is not YAML/JSON, or is not a single mapping.
        case syntax
        /// The field is not part of `llmsafespace.dev/v1` `Sandbox`.
        case unknownField
        /// The same key appears twice in one mapping.
        case duplicateField
        /// The value has the wrong type (a string where an integer belongs, ...).
        case wrongType
        /// A required field is absent.
        case missingField
        /// The value is out of range or malformed.
        case invalidValue
        /// The field is valid but this build cannot enforce it, so it is refused rather
        /// than silently ignored. See `Sandbox.notEnforceableYet()`.
        case notEnforceable

        public var category: ErrorCategory { self == .notEnforceable ? .unsupported : .invalidArgument }
    }

    public var kind: Kind
    /// Dotted path of the field, `spec.filesystem.writablePaths[1]`; empty for the whole document.
    public var field: String
    public var message: String

    public init(_ kind: Kind, field: String, _ message: String) {
        self.kind = kind
        self.field = field
        self.message = message
    }

    public var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

/// The error of the SandboxSpec domain: a `Sandbox` that could not be decoded or failed
/// validation. `issues` is never empty; `code` and `field` are those of the first.
public struct SandboxError: CodedError, Sendable, Equatable {
    public static let domain = "sandbox"
    public var issues: [FieldIssue]

    public init(_ issues: [FieldIssue]) {
        precondition(!issues.isEmpty, "SandboxError needs at least one issue")
        self.issues = issues
    }

    public init(_ kind: FieldIssue.Kind, field: String, _ message: String) {
        self.issues = [FieldIssue(kind, field: field, message)]
    }

    /// The fields at fault, in the order found.
    public var fields: [String] { issues.map(\.field) }

    /// The kind of the first issue.
    public var code: FieldIssue.Kind { issues[0].kind }
    /// The field of the first issue; nil for the whole document.
    public var field: String? { issues[0].field.isEmpty ? nil : issues[0].field }
    /// Decoding and validation run no system call.
    public var operation: String? { nil }
    public var errno: Int32? { nil }

    /// One issue per line.
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}
