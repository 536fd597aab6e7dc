import Glibc

/// A thread's CPU scheduling policy (sched(7)), for background work that must not delay
/// requests: SCHED_IDLE runs a thread only when nothing else wants the CPU, and a task of any
/// other normal policy that wakes preempts it at once (sched(7), "SCHED_IDLE: Scheduling very
/// low priority jobs"). The policy is per thread (the tid given to sched_setscheduler(2)) and
/// is inherited across fork(2) and clone(2), SCHED_RESET_ON_FORK or not (that flag resets
/// only real-time policies and negative nice values).
public enum Scheduling {
    /// The policies of sched(7) used here (`<linux/sched.h>`; Glibc's module hides SCHED_IDLE
    /// without _GNU_SOURCE).
    public enum Policy: Int32, Sendable {
        /// SCHED_OTHER (SCHED_NORMAL): the default time-sharing policy.
        case other = 0
        case batch = 3
        /// SCHED_IDLE.
        case idle = 5
    }

    /// The policy of thread `tid` (0: the calling thread), from sched_getscheduler(2); nil when
    /// the thread is gone or the policy is one not listed in `Policy` (a real-time one).
    public static func policy(of tid: pid_t = 0) -> Policy? {
        let raw = sched_getscheduler(tid)
        // SCHED_RESET_ON_FORK is or'ed into the returned policy (sched_getscheduler(2)).
        return raw < 0 ? nil : Policy(rawValue: raw & ~0x4000_0000)
    }

    /// Sets the policy of thread `tid` (0: the calling thread) with priority 0, its nice value
    /// kept (sched_setscheduler(2): the non-real-time policies take only priority 0).
    /// - Throws: `SysError` (`sched_setscheduler`): ESRCH for a thread that is gone, EPERM
    ///   for another user's thread without CAP_SYS_NICE.
    public static func set(_ policy: Policy, thread tid: pid_t = 0) throws(SysError) {
        var param = sched_param(sched_priority: 0)
        guard sched_setscheduler(tid, policy.rawValue, &param) == 0 else {
            throw SysError("sched_setscheduler \(tid)")
        }
    }

    /// Runs `body` on the calling thread under `policy`, then puts the thread's previous
    /// policy back (also when `body` throws). Whatever `body` forks or starts keeps `policy`.
    /// When the policy cannot be set (or is nil), `body` runs under the thread's own.
    public static func running<T>(_ policy: Policy?, _ body: () throws -> T) rethrows -> T {
        guard let policy else { return try body() }
        let previous = self.policy()
        let changed = previous != nil && previous != policy && (try? set(policy)) != nil
        defer {
            if changed, let previous { try? set(previous) }
        }
        return try body()
    }

    /// Moves every thread listed in `tasksFile` (a cgroup's `tasks` (v1) or `cgroup.threads`
    /// (v2) file, cgroups(7)) that runs under `from` to `to`, and reads the file again until a
    /// round finds none left under `from`: a thread forked by one not yet moved when the file
    /// was read is found by the next round. At most `rounds` rounds.
    /// - Returns: how many threads were moved.
    /// - Throws: `SysError` for a file that cannot be read, a thread that cannot be moved (one
    ///   that ended meanwhile is skipped), or threads still under `from` after `rounds` rounds
    ///   (code `.refused`).
    @discardableResult
    public static func move(
        threadsIn tasksFile: String, from: Policy, to: Policy, rounds: Int = 8
    ) throws(SysError) -> Int {
        var moved = 0
        for _ in 0..<rounds {
            let text: String
            do { text = try Files.readString(tasksFile) } catch {
                throw (error as? SysError) ?? SysError("read", path: tasksFile, errno: EIO)
            }
            var left = 0
            for line in text.split(separator: "\n") {
                guard let tid = pid_t(line), policy(of: tid) == from else { continue }
                do { try set(to, thread: tid) } catch  where error.errno == ESRCH { continue }
                moved += 1
                left += 1
            }
            if left == 0 { return moved }
        }
        throw SysError(.refused, "threads in \(tasksFile) are still under policy \(from) after \(rounds) rounds")
    }
}
