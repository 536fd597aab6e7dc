/// `safespace audit verify FILE`: checks the hash chain of a safespaced audit log
/// (`audit tail`: AuditTailCommand.swift).
import ArgumentParser
import Audit
import Foundation

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Work with safespaced's audit log.",
        subcommands: [AuditTailCommand.self, AuditVerifyCommand.self])
}

struct AuditVerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check an audit log's hash chain.",
        discussion: """
            Each line of the log is a JSON object whose "prev" is the SHA-256 of the line \
            before (64 zeros on the first) and whose "seq" is its line number. verify reads the \
            file from the start and stops at the first line that breaks the chain: edited, \
            removed, reordered, or cut short. Exit status 0 when intact (the number of lines is \
            printed), 1 naming the first bad line, 125 when the file cannot be read.

            The chain alone cannot show lines cut off the end of the file or a rewritten last \
            line. --journal checks the file's tail against journald's copy of the records \
            (SAFESPACE_SEQ, SAFESPACE_LINE_SHA256 of the entries for this file); --anchor \
            SEQ:SHA256 checks it against a value kept elsewhere.
            """)

    @Argument(help: "The audit log (JSON lines), e.g. /var/log/safespace/audit.jsonl.")
    var file: String

    @Flag(help: "Also check the tail against journald's records of this file (journalctl).")
    var journal = false

    @Option(help: "Also check that line SEQ has this SHA-256 (SEQ:SHA256, as printed by verify).")
    var anchor: String?

    func validate() throws {
        if let anchor, AuditVerifyCommand.parseAnchor(anchor) == nil {
            throw ValidationError("--anchor: expected SEQ:SHA256 (a line number and 64 hex digits), got \(anchor)")
        }
        if journal && anchor != nil { throw ValidationError("--journal and --anchor: give one of them") }
    }

    func run() throws {
        let path = URL(fileURLWithPath: file).standardizedFileURL.path
        var expected = anchor.flatMap(Self.parseAnchor)
        if journal { expected = try Self.journalAnchor(for: path) }
        do {
            let head = try AuditLog.verifiedHead(path: path, anchor: expected)
            let count = head.seq
            var message = "\(file): \(count) line\(count == 1 ? "" : "s"), chain intact"
            if count > 0 { message += "; last line \(head.seq):\(head.sha256)" }
            if let expected { message += "; matches \(journal ? "journald" : "the anchor") at line \(expected.seq)" }
            print(message)
        } catch let error as AuditVerifyError {
            Diagnostics.error("\(file): \(error)")
            throw ExitCode(1)
        }
    }

    static func parseAnchor(_ text: String) -> AuditAnchor? {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let seq = Int64(parts[0]), seq > 0, parts[1].count == 64,
            parts[1].allSatisfy({ $0.isHexDigit && !$0.isUppercase })
        else { return nil }
        return AuditAnchor(seq: seq, sha256: String(parts[1]))
    }

    /// The record with the highest `SAFESPACE_SEQ` among journald's last entries for `path`.
    static func journalAnchor(for path: String) throws -> AuditAnchor {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/journalctl")
        process.arguments = ["--no-pager", "-o", "json", "-n", "100", "SAFESPACE_AUDIT_FILE=\(path)"]
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch { throw CLIError(.journal, "--journal: cannot run journalctl: \(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CLIError(
                .journal,
                "--journal: journalctl failed (\(process.terminationStatus)): \(errText.trimmingCharacters(in: .whitespacesAndNewlines))"
            )
        }
        var best: AuditAnchor?
        for line in data.split(separator: UInt8(ascii: "\n")) {
            guard let entry = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any],
                let seqText = entry["SAFESPACE_SEQ"] as? String, let seq = Int64(seqText),
                let sha = entry["SAFESPACE_LINE_SHA256"] as? String
            else { continue }
            if seq > (best?.seq ?? 0) { best = AuditAnchor(seq: seq, sha256: sha) }
        }
        guard let best else { throw CLIError(.journal, "--journal: journald has no audit records of \(path)") }
        return best
    }
}
