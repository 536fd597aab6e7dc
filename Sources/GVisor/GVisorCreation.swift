import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

// The steps of a gVisor create (`ContainerCreation`), run by Runtime's create transaction
// (`ContainerRuntime.create`), which takes the state directory, the exec FIFO and the cgroup
// and rolls all of it back on failure.

/// The create of a gVisor container that is its own sandbox (standalone, or a pod's sandbox
/// container): `runsc create` of the bundle in a cgroup made here. The sandbox process becomes
/// the container's pid; this process is made a child subreaper first, so the sandbox and gofer
/// stay its descendants (as runc's init is) when runsc exits.
final class GVisorSandboxCreation: ContainerCreation {
    let request: CreateRequest
    let runtime: ContainerRuntime
    let consoleSocket: String?
    let platform: String
    /// The joined network namespace, opened and checked (`GVisorBackend.podNetwork`); closed
    /// when the create is done.
    let podNetwork: (index: Int, path: String, fd: Int32)?
    let netnsFdPath: String?
    var gstate: GVisorState
    let runner: Runsc
    let role: PodRole
    /// Whether runsc created the container (it has to delete it on failure).
    var created = false
    /// Whether `launch` ran `runsc run --detach` (`runsAtOnce`): the workload is started.
    var startedWithCreate = false

    init(
        request: CreateRequest, runtime: ContainerRuntime, runscPath: String, features: GVisorFeatures, role: PodRole,
        consoleSocket: String?
    ) throws {
        let id = request.id
        let spec = request.spec
        let gv = request.configuration.gvisor
        let platform = try features.platform(configured: gv?.platform)
        let network = try GVisorSpec.networkMode(spec)
        // Opened once and checked as opened: runsc and the net.core step get this fd's
        // /proc path, so the path cannot be swapped for the host's after the check.
        let podNetwork = try GVisorBackend.podNetwork(spec)
        self.request = request
        self.runtime = runtime
        self.consoleSocket = consoleSocket
        self.platform = platform
        self.podNetwork = podNetwork
        self.role = role
        self.netnsFdPath = podNetwork.map { "/proc/\(getpid())/fd/\($0.fd)" }
        let store = runtime.store
        gstate = GVisorState(
            runsc: runscPath,
            flags: [
                "--root", store.runscRoot(id), "--platform", platform, "--network", network, "--log",
                store.runscLog(id), "--log-format", "json",
            ]
                // A pod sandbox: its containers' seccomp profiles too.
                + (spec.linux?.seccomp != nil || role == .sandbox ? ["--oci-seccomp"] : []) + (gv?.flags ?? []),
            platform: platform, network: network, helpers: [])
        if features.misreadsPodNetns, podNetwork != nil { gstate.hideNetCore = true }
        runner = Runsc(state: gstate, logPath: store.runscLog(id), log: runtime.log)
    }

    deinit { if let podNetwork { close(podNetwork.fd) } }

    /// Device rules as written (linux.devices get no access by themselves, as in runc), plus
    /// what the sentry itself needs: in KVM guest mode, /dev/kvm; then the bundle runsc gets.
    func configure(_ cgroup: Cgroup, spec: Spec) throws {
        let id = request.id
        let store = runtime.store
        var sentryDevices: [Device] = []
        if platform == "kvm" {
            sentryDevices.append(
                Device(type: "c", path: "/dev/kvm", major: 10, minor: 232, fileMode: 0o660, uid: 0, gid: 0))
        }
        for warning in try cgroup.apply(
            spec.linux?.resources, devices: spec.linux?.devices ?? [], runtimeDevices: sentryDevices)
        {
            runtime.log.warn(warning)
        }
        for dir in [store.runscBundle(id), store.runscRoot(id)] {
            try sys("mkdir", path: dir) { mkdir(dir, 0o700) }
        }
        var runscSpec = GVisorSpec.runscSpec(
            spec, bundle: request.bundle, rootfs: request.rootfs, cgroupsPath: cgroup.path)
        if let podNetwork, let netnsFdPath {
            runscSpec.linux?.namespaces?[podNetwork.index].path = netnsFdPath
        }
        try GVisorSpec.writeRunscConfig(store.runscBundle(id), runscSpec)
    }

