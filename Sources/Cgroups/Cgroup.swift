import Glibc
import LinuxKernel
import OCI

/// How the host mounts cgroups under its cgroup root.
public enum CgroupMode: String, Codable, Sendable {
    /// cgroup v2 only: the root itself is cgroup2.
    case unified
    /// v1 controllers, plus a controller-less cgroup2 at `<root>/unified` for tracking.
    case hybrid
    /// cgroup v1 only.
    case legacy
}

/// A container's cgroup across every hierarchy. Codable so the runtime stores it in its state
/// directory and a later process (`delete`, `kill`, `ps`) reopens it without resolving again.
///
/// Lifecycle: `resolve` -> `create` -> `apply` -> `attach` ... `killAll` -> `destroy` (or both
/// at once, bounded, whatever state the workload left the cgroup in: `killAndDestroy`).
public struct Cgroup: Codable, Sendable, Equatable {
    public var mode: CgroupMode
    /// The normalized `linux.cgroupsPath`: `/a/b` (absolute) or `a/b` (relative to the caller's cgroup).
    public var path: String
    /// Hierarchy key -> absolute directory of this cgroup. Keys are the controller lists of
    /// `/proc/self/cgroup` (`memory`, `cpu,cpuacct`, `name=systemd`) and `unified` for cgroup2.
    public var directories: [String: String]
    /// Hierarchy key -> the hierarchy's mount point (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup`).
    public var mountPoints: [String: String]
    /// The directories `create` made, parents before children; `destroy` removes these (and
    /// the empty intermediate levels of a relative `path`), never a leaf it did not make.
    public var created: [String]
    /// The OOM-kill counter (`oomKillCount()`) right after `create`: nonzero only for a reused
    /// cgroup, whose earlier kills must not be reported as this container's. Nil when unknown.
    public var oomKillBaseline: UInt64?
    /// The processes a reused cgroup already held at `create` (runc warns and goes on): not the
    /// container's, so `killAll` and `killAndDestroy` leave them alone and `destroy` leaves the
    /// sub-cgroups below the leaf (and the leaf, which it did not make). Nil: none.
    public var foreignProcesses: [ProcessIdentity]?

    /// A cgroup from known directories; most callers use `resolve` or decode a stored one.
    public init(
        mode: CgroupMode, path: String, directories: [String: String], mountPoints: [String: String],
        created: [String] = []
    ) {
        self.mode = mode
        self.path = path
        self.directories = directories
        self.mountPoints = mountPoints
        self.created = created
    }

    /// Resolves OCI `linux.cgroupsPath` to one directory per hierarchy mounted under `root`.
    ///
    /// - `"/a/b"` (absolute) goes under each hierarchy's mount point: `<root>/memory/a/b`.
    /// - `"a/b"` (relative) nests under the caller's own cgroup in each hierarchy, read from
    ///   `/proc/self/cgroup`, as runc does (on a v2-only host: under the caller's parent cgroup,
    ///   as runc's fs2 driver does, since a cgroup with processes cannot delegate controllers).
    /// - nil or `""` is `safespace/<id>`, relative.
    /// Nothing is created; see `create()`.
    /// - Parameters:
    ///   - cgroupsPath: `linux.cgroupsPath` from config.json.
    ///   - id: the container id, used for the default path.
    ///   - root: where the cgroup hierarchies are mounted.
    /// - Throws: `CgroupError` for a path with `..`, the systemd `slice:prefix:name` form
    ///   (unsupported), an unreadable `/proc/self/cgroup`, or no hierarchy under `root`.
    public static func resolve(cgroupsPath: String?, id: String, root: String = "/sys/fs/cgroup") throws -> Cgroup {
        try CgroupPath.resolve(
            cgroupsPath: cgroupsPath, id: id, root: root, mode: detectMode(root: root),
            procSelfCgroup: CgroupFS.read("/proc/self/cgroup"), mountinfo: CgroupFS.read("/proc/self/mountinfo"))
    }

