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

/// The gVisor backend: every verb of a `high` container goes to runsc on the same bundle, with
/// runsc's state under this runtime's `--root` (`<root>/<id>/runsc`).
///
/// What stays with this runtime: the state directory and status (derived, as for the native
/// backend, from the live sandbox process and the `exec.fifo` marker until `start`), the cgroup
/// (made and limited here, then joined by runsc's sandbox and gofer, so limits hold for the whole
/// sandbox), the OCI hooks, and `kill`/`delete` of a created container (runsc refuses to signal
/// one: the whole sandbox is killed through the cgroup instead).
struct GVisorBackend {
    let runtime: ContainerRuntime
    var store: StateStore { runtime.store }

    static let subreaper: Int32 = 36  // PR_SET_CHILD_SUBREAPER, prctl(2)

    func runscRoot(_ id: String) -> String { store.directory(id) + "/runsc" }
    func bundleDir(_ id: String) -> String { store.directory(id) + "/bundle" }
    func logPath(_ id: String) -> String { store.directory(id) + "/runsc.log" }

    func runsc(_ state: ContainerState) -> Runsc {
        Runsc(state: state.gvisor!, logPath: logPath(state.id), log: runtime.log)
    }

    // MARK: create

    /// The longest id runsc can take for a container that is its own sandbox: its control
    /// socket is the abstract unix address `\0runsc-sandbox.<id>`, at most 107 bytes
    /// (unix(7) sun_path), or create fails with EINVAL.
    static let maxSandboxIDLength = 107 - "\0runsc-sandbox.".utf8.count

    /// Refuses an id runsc cannot name its files and sockets after, before anything is made:
    /// the control socket above, and its state file `<id>_sandbox:<sandbox id>.state`, a file
    /// name of at most NAME_MAX bytes.
    /// - Throws: `RuntimeError` naming the container id and the limit.
    static func checkRunscID(_ id: String, role: PodRole) throws {
        if case .container(let sandboxID) = role {
            let limit = StateStore.nameMax - "_sandbox:.state".utf8.count
            if id.utf8.count + sandboxID.utf8.count > limit {
                throw RuntimeError("container id: \(id.utf8.count) characters; at the gVisor level runsc names its state file <id>_sandbox:<pod sandbox id>.state, so a pod container's id and its sandbox's may have at most \(limit) characters together")
            }
        } else if id.utf8.count > maxSandboxIDLength {
            throw RuntimeError("container id: \(id.utf8.count) characters; at the gVisor level ids are at most \(maxSandboxIDLength) characters (runsc names its control socket \\0runsc-sandbox.<id>, a unix address of at most 107 bytes)")
        }
    }

