import Foundation
import Glibc

/// The position of a line in the chain, for anchoring a log's tail outside the file.
public struct AuditAnchor: Sendable, Equatable {
    /// The line's `seq` (1-based); 0 for an empty log.
    public var seq: Int64
    /// SHA-256 (hex) of the line's bytes without its newline; 64 zeros for an empty log.
    public var sha256: String

    public init(seq: Int64, sha256: String) {
        self.seq = seq
        self.sha256 = sha256
    }
}

/// Reading the end of a log to continue its chain.
enum AuditTail {
    /// The file size, the hash of the last line and its `seq`. A torn last line (no newline)
    /// is ended with one first. The `seq` of a last line that does not parse is the `seq` of
    /// the line before plus one (or 0 when that does not parse either: the chain is broken
    /// there and `verify` says so).
    static func read(fd: Int32, path: String) throws -> (end: off_t, prev: String, seq: Int64) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw AuditLogError.system(operation: "fstat", path: path, errno: errno) }
        var size = st.st_size
        if size == 0 { return (0, AuditLine.genesis, 0) }
        let last = try pread(fd, at: size - 1, count: 1, path: path)
        if last != [0x0A] {
            // A torn line: end it, so the next record starts on a line of its own.
            guard Glibc.write(fd, [UInt8(0x0A)], 1) == 1 else {
                throw AuditLogError.system(operation: "write", path: path, errno: errno)
            }
            size += 1
        }
        let (line, start) = try lineEnding(at: size - 1, fd: fd, path: path)
        var seq = seqOf(line)
        if seq == nil, start > 0 {
            let (before, _) = try lineEnding(at: start - 1, fd: fd, path: path)
            seq = seqOf(before).map { $0 + 1 }
        }
        return (size, AuditLine.sha256Hex(line), seq ?? 0)
    }

    /// The line whose newline is at `newline` (without it), and its start offset.
    static func lineEnding(at newline: off_t, fd: Int32, path: String) throws -> ([UInt8], off_t) {
        var start = newline
        var chunks: [[UInt8]] = []
        let chunkSize: off_t = 64 * 1024
        while start > 0 {
            let from = max(0, start - chunkSize)
            let chunk = try pread(fd, at: from, count: Int(start - from), path: path)
            if let i = chunk.lastIndex(of: 0x0A) {
                chunks.append(Array(chunk[(i + 1)...]))
                start = from + off_t(i + 1)
                break
            }
            chunks.append(chunk)
            start = from
        }
        return (Array(chunks.reversed().joined()), start)
    }

    static func pread(_ fd: Int32, at offset: off_t, count: Int, path: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer[done...].withUnsafeMutableBytes {
                Glibc.pread(fd, $0.baseAddress, $0.count, offset + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw AuditLogError.system(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return Array(buffer[..<done])
    }

    static func seqOf(_ line: [UInt8]) -> Int64? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
            let seq = object["seq"] as? NSNumber
        else { return nil }
        return seq.int64Value
    }
}