    /// Tells v2-only, hybrid and v1-only hosts apart: only a cgroup2 mount has
    /// `cgroup.controllers` at its top, so look for it at `root` and at `root/unified`.
    public static func detectMode(root: String = "/sys/fs/cgroup") -> CgroupMode {
        if CgroupFS.exists(CgroupPath.join(root, CgroupV2.controllersFile)) { return .unified }
        if CgroupFS.exists(CgroupPath.join(root, "unified", CgroupV2.controllersFile)) { return .hybrid }
        return .legacy
    }

    /// Creates the cgroup: `mkdir -p` in every hierarchy. On v1, each new cpuset level gets
    /// `cpuset.cpus`/`cpuset.mems` copied from its parent (an empty cpuset cannot take tasks).
    ///
    /// Every directory made is recorded in `created`. A leaf that already exists is reused; if it
    /// or a sub-cgroup holds processes, as runc 1.1 does the container goes in anyway with a
    /// warning, and those processes are recorded in `foreignProcesses` so that no teardown of
    /// this container kills them. A frozen cgroup (a leftover, or below a frozen parent) is
    /// refused. On failure everything made so far is removed again.
    ///
    /// On v2 the controllers every sandbox needs for accounting (`memory`, `pids`, `cpu`, `io`:
    /// OOM events, stats, the default pids limit) are enabled down to the leaf where the
    /// hierarchy offers them; a limit on any controller is enforced (or refused) by `apply`.
    /// `cpuset` is enabled only by `apply`, when a cpuset is asked for. Then the OOM-kill
    /// counter is recorded in `oomKillBaseline`.
    /// - Returns: warnings for the caller's log: runc's `container's cgroup is not empty: N
    ///   process(es) found` for a reused cgroup holding processes.
    /// - Throws: `CgroupError` (`mkdir`, `read`, `write`, or `create` naming
    ///   `linux.cgroupsPath` for a frozen cgroup).
    @discardableResult
    public mutating func create() throws -> [String] {
        var made: [String] = []
        var foreign = Set<Int32>()
        do {
            for (key, dir) in directories.sorted(by: { $0.key < $1.key }) {
                let mountPoint = mountPoints[key] ?? CgroupPath.parent(dir)
                let isCpusetV1 = mode != .unified && key.split(separator: ",").contains("cpuset")
                var leafExisted = true
                // ENOENT: another container's destroy removed a shared empty parent between two
                // mkdirs (e.g. `safespace/`); walk again.
                for attempt in 1...3 {
                    do {
                        for level in CgroupPath.levels(from: mountPoint, to: dir) {
                            let new = try CgroupFS.mkdirIfMissing(level)
                            // Also for a level that exists: another create may have made it a
                            // moment ago and not filled it yet, and a child copied from an empty
                            // parent refuses tasks (ENOSPC). Only empty files are written.
                            if isCpusetV1 { try CgroupV1.inheritCpuset(level) }
                            guard new else { continue }
                            if !made.contains(level) { made.append(level) }
                            if level == CgroupPath.join(dir) { leafExisted = false }
                        }
                        break
                    } catch let error as CgroupError where error.errno == ENOENT && attempt < 3 {
                        continue
                    }
                }
                // Sub-cgroups count too (runc checks GetAllPids): a leftover whose workload
                // made sub-cgroups is still in use.
                if leafExisted {
                    for sub in [dir] + Self.descendants(of: dir) {
                        foreign.formUnion((try? CgroupFS.procs(in: sub)) ?? [])
                    }
                }
            }
            // A frozen leftover (or a new leaf under a frozen parent, which v1 freezes too)
            // would freeze the init as soon as it is attached, and create would wait for it for
            // ever. Refused, as runc does ("container's cgroup unexpectedly frozen"); thawing a
            // cgroup someone else froze is not ours to decide.
            if isFrozenOrFreezing() {
                throw CgroupError(
                    .inUse, operation: "create", path: freezerDirectory?.dir ?? "", field: CgroupPath.field,
                    message:
                        "the cgroup is frozen (a paused container's, or a leftover); thaw it (\(mode == .unified ? "cgroup.freeze 0" : "freezer.state THAWED")) or remove it first"
                )
            }
        } catch {
            for dir in made.reversed() { _ = try? CgroupFS.rmdirCgroup(dir, retryBusy: false) }
            throw error
        }
        created.append(contentsOf: made)
        var warnings: [String] = []
        if !foreign.isEmpty {
            foreignProcesses = foreign.sorted().compactMap { pid in
                ProcStat.read(pid: pid).map { ProcessIdentity(pid: pid, startTime: $0.startTime) }
            }
            // runc 1.1 libcontainer/factory_linux.go, word for word.
            warnings.append("container's cgroup is not empty: \(foreign.count) process(es) found")
        }
        if mode == .unified, let dir = directories["unified"] {
            CgroupV2.enableAvailable(
                CgroupV2.accountingControllers, root: mountPoints["unified"] ?? CgroupPath.parent(dir), directory: dir)
        }
        oomKillBaseline = oomKillCount()
        return warnings
    }

