/// Recycling of warm pool sandboxes (`WarmPool.spec.recycle: true`, issue 14): what a
/// sandbox looked like when it was made (`RecycleBaseline`, taken at warm-up, before any
/// claim), and the checks a used sandbox must pass to go back to the ready set
/// (`RecycleChecks.run`). Each check's outcome is audited (`pool.recycle`) and counted; the
/// pool side (hiding the sandbox, its execs, the ready set) is in WarmPools.swift.
///
/// Everything is read from the host: the cgroup's process list, the sandbox's tree through
/// its init's root (`/proc/<init>/root`, openat2(2) RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
/// `TreeDigest`), the seccomp agent's and the egress filter's counts. Only the warm
/// interpreter's stop and start and the System V IPC count are asked of the in-sandbox agent
/// (`AgentControl`), whose answers are untrusted: the process check that follows is what
/// decides that nothing but PID 1 is left.
import CDaemon
import CSafeSpace
import Cgroups
import Foundation
import Glibc
import LinuxKernel
import Runtime

/// The trees of a sandbox as they were made.
struct RecycleBaseline: Sendable {
    /// Sandbox path (a writable path, `/dev/shm`, `/dev/mqueue`) -> its digest (nil: absent).
    var writable: [String: TreeDigest?]
    /// The agent's socket directory on the host, `python.sock` left out.
    var agentDirectory: TreeDigest?
    /// Package tree (sandbox path) -> its digest (nil: absent).
    var packages: [String: TreeDigest?]

    /// Paths besides the writable paths whose content a sandbox can change.
    static let systemWritable = ["/dev/shm", "/dev/mqueue"]

    /// The interpreter's package trees for `runtime` (`python:3.11`, `node:18`) with the
    /// sandbox's `home`: Python's system `site-packages`/`dist-packages` (Debian's and
    /// python.org's layouts) and the user site `~/.local/lib/pythonX.Y/site-packages`;
    /// Node's global `node_modules` and `~/node_modules`.
    static func packageTrees(runtime: String, home: String) -> [String] {
        let home = home == "/" ? "" : home
        let parts = runtime.split(separator: ":", maxSplits: 1).map(String.init)
        let version = parts.count == 2 ? parts[1] : ""
        if parts.first == "python" {
            let v = "python" + version
            return [
                "/usr/local/lib/\(v)/site-packages", "/usr/local/lib/\(v)/dist-packages",
                "/usr/lib/python3/dist-packages",
                "/usr/lib/\(v)/site-packages", "/usr/lib/\(v)/dist-packages", "\(home)/.local/lib/\(v)/site-packages",
            ]
        }
        if parts.first == "node" {
            return ["/usr/local/lib/node_modules", "/usr/lib/node_modules", "\(home)/node_modules"]
        }
        return []
    }

    /// Digests of `paths` resolved in the sandbox's root (`rootFd`, an O_PATH fd of
    /// `/proc/<init>/root`); a writable path nested in another is left out of the outer one.
    static func digests(rootFd: Int32, paths: [String]) throws -> [String: TreeDigest?] {
        var result: [String: TreeDigest?] = [:]
        for path in paths {
            let nested = Set(
                paths.filter { $0 != path && $0.hasPrefix(path + "/") }.map { String($0.dropFirst(path.count + 1)) })
            result[path] = try TreeDigest.take(
                dirfd: rootFd, path: path,
                resolve: UInt64(SD_RESOLVE_IN_ROOT | SD_RESOLVE_NO_SYMLINKS | SD_RESOLVE_NO_MAGICLINKS), skip: nested)
        }
        return result
    }

