import Glibc
import Cgroups

extension Cgroup {
    /// Removes the container's cgroup, SIGKILLing whatever is still in it between attempts
    /// (a process may be forking or exiting): up to 100 tries, 20 ms apart.
    /// - Throws: the last `CgroupError` when the cgroup is still there after that.
    func destroyKillingStragglers() throws {
        var lastError: Error?
        for _ in 0..<100 {
            do {
                try destroy()
                return
            } catch {
                lastError = error
                try? killAll(signal: SIGKILL)
                usleep(20_000)
            }
        }
        if let lastError { throw lastError }
    }
}
