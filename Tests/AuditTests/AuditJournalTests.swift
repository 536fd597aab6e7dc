import CSafeSpace
import Foundation
import Glibc
import Synchronization
import Testing

@testable import Audit

/// journald is not running on the development machines (no systemd as PID 1), and a test
/// should not depend on the host's journal anyway: this test starts its own systemd-journald
/// in a private mount namespace of one thread (unshare(CLONE_NEWNS) affects only the calling
/// thread and the processes it starts), with tmpfs over /run/systemd (or /run), /run/log and
/// /var/log/journal, so that sd_journal_sendv and journalctl of that thread and its children
/// meet that journald, and nothing reaches the host's journal.
@Suite("AuditLog: journald", .serialized)
struct AuditJournalTests {
    static let journald = "/lib/systemd/systemd-journald"

    /// What the namespace thread saw; checked on the test's own thread (Swift Testing
    /// attributes expectations through task-locals, which a plain thread does not have).
    final class Observed: @unchecked Sendable {
        var initWithoutJournald: (any Error)?
        var sendWithoutJournald: Int32 = 0
        var sendWithJournald: Int32 = -1
        var failuresWhileUp = -1
        var entries: [[String: Any]] = []
        var fileLines: [[UInt8]] = []
        var cliIntact: Output?
        var cliCut: Output?
        var failuresAfterStop: (count: Int, lastErrno: Int32) = (-1, 0)
        var verifiedAfterStop = -1
    }

    @Test(
        "records reach journald with structured fields; journalctl -o json reads them back; sends fail honestly without journald"
    )
    func journalRoundTrip() throws {
        try #require(getuid() == 0, "needs root: a mount namespace and its own journald")
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.journald),
            "systemd-journald is not installed (apt-get install systemd)")
        let dir = try TempDir("audit-journal")
        defer { dir.remove() }
        let hostSocketBefore = access(AuditJournal.socketPath, F_OK) == 0
        let path = dir.path + "/audit.jsonl"
        var records = sampleRecords(sandbox: "sb-journal")
        records[5].fields["reason"] = .string("error\nsecond line")
        let cli = buildDir + "/safespace"
        let seen = Observed()
        try inPrivateMountNamespace { [records] in
            try Self.exercise(path: path, records: records, cli: cli, into: seen)
        }
        #expect(
            (access(AuditJournal.socketPath, F_OK) == 0) == hostSocketBefore,
            "the test's journald socket leaked onto the host")

        // Without journald: init refuses, a raw send reports the errno.
        #expect(seen.initWithoutJournald as? AuditLogError == .journalUnavailable(socket: AuditJournal.socketPath))
        #expect(seen.sendWithoutJournald < 0, "sd_journal_sendv without journald returned \(seen.sendWithoutJournald)")
        #expect(seen.sendWithJournald == 0)
        #expect(seen.failuresWhileUp == 0)

        let entries = seen.entries
        try #require(entries.count == records.count, "journalctl returned \(entries.count) entries of \(records.count)")
        for (i, entry) in entries.enumerated() {
            let line = seen.fileLines[i]
            #expect(field(entry, "SAFESPACE_SEQ") == String(i + 1))
            #expect(field(entry, "SAFESPACE_TYPE") == records[i].type)
            #expect(field(entry, "SAFESPACE_SANDBOX") == "sb-journal")
            #expect(field(entry, "SAFESPACE_OUTCOME") == records[i].outcome)
            #expect(field(entry, "SAFESPACE_RECORD") == String(decoding: line, as: UTF8.self))
            #expect(field(entry, "SAFESPACE_LINE_SHA256") == (try sha256sum(line)))
            #expect(field(entry, "SAFESPACE_PREV") == (try json(line)["prev"] as? String))
            #expect(field(entry, "SAFESPACE_AUDIT_FILE") == path)
            #expect(field(entry, "SYSLOG_IDENTIFIER") == "safespace-audit")
            #expect(field(entry, "MESSAGE_ID") == AuditJournal.messageID)
            #expect(
                field(entry, "MESSAGE")?.hasPrefix("\(records[i].type) \(records[i].outcome) sandbox=sb-journal")
                    == true)
        }
        #expect(field(entries[0], "SAFESPACE_CALLER_UID") == "1000")
        #expect(field(entries[0], "SAFESPACE_CALLER_PID") == "4242")
        #expect(field(entries[0], "SAFESPACE_LEVEL") == "standard")
        #expect(field(entries[1], "SAFESPACE_ARGV") == #"["python3","-c","print(\"hi\")\n"]"#)
        #expect(field(entries[1], "SAFESPACE_STDIN_SHA256") == String(repeating: "ab", count: 32))
        #expect(field(entries[2], "SAFESPACE_EXIT_CODE") == "0")
        #expect(field(entries[2], "SAFESPACE_DURATION_MS") == "37")
        #expect(field(entries[2], "SAFESPACE_OOM_KILLED") == "false")
        #expect(field(entries[2], "PRIORITY") == "6")
        #expect(field(entries[4], "PRIORITY") == "4")
        #expect(field(entries[4], "SAFESPACE_CALLER_UID") == "1001")
        #expect(field(entries[5], "SAFESPACE_CALLER_UID") == nil)
        #expect(field(entries[5], "SAFESPACE_REASON") == "error\nsecond line")

        // The CLI anchors the file's tail on these entries.
        let intact = try #require(seen.cliIntact, "\(cli) is not built: swift build --build-tests builds it")
        #expect(intact.status == 0, "\(intact)")
        #expect(
            intact.stdout.contains("6 lines, chain intact") && intact.stdout.contains("matches journald at line 6"),
            "\(intact)")
        let cut = try #require(seen.cliCut)
        #expect(cut.status == 1, "\(cut)")
        #expect(cut.stderr.contains("line 6: missing"), "\(cut)")

        // journald gone: the append still reaches the file; the failed send is counted.
        #expect(seen.failuresAfterStop.count == 1)
        #expect(
            [ECONNREFUSED, ENOENT].contains(seen.failuresAfterStop.lastErrno),
            "errno \(seen.failuresAfterStop.lastErrno)")
        #expect(seen.verifiedAfterStop == 7)
    }

    /// Runs in the namespace: no journald, then our journald, then none again.
    private static func exercise(path: String, records: [AuditRecord], cli: String, into seen: Observed) throws {
        do { _ = try AuditLog(path: path, journald: true) } catch { seen.initWithoutJournald = error }
        seen.sendWithoutJournald = AuditJournal.sendv([Array("MESSAGE=nobody listens".utf8)])

        let journald = Process()
        journald.executableURL = URL(fileURLWithPath: Self.journald)
        journald.standardOutput = FileHandle.nullDevice
        journald.standardError = FileHandle.nullDevice
        try journald.run()
        defer {
            if journald.isRunning { kill(journald.processIdentifier, SIGKILL) }
            journald.waitUntilExit()
        }
        guard eventually({ access(AuditJournal.socketPath, F_OK) == 0 }) else {
            throw AuditTestError("journald made no socket")
        }
        seen.sendWithJournald = AuditJournal.sendv([Array("MESSAGE=safespace audit test".utf8)])

        let log = try AuditLog(path: path, journald: true)
        for record in records { try log.append(record) }
        seen.failuresWhileUp = log.journalFailures.count
        _ = eventually {
            seen.entries = (try? journalEntries(path)) ?? []
            return seen.entries.count >= records.count
        }
        seen.entries.sort { Int(field($0, "SAFESPACE_SEQ") ?? "") ?? 0 < Int(field($1, "SAFESPACE_SEQ") ?? "") ?? 0 }
        seen.fileLines = try lines(of: path)

        if FileManager.default.isExecutableFile(atPath: cli) {
            seen.cliIntact = try run(cli, ["audit", "verify", "--journal", path])
            try write(lines: Array(seen.fileLines.dropLast()), to: path)
            seen.cliCut = try run(cli, ["audit", "verify", "--journal", path])
            try write(lines: seen.fileLines, to: path)
        }

        kill(journald.processIdentifier, SIGTERM)
        journald.waitUntilExit()
        let reopened = try AuditLog(path: path, journald: true)
        try reopened.append(
            AuditRecord(type: "sandbox.deleted", sandbox: "sb-journal", fields: ["reason": .string("shutdown")]))
        seen.failuresAfterStop = reopened.journalFailures
        seen.verifiedAfterStop = try AuditLog.verify(path: path)
    }

    /// `journalctl -o json SAFESPACE_AUDIT_FILE=path`, one object per entry.
    private static func journalEntries(_ path: String) throws -> [[String: Any]] {
        let out = try run("/usr/bin/journalctl", ["--no-pager", "-o", "json", "SAFESPACE_AUDIT_FILE=\(path)"])
        guard out.status == 0 else { return [] }
        return out.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }
}

