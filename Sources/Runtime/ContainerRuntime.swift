#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import CSafeSpace
import LinuxKernel
import OCI
import Cgroups
import SeccompFilters

/// Options of `create` (runc's flags of the same names).
public struct CreateOptions: Sendable {
    public var pidFile: String?
    public var consoleSocket: String?
    public var noPivot: Bool
    public var noNewKeyring: Bool
    /// Extra fds (3…3+N-1) passed to the workload (`--preserve-fds`).
    public var preserveFds: Int

    public init(pidFile: String? = nil, consoleSocket: String? = nil, noPivot: Bool = false, noNewKeyring: Bool = false, preserveFds: Int = 0) {
        self.pidFile = pidFile
        self.consoleSocket = consoleSocket
        self.noPivot = noPivot
        self.noNewKeyring = noNewKeyring
        self.preserveFds = preserveFds
    }
}

/// Options of `exec` (runc's flags of the same names).
public struct ExecOptions: Sendable {
    public var process: Process
    public var detach: Bool
    public var pidFile: String?
    public var consoleSocket: String?
    public var preserveFds: Int
    /// The exec'd process's fds 0, 1, 2 (each above 2, e.g. pipes); nil: the caller's own.
    /// Native backend only (a gVisor container refuses it).
    public var stdio: [Int32]? = nil

    public init(process: Process, detach: Bool = false, pidFile: String? = nil, consoleSocket: String? = nil, preserveFds: Int = 0) {
        self.process = process
        self.detach = detach
        self.pidFile = pidFile
        self.consoleSocket = consoleSocket
        self.preserveFds = preserveFds
    }
}

/// The container lifecycle of runtime.md (create, start, state, kill, delete) plus runc's
/// run, exec, list and ps, over a state directory (`root`, default /run/safespace).
public struct ContainerRuntime: Sendable {
    public let store: StateStore
    public let log: RuntimeLog

    public init(root: String = "/run/safespace", log: RuntimeLog = RuntimeLog(path: nil, format: .text, debug: false)) {
        self.store = StateStore(root: root)
        self.log = log
    }

    // MARK: create

