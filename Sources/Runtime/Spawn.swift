import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI

/// CLONE_NEW* flag and /proc/PID/ns name of each OCI namespace type.
enum NamespaceKind {
    static let flags: [String: Int32] = [
        "user": CLONE_NEWUSER, "mount": CLONE_NEWNS, "pid": CLONE_NEWPID, "network": CLONE_NEWNET,
        "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "cgroup": CLONE_NEWCGROUP, "time": CLONE_NEWTIME,
    ]
    static let procNames: [String: String] = [
        "user": "user", "mount": "mnt", "pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts",
        "cgroup": "cgroup", "time": "time",
    ]
    /// setns(2) order: the network namespace first, then the user namespace so the others are
    /// joined with its privileges. A network namespace made by the host (a sandbox network,
    /// a CNI netns) is owned by the initial user namespace: setns(2) into it needs
    /// CAP_SYS_ADMIN there (setns(2), user_namespaces(7)), which the process has only before
    /// it joins the container's user namespace. One owned by the container's user namespace
    /// is joined as well by a process of the initial one. (runc's nsexec likewise joins what
    /// it can before the user namespace.)
    static let joinOrder = ["network", "user", "ipc", "uts", "pid", "cgroup", "time", "mount"]
}

/// The init helper started by `spawnInit`: its pid (in the caller's PID namespace, a child of
/// the caller) and the parent's end of the init socket.
struct SpawnedInit {
    let pid: Int32
    let channel: InitChannel
    /// The helper joined the `cgroup` given to `spawnInit` by itself; when false the caller
    /// moves it (`Cgroup.attach`).
    let joinedCgroup: Bool
}

/// A namespace to join with setns(2): an fd opened by the parent.
struct JoinNamespace {
    let type: String
    let fd: Int32
}

