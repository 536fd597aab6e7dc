import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI
import SeccompFilters

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// This runtime's own backend: the container's processes run on the host kernel in
/// namespaces and a cgroup of their own, under its seccomp filter, set up by this binary's
/// `init` (Init.swift) through the init protocol (InitProtocol.swift); the container's pid is
/// that init's, which execs the workload at `start`.
public struct NativeBackend: RuntimeBackend {
    public init() {}

    public var kind: Backend { .native }

    // MARK: create

    public func prepareCreate(_ request: CreateRequest, in runtime: ContainerRuntime) throws -> any ContainerCreation {
        // A container of a pod whose sandbox runs under gVisor cannot run natively: the paths
        // it joins are the sentry's host namespaces, not the pod's.
        if case .container(let sandboxID) = try PodRole.of(request.spec.annotations),
            let sandbox = try? runtime.store.load(sandboxID),
            (sandbox.backend ?? .native) != .native
        {
            throw RuntimeError(
                .invalidSpec, field: "annotations[\(PodRole.sandboxKeys[0])]",
                "pod sandbox \"\(sandboxID)\" runs under gVisor; its containers must too (security level high)")
        }
        let creation = NativeCreation(request: request, runtime: runtime)
        if request.spec.process?.terminal == true {
            guard let path = request.options.consoleSocket else {
                throw RuntimeError(.invalidSpec, field: "process.terminal", "true needs --console-socket")
            }
            creation.consoleSocketFd = try connectUnix(path)
        }
        return creation
    }

    // MARK: start

    /// Opens the exec FIFO for reading: the init, blocked writing to it, execs the workload.
    public func start(_ state: ContainerState, in runtime: ContainerRuntime) throws {
        let fifo = runtime.store.fifoPath(state.id)
        let fd = try sys("open", path: fifo) { ss_open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0) }
        defer { close(fd) }
        var byte: UInt8 = 0
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 50)
            let n = Glibc.read(fd, &byte, 1)
            if n == 1 { break }
            if runtime.store.status(of: state) == .stopped {
                throw RuntimeError(.initFailed, "container init exited before start", operation: "start")
            }
        }
    }

    // MARK: kill

    /// To the init; with `all` to every process in the container's cgroup, which works after
    /// the init has exited.
    public func kill(_ state: ContainerState, signal: Int32, all: Bool, in runtime: ContainerRuntime) throws {
        let status = runtime.store.status(of: state)
        if all {
            if status != .stopped { try runtime.signalInit(state, signal) }
            try state.cgroup.killAll(signal: signal)
            return
        }
        guard status != .stopped else { throw RuntimeError.notRunning() }
        try runtime.signalInit(state, signal)
    }

    // MARK: delete

    /// SIGKILL to the init and every process in the cgroup of a container that is not
    /// stopped, waiting for the init to die. What a stopped container left in its cgroup (one
    /// without a PID namespace of its own can leave processes) is killed by the cgroup's
    /// removal that follows in `delete` (`destroyKillingStragglers`), which looks for processes
    /// only when the cgroup cannot be removed.
    public func stop(_ state: ContainerState, status: Status, force: Bool, in runtime: ContainerRuntime) throws {
        if status != .stopped {
            try ContainerRuntime.checkDeletable(state, status: status, force: force)
            try? runtime.signalInit(state, SIGKILL)
            _ = try? state.cgroup.killAll(signal: SIGKILL)
            runtime.waitGone(state)
        }
    }

    // MARK: wait, exec, ps, pause, update

    /// The init of a container this process created (it is our child).
    public func wait(_ state: ContainerState, in runtime: ContainerRuntime) throws -> Int32 {
        try waitChild(state.pid)
    }

    public func exec(_ state: ContainerState, options: ExecOptions, in runtime: ContainerRuntime) throws -> Int32 {
        try runtime.execNative(state, options: options)
    }

    /// Host pids of every process in the container's cgroup.
    public func processes(_ state: ContainerState, in runtime: ContainerRuntime) throws -> [Int32] {
        try state.cgroup.processes().sorted()
    }

    public func pause(_ state: ContainerState, in runtime: ContainerRuntime) throws {
        try runtime.freeze(state)
    }

    public func update(_ state: ContainerState, apply: Resources, merged: Resources, in runtime: ContainerRuntime)
        throws
    {
        try runtime.updateCgroup(state, apply: apply, merged: merged)
    }
}

