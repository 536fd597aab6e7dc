import Foundation
import Glibc
import Synchronization
import Testing

@testable import Audit

@Suite("AuditLog: appending")
struct AuditLogTests {
    @Test(
        "each record is one JSON line with time, seq, type, sandbox, caller, outcome, fields and prev chained by SHA-256"
    )
    func lineFormat() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        let log = try AuditLog(path: path, journald: false)
        for record in sampleRecords() { try log.append(record) }

        let all = try lines(of: path)
        #expect(all.count == 6)
        var prev = String(repeating: "0", count: 64)
        for (i, line) in all.enumerated() {
            let object = try json(line)
            #expect(object["seq"] as? Int == i + 1)
            #expect(object["prev"] as? String == prev, "line \(i + 1)")
            let time = try #require(object["time"] as? String)
            #expect(
                time.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil, "RFC 3339 UTC with ms: \(time)")
            prev = try sha256sum(line)
        }
        #expect(log.head == AuditAnchor(seq: 6, sha256: prev))
        // Keys in a fixed order, fields sorted, prev last; strings escaped.
        let text = String(decoding: all[1], as: UTF8.self)
        #expect(text.hasPrefix("{\"time\":\""))
        #expect(
            text.contains(
                ",\"seq\":2,\"type\":\"exec.started\",\"sandbox\":\"sb-1\",\"caller\":{\"uid\":1000,\"pid\":4242},\"outcome\":\"ok\",\"argv\":[\"python3\",\"-c\",\"print(\\\"hi\\\")\\n\"],\"stdinSHA256\":\""
            ))
        #expect(text.hasSuffix(",\"prev\":\"\(try sha256sum(all[0]))\"}"))
        let finished = try json(all[2])
        #expect(finished["exitCode"] as? Int == 0)
        #expect(finished["durationMs"] as? Int == 37)
        #expect(finished["oomKilled"] as? Bool == false)
        let caller = try #require(finished["caller"] as? [String: Any])
        #expect(caller["uid"] as? Int == 1000 && caller["pid"] as? Int == 4242)
        // The daemon's own action: no caller.
        let deleted = try json(all[5])
        #expect(deleted["caller"] is NSNull)
        #expect(deleted["reason"] as? String == "timeout")
        #expect(try json(all[4])["outcome"] as? String == "denied")
        #expect(try AuditLog.verify(path: path) == 6)
    }

    @Test("reopening continues the chain and the sequence")
    func reopen() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        do {
            let log = try AuditLog(path: path, journald: false)
            for record in sampleRecords().prefix(3) { try log.append(record) }
        }
        let log = try AuditLog(path: path, journald: false)
        let before = try lines(of: path)
        #expect(log.head == AuditAnchor(seq: 3, sha256: try sha256sum(before[2])))
        for record in sampleRecords().suffix(3) { try log.append(record) }
        #expect(try AuditLog.verify(path: path) == 6)
        let after = try lines(of: path)
        #expect(try json(after[3])["prev"] as? String == (try sha256sum(before[2])))
        #expect(try json(after[3])["seq"] as? Int == 4)
    }

    @Test(
        "incremental_async: appends are in the file when append returns, the chain verifies, flush syncs, and the log's thread ends with it"
    )
    func incrementalAsync() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        weak var gone: AuditLog?
        do {
            let log = try AuditLog(
                path: path, journald: false, sync: .incrementalAsync(records: 4, interval: .milliseconds(20)))
            gone = log
            for (i, record) in sampleRecords().enumerated() {
                try log.append(record)
                #expect(try lines(of: path).count == i + 1)
            }
            try log.flush()
            // Past the interval: the thread has synced the rest (no failures).
            Thread.sleep(forTimeInterval: 0.1)
            #expect(log.syncFailures.count == 0)
        }
        #expect(gone == nil, "the log (and its syncing thread) outlived its last reference")
        #expect(try AuditLog.verify(path: path) == sampleRecords().count)
    }

    @Test("concurrent appends from many threads, and from two open logs on one file, keep one valid chain")
    func concurrentAppends() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        // Two AuditLogs on one file: two open file descriptions, as two processes would have,
        // serialized by flock and each re-reading the tail the other wrote.
        let logs = [
            try AuditLog(path: path, journald: false, sync: .none),
            try AuditLog(path: path, journald: false, sync: .none),
        ]
        let threads = 16
        let perThread = 200
        let failures = Mutex<[String]>([])
        let group = DispatchGroup()
        for t in 0..<threads {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                for i in 0..<perThread {
                    do {
                        try logs[t % 2].append(
                            AuditRecord(
                                type: "exec.finished", sandbox: "sb-\(t)", callerUID: UInt32(t), callerPID: Int32(i),
                                fields: ["exitCode": .int(Int64(i))]))
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            thread.start()
        }
        group.wait()
        #expect(failures.withLock { $0 } == [])
        #expect(try AuditLog.verify(path: path) == threads * perThread)
        // Every record is there once.
        var seen = Set<String>()
        for line in try lines(of: path) {
            let o = try json(line)
            seen.insert("\(o["sandbox"] as? String ?? "")/\((o["caller"] as? [String: Any])?["pid"] as? Int ?? -1)")
        }
        #expect(seen.count == threads * perThread)
    }

    @Test("appends with fdatasync (the default) from several threads")
    func concurrentSyncedAppends() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        let log = try AuditLog(path: path, journald: false)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<25 {
                try? log.append(AuditRecord(type: "file.read", sandbox: "s\(t)", fields: ["bytes": .int(Int64(i))]))
            }
        }
        #expect(try AuditLog.verify(path: path) == 200)
    }

    @Test("a torn last line (crash mid-write) is ended on open, chained from, and reported by verify")
    func tornTail() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        do {
            let log = try AuditLog(path: path, journald: false)
            for record in sampleRecords().prefix(3) { try log.append(record) }
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("{\"time\":\"2026-".utf8))
        try handle.close()
        #expect(throws: AuditVerifyError.self) { try AuditLog.verify(path: path) }

        let log = try AuditLog(path: path, journald: false)
        try log.append(AuditRecord(type: "sandbox.deleted", sandbox: "sb-1", fields: ["reason": .string("shutdown")]))
        let all = try lines(of: path)
        #expect(all.count == 5)
        #expect(try json(all[4])["prev"] as? String == (try sha256sum(Array("{\"time\":\"2026-".utf8))))
        #expect(try json(all[4])["seq"] as? Int == 5)
        do {
            _ = try AuditLog.verify(path: path)
            Issue.record("verify accepted a log with a torn line")
        } catch let error as AuditVerifyError {
            #expect(error.line == 4)
            #expect(error.reason.contains("not a JSON object"))
        }
    }

    @Test(
        "bad records are refused, naming the field, and nothing is written",
        arguments: [
            (AuditRecord(type: "Exec.Started"), "type"),
            (AuditRecord(type: "exec..started"), "type"),
            (AuditRecord(type: ""), "type"),
            (AuditRecord(type: "exec.started", outcome: "maybe"), "outcome"),
            (AuditRecord(type: "exec.started", fields: ["prev": .string("x")]), "fields.prev"),
            (AuditRecord(type: "exec.started", fields: ["seq": .int(1)]), "fields.seq"),
            (AuditRecord(type: "exec.started", fields: ["exit code": .int(1)]), "fields.exit code"),
            (AuditRecord(type: "exec.started", fields: ["_x": .int(1)]), "fields._x"),
        ])
    func invalidRecords(record: AuditRecord, field: String) throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/audit.jsonl"
        let log = try AuditLog(path: path, journald: false)
        do {
            try log.append(record)
            Issue.record("accepted \(record)")
        } catch let AuditLogError.invalidRecord(got, _) {
            #expect(got == field)
        }
        #expect(try lines(of: path).isEmpty)
        #expect(log.head.seq == 0)
    }

    @Test("creates the directory 0750 and the file 0640; refuses a symlink and a directory")
    func permissionsAndPaths() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.path + "/log/safespace/audit.jsonl"
        let old = umask(0o022)
        defer { umask(old) }
        _ = try AuditLog(path: path, journald: false)
        var st = stat()
        #expect(stat(dir.path + "/log/safespace", &st) == 0 && st.st_mode & 0o7777 == 0o750)
        #expect(stat(path, &st) == 0 && st.st_mode & 0o7777 == 0o640)
        // An existing file keeps the mode its owner gave it.
        chmod(path, 0o600)
        _ = try AuditLog(path: path, journald: false)
        #expect(stat(path, &st) == 0 && st.st_mode & 0o7777 == 0o600)

        symlink(path, dir.path + "/link.jsonl")
        #expect(throws: AuditLogError.notRegularFile(path: dir.path + "/link.jsonl")) {
            try AuditLog(path: dir.path + "/link.jsonl", journald: false)
        }
        #expect(throws: AuditLogError.self) { try AuditLog(path: dir.path + "/log", journald: false) }
        // The path is made absolute and standard (it names the file in the journal).
        #expect(try AuditLog(path: dir.path + "/./log/../rel.jsonl", journald: false).path == dir.path + "/rel.jsonl")
    }

    @Test("journal field names: camelCase to UPPER_SNAKE")
    func journalNames() {
        #expect(AuditJournal.journalName("exitCode") == "EXIT_CODE")
        #expect(AuditJournal.journalName("stdinSHA256") == "STDIN_SHA256")
        #expect(AuditJournal.journalName("durationMs") == "DURATION_MS")
        #expect(AuditJournal.journalName("sha256Sum") == "SHA256_SUM")
        #expect(AuditJournal.journalName("oom_killed") == "OOM_KILLED")
        #expect(AuditJournal.journalName("path") == "PATH")
    }
}