    /// Creates the container: namespaces, cgroup, mounts and root are ready and the init waits
    /// on the exec FIFO for `start` (runtime.md#create).
    ///
    /// - Returns: the init's pid (a child of the caller).
    /// - Throws: `RuntimeError`/`SysError` naming the field at fault; on failure nothing of the
    ///   container remains (process, cgroup, state directory).
    @discardableResult
    public func create(id: String, bundle: String, options: CreateOptions = .init()) throws -> Int32 {
        try StateStore.validate(id: id)
        let bundle = try absolute(bundle)
        let specBytes: [UInt8]
        do { specBytes = try Files.read(bundle + "/config.json") } catch {
            throw RuntimeError("bundle \(bundle): cannot read config.json: \(error)")
        }
        var spec: Spec
        do { spec = try JSONDecoding.decode(Spec.self, from: Data(specBytes)) } catch {
            throw RuntimeError("config.json: \(describe(decodingError: error))")
        }
        try SpecValidation.validate(spec, bundle: bundle)
        let rootPath = spec.root!.path
        let rootfs = try absolute(rootPath.hasPrefix("/") ? rootPath : bundle + "/" + rootPath)
        guard Files.isDirectory(rootfs) else { throw RuntimeError("root.path: \(rootfs) is not a directory") }
        // Security levels: the configured level, raised by the bundle's annotation, picks the
        // backend; `high` runs under runsc (GVisorBackend.swift).
        let configuration = try RuntimeConfiguration.load()
        let level = try SecurityLevel.effective(configured: configuration.configuredLevel(root: store.root), annotations: spec.annotations)
        if level.backend == .gvisor {
            return try GVisorBackend(runtime: self).create(
                id: id, bundle: bundle, rootfs: rootfs, spec: spec, options: options, configuration: configuration,
                consoleSocket: try options.consoleSocket.map { try absolute($0) })
        }
        // A container of a pod whose sandbox runs under gVisor cannot run natively: the paths
        // it joins are the sentry's host namespaces, not the pod's.
        if case .container(let sandboxID) = try PodRole.of(spec.annotations), (try? store.load(sandboxID))?.backend == .gvisor {
            throw RuntimeError("annotations[\(PodRole.sandboxKeys[0])]: pod sandbox \"\(sandboxID)\" runs under gVisor; its containers must too (security level high)")
        }
        var consoleSocketFd: Int32 = -1
        if spec.process?.terminal == true {
            guard let path = options.consoleSocket else {
                throw RuntimeError("process.terminal: true needs --console-socket")
            }
            consoleSocketFd = try connectUnix(path)
        }
        defer { if consoleSocketFd >= 0 { close(consoleSocketFd) } }

        // Held from the id check to the recorded cgroup, released before the init is spawned,
        // so a create that hangs or dies later never blocks other creates.
        let lock = try store.lock()
        let dir = store.directory(id)
        try claimID(id)
        try sys("mkdir", path: dir) { mkdir(dir, 0o711) }
        var cgroup: Cgroup?
        var initPid: Int32 = -1
        var idRange: IDRangeRecord?
        do {
            // Recorded before anything is taken, so a create killed at any point leaves a
            // directory that says whose it was and what to undo (CreatingRecord).
            var record = CreatingRecord(id: id, creator: .current(), bundle: bundle, created: rfc3339Now(), annotations: spec.annotations)
            try store.saveCreating(record)
            let fifo = store.fifoPath(id)
            try sys("mkfifo", path: fifo) { mkfifo(fifo, 0o622) }
            // Not masked by umask: an init in a user namespace is "other" to host root.
            try sys("chmod", path: fifo) { chmod(fifo, 0o622) }
            // A user namespace whose host range the runtime picks (IDAllocator.swift).
            if UserNamespaceRange.wantsAllocation(spec) {
                let allocator = configuration.idAllocator
                let allocation = try allocator.allocate(owner: dir)
                idRange = IDRangeRecord(directory: allocator.directory, hostID: allocation.hostID, size: allocation.size)
                spec.linux?.uidMappings = allocation.mappings
                spec.linux?.gidMappings = allocation.mappings
            }
            var cg = try Cgroup.resolve(cgroupsPath: spec.linux?.cgroupsPath, id: StateStore.directoryName(id))
            // The levels about to be made, recorded before the mkdirs, then what was made, so
            // `delete --force` or a reclaim removes the cgroup of a create killed half-way.
            record.cgroup = cg.planned()
            try store.saveCreating(record)
            try cg.create()
            cgroup = cg
            record.cgroup = cg
            try store.saveCreating(record)
            // Device rules always (default deny + the spec's rules + the usual allow list), not
            // only when given; linux.devices nodes get mknod only, their access is the spec's.
            for warning in try cg.apply(spec.linux?.resources, devices: spec.linux?.devices ?? []) { log.warn(warning) }
            lock.release()
            let spec = spec
            let (pid, _) = try startInit(id: id, bundle: bundle, rootfs: rootfs, spec: spec, cgroup: cg, options: options, consoleSocketFd: consoleSocketFd) { pid, startTime in
                initPid = pid
                let state = ContainerState(
                    id: id, bundle: bundle, rootfs: rootfs, pid: pid, startTime: startTime, created: rfc3339Now(),
                    annotations: spec.annotations, cgroup: cg, spec: spec,
                    ownNamespaces: (spec.linux?.namespaces ?? []).filter { ($0.path ?? "").isEmpty }.map(\.type),
                    idRange: idRange)
                try store.save(state)
                if let pidFile = options.pidFile {
                    try Files.writeAtomically(try absolute(pidFile), Array("\(pid)".utf8), mode: 0o644)
                }
            }
            return pid
        } catch {
            // An init the OOM killer took while it set up shows only as a broken init socket:
            // name the limit, as runc does ("container init was OOM-killed (memory limit too low?)").
            var failure = error
            if let cgroup, (cgroup.oomKillsSinceCreate() ?? 0) > 0 {
                failure = RuntimeError("linux.resources.memory.limit: the container's init was OOM-killed while it was set up (memory limit too low?): \(error)")
            }
            if initPid > 0 {
                Glibc.kill(initPid, SIGKILL)
                var st: Int32 = 0
                _ = waitpid(initPid, &st, 0)
            }
            if let cgroup {
                try? cgroup.killAll(signal: SIGKILL)
                try? cgroup.destroy()
            }
            try? Files.removeTree(dir)
            if let idRange { try? IDAllocator(directory: idRange.directory).release(owner: dir) }
            throw failure
        }
    }

