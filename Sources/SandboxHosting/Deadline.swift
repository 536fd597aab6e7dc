/// The timeout of a sandbox (`spec.timeout`) as a deadline on its wait, kept by the host library
/// itself so that every front end (the CLI, the daemon) gets it without a signal handler, a
/// timer or any state that outlives the wait.
import Foundation

/// A wait that may not outlast a deadline: `run` blocks in `wait`; if `timeout` passes first,
/// `expire` runs once (on a thread that lives as long as the wait) to make `wait` return.
enum Deadline {
    /// - Parameters:
    ///   - timeout: from now; nil waits without limit (no thread is started then).
    ///   - wait: blocks until the work ends; its result is returned.
    ///   - expire: ends the work (kills it); never runs after `run` has returned, and one that
    ///     began finishes before `run` returns.
    /// - Returns: what `wait` returned, and whether `expire` ran.
    /// - Throws: what `wait` throws.
    static func run<T>(timeout: Duration?, wait: () throws -> T, expire: @escaping @Sendable () -> Void) throws -> (
        result: T, expired: Bool
    ) {
        guard let timeout else { return (try wait(), false) }
        let watch = Watch()
        let waited = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            if waited.wait(timeout: .now() + Self.interval(timeout)) == .timedOut { watch.expire(expire) }
        }
        defer { waited.signal() }
        let result: T
        do { result = try wait() } catch {
            _ = watch.finish()
            throw error
        }
        return (result, watch.finish())
    }

    /// `duration` as a DispatchTimeInterval, clamped to what one holds (292 years).
    static func interval(_ duration: Duration) -> DispatchTimeInterval {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return .nanoseconds(0) }
        let (nanos, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return .nanoseconds(
            overflow ? Int.max : Int(clamping: nanos.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue))
    }

    /// Whether the wait ended first or the deadline did, decided under one lock.
    private final class Watch: @unchecked Sendable {
        private let lock = NSLock()
        private var finished = false
        private var expired = false

        /// Runs `expire` unless the wait has ended.
        func expire(_ expire: () -> Void) {
            lock.withLock {
                guard !finished else { return }
                expired = true
                expire()
            }
        }

        /// The wait has ended; returns whether the deadline came first.
        func finish() -> Bool {
            lock.withLock {
                finished = true
                return expired
            }
        }
    }
}