    /// Whether this create hands runsc the whole run (`runsc run --detach`: create and start
    /// in one runsc process) instead of `runsc create` now and `runsc start` later: when the
    /// caller starts the container at once (`CreateOptions.startWithCreate`, runc's `run`), the
    /// container is its own sandbox (not a pod's), and no prestart or createRuntime hook has to
    /// run between the create and the start (runtime.md#lifecycle steps 5-6).
    var runsAtOnce: Bool {
        let spec = request.spec
        return request.options.startWithCreate && role == .standalone && (spec.hooks?.prestart ?? []).isEmpty
            && (spec.hooks?.createRuntime ?? []).isEmpty
    }

    func launch(spec: Spec, cgroup: Cgroup, created: (Int32, UInt64) throws -> Void) throws -> Int32 {
        let id = request.id
        let store = runtime.store
        runtime.log.log(.debug, "gVisor create \(id): cgroup \(cgroup.path) ready, runsc bundle written")
        _ = ss_prctl(GVisorBackend.subreaper, 1, 0, 0, 0)
        let pidPath = store.directory(id) + "/runsc.pid"
        let atOnce = runsAtOnce
        var args =
            (atOnce ? ["run", "--detach"] : ["create"]) + ["--bundle", store.runscBundle(id), "--pid-file", pidPath]
        if let consoleSocket { args += ["--console-socket", consoleSocket] }
        try runner.check(args + [id], inheritStdio: true, hidingNetCore: gstate.hideNetCore == true ? netnsFdPath : nil)
        self.created = true
        startedWithCreate = atOnce
        // The sandbox is this process's child (subreaper): after `runsc run --detach` a workload
        // that has already exited leaves it a zombie, whose stat still gives the start time.
        guard let pid = Int32((try Files.readString(pidPath)).trimmed), let stat = ProcStat.read(pid: pid) else {
            throw RuntimeError(.runscFailed, "runsc \(args[0]): no sandbox pid in \(pidPath)", operation: "create")
        }
        let startTime = stat.startTime
        // The limits hold only if runsc joined the cgroup made here. A sandbox that has already
        // exited (a zombie, only after `runsc run`) has left every cgroup: there is nothing
        // left for them to hold.
        let members = try cgroup.processes()
        guard members.contains(pid) || (atOnce && stat.state == "Z") else {
            throw RuntimeError(
                .runscFailed, field: "linux.cgroupsPath",
                "runsc did not place its sandbox (pid \(pid)) in the container's cgroup \(cgroup.path); its limits would not apply",
                operation: "create")
        }
        gstate.helpers = members.filter { $0 != pid }.compactMap { p in
            ProcStat.read(pid: p).map { .init(pid: p, startTime: $0.startTime) }
        }
        try GVisorBackend.runCreateHooks(spec, id: id, pid: pid, bundle: request.bundle)
        try created(pid, startTime)
        return pid
    }

    func record(_ state: inout ContainerState) {
        state.backend = .gvisor
        state.gvisor = gstate
    }

    func abort(_ failure: any Error, cgroup: Cgroup?) -> any Error {
        if created { _ = try? runner.run(["delete", "--force", request.id]) }
        if let cgroup {
            _ = try? cgroup.killAll(signal: SIGKILL)
            GVisorBackend.reapChildren(of: cgroup, including: [])
        }
        return failure
    }
}

/// The create of a container of a gVisor pod: `runsc create` inside the pod's sandbox (runsc
/// root and flags shared, its own log), in a cgroup of its own that holds a waiter: the process
/// containerd's shim sees as the container's. runsc reports the sandbox's pid for a pod
/// container and takes its stdio from `runsc start`; the waiter (`safespace-runtime
/// gvisor-wait`) keeps the stdio this create was given, runs `runsc start` with them when
/// `start` asks, then exits with the container's status (`runsc wait`). Limits go to the
/// sandbox's cgroup (`GVisorPodResources`): the store lock is held until they are applied.
final class GVisorPodContainerCreation: ContainerCreation {
    let request: CreateRequest
    let runtime: ContainerRuntime
    let sandboxID: String
    /// The running pod sandbox container (`locked`).
    var sandbox: ContainerState?
    /// The sandbox's runsc invocation, with this container's log (`locked`).
    var gstate: GVisorState?
    var runner: Runsc?
    /// Whether runsc created the container (it has to delete it on failure).
    var created = false
    var waiter: Int32 = -1

