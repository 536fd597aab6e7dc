import Foundation
import Testing

@testable import Audit

/// `safespace audit verify FILE` (the built binary).
@Suite("safespace audit verify")
struct AuditCLITests {
    let cli = buildDir + "/safespace"

    private func makeLog(_ dir: TempDir) throws -> (String, [[UInt8]]) {
        let path = dir.path + "/audit.jsonl"
        let log = try AuditLog(path: path, journald: false)
        for record in sampleRecords() { try log.append(record) }
        return (path, try lines(of: path))
    }

    @Test("exit 0 and the count for an intact log; 1 naming the first bad line for each kind of tampering")
    func verify() throws {
        try #require(FileManager.default.isExecutableFile(atPath: cli), "\(cli) is not built")
        let dir = try TempDir("audit-cli")
        defer { dir.remove() }
        let (path, all) = try makeLog(dir)
        let ok = try run(cli, ["audit", "verify", path])
        #expect(ok.status == 0, "\(ok)")
        #expect(ok.stdout == "\(path): 6 lines, chain intact; last line 6:\(try sha256sum(all[5]))\n", "\(ok)")

        var edited = all
        edited[1] = Array(
            String(decoding: edited[1], as: UTF8.self).replacingOccurrences(of: "python3", with: "python2").utf8)
        var removed = all
        removed.remove(at: 4)
        var reordered = all
        reordered.swapAt(0, 1)
        let cases: [(String, [[UInt8]], Bool, String)] = [
            ("edited", edited, true, "line 2: changed"),
            ("removed", removed, true, "line 5: seq is 6, expected 5"),
            ("reordered", reordered, true, "line 1: seq is 2, expected 1"),
            ("truncated", Array(all.prefix(4)) + [Array(all[4].prefix(20))], false, "line 5: no newline at the end"),
        ]
        for (name, content, newline, message) in cases {
            let file = dir.path + "/\(name).jsonl"
            try write(lines: content, to: file, finalNewline: newline)
            let out = try run(cli, ["audit", "verify", file])
            #expect(out.status == 1, "\(name): \(out)")
            #expect(out.stderr.contains("safespace: error: \(file): \(message)"), "\(name): \(out)")
            #expect(out.stdout.isEmpty, "\(name): \(out)")
        }
    }

    @Test("--anchor checks the tail; bad arguments and unreadable files are errors of their own")
    func anchorAndErrors() throws {
        try #require(FileManager.default.isExecutableFile(atPath: cli), "\(cli) is not built")
        let dir = try TempDir("audit-cli")
        defer { dir.remove() }
        let (path, all) = try makeLog(dir)
        let anchor = "6:\(try sha256sum(all[5]))"
        let ok = try run(cli, ["audit", "verify", "--anchor", anchor, path])
        #expect(ok.status == 0 && ok.stdout.contains("matches the anchor at line 6"), "\(ok)")

        try write(lines: Array(all.prefix(5)), to: path)
        let cut = try run(cli, ["audit", "verify", "--anchor", anchor, path])
        #expect(cut.status == 1 && cut.stderr.contains("line 6: missing"), "\(cut)")

        let badAnchor = try run(cli, ["audit", "verify", "--anchor", "6:xyz", path])
        #expect(
            badAnchor.status != 0 && badAnchor.status != 1
                && badAnchor.stderr.contains("--anchor: expected SEQ:SHA256"), "\(badAnchor)")
        let missing = try run(cli, ["audit", "verify", dir.path + "/nope.jsonl"])
        #expect(missing.status == 125 && missing.stderr.contains("No such file"), "\(missing)")
    }
}