/// Clones the container's first process through the C stages (no Swift runs between clone
/// and exec) and re-executes this binary, sealed (`SealedExecutable`), as
/// `safespace-runtime init` in it: non-dumpable from before it joins any namespace, in a
/// session of its own.
///
/// - Parameters:
///   - join: namespaces to setns(2) into, in `NamespaceKind.joinOrder`.
///   - unshare: CLONE_NEW* flags to create (CLONE_NEWCGROUP is left to the init, after the
///     parent has moved it into its cgroup).
///   - uidMappings/gidMappings: written to /proc/PID/{uid,gid}_map when a user namespace is new.
/// - Throws: `SysError` naming the failed stage and errno.
///   - userNamespaceGids: the gid mappings of a user namespace joined by `join` (`exec`), to
///     pick a mapped gid for `nonDumpableGid`.
///   - stdio: fds (each above 2) that become the helper's fds 0, 1, 2 in stage 1; nil keeps
///     the caller's.
///   - visibleToContainer: whether a container can see the helper before it re-executes
///     (`SealedExecutable.helpersInvisible(to:)`): then this process must run the sealed binary.
///   - cgroup: the cgroup the helper joins by itself before it runs anything (`CgroupSelfJoin`:
///     no wait for the kernel's attach lock). When a user namespace is made or joined, the
///     v2 part is stage 1's own birth in the cgroup (this process's credentials; the kernel
///     checks the new ones for a clone from inside the namespace), and on a cgroup v2 host the
///     helper is not joined: the returned `joinedCgroup` is false and the caller moves it.
/// - Throws: also `CgroupError` (`open`, or `write` with the `tasks` or `cgroup.procs` path and
///   errno) when the helper could not join its cgroup.
func spawnInit(
    join: [JoinNamespace], unshare: Int32, uidMappings: [IDMapping], gidMappings: [IDMapping], preserveFds: Int = 0,
    userNamespaceGids: [IDMapping] = [], stdio: [Int32]? = nil, cgroup: CgroupSelfJoin? = nil,
    visibleToContainer: Bool = true
) throws -> SpawnedInit {
    var pair: [Int32] = [-1, -1]
    try sys("socketpair") { socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) }
    let parentEnd = pair[0]
    let childEnd = pair[1]
    defer { close(childEnd) }
    // Never the host's file itself: the helper is visible in the container (SealedExecutable).
    let exeFd = try SealedExecutable.fd(visibleToContainer: visibleToContainer)

    let argv = ["safespace-runtime", "init"]
    let envp = ["_SAFESPACE_INITPIPE=\(childEnd)", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    var cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    var cEnvp: [UnsafeMutablePointer<CChar>?] = envp.map { strdup($0) } + [nil]
    defer {
        cArgv.forEach { free($0) }
        cEnvp.forEach { free($0) }
    }

    var config = ss_spawn_config()
    config.ns_count = Int32(join.count)
    withUnsafeMutableBytes(of: &config.ns_fds) { raw in
        let p = raw.bindMemory(to: Int32.self)
        for (i, ns) in join.enumerated() { p[i] = ns.fd }
    }
    withUnsafeMutableBytes(of: &config.ns_types) { raw in
        let p = raw.bindMemory(to: Int32.self)
        for (i, ns) in join.enumerated() { p[i] = NamespaceKind.flags[ns.type] ?? 0 }
    }
    config.unshare_flags = unshare
    config.sync_fd = childEnd
    config.peer_fd = parentEnd
    config.exe_fd = exeFd
    config.keep_fds = Int32(preserveFds)
    if let stdio {
        guard stdio.count == 3, stdio.allSatisfy({ $0 > 2 }) else {
            throw RuntimeError(.invalidConfiguration, field: "stdio", "three fds above 2 expected, got \(stdio)")
        }
        config.stdio_set = 1
        config.stdio_fds = (stdio[0], stdio[1], stdio[2])
    }
    let entersUserNamespace = unshare & CLONE_NEWUSER != 0 || join.contains { $0.type == "user" }
    config.nondump_gid = nonDumpableGid(
        inUserNamespace: entersUserNamespace, mappings: unshare & CLONE_NEWUSER != 0 ? gidMappings : userNamespaceGids)
    var cgroupFds: [Int32] = []
    defer { cgroupFds.forEach { close($0) } }
    config.cg_dir_fd = -1
    // With a user namespace the v2 join is stage 1's own clone3 from here (this process's
    // credentials), on a host with v1 hierarchies only: there the unified hierarchy holds no
    // pids limit that stage 1 and stage 2 together could exceed. On a cgroup v2 host the caller
    // moves the helper.
    if let cgroup, !entersUserNamespace || !cgroup.tasksFiles.isEmpty, cgroup.tasksFiles.count <= Int(SS_MAX_CGROUP) {
        for path in cgroup.tasksFiles {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            if fd < 0 { throw CgroupError(operation: "open", path: path, errno: errno, field: cgroup.field) }
            cgroupFds.append(fd)
        }
        withUnsafeMutableBytes(of: &config.cg_tasks_fds) { raw in
            let p = raw.bindMemory(to: Int32.self)
            for (i, fd) in cgroupFds.enumerated() { p[i] = fd }
        }
        config.cg_tasks_count = Int32(cgroupFds.count)
        if let dir = cgroup.unifiedDirectory {
            let fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)
            if fd < 0 { throw CgroupError(operation: "open", path: dir, errno: errno, field: cgroup.field) }
            cgroupFds.append(fd)
            config.cg_dir_fd = fd
            config.cg_stage1_into = entersUserNamespace ? 1 : 0
        }
        config.cg_join = 1
    }

    func spawn() -> pid_t {
        cArgv.withUnsafeMutableBufferPointer { a in
            cEnvp.withUnsafeMutableBufferPointer { e in
                config.argv = UnsafePointer(a.baseAddress)
                config.envp = UnsafePointer(e.baseAddress)
                return ss_spawn(&config)
            }
        }
    }
    var stage1 = spawn()
    if stage1 < 0 && errno == ENOSYS && config.cg_stage1_into != 0 {
        // No clone3 (Linux < 5.3, or a seccomp filter of the caller's): the caller moves it.
        config.cg_join = 0
        config.cg_stage1_into = 0
        stage1 = spawn()
    }
    if stage1 < 0 {
        let e = errno
        close(parentEnd)
        if config.cg_stage1_into != 0, let cgroup, let dir = cgroup.unifiedDirectory {
            throw CgroupError(operation: "clone3 CLONE_INTO_CGROUP", path: dir, errno: e, field: cgroup.field)
        }
        throw SysError("clone", errno: e)
    }
    var stages = StageReport()
    do {
        try driveStages(
            stage1: stage1, fd: parentEnd, uidMappings: uidMappings, gidMappings: gidMappings,
            joining: config.cg_join != 0 ? cgroup : nil, into: &stages)
    } catch {
        kill(stage1, SIGKILL)
        var st: Int32 = 0
        _ = waitpid(stage1, &st, 0)
        if let pid = stages.pid {
            kill(pid, SIGKILL)
            _ = waitpid(pid, &st, 0)
        }
        close(parentEnd)
        throw error
    }
    var st: Int32 = 0
    while waitpid(stage1, &st, 0) < 0 && errno == EINTR {}
    return SpawnedInit(pid: stages.pid ?? -1, channel: InitChannel(fd: parentEnd), joinedCgroup: config.cg_join != 0)
}

/// What the clone stages reported so far: stage 2's pid (from stage 1) and whether stage 2
/// joined its cgroups.
private struct StageReport {
    var pid: Int32?
    var joined = false
}

/// A real gid for the helper's exec that differs from its effective gid (see spawn.c): any
/// other gid in the initial user namespace; in a user namespace a mapped one other than 0
/// (stage 1 is gid 0 there), or -1 when only 0 is mapped (or the mappings are unknown): then
/// only the helper's capabilities, which the container lacks, cover the moment between its
/// execve(2) and its prctl(2) (Init.swift).
func nonDumpableGid(inUserNamespace: Bool, mappings: [IDMapping]) -> Int32 {
    guard inUserNamespace else { return getegid() == 65534 ? 65533 : 65534 }
    for m in mappings where m.size > 0 {
        if m.containerID != 0 { return Int32(bitPattern: m.containerID) }
        if m.size > 1 { return 1 }
    }
    return -1
}

