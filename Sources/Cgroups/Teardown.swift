import Glibc

/// Killing and removing a container's cgroup however the workload left it: frozen (`pause`),
/// holding sub-cgroups it made itself (a cgroup namespace with a writable cgroupfs), or with
/// sub-cgroups it froze. runc's order: freeze, SIGKILL every task of the subtree, thaw
/// (a task frozen by the v1 freezer does not act on SIGKILL until thawed), wait for the tasks
/// to go, then rmdir children before parents (rmdir(2) refuses a cgroup with children or tasks;
/// libcontainer `signalAllProcesses`, `cgroups.RemovePath`).
extension Cgroup {
    /// The sub-cgroups below `dir`, children before their parents; empty when `dir` is gone.
    /// Iterative, so a deeply nested tree made by a workload cannot exhaust the stack.
    static func descendants(of dir: String) -> [String] {
        var stack = [dir]
        var preorder: [String] = []
        while let current = stack.popLast() {
            guard let d = opendir(current) else { continue }
            while let entry = readdir(d) {
                // cgroupfs (kernfs) fills d_type: every directory is a cgroup.
                guard entry.pointee.d_type == UInt8(DT_DIR) else { continue }
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name == "." || name == ".." { continue }
                let child = current + "/" + name
                preorder.append(child)
                stack.append(child)
            }
            closedir(d)
        }
        // Reversed pre-order visits every child before its parent.
        return preorder.reversed()
    }

    /// Every directory of the cgroup in every hierarchy with its sub-cgroups, children first.
    func subtree() -> [String] {
        directories.values.sorted().flatMap { Self.descendants(of: $0) + [$0] }
    }

    /// The freezer files of the cgroup and its sub-cgroups, children first (nil: no freezer).
    private func freezerSubtree() -> (dirs: [String], v2: Bool)? {
        guard let (dir, v2) = freezerDirectory else { return nil }
        return (Self.descendants(of: dir) + [dir], v2)
    }

    /// Best effort, bounded: freezes the cgroup (so nothing forks while its tasks are listed and
    /// killed) and waits up to ~1 s for it to settle; a freezer stuck in FREEZING (a task in
    /// uninterruptible sleep) is left as it is, the kill goes on.
    func freezeForKill() {
        guard let (dir, v2) = freezerDirectory else { return }
        if (try? CgroupFS.write(dir + "/" + (v2 ? Self.cgroupFreeze : Self.freezerState), v2 ? "1" : "FROZEN")) == nil {
            return
        }
        for _ in 0..<50 {
            if (try? isFrozen()) != false { return }
            usleep(20_000)
        }
    }

    /// Thaws the cgroup and every sub-cgroup: a v1 or v2 sub-cgroup frozen by itself (the
    /// workload froze it) stays frozen when only its parent is thawed. Missing files are skipped.
    func thawSubtree() {
        guard let (dirs, v2) = freezerSubtree() else { return }
        for dir in dirs.reversed() {  // parents first: a child thaws once nothing above holds it
            _ = try? CgroupFS.write(dir + "/" + (v2 ? Self.cgroupFreeze : Self.freezerState), v2 ? "0" : "THAWED")
        }
    }

    /// Whether the cgroup is frozen or being frozen: v1 `freezer.state` other than THAWED (also
    /// when a parent froze it), v2 `cgroup.freeze` 1 or `frozen 1` in `cgroup.events`. False
    /// without a freezer or when the files cannot be read.
    func isFrozenOrFreezing() -> Bool {
        guard let (dir, v2) = freezerDirectory else { return false }
        if v2 {
            if CgroupFS.trimmed((try? CgroupFS.read(dir + "/" + Self.cgroupFreeze)) ?? "0") == "1" { return true }
            return (try? isFrozen()) == true
        }
        let state = CgroupFS.trimmed((try? CgroupFS.read(dir + "/" + Self.freezerState)) ?? "THAWED")
        return state != "THAWED" && !state.isEmpty
    }

    /// SIGKILLs every process of the cgroup and its sub-cgroups, in every hierarchy, then waits
    /// until none is left and removes the cgroup (`destroy()`, which also removes the
    /// sub-cgroups). Works on a paused (frozen) container and on one whose workload made or froze
    /// sub-cgroups. Bounded: gives up after `timeout` seconds (monotonic clock).
    /// - Throws: `CgroupError` (`destroy`) naming the directory and the pids still there (a
    ///   task in uninterruptible sleep cannot die), or the last `destroy()` error.
    public func killAndDestroy(timeout: Double = 10) throws {
        // Most often nothing is left (the init of a container with a PID namespace of its own
        // takes every process with it). rmdir(2) refuses a cgroup that holds a task or a
        // sub-cgroup, so when every leaf is one `create` made (and none held other processes
        // before), a removal that succeeds proves it empty, without listing anything first.
        // Sub-cgroups (the workload's) make a leaf busy as well: they are looked for only then.
        let leaves = Set(directories.values.map { CgroupPath.join($0) })
        if foreignProcesses == nil, leaves.isSubset(of: Set(created.map { CgroupPath.join($0) })),
            (try? destroy(retryingBusyLeaves: false, removingSubCgroups: false)) != nil
        {
            return
        }
        let deadline = Self.monotonicNow() + timeout
        var lastError: Error?
        var left: [Int32] = []
        while true {
            // The list is read again after a kill; a cgroup that held none at all is empty.
            left = (try? killAll(signal: SIGKILL)) == false ? [] : ownProcesses()
            if left.isEmpty {
                do {
                    try destroy()
                    return
                } catch {
                    lastError = error
                }
            }
            if Self.monotonicNow() >= deadline { break }
            usleep(20_000)
        }
        let where_ = trackingDirectory ?? directories.values.sorted().first ?? path
        if !left.isEmpty {
            throw CgroupError(
                .timedOut, operation: "destroy", path: where_,
                message:
                    "processes \(left.prefix(8).map(String.init).joined(separator: ",")) are still in the cgroup after \(Int(timeout)) s of SIGKILL (uninterruptible sleep?)"
            )
        }
        throw lastError
            ?? CgroupError(
                .timedOut, operation: "destroy", path: where_,
                message: "the cgroup could not be removed in \(Int(timeout)) s")
    }

    static func monotonicNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
