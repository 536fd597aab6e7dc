/// The value of one type-specific field of an audit record; in the JSON line a string, an
/// integer, a boolean or an array of strings.
public enum AuditValue: Sendable, Equatable, Codable {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case strings([String])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([String].self) {
            self = .strings(value)
        } else {
            throw DecodingError.dataCorruptedError(
                in: container,
                debugDescription: "an audit field is a string, an integer, a boolean or an array of strings")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .strings(let value): try container.encode(value)
        }
    }
}

/// One audited action: who (caller uid/pid, from `SO_PEERCRED`), what (`type`), on which
/// sandbox, with what outcome, and the type's own fields. `AuditLog.append` adds the time, the
/// sequence number and the chain hash.
///
/// Types the daemon writes and their fields (names are camelCase; each becomes
/// `SAFESPACE_<UPPER_SNAKE>` in the journal):
/// - `sandbox.created`: level, limits; `sandbox.deleted`: `reason` (`request`, `timeout`,
///   `shutdown`, `error`)
/// - `exec.started`: `argv` (strings), `stdinSHA256`; `exec.finished`: `exitCode`,
///   `durationMs`, `oomKilled`, `timedOut`
/// - `file.written` / `file.read`: `path`, `bytes`, `sha256`
/// - `seccomp.denied`: `syscall`, `count`; `api.denied`: `reason`, `method`, `route`
public struct AuditRecord: Sendable {
    /// Dotted lowercase name: `[a-z0-9_]+(\.[a-z0-9_]+)*`, e.g. `exec.finished`.
    public var type: String
    /// The sandbox's `metadata.name`; nil for actions on no sandbox (a refused list call).
    public var sandbox: String?
    /// The caller's uid and pid (`SO_PEERCRED`); nil for the daemon's own actions (timeouts,
    /// shutdown).
    public var callerUID: UInt32?
    public var callerPID: Int32?
    /// `ok`, `denied` or `error`.
    public var outcome: String
    /// Type-specific fields. Names match `[A-Za-z][A-Za-z0-9_]{0,47}` and are none of the
    /// record's own keys (`time`, `seq`, `type`, `sandbox`, `caller`, `outcome`, `prev`).
    public var fields: [String: AuditValue]

    public init(
        type: String, sandbox: String? = nil, callerUID: UInt32? = nil, callerPID: Int32? = nil,
        outcome: String = "ok", fields: [String: AuditValue] = [:]
    ) {
        self.type = type
        self.sandbox = sandbox
        self.callerUID = callerUID
        self.callerPID = callerPID
        self.outcome = outcome
        self.fields = fields
    }

    /// The outcomes a record may carry.
    public static let outcomes: Set<String> = ["ok", "denied", "error"]
    /// Keys of the line that fields may not use.
    public static let reservedKeys: Set<String> = ["time", "seq", "type", "sandbox", "caller", "outcome", "prev"]

    /// Checks the record's shape.
    /// - Throws: `AuditLogError.invalidRecord(field:reason:)` naming the bad field.
    public func validate() throws {
        let typeParts = type.split(separator: ".", omittingEmptySubsequences: false)
        guard !type.isEmpty, type.utf8.count <= 64,
            typeParts.allSatisfy({
                !$0.isEmpty
                    && $0.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
            })
        else {
            throw AuditLogError.invalidRecord(
                field: "type", reason: "\"\(type)\" is not a dotted lowercase name like exec.finished")
        }
        guard Self.outcomes.contains(outcome) else {
            throw AuditLogError.invalidRecord(
                field: "outcome", reason: "\"\(outcome)\" is not one of ok, denied, error")
        }
        for name in fields.keys {
            guard Self.isFieldName(name) else {
                throw AuditLogError.invalidRecord(
                    field: "fields.\(name)", reason: "a field name matches [A-Za-z][A-Za-z0-9_]{0,47}")
            }
            guard !Self.reservedKeys.contains(name) else {
                throw AuditLogError.invalidRecord(
                    field: "fields.\(name)", reason: "\(name) is a key of the record itself")
            }
        }
    }

    static func isFieldName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= 48, isLetter(first) else { return false }
        return bytes.allSatisfy { isLetter($0) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }

    private static func isLetter(_ c: UInt8) -> Bool { (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
}
