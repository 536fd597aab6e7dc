import Foundation
import Glibc
import Testing

@testable import LinuxKernel

/// `Scheduling`: thread policies of sched(7), set on the calling thread for a body of work,
/// inherited by threads started in it, and moved back for every thread a tasks file lists.
/// As root: leaving SCHED_IDLE may need CAP_SYS_NICE (RLIMIT_NICE, sched(7)).
@Suite(.serialized, .enabled(if: geteuid() == 0, "leaving SCHED_IDLE may need CAP_SYS_NICE"))
struct SchedulingTests {
    /// A thread started under the calling thread's policy that waits until `release` is
    /// signalled; its tid comes back once it runs.
    final class Parked: @unchecked Sendable {
        let started = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        var tid: pid_t = 0

        func start() {
            Thread.detachNewThread { [self] in
                // /proc/thread-self is "PID/task/TID" (proc(5)).
                let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? ""
                tid = pid_t(link.split(separator: "/").last ?? "") ?? 0
                started.signal()
                release.wait()
                done.signal()
            }
            started.wait()
        }

        func end() {
            release.signal()
            done.wait()
        }
    }

    @Test(
        "running(.idle) runs the body under SCHED_IDLE and puts SCHED_OTHER back; a thread it starts keeps SCHED_IDLE")
    func runningIdle() throws {
        #expect(Scheduling.policy() == .other)
        let parked = Parked()
        let inside = Scheduling.running(.idle) { () -> Scheduling.Policy? in
            parked.start()
            return Scheduling.policy()
        }
        defer { parked.end() }
        #expect(inside == .idle)
        #expect(Scheduling.policy() == .other)
        #expect(Scheduling.policy(of: parked.tid) == .idle)
        #expect(Scheduling.running(nil) { Scheduling.policy() } == .other)
    }

    @Test("the policy is put back when the body throws")
    func runningThrows() {
        struct Boom: Error {}
        #expect(throws: Boom.self) { try Scheduling.running(.idle) { throw Boom() } }
        #expect(Scheduling.policy() == .other)
    }

    @Test("move moves every listed thread under SCHED_IDLE to SCHED_OTHER, skips the others and ended ones")
    func move() throws {
        let idle = Parked()
        let batch = Parked()
        Scheduling.running(.idle) { idle.start() }
        Scheduling.running(.batch) { batch.start() }
        defer {
            idle.end()
            batch.end()
        }
        let ended = Parked()
        ended.start()
        ended.end()
        usleep(10_000)
        let dir = FileManager.default.temporaryDirectory.path + "/sched-\(getpid())"
        try Files.makeDirectories(dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/tasks"
        try Files.writeAtomically(file, Array("\(idle.tid)\n\(batch.tid)\n\(ended.tid)\n".utf8))
        #expect(try Scheduling.move(threadsIn: file, from: .idle, to: .other) == 1)
        #expect(Scheduling.policy(of: idle.tid) == .other)
        #expect(Scheduling.policy(of: batch.tid) == .batch)
        #expect(try Scheduling.move(threadsIn: file, from: .idle, to: .other) == 0)
        #expect(throws: SysError.self) { try Scheduling.move(threadsIn: dir + "/none", from: .idle, to: .other) }
    }
}
