/// The daemon's audit records into the audit library (`AuditLog`: the hash-chained JSON-lines
/// file of `audit.path`, and journald with `audit.journald`).
import Audit
import Foundation

enum AuditBridge {
    /// The log's sync mode: `audit.flush` (`audit.freq` records per background sync, at most
    /// 1 s after the first unsynced record).
    static func sync(_ config: DaemonConfig) -> AuditLog.Sync {
        switch config.auditFlush {
        case "data": .eachRecord
        case "none": .none
        default: .incrementalAsync(records: config.auditFreq, interval: .seconds(1))
        }
    }

    /// Opens the log of `config` (its directory is made, 0750).
    /// - Returns: the sink, and `flush`, which syncs what was written (at shutdown).
    /// - Throws: `ConfigError` naming `audit.path` when the log cannot be opened.
    static func open(config: DaemonConfig) throws -> (sink: AuditTrail.Sink, flush: @Sendable () throws -> Void) {
        let dir = String(config.auditPath[..<(config.auditPath.lastIndex(of: "/") ?? config.auditPath.startIndex)])
        if !dir.isEmpty { try Daemon.makeDirectories(dir, mode: 0o750) }
        let log: AuditLog
        do { log = try AuditLog(path: config.auditPath, journald: config.auditJournald, sync: sync(config)) } catch {
            throw ConfigError("audit.path \(config.auditPath): \(error)")
        }
        return (
            { type, sandbox, caller, outcome, fields in
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
            }, { try log.flush() }
        )
    }
}
