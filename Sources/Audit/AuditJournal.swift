import CSystemd
import Glibc

/// Audit records as journald entries (systemd.journal-fields(7), sd_journal_print(3)):
/// `MESSAGE=` a one-line summary, `MESSAGE_ID=` the SafeSpace audit id, `PRIORITY=` (6 ok,
/// 4 denied, 3 error), `SYSLOG_IDENTIFIER=safespace-audit`, and
/// - `SAFESPACE_TYPE=`, `SAFESPACE_SANDBOX=`, `SAFESPACE_CALLER_UID=`, `SAFESPACE_CALLER_PID=`,
///   `SAFESPACE_OUTCOME=`, `SAFESPACE_SEQ=`, `SAFESPACE_PREV=`;
/// - `SAFESPACE_LINE_SHA256=` the hash of the file's line, `SAFESPACE_AUDIT_FILE=` the file:
///   the anchor `safespace audit verify --journal` checks the file's tail against;
/// - `SAFESPACE_RECORD=` the whole JSON line;
/// - each field as `SAFESPACE_<UPPER_SNAKE>=` (`exitCode` -> `SAFESPACE_EXIT_CODE`), a list of
///   strings as its JSON array.
///
/// Read back with `journalctl -t safespace-audit -o json` or
/// `journalctl MESSAGE_ID=2d1f5c6e0b8a4f7c9e3a61b5d4c8f092`.
public enum AuditJournal {
    /// journald's native socket; sd_journal_sendv writes to it.
    public static let socketPath = "/run/systemd/journal/socket"
    /// `MESSAGE_ID` of every SafeSpace audit entry (a 128-bit id, as journald wants).
    public static let messageID = "2d1f5c6e0b8a4f7c9e3a61b5d4c8f092"
    public static let identifier = "safespace-audit"

    /// The journal fields of one record, in order, each `NAME=value`.
    public static func fields(
        _ record: AuditRecord, line: [UInt8], seq: Int64, hash: String, file: String
    ) -> [[UInt8]] {
        var out: [[UInt8]] = []
        func add(_ name: String, _ value: String) { out.append(Array("\(name)=".utf8) + Array(value.utf8)) }
        var summary = "\(record.type) \(record.outcome)"
        if let sandbox = record.sandbox { summary += " sandbox=\(sandbox)" }
        if let uid = record.callerUID { summary += " uid=\(uid)" }
        if let pid = record.callerPID { summary += " pid=\(pid)" }
        if case .string(let reason)? = record.fields["reason"] { summary += " reason=\(reason)" }
        add("MESSAGE", summary)
        add("MESSAGE_ID", messageID)
        add("PRIORITY", record.outcome == "ok" ? "6" : record.outcome == "denied" ? "4" : "3")
        add("SYSLOG_IDENTIFIER", identifier)
        add("SAFESPACE_TYPE", record.type)
        if let sandbox = record.sandbox { add("SAFESPACE_SANDBOX", sandbox) }
        if let uid = record.callerUID { add("SAFESPACE_CALLER_UID", String(uid)) }
        if let pid = record.callerPID { add("SAFESPACE_CALLER_PID", String(pid)) }
        add("SAFESPACE_OUTCOME", record.outcome)
        add("SAFESPACE_SEQ", String(seq))
        if let prev = prevOf(line) { add("SAFESPACE_PREV", prev) }
        add("SAFESPACE_LINE_SHA256", hash)
        add("SAFESPACE_AUDIT_FILE", file)
        out.append(Array("SAFESPACE_RECORD=".utf8) + line)
        for name in record.fields.keys.sorted() {
            var value: [UInt8] = []
            switch record.fields[name]! {
            case .string(let s): value = Array(s.utf8)
            case .int(let i): value = Array(String(i).utf8)
            case .bool(let b): value = Array((b ? "true" : "false").utf8)
            case .strings: AuditLine.appendValue(record.fields[name]!, to: &value)
            }
            out.append(Array("SAFESPACE_\(journalName(name))=".utf8) + value)
        }
        return out
    }

    /// `exitCode` -> `EXIT_CODE`, `stdinSHA256` -> `STDIN_SHA256`, `oom_killed` -> `OOM_KILLED`.
    public static func journalName(_ field: String) -> String {
        var out = ""
        var previous: Character?
        for c in field {
            if c.isUppercase, let p = previous, p.isLowercase || p.isNumber { out.append("_") }
            out.append(contentsOf: c.uppercased())
            previous = c
        }
        return out
    }

    /// Sends the record: `sd_journal_sendv`. Returns its result: 0, or a negative errno
    /// (`-ENOENT`/`-ECONNREFUSED` when journald is not running).
    static func send(_ record: AuditRecord, line: [UInt8], seq: Int64, hash: String, file: String) -> Int32 {
        sendv(fields(record, line: line, seq: seq, hash: hash, file: file))
    }

    /// `sd_journal_sendv` of `NAME=value` entries; 0 or a negative errno (`-ENOENT` when
    /// journald's socket is missing, which sd_journal_sendv itself reports as success).
    public static func sendv(_ entries: [[UInt8]]) -> Int32 {
        // Copies into one allocation that outlives the call: the iovecs point into it.
        let total = entries.reduce(0) { $0 + $1.count }
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(total, 1))
        defer { storage.deallocate() }
        var iov: [iovec] = []
        var offset = 0
        for entry in entries {
            entry.withUnsafeBufferPointer { (storage + offset).update(from: $0.baseAddress!, count: entry.count) }
            iov.append(iovec(iov_base: UnsafeMutableRawPointer(storage + offset), iov_len: entry.count))
            offset += entry.count
        }
        let r = iov.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        // sd_journal_sendv "fails silently" (returns 0) when the socket does not exist
        // (journal-send.c); a record that went nowhere is reported here.
        if r == 0 && access(socketPath, F_OK) != 0 { return -ENOENT }
        return r
    }

    private static func prevOf(_ line: [UInt8]) -> String? {
        // The line ends with ,"prev":"<64 hex>"}
        guard line.count >= 75 else { return nil }
        return String(decoding: line[(line.count - 66)..<(line.count - 2)], as: UTF8.self)
    }
}