/// A field of `journalctl -o json`: a string, or an array of bytes for a value it does not
/// print as text.
private func field(_ entry: [String: Any], _ name: String) -> String? {
    if let s = entry[name] as? String { return s }
    if let bytes = entry[name] as? [Int] { return String(decoding: bytes.map { UInt8($0) }, as: UTF8.self) }
    return nil
}

struct AuditTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 20 ms for up to 15 s (a bound against hanging, not a timing check).
func eventually(_ condition: () -> Bool) -> Bool {
    for _ in 0..<750 {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Runs `body` on a thread of its own in a new mount namespace where /run/systemd (or /run
/// when it has none), /run/log and /var/log/journal are empty tmpfs; the namespace ends with
/// the thread and the processes it started.
func inPrivateMountNamespace(_ body: @escaping @Sendable () throws -> Void) throws {
    let outcome = Mutex<String?>(nil)
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        defer { done.signal() }
        do {
            func check(_ r: Int32, _ what: String) throws {
                if r != 0 { throw AuditTestError("\(what): \(String(cString: strerror(errno)))") }
            }
            try check(ss_unshare(0x0002_0000 /* CLONE_NEWNS */), "unshare(CLONE_NEWNS)")
            try check(mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil), "mount --make-rprivate /")
            let dirs = access("/run/systemd", F_OK) == 0 ? ["/run/systemd", "/run/log"] : ["/run"]
            for dir in dirs + ["/var/log/journal"] where access(dir, F_OK) == 0 {
                try check(mount("tmpfs", dir, "tmpfs", 0, "mode=0755"), "mount tmpfs on \(dir)")
            }
            try body()
        } catch {
            outcome.withLock { $0 = "\(error)" }
        }
    }
    thread.start()
    done.wait()
    if let error = outcome.withLock({ $0 }) { throw AuditTestError(error) }
}