    /// `runsc create` of the bundle in a cgroup made here. The sandbox process becomes the
    /// container's pid; this process is made a child subreaper first, so the sandbox and gofer
    /// stay its descendants (as runc's init is) when runsc exits.
    func create(id: String, bundle: String, rootfs: String, spec: Spec, options: CreateOptions, configuration: RuntimeConfiguration, consoleSocket: String?) throws -> Int32 {
        runtime.log.log(.debug, "gVisor create \(id): security level high, bundle \(bundle)")
        let gv = configuration.gvisor
        let runscPath = gv?.runsc ?? (Files.exists("/usr/bin/runsc") ? "/usr/bin/runsc" : findInPath("runsc") ?? "/usr/bin/runsc")
        let features = try GVisorFeatures.detect(runsc: runscPath, configuration: gv, cacheDir: store.root)
        let role = try PodRole.of(spec.annotations)
        try Self.checkRunscID(id, role: role)
        try GVisorSpec.check(spec, options: options, features: features, podContainer: role != .standalone && role != .sandbox)
        if case .container(let sandboxID) = role {
            return try createPodContainer(id: id, bundle: bundle, rootfs: rootfs, spec: spec, options: options, sandboxID: sandboxID)
        }
        let platform = try features.platform(configured: gv?.platform)
        let network = try GVisorSpec.networkMode(spec)
        // Opened once and checked as opened: runsc and the net.core step get this fd's
        // /proc path, so the path cannot be swapped for the host's after the check.
        let podNetwork = try Self.podNetwork(spec)
        defer { if let podNetwork { close(podNetwork.fd) } }
        let netnsFdPath = podNetwork.map { "/proc/\(getpid())/fd/\($0.fd)" }

        let lock = try store.lock()
        let dir = store.directory(id)
        try runtime.claimID(id)
        try sys("mkdir", path: dir) { mkdir(dir, 0o711) }
        var cgroup: Cgroup?
        var created = false
        // Who creates it, before anything is taken (CreatingRecord, Reclaim.swift).
        var record = CreatingRecord(id: id, creator: .current(), bundle: bundle, created: rfc3339Now(), annotations: spec.annotations)
        var gstate = GVisorState(
            runsc: runscPath,
            flags: ["--root", runscRoot(id), "--platform", platform, "--network", network, "--log", logPath(id), "--log-format", "json"]
                // A pod sandbox: its containers' seccomp profiles too.
                + (spec.linux?.seccomp != nil || role == .sandbox ? ["--oci-seccomp"] : []) + (gv?.flags ?? []),
            platform: platform, network: network, helpers: [])
        if features.misreadsPodNetns, podNetwork != nil { gstate.hideNetCore = true }
        let runner = Runsc(state: gstate, logPath: logPath(id), log: runtime.log)
        do {
            // The created marker: status is `created` until `start` removes it (ContainerState).
            try store.saveCreating(record)
            let fifo = store.fifoPath(id)
            try sys("mkfifo", path: fifo) { mkfifo(fifo, 0o600) }
            var cg = try Cgroup.resolve(cgroupsPath: spec.linux?.cgroupsPath, id: StateStore.directoryName(id))
            record.cgroup = cg.planned()
            try store.saveCreating(record)
            try cg.create()
            cgroup = cg
            record.cgroup = cg
            try store.saveCreating(record)
            // Device rules as written (linux.devices get no access by themselves, as in runc),
            // plus what the sentry itself needs: in KVM guest mode, /dev/kvm.
            var sentryDevices: [Device] = []
            if platform == "kvm" {
                sentryDevices.append(Device(type: "c", path: "/dev/kvm", major: 10, minor: 232, fileMode: 0o660, uid: 0, gid: 0))
            }
            for warning in try cg.apply(spec.linux?.resources, devices: spec.linux?.devices ?? [], runtimeDevices: sentryDevices) {
                runtime.log.warn(warning)
            }
            try Files.makeDirectories(bundleDir(id), mode: 0o700)
            try Files.makeDirectories(runscRoot(id), mode: 0o700)
            var runscSpec = GVisorSpec.runscSpec(spec, bundle: bundle, rootfs: rootfs, cgroupsPath: cg.path)
            if let podNetwork, let netnsFdPath {
                runscSpec.linux?.namespaces?[podNetwork.index].path = netnsFdPath
            }
            try Files.writeAtomically(bundleDir(id) + "/config.json", Array(try JSONEncoder().encode(runscSpec)), mode: 0o600)
            withExtendedLifetime(lock) {}

            runtime.log.log(.debug, "gVisor create \(id): cgroup \(cg.path) ready, runsc bundle written")
            _ = ss_prctl(Self.subreaper, 1, 0, 0, 0)
            let pidPath = dir + "/runsc.pid"
            var args = ["create", "--bundle", bundleDir(id), "--pid-file", pidPath]
            if let consoleSocket { args += ["--console-socket", consoleSocket] }
            try runner.check(args + [id], inheritStdio: true, hidingNetCore: gstate.hideNetCore == true ? netnsFdPath : nil)
            created = true
            guard let pid = Int32((try Files.readString(pidPath)).trimmed), let startTime = ProcStat.read(pid: pid)?.startTime else {
                throw RuntimeError("runsc create: no sandbox pid in \(pidPath)")
            }
            // The limits hold only if runsc joined the cgroup made here.
            let members = try cg.processes()
            guard members.contains(pid) else {
                throw RuntimeError("linux.cgroupsPath: runsc did not place its sandbox (pid \(pid)) in the container's cgroup \(cg.path); its limits would not apply")
            }
            gstate.helpers = members.filter { $0 != pid }.compactMap { p in ProcStat.read(pid: p).map { .init(pid: p, startTime: $0.startTime) } }
            try Self.runCreateHooks(spec, id: id, pid: pid, bundle: bundle)
            let state = ContainerState(
                id: id, bundle: bundle, rootfs: rootfs, pid: pid, startTime: startTime, created: rfc3339Now(),
                annotations: spec.annotations, cgroup: cg, spec: spec,
                ownNamespaces: (spec.linux?.namespaces ?? []).filter { ($0.path ?? "").isEmpty }.map(\.type),
                backend: .gvisor, gvisor: gstate)
            try store.save(state)
            if let pidFile = options.pidFile {
                try Files.writeAtomically(try absolute(pidFile), Array("\(pid)".utf8), mode: 0o644)
            }
            return pid
        } catch {
            if created { _ = try? runner.run(["delete", "--force", id]) }
            if let cgroup {
                try? cgroup.killAll(signal: SIGKILL)
                reapChildren(of: cgroup, including: [])
                try? cgroup.destroy()
            }
            try? Files.removeTree(dir)
            throw error
        }
    }

