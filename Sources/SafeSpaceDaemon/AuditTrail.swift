/// The daemon's side of the audit log: one call per event, with the time, type, sandbox,
/// caller and outcome every record carries (issue 12, "Audit log").
import Foundation
import Logging

/// A field value of an audit record.
enum AuditField: Sendable, Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case strings([String])
    case null
}

/// Where audit records go. `sink` writes one record (the audit library's `AuditLog`); a
/// record that cannot be written is logged as an error, never dropped silently.
final class AuditTrail: Sendable {
    typealias Sink =
        @Sendable (
            _ type: String, _ sandbox: String?, _ caller: Caller?, _ outcome: String, _ fields: [String: AuditField]
        ) throws -> Void
    private let sink: Sink
    private let logger: Logger

    init(logger: Logger, sink: @escaping Sink) {
        self.logger = logger
        self.sink = sink
    }

    func record(_ type: String, sandbox: String?, caller: Caller?, outcome: String, fields: [String: AuditField]) {
        do { try sink(type, sandbox, caller, outcome, fields) } catch {
            logger.error("audit record \(type) not written: \(error)", metadata: ["sandbox": "\(sandbox ?? "-")"])
        }
    }
}