    /// Writes `linux.resources` to the cgroup's files (see `CgroupV1` / `CgroupV2` for the
    /// table). Values: bytes for memory, µs for CPU quota/period, cpuset lists for cpus/mems.
    /// On v2 each controller is first enabled in `cgroup.subtree_control` from the hierarchy's
    /// root down to the parent.
    /// - Throws: `CgroupError` naming the OCI field: an invalid value, a field this module does
    ///   not enforce yet, a controller the host lacks (never skipped silently), or the errno of
    ///   a write the kernel rejected.
    ///
    /// Device rules (`linux.resources.devices`) are installed when `devices` is given (the
    /// container's `linux.devices`, possibly empty) or the resources name some: default deny, the
    /// spec's rules as written, the usual allow list, mknod (`m`, no read or write) for the
    /// `devices` nodes, then `runtimeDevices` (see `DeviceRules.effective`), as v1
    /// `devices.deny`/`devices.allow` writes or a v2 eBPF device program.
    /// - Returns: warnings for fields that are accepted but ignored (`memory.kernel`,
    ///   `memory.kernelTCP`, deprecated; runc 1.1+ ignores them too), for the caller's log.
    @discardableResult
    public func apply(_ resources: Resources?, devices: [Device]? = nil, runtimeDevices: [Device] = []) throws
        -> [String]
    {
        var warnings: [String] = []
        if let resources {
            try Conversions.rejectUnsupported(resources)
            warnings = Conversions.ignoredFieldWarnings(resources)
            if mode == .unified {
                try RealtimeCPU.refuseOnV2(resources)
                try CgroupV2.apply(resources, to: self)
            } else {
                try RealtimeCPU.applyV1(resources, cpuDirectory: directory(forController: "cpu"))
                try CgroupV1.apply(resources, to: self)
            }
        }
        if devices != nil || resources?.devices != nil {
            try applyDevices(
                DeviceRules.effective(resources?.devices, linuxDevices: devices ?? [], runtimeDevices: runtimeDevices))
        }
        return warnings
    }

    /// Installs `rules`: on v1 `devices.deny a` (or allow) then one write per exception; on v2
    /// an eBPF device program replacing any this cgroup had.
    /// - Throws: `CgroupError` naming `linux.resources.devices`: no devices hierarchy (v1), a
    ///   rejected write, or a bpf(2) failure.
    public func applyDevices(_ rules: DeviceRules) throws {
        if mode == .unified {
            guard let dir = directories["unified"] else {
                throw CgroupError(
                    .unsupported, operation: "apply", field: DeviceRules.field,
                    message: "no cgroup v2 directory resolved")
            }
            try DeviceFilter.attach(rules, to: dir)
            return
        }
        guard let dir = directory(forController: "devices") else {
            throw CgroupError.unsupported(
                DeviceRules.field, "the devices cgroup controller is not mounted on this host")
        }
        for w in rules.v1Writes() {
            try CgroupFS.write(dir + "/" + w.file, w.value, field: w.field)
        }
    }