    /// runtime.md#lifecycle steps 5-6: the prestart and createRuntime hooks, in the runtime
    /// namespace once the sandbox exists, given the state with `pid` and status `creating`: the
    /// create operation is under way (runtime.md#state; as the native create and runc give).
    /// - Throws: the first hook's failure (`RuntimeError`).
    static func runCreateHooks(_ spec: Spec, id: String, pid: Int32, bundle: String) throws {
        let creating = State(id: id, status: "creating", pid: pid, bundle: bundle, annotations: spec.annotations)
        let stateJSON = String(decoding: try JSONEncoder().encode(creating), as: UTF8.self)
        try Hooks.run(spec.hooks?.prestart ?? [], kind: "prestart", state: stateJSON)
        try Hooks.run(spec.hooks?.createRuntime ?? [], kind: "createRuntime", state: stateJSON)
    }

    // MARK: start

    /// `runsc start`, then the created marker goes and the poststart hooks run.
    func start(_ state: ContainerState) throws {
        switch store.status(of: state) {
        case .created: break
        case .stopped: throw RuntimeError("cannot start a container that has stopped")
        default: throw RuntimeError("cannot start an already running container")
        }
        if state.gvisor?.podSandbox != nil {
            try startPodContainer(state)
        } else {
            // runsc start sets up the network of the namespace its sandbox process joined.
            try runsc(state).check(["start", state.id], hidingNetCore: state.gvisor?.hideNetCore == true ? "/proc/\(state.pid)/ns/net" : nil)
        }
        unlink(store.fifoPath(state.id))
        let running = State(id: state.id, status: "running", pid: state.pid, bundle: state.bundle, annotations: state.annotations)
        let json = String(decoding: (try? JSONEncoder().encode(running)) ?? Data(), as: UTF8.self)
        for (i, hook) in (state.spec.hooks?.poststart ?? []).enumerated() {
            do { try Hooks.run(hook, field: "hooks.poststart[\(i)]", state: json) } catch { runtime.log.warn("\(error)") }
        }
    }

    // MARK: state

    // `state` needs no runsc call: the root container's status is the sandbox process's (it
    // exits with the workload), `created` until `start` removes the marker, `paused` while the
    // cgroup is frozen — what `runsc state` would read, without a process start (~25 ms) on
    // every containerd poll. `ContainerRuntime.state` derives it as for the native backend.

    // MARK: kill

    /// `runsc kill [--all]` on a running container. runsc refuses to signal a created one
    /// ("cannot signal container in state created"): a signal whose default action ends a
    /// process ends the whole sandbox (SIGKILL to every process of its cgroup), as it would end
    /// runc's waiting init; SIGCHLD, SIGCONT, SIGURG and SIGWINCH are ignored as by that init.
    func kill(_ state: ContainerState, signal: Int32, all: Bool) throws {
        switch store.status(of: state) {
        case .stopped:
            guard all else { throw RuntimeError("container not running") }
            try state.cgroup.killAll(signal: signal)
        case .created, .creating:
            if [SIGCHLD, SIGCONT, SIGURG, SIGWINCH].contains(signal) { return }
            try state.cgroup.killAll(signal: SIGKILL)
            reap(state, blocking: false)
        case .paused where state.gvisor?.podSandbox != nil:
            throw RuntimeError("cannot signal container \(state.id): its pod sandbox \(state.gvisor!.podSandbox!) is paused (its kernel is frozen); resume the pod sandbox first")
        case .paused:
            // A frozen sentry cannot take runsc's request. SIGKILL goes to the sandbox's host
            // processes and lands when the cgroup thaws, as runc's does for a paused container.
            guard signal == SIGKILL else {
                throw RuntimeError("cannot deliver signal \(signal) to a paused gVisor container: its kernel (the sentry) is frozen; resume it first")
            }
            try state.cgroup.killAll(signal: SIGKILL)
        case .running:
            try runsc(state).check(["kill"] + (all ? ["--all"] : []) + [state.id, "\(signal)"])
        }
    }

    // MARK: delete