    /// Spawns the init, moves it into the cgroup and walks it through the init protocol.
    /// - Parameter created: called once the init reports `created`, to record the state; only
    ///   after it returns is the init told `saved` and allowed to wait for `start` (an init whose
    ///   creator died before that exits instead of waiting for ever).
    private func startInit(
        id: String, bundle: String, rootfs: String, spec: Spec, cgroup: Cgroup, options: CreateOptions, consoleSocketFd: Int32,
        created: (Int32, UInt64) throws -> Void
    ) throws -> (Int32, UInt64) {
        let namespaces = spec.linux?.namespaces ?? []
        var join: [JoinNamespace] = []
        defer { join.forEach { close($0.fd) } }
        for type in NamespaceKind.joinOrder {
            guard let ns = namespaces.first(where: { $0.type == type }), let path = ns.path, !path.isEmpty else { continue }
            let fd = ss_open(path, O_RDONLY | O_CLOEXEC, 0)
            if fd < 0 { throw SysError("open namespace", path: path, field: "linux.namespaces[\(type)].path") }
            join.append(JoinNamespace(type: type, fd: fd))
        }
        let own = namespaces.filter { ($0.path ?? "").isEmpty }.map(\.type)
        var flags: Int32 = 0
        for type in own where type != "cgroup" { flags |= NamespaceKind.flags[type] ?? 0 }
        let seccomp = try compileSeccomp(spec)
        let seccompListener = try SeccompNotify.connectListener(seccomp, spec: spec)
        var listenerOpen = seccompListener != nil
        defer { if listenerOpen, let seccompListener { close(seccompListener) } }
        let spawned = try spawnInit(join: join, unshare: flags, uidMappings: spec.linux?.uidMappings ?? [], gidMappings: spec.linux?.gidMappings ?? [], preserveFds: options.preserveFds)
        let pid = spawned.pid
        log.log(.debug, "container \(id): init \(pid) runs this binary sealed (\(SealedExecutable.method?.rawValue ?? "?"))")
        defer { close(spawned.channel.fd) }
        do {
            try cgroup.attach(pid: pid)
            if let adj = spec.process?.oomScoreAdj {
                do { try Files.write("/proc/\(pid)/oom_score_adj", "\(adj)") } catch let e as SysError {
                    if e.errno == EACCES || e.errno == EPERM {
                        throw RuntimeError("process.oomScoreAdj: \(adj) is below the caller's own oom_score_adj and lowering it needs CAP_SYS_RESOURCE, which this process lacks")
                    }
                    throw SysError(e.operation, path: e.path, errno: e.errno, field: "process.oomScoreAdj")
                }
            }
            guard let startTime = ProcStat.read(pid: pid)?.startTime else {
                throw RuntimeError("container init \(pid) exited during create")
            }
            let creating = State(id: id, status: "creating", pid: pid, bundle: bundle, annotations: spec.annotations)
            let stateJSON = String(decoding: try JSONEncoder().encode(creating), as: UTF8.self)
            let fifoFd = try sys("open", path: store.fifoPath(id)) { ss_open(store.fifoPath(id), O_PATH | O_CLOEXEC, 0) }
            defer { close(fifoFd) }
            var fds = [fifoFd]
            var consoleIndex: Int?
            if consoleSocketFd >= 0 {
                consoleIndex = fds.count
                fds.append(consoleSocketFd)
            }
            // In a new user namespace the shared rootfs goes in idmapped (IDMappedMount.swift).
            let rootfsTree: Int32? = own.contains("user")
                ? try IDMappedMount.rootfsTree(rootfs, initPid: pid, uidMappings: spec.linux?.uidMappings ?? [], log: log) : nil
            defer { if let rootfsTree { close(rootfsTree) } }
            var rootfsIndex: Int?
            if let rootfsTree {
                rootfsIndex = fds.count
                fds.append(rootfsTree)
            }
            var config = InitConfig(
                mode: .create, id: id, bundle: bundle, rootfs: rootfs, spec: spec, process: spec.process!,
                noPivot: options.noPivot, noNewKeyring: options.noNewKeyring, preserveFds: options.preserveFds,
                fifoFdIndex: 0, consoleSocketFdIndex: consoleIndex, mountNamespaceFdIndex: nil,
                newNamespaces: own, stateJSON: stateJSON, seccomp: seccomp)
            config.rootfsMountFdIndex = rootfsIndex
            // The init loads the compiled filter; the profile itself would only be decoded again.
            config.spec.linux?.seccomp = nil
            if let seccompListener {
                // SCMP_ACT_NOTIFY: the init hands its listener fd to the agent (SeccompNotify.swift).
                let processState = try SeccompNotify.processState(spec: spec, pid: pid, state: creating)
                config.seccompHandoff = SeccompHandoff(socketFdIndex: fds.count, processState: processState)
                fds.append(seccompListener)
            }
            try spawned.channel.send(config, fds: fds)
            if let seccompListener {
                // Only the init's copy may stay: the agent reads the state up to the end of the stream.
                close(seccompListener)
                listenerOpen = false
            }
            while true {
                guard let (message, _) = try spawned.channel.receive(InitMessage.self) else {
                    throw RuntimeError("container init exited during create without reporting an error")
                }
                switch message.type {
                case "hooks":
                    // runtime.md#lifecycle step 5-6: prestart then createRuntime, in the runtime namespace.
                    try Hooks.run(spec.hooks?.prestart ?? [], kind: "prestart", state: stateJSON)
                    try Hooks.run(spec.hooks?.createRuntime ?? [], kind: "createRuntime", state: stateJSON)
                    try spawned.channel.send(InitMessage(type: "continue"))
                case "created":
                    try created(pid, startTime)
                    try spawned.channel.send(InitMessage(type: "saved"))
                    return (pid, startTime)
                case "error":
                    throw RuntimeError(message.message ?? "container init failed")
                default:
                    throw RuntimeError("unexpected init message \(message.type)")
                }
            }
        } catch {
            Glibc.kill(pid, SIGKILL)
            var st: Int32 = 0
            _ = waitpid(pid, &st, 0)
            throw error
        }
    }

