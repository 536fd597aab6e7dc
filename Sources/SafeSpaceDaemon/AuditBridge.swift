/// The daemon's audit records into the audit library (`AuditLog`: the hash-chained JSON-lines
/// file of `audit.path`, and journald with `audit.journald`).
import Audit
import Foundation

enum AuditBridge {
    /// Opens the log of `config` (its directory is made, 0750).
    /// - Throws: `ConfigError` naming `audit.path` when the log cannot be opened.
    static func sink(config: DaemonConfig) throws -> AuditTrail.Sink {
        let dir = String(config.auditPath[..<(config.auditPath.lastIndex(of: "/") ?? config.auditPath.startIndex)])
        if !dir.isEmpty { try Daemon.makeDirectories(dir, mode: 0o750) }
        let log: AuditLog
        do { log = try AuditLog(path: config.auditPath, journald: config.auditJournald) } catch {
            throw ConfigError("audit.path \(config.auditPath): \(error)")
        }
        return { type, sandbox, caller, outcome, fields in
            var values: [String: AuditValue] = [:]
            for (key, field) in fields {
                switch field {
                case .string(let s): values[key] = .string(s)
                case .int(let i): values[key] = .int(Int64(i))
                case .bool(let b): values[key] = .bool(b)
                case .strings(let list): values[key] = .strings(list)
                case .null: break
                }
            }
            try log.append(
                AuditRecord(
                    type: type, sandbox: sandbox, callerUID: caller?.uid, callerPID: caller?.pid, outcome: outcome,
                    fields: values))
        }
    }
}