/// One native create: the console socket it connected, and the init once it reported.
final class NativeCreation: ContainerCreation {
    let request: CreateRequest
    let runtime: ContainerRuntime
    /// The `--console-socket` connection when `process.terminal`, else -1.
    var consoleSocketFd: Int32 = -1
    /// The init, once it reported `created`.
    var initPid: Int32 = -1

    init(request: CreateRequest, runtime: ContainerRuntime) {
        self.request = request
        self.runtime = runtime
    }

    deinit { if consoleSocketFd >= 0 { close(consoleSocketFd) } }

    /// Not masked by umask: an init in a user namespace is "other" to host root.
    var fifoMode: mode_t { 0o622 }

    /// Device rules always (default deny + the spec's rules + the usual allow list), not only
    /// when given; linux.devices nodes get mknod only, their access is the spec's.
    func configure(_ cgroup: Cgroup, spec: Spec) throws {
        for warning in try cgroup.apply(spec.linux?.resources, devices: spec.linux?.devices ?? []) {
            runtime.log.warn(warning)
        }
    }

    func launch(spec: Spec, cgroup: Cgroup, created: (Int32, UInt64) throws -> Void) throws -> Int32 {
        let (pid, _) = try runtime.startInit(
            id: request.id, bundle: request.bundle, rootfs: request.rootfs, spec: spec, cgroup: cgroup,
            options: request.options,
            consoleSocketFd: consoleSocketFd
        ) { pid, startTime in
            initPid = pid
            try created(pid, startTime)
        }
        return pid
    }

    func abort(_ failure: any Error, cgroup: Cgroup?) -> any Error {
        // An init the OOM killer took while it set up shows only as a broken init socket:
        // name the limit, as runc does ("container init was OOM-killed (memory limit too low?)").
        var failure = failure
        if let cgroup, (cgroup.oomKillsSinceCreate() ?? 0) > 0 {
            failure = RuntimeError(
                .initFailed, field: "linux.resources.memory.limit",
                "the container's init was OOM-killed while it was set up (memory limit too low?): \(failure)",
                cause: failure)
        }
        if initPid > 0 {
            Glibc.kill(initPid, SIGKILL)
            var st: Int32 = 0
            _ = waitpid(initPid, &st, 0)
        }
        return failure
    }
}

