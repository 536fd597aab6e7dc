import Foundation
import Glibc

/// The background `fdatasync(2)` of an `AuditLog` in `Sync.incrementalAsync` mode (auditd.conf(5)
/// `flush = incremental_async`: appends do not wait for the disk; a thread syncs once `records`
/// records are pending, or `interval` after the first pending one, whichever comes first).
///
/// Loss window: records are in the page cache once `append` returns, so the daemon's own crash
/// (SIGKILL included) loses nothing; a kernel crash or power loss loses at most the records of
/// the last `interval` (or `records` records). The hash chain is never broken by it: a torn
/// last line is found by `verify` and ended by the next `AuditLog.init`.
final class AuditFlusher: @unchecked Sendable {
    /// A duplicate of the log's descriptor (the same open file), owned by the flusher.
    private let fd: Int32
    private let records: Int
    private let interval: Duration
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var pending = 0
    private var stopping = false
    private var stopped = false
    private var failures = 0
    private var lastErrno: Int32 = 0

    /// - Throws: `AuditLogError.system` when the descriptor cannot be duplicated.
    init(fd logFD: Int32, path: String, records: Int, interval: Duration) throws {
        let copy = fcntl(logFD, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else {
            throw AuditLogError.system(operation: "fcntl(F_DUPFD_CLOEXEC)", path: path, errno: errno)
        }
        fd = copy
        self.records = max(1, records)
        self.interval = interval
        let thread = Thread { [self] in run() }
        thread.name = "audit-flush"
        thread.start()
    }

    deinit { close(fd) }

    /// One more record was written.
    func appended() {
        condition.lock()
        pending += 1
        if pending == 1 || pending >= records { condition.signal() }
        condition.unlock()
    }

    /// Syncs now, on the caller's thread.
    /// - Returns: 0, or the errno of `fdatasync`.
    @discardableResult
    func flush() -> Int32 {
        condition.lock()
        pending = 0
        condition.unlock()
        return fdatasync(fd) == 0 ? 0 : errno
    }

    /// `fdatasync` calls of the thread that failed, and the errno of the last.
    var syncFailures: (count: Int, lastErrno: Int32) {
        condition.lock()
        defer { condition.unlock() }
        return (failures, lastErrno)
    }

    /// Ends the thread after a last sync of what is pending; waits for it.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    private func run() {
        condition.lock()
        while true {
            while pending == 0 && !stopping { condition.wait() }
            if pending == 0 && stopping { break }
            // The first pending record: wait for more, at most `interval`.
            let deadline = Date(
                timeIntervalSinceNow: Double(interval.components.seconds)
                    + Double(interval.components.attoseconds) / 1e18)
            while pending < records && !stopping && condition.wait(until: deadline) {}
            pending = 0
            condition.unlock()
            let failed = fdatasync(fd) != 0 ? errno : 0
            condition.lock()
            if failed != 0 {
                failures += 1
                lastErrno = failed
            }
        }
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}
