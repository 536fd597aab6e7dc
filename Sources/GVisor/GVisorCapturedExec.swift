import CSafeSpace
import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

// An exec with the caller's own stdio (the daemon's pipes) in a gVisor sandbox, and the signal
// that ends it. The process lives in the sentry, not on the host: the caller's child is
// `runsc exec` (not detached), which gives the process its fds 0, 1 and 2 (runsc donates them
// to the sentry as host files), waits for it and exits with its status. The process is
// signalled through runsc (`runsc kill --pid`), by its pid inside the sandbox.

extension GVisorBackend {
    /// How long a `runsc exec` may take to report the process started before it is killed.
    static let execStartLimit: Duration = .seconds(60)

    /// Starts `runsc exec --process <file> --internal-pid-file <options.internalPidFile>` with
    /// `stdio` as its 0, 1, 2, in a session of its own (a signal to the caller's process group
    /// never reaches it; the caller's group kill of the pid it returns reaches only runsc), and
    /// returns once runsc has written the process's pid inside the sandbox: the process runs.
    ///
    /// - Returns: the pid of `runsc exec`, the caller's child: it exits with the process's
    ///   exit status (`waitpid(2)`).
    /// - Throws: `RuntimeError` `.runscFailed` with runsc's logged errors when runsc exits
    ///   before the process started (no such program, a bad cwd), or takes longer than
    ///   `execStartLimit` (it is killed then); `SysError` when it cannot be spawned.
    func execCaptured(_ state: ContainerState, options: ExecOptions, stdio: [Int32], in runtime: ContainerRuntime)
        throws -> Int32
    {
        guard stdio.count == 3, let pidPath = options.internalPidFile else {
            throw RuntimeError(
                .unsupported, field: "stdio", "an exec with its own stdio needs three fds and an internal pid file")
        }
        let runsc = Self.runsc(state, in: runtime)
        let dir = runtime.store.directory(state.id)
        let token = "\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let processFile = dir + "/exec-\(token).json"
        try Files.writeAtomically(processFile, Array(try JSONEncoder().encode(options.process)), mode: 0o600)
        defer { unlink(processFile) }
        unlink(pidPath)
        let argv =
            [runsc.state.runsc] + runsc.state.flags + [
                "exec", "--process", processFile, "--internal-pid-file", pidPath, state.id,
            ]
        let logStart = runsc.logPath.flatMap { Files.exists($0) ? (try? Files.read($0))?.count : 0 } ?? 0
        let (pid, rc) = spawnWithDefaultSignals(argv[0], argv, keepFds: 3, newSession: true) { actions in
            for (target, fd) in stdio.enumerated() {
                posix_spawn_file_actions_adddup2(&actions, fd, Int32(target))
            }
        }
        guard rc == 0 else { throw SysError("posix_spawn", path: argv[0], errno: rc) }
        // A pidfd tells "runsc exited" without reaping it (the caller waits for it).
        let pidfd = ss_pidfd_open(pid)
        defer { if pidfd >= 0 { close(pidfd) } }
        let clock = ContinuousClock()
        let deadline = clock.now + Self.execStartLimit
        while true {
            if Self.readInternalPid(pidPath) != nil { break }
            var entry = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            let exited = pidfd >= 0 ? poll(&entry, 1, 2) > 0 : ProcStat.read(pid: pid)?.state ?? "Z" == "Z"
            if exited {
                // runsc writes the pid before it waits: a process that ran and ended is fine.
                if Self.readInternalPid(pidPath) != nil { break }
                let status = (try? waitChild(pid)) ?? -1
                let why = runsc.logErrors(since: logStart)
                throw RuntimeError(
                    .runscFailed,
                    "runsc exec: \(why.isEmpty ? "exited \(status) before the process started" : why.joined(separator: "; "))",
                    operation: "exec")
            }
            if clock.now > deadline {
                Glibc.kill(pid, SIGKILL)
                _ = try? waitChild(pid)
                throw RuntimeError(
                    .runscFailed, "runsc exec: the process did not start within \(Self.execStartLimit)",
                    operation: "exec")
            }
            if pidfd < 0 { usleep(2000) }
        }
        runtime.log.log(.debug, "gVisor exec in \(state.id): runsc exec \(pid) started its process")
        return pid
    }

    /// The pid runsc wrote to `path` (decimal), nil while it is not there.
    static func readInternalPid(_ path: String) -> Int32? {
        guard let text = try? Files.readString(path), let pid = Int32(text.trimmed), pid > 0 else { return nil }
        return pid
    }