private func readExactly(_ fd: Int32, _ count: Int) throws -> [UInt8]? {
    var buf = [UInt8](repeating: 0, count: count)
    var got = 0
    while got < count {
        let n = buf[got...].withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw SysError("read init socket")
        }
        if n == 0 { return nil }
        got += n
    }
    return buf
}

/// Reads stage messages until stage 1 has given stage 2's pid and, when `joining` is set
/// (cg_join), stage 2 has said it joined those cgroups: stage 1 and 2 write to the same socket,
/// in either order. A stage 2 failure is thrown once stage 1's pid message is in, so the caller
/// can reap stage 2.
private func driveStages(
    stage1: pid_t, fd: Int32, uidMappings: [IDMapping], gidMappings: [IDMapping], joining: CgroupSelfJoin?,
    into report: inout StageReport
) throws {
    var stage2Failure: (any Error)?
    let steps: [Int32: String] = [
        SS_STEP_SETNS: "setns", SS_STEP_UNSHARE_USER: "unshare(CLONE_NEWUSER)", SS_STEP_WAIT_MAPS: "wait for id maps",
        SS_STEP_SETID: "setresuid/setresgid(0) in the user namespace", SS_STEP_UNSHARE: "unshare",
        SS_STEP_CLONE: "clone",
        SS_STEP_DUMPABLE: "prctl(PR_SET_DUMPABLE, 0)",
        SS_STEP_NONDUMP_GID: "setresgid (real gid of the non-dumpable helper)",
        SS_STEP_STDIO: "dup3 (exec stdio)",
    ]
    while true {
        if report.pid != nil {
            if let stage2Failure { throw stage2Failure }
            if joining == nil || report.joined { return }
        }
        guard let kind = try readExactly(fd, 1) else {
            if let stage2Failure { throw stage2Failure }
            throw RuntimeError(
                .initFailed,
                report.pid == nil
                    ? "container process stage 1 exited before reporting its pid"
                    : "container process exited before it joined its cgroup")
        }
        switch Int32(kind[0]) {
        case Int32(UInt8(ascii: "J")):
            report.joined = true
        case Int32(UInt8(ascii: "U")):
            try writeIDMap("/proc/\(stage1)/gid_map", gidMappings, field: "linux.gidMappings")
            try writeIDMap("/proc/\(stage1)/uid_map", uidMappings, field: "linux.uidMappings")
            var ack: UInt8 = 1
            _ = Glibc.write(fd, &ack, 1)
        case Int32(UInt8(ascii: "P")):
            guard let p = try readExactly(fd, 4) else { throw RuntimeError(.initFailed, "short pid message") }
            report.pid = Int32(p[0]) | Int32(p[1]) << 8 | Int32(p[2]) << 16 | Int32(p[3]) << 24
        case Int32(UInt8(ascii: "E")):
            guard let p = try readExactly(fd, 8) else { throw RuntimeError(.initFailed, "short error message") }
            let step = Int32(p[0]) | Int32(p[1]) << 8 | Int32(p[2]) << 16 | Int32(p[3]) << 24
            let err = Int32(p[4]) | Int32(p[5]) << 8 | Int32(p[6]) << 16 | Int32(p[7]) << 24
            if let joining, step == SS_STEP_CGROUP_PROCS || step >= SS_STEP_CGROUP_TASKS {
                // Stage 2's: stage 1 still reports the pid of the (exiting) stage 2.
                let tasks = joining.tasksFiles
                let index = Int(step - SS_STEP_CGROUP_TASKS)
                let path =
                    step == SS_STEP_CGROUP_PROCS
                    ? (joining.unifiedDirectory ?? "") + "/cgroup.procs"
                    : tasks.indices.contains(index) ? tasks[index] : "cgroup"
                stage2Failure = CgroupError(operation: "write", path: path, errno: err, field: joining.field)
                continue
            }
            if step == SS_STEP_CLONE_INTO_CGROUP, let joining, let dir = joining.unifiedDirectory {
                throw CgroupError(operation: "clone3 CLONE_INTO_CGROUP", path: dir, errno: err, field: joining.field)
            }
            throw SysError(
                steps[step] ?? "stage \(step)", errno: err,
                field: step == SS_STEP_SETNS || step == SS_STEP_UNSHARE ? "linux.namespaces" : nil)
        default:
            throw RuntimeError(.initFailed, "unexpected stage message \(kind[0])")
        }
    }
}

/// Writes a user namespace id map (user_namespaces(7)): one `containerID hostID size` line each.
func writeIDMap(_ path: String, _ mappings: [IDMapping], field: String) throws {
    guard !mappings.isEmpty else {
        throw RuntimeError(.invalidSpec, field: field, "a new user namespace needs at least one mapping")
    }
    let text = mappings.map { "\($0.containerID) \($0.hostID) \($0.size)\n" }.joined()
    do { try Files.write(path, text) } catch let e as SysError {
        throw SysError("write \(text.trimmed) to", path: path, errno: e.errno, field: field)
    }
}