    /// Moves process `pid` into this cgroup in every hierarchy (writes `cgroup.procs`).
    /// - Throws: `CgroupError` (`write`), e.g. ESRCH when the process is gone.
    public func attach(pid: Int32) throws {
        for (_, dir) in directories.sorted(by: { $0.key < $1.key }) {
            try CgroupFS.write(dir + "/cgroup.procs", String(pid))
        }
    }

    /// The directory whose `cgroup.procs` lists the container's processes: the v2 cgroup on a
    /// unified host, else the v1 `pids`, `freezer` or first hierarchy.
    var trackingDirectory: String? {
        if mode == .unified { return directories["unified"] }
        for key in ["pids", "freezer"] {
            if let dir = directory(forController: key) { return dir }
        }
        return directories.filter { $0.key != "unified" }.sorted(by: { $0.key < $1.key }).first?.value
            ?? directories["unified"]
    }

    /// The pids in the cgroup (not its children), in the caller's pid namespace; empty when the
    /// cgroup does not exist (already destroyed).
    /// - Throws: `CgroupError` (`read`) for any other failure.
    public func processes() throws -> [Int32] {
        guard let dir = trackingDirectory else { return [] }
        do {
            return try CgroupFS.procs(in: dir)
        } catch let error as CgroupError where error.errno == ENOENT {
            return []
        }
    }

    /// The pids in any of the cgroup's directories and their sub-cgroups (on a v1 or hybrid host
    /// a process can sit in this cgroup in one hierarchy only, e.g. after runsc moved it in the
    /// others; a workload with a writable cgroupfs can move processes into sub-cgroups it made);
    /// empty where a directory is gone.
    public func allProcesses() -> [Int32] {
        var seen = Set<Int32>()
        for dir in subtree() {
            for pid in (try? CgroupFS.procs(in: dir)) ?? [] { seen.insert(pid) }
        }
        return seen.sorted()
    }

    /// Sends `signal` to every process of the cgroup and its sub-cgroups in any hierarchy
    /// (`ownProcesses()`: those it held before `create` excepted). With SIGKILL, as runc does: the cgroup is frozen first (nothing forks
    /// while the list is read; bounded, best effort), every task is killed (v2: `cgroup.kill`
    /// too), and the cgroup and its sub-cgroups are thawed, since a task frozen by the v1 freezer
    /// acts on SIGKILL only once thawed; the list is re-read a few times to catch forks.
    /// Processes already gone are not an error.
    /// - Returns: false when the cgroup held no process of its own to signal.
    /// - Throws: `CgroupError` (`kill`) for an errno other than ESRCH.
    @discardableResult
    public func killAll(signal: Int32) throws -> Bool {
        // Nothing to kill (the common end of a container whose init exited in its own PID
        // namespace): no freeze and thaw. With no process left in it nothing can fork into it.
        let first = ownProcesses()
        if first.isEmpty { return false }
        if signal == SIGKILL { freezeForKill() }
        defer { if signal == SIGKILL { thawSubtree() } }
        // v2 (Linux 5.14+): cgroup.kill SIGKILLs the whole subtree at once, forks and frozen
        // tasks included (not in a cgroup shared with processes not the container's).
        if signal == SIGKILL, mode == .unified, foreignProcesses == nil, let dir = directories["unified"],
            CgroupFS.exists(dir + "/cgroup.kill")
        {
            try? CgroupFS.write(dir + "/cgroup.kill", "1")
        }
        var signaled = Set<Int32>()
        for round in 0..<(signal == SIGKILL ? 10 : 1) {
            // The first list was read before the freeze: read it again then.
            let pids = (round == 0 && signal != SIGKILL ? first : ownProcesses()).filter { !signaled.contains($0) }
            if pids.isEmpty { break }
            for pid in pids {
                if kill(pid, signal) != 0 && errno != ESRCH {
                    throw CgroupError(operation: "kill", path: "pid \(pid)", errno: errno, message: "signal \(signal)")
                }
                signaled.insert(pid)
            }
        }
        return true
    }