    /// Compiles linux.seccomp in the parent (DESIGN: never in the container's init), through
    /// the cache of compiled filters under the state root (SeccompCache.swift).
    func compileSeccomp(_ spec: Spec) throws -> SeccompProgram? {
        guard let seccomp = spec.linux?.seccomp else { return nil }
        let program = try SeccompCache(directory: store.root + "/.seccomp-cache").program(for: seccomp)
        if !program.unknownSyscalls.isEmpty {
            log.warn("linux.seccomp: syscalls unknown to libseccomp were skipped (they return ENOSYS when newer than every named one): \(program.unknownSyscalls.joined(separator: ", "))")
        }
        program.warnings.forEach { log.warn($0) }
        return program
    }

    // MARK: start

    /// Releases a created container's init to exec the workload (runtime.md#start), then runs
    /// the poststart hooks (a failing one is a warning).
    public func start(id: String) throws {
        let state = try store.load(id)
        if state.backend == .gvisor { return try GVisorBackend(runtime: self).start(state) }
        switch store.status(of: state) {
        case .created: break
        case .stopped: throw RuntimeError("cannot start a container that has stopped")
        default: throw RuntimeError("cannot start an already running container")
        }
        let fifo = store.fifoPath(id)
        let fd = try sys("open", path: fifo) { ss_open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0) }
        defer { close(fd) }
        var byte: UInt8 = 0
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 50)
            let n = Glibc.read(fd, &byte, 1)
            if n == 1 { break }
            if store.status(of: state) == .stopped {
                throw RuntimeError("container init exited before start")
            }
        }
        unlink(fifo)
        let running = State(id: id, status: "running", pid: state.pid, bundle: state.bundle, annotations: state.annotations)
        let json = String(decoding: (try? JSONEncoder().encode(running)) ?? Data(), as: UTF8.self)
        for (i, hook) in (state.spec.hooks?.poststart ?? []).enumerated() {
            do { try Hooks.run(hook, field: "hooks.poststart[\(i)]", state: json) } catch { log.warn("\(error)") }
        }
    }

    // MARK: state

    /// runc's `state` JSON for the container. A half-made container (see `CreatingRecord`) is
    /// `creating` while its creator lives and `stopped` once it is dead, with pid 0 and the
    /// creator's pid in `creator`.
    public func state(id: String) throws -> RuncState {
        try StateStore.validate(id: id)
        if let record = store.loadCreating(id: id) {
            var state = RuncState(
                id: id, pid: 0, status: record.creatorAlive ? Status.creating.rawValue : Status.stopped.rawValue,
                bundle: record.bundle ?? "", rootfs: "", created: record.created ?? "", annotations: record.annotations)
            state.creator = record.creator?.pid
            return state
        }
        let state = try store.load(id)
        let status = store.status(of: state)
        return RuncState(
            id: id, pid: status == .stopped ? 0 : state.pid, status: status.rawValue, bundle: state.bundle,
            rootfs: state.rootfs, created: state.created, annotations: state.annotations)
    }

    /// Every container of the root, half-made ones included (`creating`/`stopped`).
    public func list() -> [RuncState] {
        store.entries().compactMap { try? state(id: $0) }
    }

    // MARK: kill

    /// Sends `signal` to the init (runtime.md#kill), or with `all` to every process in the
    /// container's cgroup; `all` works after the init has exited.
    /// - Throws: "container not running" when the init is gone and `all` is false.
    public func kill(id: String, signal: Int32, all: Bool) throws {
        let state = try store.load(id)
        if state.backend == .gvisor { return try GVisorBackend(runtime: self).kill(state, signal: signal, all: all) }
        let status = store.status(of: state)
        if all {
            if status != .stopped { try signalInit(state, signal) }
            try state.cgroup.killAll(signal: signal)
            return
        }
        guard status != .stopped else { throw RuntimeError("container not running") }
        try signalInit(state, signal)
    }

    /// Signals the init through a pidfd checked against the recorded start time (no pid reuse race).
    private func signalInit(_ state: ContainerState, _ signal: Int32) throws {
        let pidfd = ss_pidfd_open(state.pid)
        guard pidfd >= 0 else {
            if errno == ESRCH { throw RuntimeError("container not running") }
            throw SysError("pidfd_open", path: "\(state.pid)")
        }
        defer { close(pidfd) }
        guard ProcStat.read(pid: state.pid)?.startTime == state.startTime else {
            throw RuntimeError("container not running")
        }
        if ss_pidfd_send_signal(pidfd, signal) != 0 && errno != ESRCH {
            throw SysError("kill", path: "\(state.pid)")
        }
    }

    // MARK: delete

    /// Removes the container (runtime.md#delete): its cgroup and state directory; poststop
    /// hooks run (a failing one is a warning). Without `force` a running container is an error.
    public func delete(id: String, force: Bool) throws {
        // Before any file access: an id like ".." must never name a directory to remove.
        try StateStore.validate(id: id)
        if store.loadCreating(id: id) != nil {
            let lock = try store.lock()
            defer { withExtendedLifetime(lock) {} }
            // Again under the lock: the create may have finished (or another delete won) meanwhile.
            if let record = store.loadCreating(id: id) {
                if record.creatorAlive && !force {
                    throw RuntimeError("cannot delete container \(id) that is not stopped: creating (create by \(record.creator.map { "\($0)" } ?? "a live process") still runs)")
                }
                try removeHalfMade(record)
                return
            }
        }
        let state: ContainerState
        do { state = try store.load(id) } catch {
            if force, !Files.exists(store.directory(id)) { return }
            throw error
        }
        if state.backend == .gvisor { return try GVisorBackend(runtime: self).delete(state, force: force) }
        let status = store.status(of: state)
        if status != .stopped {
            guard force || status == .created else {
                throw RuntimeError("cannot delete container \(id) that is not stopped: \(status.rawValue)")
            }
            try? signalInit(state, SIGKILL)
            try? state.cgroup.killAll(signal: SIGKILL)
            waitGone(state)
        }
        // A container without its own PID namespace can leave processes in its cgroup.
        if force || !state.ownNamespaces.contains("pid") {
            try? state.cgroup.killAll(signal: SIGKILL)
        }
        // runtime.md#state: pid is the container process's, required while created or running;
        // stopped, there is none (the number may name another process now), so none is given, as
        // runc does and as `state` reports 0.
        let stopped = State(id: id, status: "stopped", pid: nil, bundle: state.bundle, annotations: state.annotations)
        let json = String(decoding: (try? JSONEncoder().encode(stopped)) ?? Data(), as: UTF8.self)
        var cgroupError: Error?
        do { try state.cgroup.destroyKillingStragglers() } catch { cgroupError = error }
        try Files.removeTree(store.directory(id))
        if let range = state.idRange { try IDAllocator(directory: range.directory).release(owner: store.directory(id)) }
        for (i, hook) in (state.spec.hooks?.poststop ?? []).enumerated() {
            do { try Hooks.run(hook, field: "hooks.poststop[\(i)]", state: json) } catch { log.warn("\(error)") }
        }
        if let cgroupError { throw cgroupError }
    }

    // MARK: half-made containers

    /// Makes `id` free for a new create, under the store lock: nothing there, or a half-made
    /// container whose creator is dead, which is reclaimed first.
    /// - Throws: `RuntimeError` "already exists" for a created container or one whose create
    ///   still runs.
    func claimID(_ id: String) throws {
        guard Files.exists(store.directory(id)) else { return }
        guard let record = store.loadCreating(id: id) else {
            throw RuntimeError("container \"\(id)\" already exists")
        }
        if record.creatorAlive {
            throw RuntimeError("container \"\(id)\" already exists (being created by \(record.creator.map { "\($0)" } ?? "a live process"))")
        }
        log.log(.debug, "reclaiming container \(id): its create (\(record.creator.map { "\($0)" } ?? "unknown process")) died half-way")
        try removeHalfMade(record)
    }

    /// Undoes a half-made container: kills what is in its cgroup and removes the cgroup
    /// (`destroyKillingStragglers`, Cgroup+Teardown.swift), the state directory, and its host
    /// id range when the range's holder is gone too (a `safespace run` that reserved the range
    /// for this create keeps it). Its init, if one was spawned, exits by itself: it was never
    /// told `saved`, and its creator's end of the channel is closed.
    func removeHalfMade(_ record: CreatingRecord) throws {
        if let cgroup = record.cgroup { try cgroup.destroyKillingStragglers() }
        try Files.removeTree(store.directory(record.id))
        if let allocator = try? RuntimeConfiguration.load().idAllocator {
            try allocator.releaseIfStale(owner: store.directory(record.id))
        }
    }

    /// Reclaims every half-made container of this root whose creator is dead (what
    /// `safespace gc` and a daemon's start do; a create of the same id does it for its id).
    /// - Returns: the ids reclaimed.
    @discardableResult
    public func reclaimAbandoned() throws -> [String] {
        let lock = try store.lock()
        defer { withExtendedLifetime(lock) {} }
        var reclaimed: [String] = []
        for id in store.entries() {
            guard let record = store.loadCreating(id: id), !record.creatorAlive else { continue }
            try removeHalfMade(record)
            reclaimed.append(id)
        }
        return reclaimed
    }

    /// Waits (up to 10 s) until the init is dead: gone, or a zombie its parent has not reaped.
    private func waitGone(_ state: ContainerState) {
        for _ in 0..<1000 {
            if store.status(of: state) == .stopped { return }
            // We may be its parent (run, safespace run): reap it.
            var st: Int32 = 0
            _ = waitpid(state.pid, &st, WNOHANG)
            usleep(10_000)
        }
    }

    // MARK: wait

    /// Waits for the init of a container this process created (it is our child).
    /// - Returns: the exit code, 128+N when killed by signal N.
    public func wait(id: String) throws -> Int32 {
        let state = try store.load(id)
        if state.backend == .gvisor { return try GVisorBackend(runtime: self).wait(state) }
        return try waitChild(state.pid)
    }

    // MARK: ps

    /// Host pids of every process in the container's cgroup.
    public func processes(id: String) throws -> [Int32] {
        let state = try store.load(id)
        if state.backend == .gvisor { return try GVisorBackend(runtime: self).processes(state) }
        return try state.cgroup.processes().sorted()
    }
}

