import Foundation
import Glibc
import Synchronization

/// Errors of `AuditLog`.
public enum AuditLogError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The record has a bad field (`type`, `outcome`, `fields.NAME`).
    case invalidRecord(field: String, reason: String)
    /// A system call on the log failed: `operation` (open, flock, write, fdatasync, ...), the
    /// path and the errno.
    case system(operation: String, path: String, errno: Int32)
    /// The path names something else than a regular file (a symlink is refused: `O_NOFOLLOW`).
    case notRegularFile(path: String)
    /// `journald: true`, but journald's socket (`/run/systemd/journal/socket`) does not exist.
    case journalUnavailable(socket: String)

    public var description: String {
        switch self {
        case .invalidRecord(let field, let reason): "audit record: \(field): \(reason)"
        case .system(let op, let path, let e): "audit log \(path): \(op): \(String(cString: strerror(e)))"
        case .notRegularFile(let path): "audit log \(path): not a regular file"
        case .journalUnavailable(let socket):
            "journald is not running (no \(socket)); set journald off or start systemd-journald"
        }
    }
}

/// An append-only, hash-chained audit log: one JSON object per line (see `AuditLine`), each
/// carrying `prev`, the SHA-256 (hex) of the previous line's bytes without its newline
/// (genesis: 64 zeros), and `seq`, its 1-based position; so an edited, removed, reordered or
/// truncated line is found by `verify`. Optionally each record also goes to journald with
/// structured fields (`SAFESPACE_*`, see `AuditJournal`), which anchors the file's tail.
///
/// Thread-safe: appends are serialized by a mutex, and across processes by `flock(LOCK_EX)`
/// on the file, re-reading the tail when another writer appended; so two processes may share
/// one log and the chain stays valid.
///
/// Durability: with `Sync.eachRecord` (the default) `append` returns after `fdatasync(2)`,
/// so a record the caller has been told about survives a crash or power loss; `Sync.none`
/// leaves the write-back to the kernel (a crash loses the last seconds, never the chain: a
/// torn last line is reported by `verify` and ended by the next `init`).
public final class AuditLog: Sendable {
    /// When appended bytes reach the disk.
    public enum Sync: Sendable, Equatable {
        /// `fdatasync` before `append` returns (auditd.conf(5) `flush = data`).
        case eachRecord
        /// Left to the kernel's write-back (`flush = none`).
        case none
        /// `fdatasync` by a thread of the log, once `records` records are pending or `interval`
        /// after the first pending one (`flush = incremental_async` with `freq = records`, plus a
        /// time bound); `append` does not wait for the disk. A crash of the writing process
        /// loses nothing (the bytes are in the page cache); a kernel crash or power loss loses
        /// at most that window. `flush()` syncs at once (say, at shutdown).
        case incrementalAsync(records: Int, interval: Duration)
    }

    private struct State {
        var fd: Int32
        /// File size after our last append (or the tail read); another size means another
        /// writer appended (or the file was truncated): the tail is read again.
        var end: off_t
        var prev: String
        var seq: Int64
    }

    /// The log's path, made absolute (it names the file in the journal's
    /// `SAFESPACE_AUDIT_FILE`).
    public let path: String
    /// Whether records also go to journald.
    public let journald: Bool
    public let sync: Sync
    private let state: Mutex<State>
    private let journalStats = Mutex<(failures: Int, lastErrno: Int32)>((0, 0))
    /// The syncing thread of `Sync.incrementalAsync`.
    private let flusher: AuditFlusher?

    /// Opens (or creates) the log at `path` to append to, continuing its chain.
    ///
    /// Creates the parent directory (mode 0750) and the file (0640) when missing; opens with
    /// `O_APPEND|O_CLOEXEC|O_NOFOLLOW`; reads the last line for `prev` and `seq`. A torn last
    /// line (no newline: a crash mid-write) is ended with a newline and chained from as it is,
    /// so `verify` still names it.
    /// - Parameters:
    ///   - path: the log file, e.g. `/var/log/safespace/audit.jsonl`.
    ///   - journald: also send each record to journald (`sd_journal_sendv`).
    ///   - sync: when appends reach the disk (default: `fdatasync` each record).
    /// - Throws: `AuditLogError.system` (mkdir, open, fstat, flock, pread), `.notRegularFile`,
    ///   `.journalUnavailable` when `journald` and journald's socket is missing.
    public convenience init(path: String, journald: Bool) throws {
        try self.init(path: path, journald: journald, sync: .eachRecord)
    }

