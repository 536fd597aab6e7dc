import Glibc

/// Where a new process joins a cgroup by itself, so that no other process has to move it.
///
/// Writing a pid to `cgroup.procs` (v1 or v2) takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, and a percpu rwsem's first writer waits for an RCU
/// grace period (`percpu_down_write` → `rcu_sync_enter`): 5–16 ms on this project's test host,
/// half of a whole `run` of `/bin/true`. Two moves skip that lock (kernel/cgroup/cgroup.c,
/// `cgroup_procs_write_start` and `cgroup_css_set_fork`):
/// - on a v1 hierarchy, a thread writing `0` (itself) to the `tasks` file; a freshly cloned,
///   single-threaded process is its whole thread group, and every process and thread it makes
///   later inherits its cgroups;
/// - on cgroup v2, clone3(2) with `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the
///   cgroup, and the fork path takes the rwsem for reading only.
public struct CgroupSelfJoin: Sendable, Equatable {
    /// The `tasks` file of every v1 hierarchy, absolute paths, in hierarchy order.
    public let tasksFiles: [String]
    /// The cgroup v2 directory (the unified hierarchy of a hybrid host, or the only one), or nil
    /// on a host without cgroup v2.
    public let unifiedDirectory: String?
    /// The field a failed join is reported under: `--cgroup` for `exec`'s sub-cgroups, else nil.
    public let field: String?
}

extension Cgroup {
    /// The files and directory with which a new process joins this cgroup, or the sub-cgroups
    /// `sub` names, by itself (`CgroupSelfJoin`).
    /// - Throws: `CgroupError` as `attach(pid:joining:)` does: a controller none of the
    ///   hierarchies has, or (`.invalidValue`, `--cgroup`) a sub-cgroup that does not exist.
    public func selfJoin(joining sub: SubCgroups = SubCgroups()) throws -> CgroupSelfJoin {
        let targets = try hierarchyDirectories(joining: sub)
        if !sub.isEmpty {
            for target in targets where !CgroupFS.isDirectory(target.directory) {
                throw SubCgroups.invalid(
                    "no such sub-cgroup: \(target.directory) (make it first; exec joins existing cgroups only)")
            }
        }
        return CgroupSelfJoin(
            tasksFiles: targets.filter { $0.key != "unified" }.map { $0.directory + "/tasks" },
            unifiedDirectory: targets.first { $0.key == "unified" }?.directory, field: sub.isEmpty ? nil : "--cgroup")
    }
}