/// waitpid(2) for a child, EINTR retried; shell-style status.
func waitChild(_ pid: Int32) throws -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno == EINTR { continue }
        throw SysError("waitpid", path: "\(pid)")
    }
    return ss_exit_status(status)
}

func absolute(_ path: String) throws -> String {
    if path.hasPrefix("/") { return cleanPath(path) }
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { throw SysError("getcwd") }
    return cleanPath(String(cString: buf) + "/" + path)
}

/// Connects a SOCK_STREAM unix socket (close-on-exec) to `path`.
/// - Parameter field: the flag or field that named the path, for errors.
/// - Throws: `RuntimeError` for a path longer than `sun_path`, `SysError` from connect(2).
func connectUnix(_ path: String, field: String = "--console-socket") throws -> Int32 {
    let fd = try sys("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        close(fd)
        throw RuntimeError("\(field): path too long for a unix socket: \(path)")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
    }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    if rc != 0 {
        let e = errno
        close(fd)
        throw SysError("connect", path: path, errno: e, field: field)
    }
    return fd
}

/// A decoding error as a sentence naming the JSON path (`process.user.uid: expected a number`).
public func describe(decodingError error: Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ ctx: DecodingError.Context) -> String {
        ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }.description
    }
    switch e {
    case .typeMismatch(let type, let ctx): return "\(path(ctx)): expected \(type): \(ctx.debugDescription)"
    case .valueNotFound(_, let ctx): return "\(path(ctx)): missing value"
    case .keyNotFound(let key, let ctx):
        let p = path(ctx)
        return "\(p.isEmpty ? "" : p + ".")\(key.stringValue): missing"
    case .dataCorrupted(let ctx): return "\(path(ctx).isEmpty ? "malformed JSON" : path(ctx)): \(ctx.debugDescription)"
    @unknown default: return "\(error)"
    }
}