extension ContainerRuntime {
    /// Spawns the init, moves it into the cgroup and walks it through the init protocol.
    /// - Parameter created: called once the init reports `created`, to record the state; only
    ///   after it returns is the init told `saved` and allowed to wait for `start` (an init whose
    ///   creator died before that exits instead of waiting for ever).
    fileprivate func startInit(
        id: String, bundle: String, rootfs: String, spec: Spec, cgroup: Cgroup, options: CreateOptions,
        consoleSocketFd: Int32,
        created: (Int32, UInt64) throws -> Void
    ) throws -> (Int32, UInt64) {
        let namespaces = spec.linux?.namespaces ?? []
        var join: [JoinNamespace] = []
        defer { join.forEach { close($0.fd) } }
        for type in NamespaceKind.joinOrder {
            guard let ns = namespaces.first(where: { $0.type == type }), let path = ns.path, !path.isEmpty else {
                continue
            }
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
        let spawned = try spawnInit(
            join: join, unshare: flags, uidMappings: spec.linux?.uidMappings ?? [],
            gidMappings: spec.linux?.gidMappings ?? [], preserveFds: options.preserveFds, cgroup: try cgroup.selfJoin(),
            visibleToContainer: !SealedExecutable.helpersInvisible(to: spec))
        let pid = spawned.pid
        log.log(
            .debug, "container \(id): init \(pid) runs this binary sealed (\(SealedExecutable.method?.rawValue ?? "?"))"
        )
        defer { close(spawned.channel.fd) }
        do {
            if !spawned.joinedCgroup { try cgroup.attach(pid: pid) }
            if let adj = spec.process?.oomScoreAdj {
                do { try Files.write("/proc/\(pid)/oom_score_adj", "\(adj)") } catch let e as SysError {
                    if e.errno == EACCES || e.errno == EPERM {
                        throw RuntimeError(
                            .permissionDenied, field: "process.oomScoreAdj",
                            "\(adj) is below the caller's own oom_score_adj and lowering it needs CAP_SYS_RESOURCE, which this process lacks",
                            operation: e.operation, errno: e.errno, cause: e)
                    }
                    throw SysError(e.operation, path: e.path, errno: e.errno, field: "process.oomScoreAdj")
                }
            }
            guard let startTime = ProcStat.read(pid: pid)?.startTime else {
                throw RuntimeError(.initFailed, "container init \(pid) exited during create")
            }
            let creating = State(id: id, status: "creating", pid: pid, bundle: bundle, annotations: spec.annotations)
            let stateJSON = String(decoding: try JSONEncoder().encode(creating), as: UTF8.self)
            let fifoFd = try sys("open", path: store.fifoPath(id)) {
                ss_open(store.fifoPath(id), O_PATH | O_CLOEXEC, 0)
            }
            defer { close(fifoFd) }
            var fds = [fifoFd]
            var consoleIndex: Int?
            if consoleSocketFd >= 0 {
                consoleIndex = fds.count
                fds.append(consoleSocketFd)
            }
            // In a new user namespace the shared rootfs goes in idmapped (IDMappedMount.swift).
            let rootfsTree: Int32? =
                own.contains("user")
                ? try IDMappedMount.rootfsTree(
                    rootfs, initPid: pid, uidMappings: spec.linux?.uidMappings ?? [], log: log) : nil
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
            try spawned.channel.send(config, specBytes: BundleSpec.bytes(decodingTo: spec), fds: fds)
            if let seccompListener {
                // Only the init's copy may stay: the agent reads the state up to the end of the stream.
                close(seccompListener)
                listenerOpen = false
            }
            while true {
                guard let (message, _) = try spawned.channel.receive(InitMessage.self) else {
                    throw RuntimeError(.initFailed, "container init exited during create without reporting an error")
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
                    throw message.reportedError(default: "container init failed")
                default:
                    throw RuntimeError(.initFailed, "unexpected init message \(message.type)")
                }
            }
        } catch {
            Glibc.kill(pid, SIGKILL)
            var st: Int32 = 0
            _ = waitpid(pid, &st, 0)
            throw error
        }
    }

    /// Signals the init through a pidfd checked against the recorded start time (no pid reuse race).
    fileprivate func signalInit(_ state: ContainerState, _ signal: Int32) throws {
        let pidfd = ss_pidfd_open(state.pid)
        guard pidfd >= 0 else {
            if errno == ESRCH { throw RuntimeError.notRunning() }
            throw SysError("pidfd_open", path: "\(state.pid)")
        }
        defer { close(pidfd) }
        guard ProcStat.read(pid: state.pid)?.startTime == state.startTime else {
            throw RuntimeError.notRunning()
        }
        if ss_pidfd_send_signal(pidfd, signal) != 0 && errno != ESRCH {
            throw SysError("kill", path: "\(state.pid)")
        }
    }

    /// Waits (up to 10 s) until the init is dead: gone, or a zombie its parent has not reaped.
    fileprivate func waitGone(_ state: ContainerState) {
        for _ in 0..<1000 {
            if store.status(of: state) == .stopped { return }
            // We may be its parent (run, safespace run): reap it.
            var st: Int32 = 0
            _ = waitpid(state.pid, &st, WNOHANG)
            usleep(10_000)
        }
    }
}