    /// The agent directory's digest (host path), without `python.sock` (stopped and started
    /// again around the checks).
    static func agentDigest(_ directory: String) throws -> TreeDigest? {
        // The host path is the daemon's own (its parents are trusted); its last component and
        // everything below are walked without following a symlink.
        let dir = open(directory, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dir >= 0 else {
            if errno == ENOENT { return nil }
            throw TreeDigest.WalkError(description: "\(directory): \(String(cString: strerror(errno)))")
        }
        defer { close(dir) }
        var digest = try TreeDigest.take(
            dirfd: dir, path: ".",
            resolve: UInt64(SD_RESOLVE_BENEATH | SD_RESOLVE_NO_SYMLINKS | SD_RESOLVE_NO_MAGICLINKS))
        digest?.entries[AgentExec.pythonSocket] = nil
        return digest
    }

    /// The root of the sandbox whose init is `pid` (started at `startTime`), O_PATH.
    static func openRoot(pid: Int32, startTime: UInt64?) throws -> Int32 {
        let fd = ss_open("/proc/\(pid)/root", O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
        guard fd >= 0, let startTime, ProcStat.read(pid: pid)?.startTime == startTime else {
            if fd >= 0 { close(fd) }
            throw TreeDigest.WalkError(description: "the sandbox's init \(pid) is gone")
        }
        return fd
    }

    /// Takes the baseline of a sandbox just made (its init `pid`, its `writablePaths`, the
    /// package trees of `runtime` with `home`, its agent directory).
    static func take(
        pid: Int32, startTime: UInt64?, writablePaths: [String], runtime: String, home: String, agentDirectory: String?
    ) throws -> RecycleBaseline {
        let root = try openRoot(pid: pid, startTime: startTime)
        defer { close(root) }
        return RecycleBaseline(
            writable: try digests(rootFd: root, paths: writablePaths + systemWritable),
            agentDirectory: try agentDirectory.flatMap(agentDigest),
            packages: try digests(rootFd: root, paths: packageTrees(runtime: runtime, home: home)))
    }
}

/// One check's outcome.
struct RecycleCheck: Sendable {
    var name: String
    var passed: Bool
    var detail: String
}

/// The checks of a used sandbox (blocking: run them on a thread of their own).
enum RecycleChecks {
    /// Everything the checks read.
    struct Subject: Sendable {
        var name: String
        var initPid: Int32
        var initStartTime: UInt64?
        var agentDirectory: String?
        var warmPython: Bool
        var writablePaths: [String]
        var runtime: String
        var home: String
        var baseline: RecycleBaseline?
        var age: Duration
        var maxAge: Duration
        /// The seccomp agent's counts (nil: no agent, or the sandbox was adopted).
        var seccompDenials: [String: Int]?
        var adopted: Bool
        var egressDenials: Int
        var cgroup: Cgroup?
    }

    /// How long the process check waits for the processes an exec left to be reaped once
    /// their exec was killed (the agent reaps them).
    static let settle = Duration.seconds(2)

    /// Runs the checks that decide (`age`, `securityEvents`, `agent`, `processes`,
    /// `writablePaths`, `packages`), every one of them whatever the others gave.
    static func verify(_ s: Subject) -> [RecycleCheck] {
        var checks: [RecycleCheck] = []
        func add(_ name: String, _ passed: Bool, _ detail: String) {
            checks.append(RecycleCheck(name: name, passed: passed, detail: detail))
        }
        let ageSeconds = Double(s.age.components.seconds) + Double(s.age.components.attoseconds) / 1e18
        add(
            "age", s.age < s.maxAge,
            String(format: "%.1f s since it was made; maxAgeSeconds %lld", ageSeconds, s.maxAge.components.seconds))

        if s.adopted {
            add("securityEvents", false, "adopted after a daemon restart: its seccomp denials before are unknown")
        } else if let denials = s.seccompDenials {
            let total = denials.values.reduce(0, +)
            if total > 0 || s.egressDenials > 0 {
                let list = denials.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
                add(
                    "securityEvents", false,
                    "seccomp denials: \(total)\(list.isEmpty ? "" : " [\(list)]"); egress denials: \(s.egressDenials)")
            } else {
                add("securityEvents", true, "no seccomp denial, no egress denial since it was made")
            }
        } else {
            add("securityEvents", false, "its seccomp filter gives no events: denials cannot be counted")
        }

        let endpoint = s.agentDirectory.map { AgentEndpoint(directory: $0, initPid: s.initPid) }
        if let endpoint {
            do {
                let ipc = try AgentControl.request(.stopPython, endpoint: endpoint)
                if ipc == 0 {
                    add("agent", true, "warm interpreter stopped; no System V IPC object")
                } else if ipc < 0 {
                    add("agent", false, "the System V IPC objects of the sandbox cannot be counted")
                } else {
                    add("agent", false, "\(ipc) System V IPC object(s) (shm, msg, sem) left in the sandbox")
                }
            } catch {
                add("agent", false, "the agent does not answer: \(error)")
            }
        } else {
            add("agent", false, "no in-sandbox agent (PID 1 is the idle shell)")
        }

        // Only PID 1 left: what execs left is killed by now, its exit reaped by the agent.
        let deadline = ContinuousClock.now + settle
        var others: [Int32] = []
        if let cgroup = s.cgroup {
            while true {
                others = cgroup.ownProcesses().filter { $0 != s.initPid }
                if others.isEmpty || ContinuousClock.now >= deadline { break }
                usleep(10_000)
            }
            if others.isEmpty {
                add("processes", true, "only PID 1 (host pid \(s.initPid)) in its cgroup")
            } else {
                let names = others.prefix(5).map { pid in
                    "\(pid) \((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?")"
                }
                add(
                    "processes", false,
                    "\(others.count) process(es) besides PID 1 in its cgroup: \(names.joined(separator: ", "))")
            }
        } else {
            add("processes", false, "its cgroup cannot be read")
        }

        guard let baseline = s.baseline else {
            add("writablePaths", false, "no baseline (taken when it was made; a daemon restart loses it)")
            add("packages", false, "no baseline (taken when it was made; a daemon restart loses it)")
            return checks
        }
        do {
            let root = try RecycleBaseline.openRoot(pid: s.initPid, startTime: s.initStartTime)
            defer { close(root) }
            let paths = s.writablePaths + RecycleBaseline.systemWritable
            let now = try RecycleBaseline.digests(rootFd: root, paths: paths)
            var problems: [String] = []
            for path in paths {
                problems += compare(now[path] ?? nil, baseline.writable[path] ?? nil, path)
            }
            if let directory = s.agentDirectory {
                problems += compare(
                    try RecycleBaseline.agentDigest(directory), baseline.agentDirectory, "(agent directory)")
            }
            add(
                "writablePaths", problems.isEmpty,
                problems.isEmpty
                    ? "\(paths.joined(separator: ", ")) and the agent directory as made (nothing left)"
                    : problems.joined(separator: "; "))
        } catch {
            add("writablePaths", false, "cannot verify: \(error)")
        }
        do {
            let root = try RecycleBaseline.openRoot(pid: s.initPid, startTime: s.initStartTime)
            defer { close(root) }
            let trees = RecycleBaseline.packageTrees(runtime: s.runtime, home: s.home)
            let now = try RecycleBaseline.digests(rootFd: root, paths: trees)
            var problems: [String] = []
            for tree in trees { problems += compare(now[tree] ?? nil, baseline.packages[tree] ?? nil, tree) }
            let files = trees.compactMap { now[$0] ?? nil }.reduce(0) { $0 + $1.entries.count }
            add(
                "packages", problems.isEmpty,
                problems.isEmpty
                    ? "\(files) entries of \(trees.count) package trees equal their warm-up digests"
                    : problems.joined(separator: "; "))
        } catch {
            add("packages", false, "cannot verify: \(error)")
        }
        return checks
    }

    private static func compare(_ now: TreeDigest?, _ then: TreeDigest?, _ path: String) -> [String] {
        switch (now, then) {
        case (nil, nil): return []
        case (nil, _): return ["\(path) removed"]
        case (.some(let now), nil):
            let inside = now.describeDifferences(from: TreeDigest(entries: ["": now.entries[""] ?? ""]), prefix: path)
            return ["\(path) created\(inside.map { ": " + $0 } ?? "")"]
        case (.some(let now), .some(let then)):
            return now.describeDifferences(from: then, prefix: path).map { ["\(path): \($0)"] } ?? []
        }
    }

    /// After the checks passed: the counters start again (CPU base returned, the v1 memory
    /// peak reset) and a fresh warm interpreter is started (`counters`, `python`).
    /// - Returns: the checks and the CPU time (ns) the sandbox used so far, the next
    ///   claimant's zero.
    static func renew(_ s: Subject, cpuNanoseconds: UInt64?) -> [RecycleCheck] {
        var checks: [RecycleCheck] = []
        var detail = "cpu re-based at \(cpuNanoseconds ?? 0) ns"
        var passed = true
        if let cgroup = s.cgroup {
            if cgroup.mode == .unified {
                detail += "; memory peak not resettable on cgroup v2 (not reported after a recycle)"
            } else if let memory = cgroup.directories.first(where: { $0.key.split(separator: ",").contains("memory") })?
                .value
            {
                // memory.max_usage_in_bytes: writing 0 resets it (cgroup-v1/memory.rst, 5.5).
                let fd = open(memory + "/memory.max_usage_in_bytes", O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
                if fd >= 0, write(fd, "0", 1) == 1 {
                    detail += "; memory.max_usage_in_bytes reset"
                } else {
                    passed = false
                    detail += "; memory.max_usage_in_bytes: \(String(cString: strerror(errno)))"
                }
                if fd >= 0 { close(fd) }
            }
        }
        checks.append(RecycleCheck(name: "counters", passed: passed, detail: detail))
        guard s.warmPython, let directory = s.agentDirectory else { return checks }
        let endpoint = AgentEndpoint(directory: directory, initPid: s.initPid)
        do {
            let pid = try AgentControl.request(.startPython, endpoint: endpoint)
            let deadline = ContinuousClock.now + .seconds(10)
            var ready = false
            while !ready && ContinuousClock.now < deadline {
                if let fd = try? AgentExec.connect(directory: directory, name: AgentExec.pythonSocket) {
                    close(fd)
                    ready = true
                } else {
                    usleep(2000)
                }
            }
            checks.append(
                RecycleCheck(
                    name: "python", passed: pid > 0 && ready,
                    detail: pid > 0 && ready
                        ? "a fresh warm interpreter (pid \(pid) in the sandbox) listens"
                        : "the warm interpreter did not start (pid \(pid), listening: \(ready))"))
        } catch {
            checks.append(RecycleCheck(name: "python", passed: false, detail: "the agent does not answer: \(error)"))
        }
        return checks
    }
}