    /// `allProcesses()` without the `foreignProcesses` (matched by pid and start time).
    public func ownProcesses() -> [Int32] {
        guard let foreign = foreignProcesses, !foreign.isEmpty else { return allProcesses() }
        return allProcesses().filter { pid in
            !foreign.contains { $0.pid == pid && ProcStat.read(pid: pid)?.startTime == $0.startTime }
        }
    }

    /// Removes the directories `create` made, children first, and for a relative path also the
    /// path's intermediate levels once empty (`safespace/` in `safespace/<id>`), even when another
    /// container created them: they lie below the caller's cgroup in SafeSpace's own path, and
    /// otherwise the last container out would leave them behind. rmdir(2) refuses a cgroup with
    /// children or tasks, so a level another container still uses stays. A leaf still busy
    /// (tasks exiting) is retried for about a second. Idempotent: a missing directory counts
    /// as removed. Sub-cgroups below a leaf (made by the workload) are removed first, children
    /// before parents; one still holding a task makes the leaf's rmdir fail (see `killAndDestroy`).
    /// - Throws: `CgroupError` (`rmdir`) for the first leaf that could not be removed.
    public func destroy() throws {
        try destroy(retryingBusyLeaves: true)
    }

    /// `destroy()`; with `retryingBusyLeaves` false a leaf that still holds a task (EBUSY) or a
    /// sub-cgroup is not waited for: it fails the call at once. With `removingSubCgroups` false
    /// the sub-cgroups are not looked for: a leaf that has one is busy (rmdir(2) EBUSY).
    /// - Throws: `CgroupError` (`rmdir`) for the first leaf that could not be removed.
    func destroy(retryingBusyLeaves: Bool, removingSubCgroups: Bool = true) throws {
        let made = Set(created.map { CgroupPath.join($0) })
        let leaves = Set(directories.values.map { CgroupPath.join($0) })
        // A reused cgroup that held processes is not ours below the leaf: leave it as it is.
        for leaf in leaves.sorted() where foreignProcesses == nil && removingSubCgroups {
            for sub in Self.descendants(of: leaf) { _ = try? CgroupFS.rmdirCgroup(sub, retryBusy: false) }
        }
        var candidates = made
        if !path.hasPrefix("/") {
            let depth = path.split(separator: "/").count
            for leaf in leaves {
                var level = leaf
                for _ in 1..<max(depth, 1) {
                    level = CgroupPath.parent(level)
                    candidates.insert(level)
                }
            }
        }
        // Deepest first, so children go before their parents (depth counted once per path).
        let ordered = candidates.map { (depth: $0.utf8.count { $0 == UInt8(ascii: "/") }, path: $0) }
            .sorted { ($0.depth, $0.path) > ($1.depth, $1.path) }.map(\.path)
        var firstError: Error?
        for dir in ordered {
            if made.contains(dir) {
                do {
                    let leaf = leaves.contains(dir)
                    if try !CgroupFS.rmdirCgroup(dir, retryBusy: leaf && retryingBusyLeaves) && leaf {
                        firstError = firstError ?? CgroupError(operation: "rmdir", path: dir, errno: EBUSY)
                    }
                } catch {
                    firstError = firstError ?? error
                }
            } else if !leaves.contains(dir) {
                _ = try? CgroupFS.rmdirCgroup(dir, retryBusy: false)  // shared level: best effort
            }
        }
        if let firstError { throw firstError }
    }

    /// The directory of the hierarchy holding `controller` (`memory`, `cpu`, ...), if mounted.
    func directory(forController controller: String) -> String? {
        if mode == .unified { return directories["unified"] }
        return directories.first {
            $0.key != "unified" && $0.key.split(separator: ",").contains(Substring(controller))
        }?.value
    }
}