    init(request: CreateRequest, runtime: ContainerRuntime, sandboxID: String) {
        self.request = request
        self.runtime = runtime
        self.sandboxID = sandboxID
    }

    var holdsLockUntilSaved: Bool { true }

    func locked() throws {
        let sandbox = try GVisorBackend.podSandbox(sandboxID, in: runtime)
        try GVisorBackend.checkPodContainer(request.spec, sandbox: sandbox)
        guard var gstate = sandbox.gvisor else {
            throw RuntimeError(.corruptState, "pod sandbox \(sandboxID): no runsc state")
        }
        let logPath = runtime.store.runscLog(request.id)
        if let i = gstate.flags.firstIndex(of: "--log"), i + 1 < gstate.flags.count { gstate.flags[i + 1] = logPath }
        gstate.podSandbox = sandboxID
        gstate.hideNetCore = nil
        gstate.helpers = []
        self.sandbox = sandbox
        self.gstate = gstate
        runner = Runsc(state: gstate, logPath: logPath, log: runtime.log)
    }

    func reserve(directory: String) throws {
        for fifo in [GVisorBackend.startFifo(directory), GVisorBackend.replyFifo(directory)] {
            try sys("mkfifo", path: fifo) { mkfifo(fifo, 0o600) }
        }
    }

    func configure(_ cgroup: Cgroup, spec: Spec) throws {
        let bundle = runtime.store.runscBundle(request.id)
        try sys("mkdir", path: bundle) { mkdir(bundle, 0o700) }
        var runscSpec = GVisorSpec.runscSpec(
            spec, bundle: request.bundle, rootfs: request.rootfs, cgroupsPath: cgroup.path)
        // runsc creates a pod container's cgroup itself when given one; this one is made.
        runscSpec.linux?.cgroupsPath = nil
        try GVisorSpec.writeRunscConfig(bundle, runscSpec)
    }

    func launch(spec: Spec, cgroup: Cgroup, created: (Int32, UInt64) throws -> Void) throws -> Int32 {
        let id = request.id
        let dir = runtime.store.directory(id)
        guard let sandbox, let gstate, let runner else {
            throw RuntimeError(.corruptState, "pod sandbox \(sandboxID): no runsc state")
        }
        try runner.check(["create", "--bundle", runtime.store.runscBundle(id), "--pid-file", dir + "/runsc.pid", id])
        self.created = true
        waiter = try GVisorBackend.spawnWaiter(dir: dir, id: id, sandbox: sandbox, runsc: gstate)
        try cgroup.attach(pid: waiter)
        guard let startTime = ProcStat.read(pid: waiter)?.startTime else {
            throw RuntimeError(.initFailed, "gVisor pod container \(id): its waiter (pid \(waiter)) exited at once")
        }
        try GVisorBackend.runCreateHooks(spec, id: id, pid: waiter, bundle: request.bundle)
        try created(waiter, startTime)
        return waiter
    }

    func record(_ state: inout ContainerState) {
        state.ownNamespaces = []
        state.backend = .gvisor
        state.gvisor = gstate
    }

    func saved(_ state: ContainerState) throws {
        if let sandbox { try GVisorBackend.applyPodLimits(sandbox: sandbox, in: runtime) }
    }

    func abort(_ failure: any Error, cgroup: Cgroup?) -> any Error {
        if waiter > 0 {
            Glibc.kill(waiter, SIGKILL)
            var st: Int32 = 0
            waitpid(waiter, &st, 0)
        }
        if created, let runner { _ = try? runner.run(["delete", "--force", request.id]) }
        return failure
    }

    func rolledBack() {
        if let sandbox, Files.exists(runtime.store.statePath(sandboxID)) {
            try? GVisorBackend.applyPodLimits(sandbox: sandbox, in: runtime)
        }
    }
}

/// Where a gVisor container keeps runsc's files in its state directory.
extension StateStore {
    /// runsc's `--root`.
    func runscRoot(_ id: String) -> String { directory(id) + "/runsc" }
    /// The bundle runsc is given (`GVisorSpec.runscSpec`).
    func runscBundle(_ id: String) -> String { directory(id) + "/bundle" }
    /// runsc's `--log`.
    func runscLog(_ id: String) -> String { directory(id) + "/runsc.log" }
}
