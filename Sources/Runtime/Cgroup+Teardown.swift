import Cgroups
import Glibc

extension Cgroup {
    /// Removes the container's cgroup, SIGKILLing whatever is still in it, also when it is
    /// frozen (paused) or the workload made or froze sub-cgroups (`Cgroup.killAndDestroy`):
    /// bounded, about 10 s.
    /// - Throws: `CgroupError` naming the pids still there, or the last rmdir error.
    func destroyKillingStragglers() throws {
        try killAndDestroy(timeout: 10)
    }
}
