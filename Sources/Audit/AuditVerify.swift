import Foundation
import Glibc

/// The first line of a log that breaks its chain.
public struct AuditVerifyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 1-based line number in the file.
    public var line: Int
    public var reason: String

    public init(line: Int, reason: String) {
        self.line = line
        self.reason = reason
    }

    public var description: String { "line \(line): \(reason)" }
}

extension AuditLog {
    /// Checks a log's chain from its first line: each line is a JSON object ending in a
    /// newline, with `time`, `type`, `outcome`, `seq` equal to its line number, and `prev` the
    /// SHA-256 of the line before (64 zeros on line 1). An edited line breaks the next line's
    /// `prev`; a removed line, the `seq` after it; reordered lines, both; a line cut short
    /// has no newline or is no JSON. What a chain alone cannot show, lines cut off the end
    /// (or a rewritten last line), `verify(path:anchor:)` checks against an anchor kept
    /// elsewhere (journald).
    /// - Returns: the number of lines checked (0 for an empty file).
    /// - Throws: `AuditVerifyError` naming the first bad line; `AuditLogError.system` when the
    ///   file cannot be read.
    public static func verify(path: String) throws -> Int {
        try verifyChain(path: path).count
    }

    /// `verify(path:)`, then checks that line `anchor.seq` exists and hashes to
    /// `anchor.sha256` (the journald copy of the tail: `SAFESPACE_SEQ`, `SAFESPACE_LINE_SHA256`).
    /// - Throws: `AuditVerifyError` as `verify`, or naming the anchored line when the file has
    ///   fewer lines or another line there.
    public static func verify(path: String, anchor: AuditAnchor) throws -> Int {
        Int(try verifiedHead(path: path, anchor: anchor).seq)
    }

    /// Verifies the log (against `anchor` when given) and returns its last line's anchor:
    /// `seq` (the number of lines) and SHA-256; 0 and 64 zeros for an empty file.
    /// - Throws: as `verify(path:)` and `verify(path:anchor:)`.
    public static func verifiedHead(path: String, anchor: AuditAnchor? = nil) throws -> AuditAnchor {
        let result = try verifyChain(path: path, anchorSeq: anchor?.seq ?? 0)
        guard let anchor else { return result.head }
        if Int64(result.count) < anchor.seq {
            throw AuditVerifyError(
                line: result.count + 1,
                reason:
                    "missing: the file ends after line \(result.count), but the anchor records line \(anchor.seq) (lines were cut off the end)"
            )
        }
        if anchor.seq > 0, result.anchored != anchor.sha256 {
            throw AuditVerifyError(
                line: Int(anchor.seq),
                reason: "changed: its sha256 is \(result.anchored ?? "?"), but the anchor records \(anchor.sha256)")
        }
        return result.head
    }

    /// Walks the file; returns the lines checked, the last line's anchor and the hash of line
    /// `anchorSeq`.
    static func verifyChain(path: String, anchorSeq: Int64 = 0) throws -> (
        count: Int, head: AuditAnchor, anchored: String?
    ) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw AuditLogError.system(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var prev = AuditLine.genesis
        var lineNumber = 0
        var anchored: String?
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)

        func check(_ line: [UInt8]) throws {
            lineNumber += 1
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                throw AuditVerifyError(line: lineNumber, reason: "not a JSON object (edited, or cut short)")
            }
            for key in ["time", "type", "outcome", "prev"] where !(object[key] is String) {
                throw AuditVerifyError(line: lineNumber, reason: "no string \"\(key)\"")
            }
            guard let seq = (object["seq"] as? NSNumber)?.int64Value else {
                throw AuditVerifyError(line: lineNumber, reason: "no integer \"seq\"")
            }
            let linePrev = object["prev"] as! String
            if seq != Int64(lineNumber) {
                let what =
                    seq > Int64(lineNumber)
                    ? "lines before it were removed or moved"
                    : "lines were reordered or duplicated"
                throw AuditVerifyError(line: lineNumber, reason: "seq is \(seq), expected \(lineNumber): \(what)")
            }
            if linePrev != prev {
                if lineNumber == 1 {
                    throw AuditVerifyError(line: 1, reason: "prev is \(linePrev), but a log's first line has 64 zeros")
                }
                throw AuditVerifyError(
                    line: lineNumber - 1,
                    reason:
                        "changed (or lines after it removed): its sha256 is \(prev), but line \(lineNumber) records prev \(linePrev)"
                )
            }
            prev = AuditLine.sha256Hex(line)
            if seq == anchorSeq { anchored = prev }
        }

        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AuditLogError.system(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            var start = 0
            for i in 0..<n where buffer[i] == 0x0A {
                if pending.isEmpty {
                    try check(Array(buffer[start..<i]))
                } else {
                    pending += buffer[start..<i]
                    try check(pending)
                    pending = []
                }
                start = i + 1
            }
            pending += buffer[start..<n]
        }
        if !pending.isEmpty {
            throw AuditVerifyError(
                line: lineNumber + 1, reason: "no newline at the end: the line was cut short (truncated mid-line)")
        }
        return (lineNumber, AuditAnchor(seq: Int64(lineNumber), sha256: prev), anchored)
    }
}