    public init(path: String, journald: Bool, sync: Sync) throws {
        let path = URL(fileURLWithPath: path).standardizedFileURL.path
        self.path = path
        self.journald = journald
        self.sync = sync
        if journald, access(AuditJournal.socketPath, F_OK) != 0 {
            throw AuditLogError.journalUnavailable(socket: AuditJournal.socketPath)
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, access(parent, F_OK) != 0 {
            do {
                try FileManager.default.createDirectory(
                    atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
            } catch {
                throw AuditLogError.system(operation: "mkdir \(parent)", path: path, errno: errno == 0 ? EACCES : errno)
            }
        }
        var created = true
        var fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_CREAT | O_EXCL, 0o640)
        if fd < 0 && errno == EEXIST {
            created = false
            fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
        }
        guard fd >= 0 else {
            let e = errno
            throw e == ELOOP
                ? AuditLogError.notRegularFile(path: path)
                : AuditLogError.system(operation: "open", path: path, errno: e)
        }
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw AuditLogError.system(operation: "fstat", path: path, errno: errno) }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw AuditLogError.notRegularFile(path: path) }
            // The umask may have cleared bits of 0640; a file we created gets exactly 0640.
            if created { _ = fchmod(fd, 0o640) }
            try Self.lock(fd, path)
            defer { _ = flock(fd, LOCK_UN) }
            let tail = try AuditTail.read(fd: fd, path: path)
            if case .incrementalAsync(let records, let interval) = sync {
                flusher = try AuditFlusher(fd: fd, path: path, records: records, interval: interval)
            } else {
                flusher = nil
            }
            state = Mutex(State(fd: fd, end: tail.end, prev: tail.prev, seq: tail.seq))
        } catch {
            close(fd)
            throw error
        }
    }

    deinit {
        flusher?.stop()
        state.withLock { _ = close($0.fd) }
    }

    /// Syncs what was appended (`fdatasync(2)`) before returning, whatever the `sync` mode.
    /// - Throws: `AuditLogError.system` (fdatasync).
    public func flush() throws {
        let failed: Int32 =
            flusher?.flush() ?? state.withLock { fdatasync($0.fd) == 0 ? 0 : errno }
        if failed != 0 { throw AuditLogError.system(operation: "fdatasync", path: path, errno: failed) }
    }

    /// Background syncs (`Sync.incrementalAsync`) that failed since `init`, and the errno of
    /// the last failure.
    public var syncFailures: (count: Int, lastErrno: Int32) { flusher?.syncFailures ?? (0, 0) }

    /// Appends `record` as one line: `{"time":…,"seq":…,"type":…,"sandbox":…,"caller":{"uid":…,
    /// "pid":…},"outcome":…,<fields sorted by name>,"prev":…}` and, when `journald`, sends it
    /// to journald (after the file, outside the lock; a journald failure does not fail the
    /// append but is counted in `journalFailures`).
    /// - Throws: `AuditLogError.invalidRecord` (nothing written), `.system` (flock, fstat,
    ///   pread, write, fdatasync; a partly written line is cut off again with `ftruncate`).
    public func append(_ record: AuditRecord) throws {
        try record.validate()
        let written: (line: [UInt8], seq: Int64, hash: String) = try state.withLock { state in
            try Self.lock(state.fd, path)
            defer { _ = flock(state.fd, LOCK_UN) }
            var st = stat()
            guard fstat(state.fd, &st) == 0 else {
                throw AuditLogError.system(operation: "fstat", path: path, errno: errno)
            }
            if st.st_size != state.end {
                // Another writer appended, or the file was cut: continue from what is there.
                let tail = try AuditTail.read(fd: state.fd, path: path)
                (state.end, state.prev, state.seq) = (tail.end, tail.prev, tail.seq)
            }
            let seq = state.seq + 1
            let line = AuditLine.encode(record, time: AuditLine.now(), seq: seq, prev: state.prev)
            try Self.writeAll(state.fd, line + [0x0A], path: path, restoreTo: state.end)
            if sync == .eachRecord, fdatasync(state.fd) != 0 {
                throw AuditLogError.system(operation: "fdatasync", path: path, errno: errno)
            }
            flusher?.appended()
            let hash = AuditLine.sha256Hex(line)
            state.end += off_t(line.count + 1)
            state.prev = hash
            state.seq = seq
            return (line, seq, hash)
        }
        if journald {
            let r = AuditJournal.send(record, line: written.line, seq: written.seq, hash: written.hash, file: path)
            if r < 0 {
                journalStats.withLock {
                    $0.failures += 1
                    $0.lastErrno = -r
                }
            }
        }
    }

    /// Records whose journald send failed since `init`, and the errno of the last failure.
    public var journalFailures: (count: Int, lastErrno: Int32) {
        journalStats.withLock { ($0.failures, $0.lastErrno) }
    }

    /// `seq` and SHA-256 (hex) of the last line appended or found: the anchor to keep
    /// elsewhere (journald has it as `SAFESPACE_SEQ`/`SAFESPACE_LINE_SHA256`) to detect a cut
    /// tail with `verify(path:anchor:)`.
    public var head: AuditAnchor {
        state.withLock { AuditAnchor(seq: $0.seq, sha256: $0.prev) }
    }

    private static func lock(_ fd: Int32, _ path: String) throws {
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw AuditLogError.system(operation: "flock", path: path, errno: errno) }
        }
    }

    /// write(2) until all is written; on an error after a partial write the file is cut back
    /// to `restoreTo`, so no torn line stays behind.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String, restoreTo end: off_t) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if offset > 0 { _ = ftruncate(fd, end) }
                throw AuditLogError.system(operation: "write", path: path, errno: e)
            }
            offset += n
        }
    }
}
