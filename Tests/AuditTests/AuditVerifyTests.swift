import Foundation
import Testing

@testable import Audit

@Suite("AuditLog.verify: tampering is found")
struct AuditVerifyTests {
    /// A log of 6 records; returns its path and lines.
    private func makeLog(_ dir: TempDir) throws -> (String, [[UInt8]]) {
        let path = dir.path + "/audit.jsonl"
        let log = try AuditLog(path: path, journald: false)
        for record in sampleRecords() { try log.append(record) }
        return (path, try lines(of: path))
    }

    private func expectBroken(
        _ path: String, line: Int, _ reason: String, anchor: AuditAnchor? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        do {
            let count = try anchor.map { try AuditLog.verify(path: path, anchor: $0) } ?? AuditLog.verify(path: path)
            Issue.record("verify accepted a tampered log (\(count) lines)", sourceLocation: sourceLocation)
        } catch let error as AuditVerifyError {
            #expect(error.line == line, "\(error)", sourceLocation: sourceLocation)
            #expect(error.reason.contains(reason), "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    private func replacing(_ line: [UInt8], _ old: String, _ new: String) -> [UInt8] {
        Array(String(decoding: line, as: UTF8.self).replacingOccurrences(of: old, with: new).utf8)
    }

    @Test("an intact log verifies; an empty one has 0 lines")
    func intact() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let (path, all) = try makeLog(dir)
        #expect(try AuditLog.verify(path: path) == 6)
        #expect(try AuditLog.verify(path: path, anchor: AuditAnchor(seq: 6, sha256: try sha256sum(all[5]))) == 6)
        #expect(try AuditLog.verify(path: path, anchor: AuditAnchor(seq: 3, sha256: try sha256sum(all[2]))) == 6)
        _ = FileManager.default.createFile(atPath: dir.path + "/empty.jsonl", contents: nil)
        #expect(try AuditLog.verify(path: dir.path + "/empty.jsonl") == 0)
        #expect(throws: AuditLogError.self) { try AuditLog.verify(path: dir.path + "/missing.jsonl") }
    }

    @Test("an edited line: the next line's prev no longer matches; the edited line is named")
    func edited() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all[2] = replacing(all[2], "\"exitCode\":0", "\"exitCode\":1")
        try write(lines: all, to: path)
        expectBroken(path, line: 3, "changed")
    }

    @Test("a line edited so that it is no JSON any more")
    func garbled() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all[3] = Array(all[3].dropLast(5))
        try write(lines: all, to: path)
        expectBroken(path, line: 4, "not a JSON object")
    }

    @Test("a removed line: the sequence jumps where it was")
    func removed() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.remove(at: 2)
        try write(lines: all, to: path)
        expectBroken(path, line: 3, "seq is 4, expected 3")
    }

    @Test("a removed first line")
    func removedFirst() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.removeFirst()
        try write(lines: all, to: path)
        expectBroken(path, line: 1, "seq is 2, expected 1")
    }

    @Test("a removed line whose successors were renumbered: the prev chain breaks")
    func removedAndRenumbered() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.remove(at: 2)
        for i in 2..<all.count { all[i] = replacing(all[i], "\"seq\":\(i + 2),", "\"seq\":\(i + 1),") }
        try write(lines: all, to: path)
        expectBroken(path, line: 2, "changed")
    }

    @Test("reordered lines")
    func reordered() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.swapAt(3, 4)
        try write(lines: all, to: path)
        expectBroken(path, line: 4, "seq is 5, expected 4")
    }

    @Test("a duplicated line")
    func duplicated() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.insert(all[1], at: 2)
        try write(lines: all, to: path)
        expectBroken(path, line: 3, "seq is 2, expected 3")
    }

    @Test("truncated mid-line: at the end, and in the middle")
    func truncatedMidLine() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let (path, all) = try makeLog(dir)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes.removeLast(10)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        expectBroken(path, line: 6, "cut short")

        let cut = all[0].count + 1 + all[1].count + 1 + all[2].count / 2
        try Data(Array(bytes.prefix(cut))).write(to: URL(fileURLWithPath: path))
        expectBroken(path, line: 3, "cut short")
    }

    @Test("a line inserted at the end that is not part of the chain")
    func appendedForgery() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.append(replacing(all[5], "\"seq\":6", "\"seq\":7"))
        try write(lines: all, to: path)
        expectBroken(path, line: 6, "changed")
    }

    @Test("an empty line, and a first line whose prev is not the genesis")
    func emptyLineAndGenesis() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        all.insert([], at: 2)
        try write(lines: all, to: path)
        expectBroken(path, line: 3, "not a JSON object")

        all.remove(at: 2)
        all[0] = replacing(all[0], String(repeating: "0", count: 64), String(repeating: "1", count: 64))
        try write(lines: all, to: path)
        expectBroken(path, line: 1, "64 zeros")
    }

    @Test("lines cut off the end, or a rewritten last line: the chain alone accepts them, the anchor does not")
    func tail() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var (path, all) = try makeLog(dir)
        let anchor = AuditAnchor(seq: 6, sha256: try sha256sum(all[5]))
        let full = all

        all.removeLast(2)
        try write(lines: all, to: path)
        #expect(try AuditLog.verify(path: path) == 4)
        expectBroken(path, line: 5, "cut off the end", anchor: anchor)

        all = full
        all[5] = replacing(all[5], "\"timeout\"", "\"request\"")
        try write(lines: all, to: path)
        #expect(try AuditLog.verify(path: path) == 6)
        expectBroken(path, line: 6, "changed", anchor: anchor)
    }
}