    /// `runsc delete --force` while the sandbox lives, then everything this runtime holds: any
    /// process left in the cgroup (a gofer winding down), the cgroup, the state directory
    /// (runsc's state inside it); poststop hooks last. Once the sandbox is gone, runsc holds
    /// nothing but its state files in that directory (the cgroup is this runtime's), so no
    /// runsc process is started for them.
    func delete(_ state: ContainerState, force: Bool) throws {
        let status = store.status(of: state)
        if status == .paused, let sandbox = state.gvisor?.podSandbox {
            throw RuntimeError("cannot delete container \(state.id): its pod sandbox \(sandbox) is paused (its kernel is frozen); resume the pod sandbox first")
        }
        if (status == .running || status == .paused) && !force {
            throw RuntimeError("cannot delete container \(state.id) that is not stopped: \(status.rawValue)")
        }
        reap(state, blocking: false)
        // A pod container stays in its sandbox (runsc's state, the sentry's record) after it
        // exits, until runsc deletes it.
        if status != .stopped || state.gvisor?.podSandbox != nil {
            if status == .paused { try? state.cgroup.setFrozen(false) }
            let result = try? runsc(state).run(["delete", "--force", state.id])
            if let result, result.status != 0 {
                runtime.log.log(.debug, "runsc delete: \(result.stderr.trimmed)")
            }
        }
        try? state.cgroup.killAll(signal: SIGKILL)
        reap(state, blocking: true)
        runtime.log.log(.debug, "gVisor delete \(state.id): sandbox gone (was \(status.rawValue))")
        var cgroupError: Error?
        do { try state.cgroup.destroyKillingStragglers() } catch { cgroupError = error }
        try Files.removeTree(store.directory(state.id))
        if let sandboxID = state.gvisor?.podSandbox, let sandbox = try? store.load(sandboxID), store.status(of: sandbox) != .stopped {
            let lock = try store.lock()
            defer { withExtendedLifetime(lock) {} }
            do { try applyPodLimits(sandbox: sandbox) } catch { runtime.log.warn("pod sandbox \(sandboxID): limits after removing \(state.id): \(error)") }
        }
        // No pid once stopped (runtime.md#state; see ContainerRuntime.delete).
        let stopped = State(id: state.id, status: "stopped", pid: nil, bundle: state.bundle, annotations: state.annotations)
        let json = String(decoding: (try? JSONEncoder().encode(stopped)) ?? Data(), as: UTF8.self)
        for (i, hook) in (state.spec.hooks?.poststop ?? []).enumerated() {
            do { try Hooks.run(hook, field: "hooks.poststop[\(i)]", state: json) } catch { runtime.log.warn("\(error)") }
        }
        if let cgroupError { throw cgroupError }
    }

    // MARK: wait

    /// Waits for the sandbox process (this process's child, or reparented to it as subreaper):
    /// it exits with the workload's status (128+N when the workload was killed by signal N).
    func wait(_ state: ContainerState) throws -> Int32 {
        let code = try waitChild(state.pid)
        // The gofer follows the sandbox out; `delete` reaps it (after SIGKILL, if need be).
        reap(state, blocking: false)
        runtime.log.log(.debug, "gVisor sandbox \(state.pid) exited \(code)")
        return code
    }

    /// Reaps the sandbox and its helpers where they are this process's children; others are
    /// reaped by whoever is their parent (containerd's shim). Blocking waits are bounded.
    func reap(_ state: ContainerState, blocking: Bool) {
        let known = [GVisorState.HelperProcess(pid: state.pid, startTime: state.startTime)] + (state.gvisor?.helpers ?? [])
        for p in known {
            guard let stat = ProcStat.read(pid: p.pid), stat.startTime == p.startTime, isChild(p.pid) else { continue }
            var st: Int32 = 0
            for _ in 0..<(blocking ? 500 : 1) {
                let r = waitpid(p.pid, &st, WNOHANG)
                if r == p.pid || (r < 0 && errno != EINTR) { break }
                if blocking { usleep(10_000) }
            }
        }
    }

    /// After a failed create: the processes runsc left in `cgroup` that are our children.
    func reapChildren(of cgroup: Cgroup, including: [Int32]) {
        for _ in 0..<100 {
            let pids = ((try? cgroup.processes()) ?? []) + including
            if pids.isEmpty { break }
            for p in pids where isChild(p) {
                var st: Int32 = 0
                _ = waitpid(p, &st, WNOHANG)
            }
            usleep(10_000)
        }
    }

    // MARK: exec