    /// `runsc kill --pid` of the exec'd process (`internalPid`, as the sandbox numbers it) and
    /// of its descendants at this moment, read from `runsc ps` (its PID and PPID columns): the
    /// sentry has no process-group signal through runsc. A process whose parent died before
    /// the listing (reparented to the sandbox's init) is not found; the sandbox's cgroup and
    /// its lifetime still bound it. Without `internalPid`, `hostPid` (runsc exec) is signalled.
    /// - Throws: `RuntimeError` when `runsc kill` of the exec'd process fails and it has not
    ///   ended.
    public func signalExec(
        _ state: ContainerState, hostPid: Int32, internalPid: Int32?, signal: Int32, in runtime: ContainerRuntime
    ) throws {
        guard let internalPid else {
            Glibc.kill(hostPid, signal)
            return
        }
        let runsc = Self.runsc(state, in: runtime)
        var targets: [Int32] = []
        if let table = try? runsc.run(["ps", state.id]), table.status == 0 {
            targets = Self.descendants(of: internalPid, psTable: table.stdout)
        }
        // The exec'd process first: killed after its children, it could act on their end
        // (a shell goes on to its next command); its children, listed before, follow.
        var failure: String?
        for pid in [internalPid] + targets {
            let result = try? runsc.run(["kill", "--pid", "\(pid)", state.id, "\(signal)"])
            if pid == internalPid, let result, result.status != 0 { failure = result.stderr.trimmed }
        }
        if let failure, isAlive(hostPid) {
            throw RuntimeError(.runscFailed, "runsc kill --pid \(internalPid): \(failure)", operation: "kill")
        }
    }

    /// The pids below `root` in a `runsc ps` table (header `UID PID PPID C TTY STIME TIME
    /// CMD`), parents before children.
    static func descendants(of root: Int32, psTable: String) -> [Int32] {
        let lines = psTable.split(separator: "\n").map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }) }
        guard let header = lines.first, let pidColumn = header.firstIndex(of: "PID"),
            let ppidColumn = header.firstIndex(of: "PPID")
        else { return [] }
        var children: [Int32: [Int32]] = [:]
        for row in lines.dropFirst() where row.count > max(pidColumn, ppidColumn) {
            guard let pid = Int32(row[pidColumn]), let ppid = Int32(row[ppidColumn]) else { continue }
            children[ppid, default: []].append(pid)
        }
        var out: [Int32] = []
        var queue = [root]
        while let next = queue.first {
            queue.removeFirst()
            for child in children[next] ?? [] where child != root && !out.contains(child) {
                out.append(child)
                queue.append(child)
            }
        }
        return out
    }

    /// Whether `pid` is a live process (not a zombie) of this host.
    private func isAlive(_ pid: Int32) -> Bool {
        guard let stat = ProcStat.read(pid: pid) else { return false }
        return stat.state != "Z"
    }
}

extension GVisorBackend {
    /// After the sandbox is killed: reaps the processes of its `sessions` (read before it was
    /// killed, `sessions(of:)`) that ended as this process's children.
    /// runsc's sandbox starts helper processes of its own (the systrap platform's stub
    /// processes, command name `exe`); when the sandbox dies they are reparented to the
    /// nearest child subreaper, which a long-lived host of gVisor sandboxes (safespaced) is
    /// (`GVisorSandboxCreation` sets PR_SET_CHILD_SUBREAPER), and would stay zombies of it.
    /// Waits at most 2 s for the session's processes to end (a process of another parent is
    /// reparented as its parent dies); processes of other sessions (the exec's `runsc exec`,
    /// the daemon's own children) are never waited for.
    static func reapSessions(_ sessions: Set<Int32>) {
        let sessions = sessions.filter { $0 > 1 && $0 != getsid(0) }
        guard !sessions.isEmpty else { return }
        let me = getpid()
        let clock = ContinuousClock()
        let until = clock.now + .seconds(2)
        while true {
            var left = false
            for (pid, parent) in sessionMembers(sessions) {
                left = true
                if parent == me {
                    var status: Int32 = 0
                    _ = waitpid(pid, &status, WNOHANG)
                }
            }
            if !left || clock.now > until { return }
            usleep(10_000)
        }
    }

    /// The session ids (stat(5) field 6) of the sandbox process of `state` and of runsc's
    /// helpers it recorded (the systrap stubs run in a helper's session), other than this
    /// process's own; processes gone (or whose pid another process has) are left out.
    static func sessions(of state: ContainerState) -> Set<Int32> {
        let known =
            [GVisorState.HelperProcess(pid: state.pid, startTime: state.startTime)] + (state.gvisor?.helpers ?? [])
        var out: Set<Int32> = []
        for process in known where ProcStat.read(pid: process.pid)?.startTime == process.startTime {
            let sid = getsid(process.pid)
            if sid > 1 && sid != getsid(0) { out.insert(sid) }
        }
        return out
    }

    /// The processes of the host in one of `sessions` (stat(5) field 6) as (pid, parent pid).
    private static func sessionMembers(_ sessions: Set<Int32>) -> [(Int32, Int32)] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var out: [(Int32, Int32)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let pid = Int32(name),
                let text = try? Files.readString("/proc/\(pid)/stat"),
                let close = text.lastIndex(of: ")")
            else { continue }
            // After "comm)": state, ppid, pgrp, session.
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 3, let parent = Int32(fields[1]), let sid = Int32(fields[3]) else { continue }
            if sessions.contains(sid) { out.append((pid, parent)) }
        }
        return out
    }
}
