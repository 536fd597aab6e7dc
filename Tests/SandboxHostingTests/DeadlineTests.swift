import Foundation
import Glibc
import Testing

@testable import SandboxHosting

/// `Deadline`, the timeout of `PreparedSandbox.wait(timeout:)`, on a plain child process: what
/// outlives its timeout is killed and reaped, what ends first is left alone, and nothing of the
/// deadline outlives the wait. (A sandbox past its timeout, end to end: RuntimeIntegrationTests'
/// SandboxTimeoutTests.)
@Suite struct DeadlineTests {
    /// A child running `args` (posix_spawn), to be reaped by `reap`.
    static func spawn(_ args: [String]) throws -> pid_t {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let rc = posix_spawn(&pid, args[0], nil, nil, argv, environ)
        try #require(rc == 0, "posix_spawn \(args): \(rc)")
        return pid
    }

    /// waitpid(2); the exit code, or 128+N after signal N.
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) != 0 ? 128 + (status & 0x7f) : (status >> 8) & 0xff
    }

    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var isSet: Bool { lock.withLock { value } }
        func set() { lock.withLock { value = true } }
    }

    @Test("a process past its timeout is killed: the wait ends with SIGKILL's status, expired")
    func pastTheTimeout() throws {
        let pid = try Self.spawn(["/bin/sleep", "60"])
        let (status, expired) = try Deadline.run(timeout: .milliseconds(300), wait: { Self.reap(pid) }) {
            _ = kill(pid, SIGKILL)
        }
        #expect(expired)
        #expect(status == 128 + SIGKILL)
        // Reaped: no child of ours any more.
        var rest: Int32 = 0
        #expect(waitpid(pid, &rest, WNOHANG) < 0 && errno == ECHILD)
    }

    @Test("a process that ends first is not killed, and the deadline never fires after the wait")
    func endsFirst() throws {
        let pid = try Self.spawn(["/bin/sh", "-c", "exit 3"])
        let fired = Flag()
        let (status, expired) = try Deadline.run(timeout: .milliseconds(300), wait: { Self.reap(pid) }) { fired.set() }
        #expect(!expired && status == 3)
        usleep(600_000)
        #expect(!fired.isSet)
    }

    @Test("without a timeout the wait has no deadline")
    func noTimeout() throws {
        let pid = try Self.spawn(["/bin/true"])
        let (status, expired) = try Deadline.run(timeout: nil, wait: { Self.reap(pid) }) {
            Issue.record("expired without a timeout")
        }
        #expect(!expired && status == 0)
    }

    @Test("a wait that fails is rethrown, and its deadline never fires")
    func failedWait() throws {
        struct Failed: Error {}
        let fired = Flag()
        #expect(throws: Failed.self) {
            _ = try Deadline.run(timeout: .milliseconds(200), wait: { () throws -> Int32 in throw Failed() }) {
                fired.set()
            }
        }
        usleep(500_000)
        #expect(!fired.isSet)
    }

    @Test("durations become dispatch intervals, clamped")
    func intervals() {
        #expect(Deadline.interval(.seconds(2)) == .nanoseconds(2_000_000_000))
        #expect(Deadline.interval(.milliseconds(1)) == .nanoseconds(1_000_000))
        #expect(Deadline.interval(.seconds(Int64.max)) == .nanoseconds(Int.max))
        #expect(Deadline.interval(.seconds(-1)) == .nanoseconds(0))
    }
}