    /// `runsc exec --process <file>`: the process runs inside the sandbox with this process's
    /// stdio; returns its exit status, or with `detach` the pid runsc reports. Refused for a
    /// container with `linux.seccomp` and for a `user.umask` runsc would not apply
    /// (`GVisorSpec.checkExec`).
    func exec(_ state: ContainerState, options: ExecOptions) throws -> Int32 {
        guard store.status(of: state) == .running else {
            throw RuntimeError("cannot exec in a container that is not running (gVisor starts processes only in a started sandbox)")
        }
        if options.preserveFds > 0 {
            throw RuntimeError("--preserve-fds: runsc exec cannot pass extra file descriptors (gVisor level)")
        }
        try SpecValidation.validate(process: options.process, field: "process")
        // Never weaker than the container: its seccomp profile and the umask asked for.
        try GVisorSpec.checkExec(process: options.process, container: state.spec, id: state.id) {
            try RuntimeConfiguration.load().gvisor?.execSeccomp ?? false
        }
        let dir = store.directory(state.id)
        let token = "\(getpid())-\(UInt32.random(in: 0 ... .max))"
        let processFile = dir + "/exec-\(token).json"
        try Files.writeAtomically(processFile, Array(try JSONEncoder().encode(options.process)), mode: 0o600)
        defer { unlink(processFile) }
        var args = ["exec", "--process", processFile]
        if options.detach { args.append("--detach") }
        let pidPath = dir + "/exec-\(token).pid"
        defer { unlink(pidPath) }
        if options.detach || options.pidFile != nil { args += ["--pid-file", pidPath] }
        if let socket = options.consoleSocket { args += ["--console-socket", socket] }
        let result = try runsc(state).run(args + [state.id], inheritStdio: true)
        let pid = (try? Files.readString(pidPath)).flatMap { Int32($0.trimmed) }
        if let pidFile = options.pidFile, let pid {
            try Files.writeAtomically(try absolute(pidFile), Array("\(pid)".utf8), mode: 0o644)
        }
        if options.detach {
            guard result.status == 0, let pid else {
                throw RuntimeError("runsc exec: exit status \(result.status)")
            }
            return pid
        }
        return result.status
    }

    // MARK: ps

    /// The workload's processes as gVisor numbers them (`runsc ps --format json`): gVisor's
    /// processes are not host processes, so there are no host pids to give.
    func processes(_ state: ContainerState) throws -> [Int32] {
        guard let result = try runscPs(state, json: true) else { return [] }
        if let pids = try? JSONDecoder().decode([Int32].self, from: Data(result.stdout.utf8)) { return pids }
        let entries = try JSONDecoder().decode([[String: JSONScalar]].self, from: Data(result.stdout.utf8))
        return entries.compactMap { if case .number(let n)? = $0["PID"] { return Int32(n) } else { return nil } }
    }

    /// `runsc ps` as a table, for `ps` without `--format json`.
    func processTable(_ state: ContainerState) throws -> String {
        try runscPs(state, json: false)?.stdout ?? ""
    }

    /// `runsc ps [--format json]`; nil for a stopped container. A container of a paused pod
    /// sandbox is refused: its frozen sentry would never answer.
    private func runscPs(_ state: ContainerState, json: Bool) throws -> RunscResult? {
        let status = store.status(of: state)
        guard status != .stopped else { return nil }
        if status == .paused, let sandbox = state.gvisor?.podSandbox {
            throw RuntimeError("cannot list the processes of container \(state.id): its pod sandbox \(sandbox) is paused; resume it first")
        }
        return try runsc(state).check(["ps"] + (json ? ["--format", "json"] : []) + [state.id])
    }
}

/// A JSON value decoded loosely: only the scalars this backend reads.
enum JSONScalar: Decodable {
    case string(String), number(Double), bool(Bool), other

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .string(s) } else if let n = try? c.decode(Double.self) { self = .number(n) } else if let b = try? c.decode(Bool.self) { self = .bool(b) } else { self = .other }
    }
}

/// Whether `pid` is a child of this process (/proc/PID/stat field 4).
func isChild(_ pid: Int32) -> Bool {
    ProcStat.read(pid: pid)?.parentPid == getpid()
}

/// The first executable `name` in $PATH.
func findInPath(_ name: String) -> String? {
    let path = processEnvironment()["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if access(candidate, X_OK) == 0 { return candidate }
    }
    return nil
}

extension ContainerRuntime {
    /// `runsc ps` as a table for a gVisor container (its processes are not host processes, so
    /// the host's ps has nothing to show); nil for a native one.
    public func gvisorProcessTable(id: String) throws -> String? {
        let state = try store.load(id)
        guard state.backend == .gvisor else { return nil }
        return try GVisorBackend(runtime: self).processTable(state)
    }
}
