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

/// The gVisor backend: every verb of a `high` container goes to runsc on the same bundle, with
/// runsc's state under this runtime's `--root` (`<root>/<id>/runsc`).
///
/// What stays with this runtime: the state directory and status (derived, as for the native
/// backend, from the live sandbox process and the `exec.fifo` marker until `start`), the cgroup
/// (made and limited here, then joined by runsc's sandbox and gofer, so limits hold for the whole
/// sandbox), the OCI hooks, and `kill`/`delete` of a created container (runsc refuses to signal
/// one: the whole sandbox is killed through the cgroup instead).
public struct GVisorBackend: RuntimeBackend {
    public init() {}

    public var kind: Backend { .gvisor }

    static let subreaper: Int32 = 36  // PR_SET_CHILD_SUBREAPER, prctl(2)

    static func runsc(_ state: ContainerState, in runtime: ContainerRuntime) -> Runsc {
        Runsc(state: state.gvisor!, logPath: runtime.store.runscLog(state.id), log: runtime.log)
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
                throw RuntimeError(
                    .invalidID, field: "container id",
                    "\(id.utf8.count) characters; at the gVisor level runsc names its state file <id>_sandbox:<pod sandbox id>.state, so a pod container's id and its sandbox's may have at most \(limit) characters together"
                )
            }
        } else if id.utf8.count > maxSandboxIDLength {
            throw RuntimeError(
                .invalidID, field: "container id",
                "\(id.utf8.count) characters; at the gVisor level ids are at most \(maxSandboxIDLength) characters (runsc names its control socket \\0runsc-sandbox.<id>, a unix address of at most 107 bytes)"
            )
        }
    }

    /// The checks of a gVisor create (runsc's id limits, `GVisorSpec.check`), then the steps of
    /// `runsc create` of the bundle in a cgroup made here (`GVisorSandboxCreation`), or for a
    /// container of a gVisor pod inside its pod's sandbox (`GVisorPodContainerCreation`).
    public func prepareCreate(_ request: CreateRequest, in runtime: ContainerRuntime) throws -> any ContainerCreation {
        let consoleSocket = try request.options.consoleSocket.map { try absolute($0) }
        runtime.log.log(.debug, "gVisor create \(request.id): security level high, bundle \(request.bundle)")
        let gv = request.configuration.gvisor
        let runscPath =
            gv?.runsc ?? (Files.exists("/usr/bin/runsc") ? "/usr/bin/runsc" : findInPath("runsc") ?? "/usr/bin/runsc")
        let features = try GVisorFeatures.detect(runsc: runscPath, configuration: gv, cacheDir: runtime.store.root)
        let role = try PodRole.of(request.spec.annotations)
        try Self.checkRunscID(request.id, role: role)
        try GVisorSpec.check(
            request.spec, options: request.options, features: features,
            podContainer: role != .standalone && role != .sandbox)
        if case .container(let sandboxID) = role {
            return GVisorPodContainerCreation(request: request, runtime: runtime, sandboxID: sandboxID)
        }
        return try GVisorSandboxCreation(
            request: request, runtime: runtime, runscPath: runscPath, features: features, role: role,
            consoleSocket: consoleSocket)
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

    // MARK: state

    /// As for the native backend; a container of a gVisor pod is also `paused` while its
    /// sandbox is frozen (it runs in that sentry).
    ///
    /// No runsc call: the root container's status is the sandbox process's (it exits with the
    /// workload), `created` until `start` removes the marker, `paused` while the cgroup is
    /// frozen — what `runsc state` would read, without a process start (~25 ms) on every
    /// containerd poll.
    public func status(of state: ContainerState, in runtime: ContainerRuntime) -> Status {
        let status = runtime.store.status(of: state)
        if status == .running, let sandboxID = state.gvisor?.podSandbox,
            let sandbox = try? runtime.store.load(sandboxID),
            ProcStat.read(pid: sandbox.pid)?.startTime == sandbox.startTime, (try? sandbox.cgroup.isFrozen()) == true
        {
            return .paused
        }
        return status
    }

    // MARK: start

    /// `runsc start` (for a pod container, through its waiter).
    public func start(_ state: ContainerState, in runtime: ContainerRuntime) throws {
        if state.gvisor?.podSandbox != nil {
            try startPodContainer(state, in: runtime)
        } else {
            // runsc start sets up the network of the namespace its sandbox process joined.
            try Self.runsc(state, in: runtime).check(
                ["start", state.id],
                hidingNetCore: state.gvisor?.hideNetCore == true ? "/proc/\(state.pid)/ns/net" : nil)
        }
    }

    // MARK: kill

    /// `runsc kill [--all]` on a running container. runsc refuses to signal a created one
    /// ("cannot signal container in state created"): a signal whose default action ends a
    /// process ends the whole sandbox (SIGKILL to every process of its cgroup), as it would end
    /// runc's waiting init; SIGCHLD, SIGCONT, SIGURG and SIGWINCH are ignored as by that init.
    public func kill(_ state: ContainerState, signal: Int32, all: Bool, in runtime: ContainerRuntime) throws {
        switch status(of: state, in: runtime) {
        case .stopped:
            guard all else { throw RuntimeError.notRunning() }
            try state.cgroup.killAll(signal: signal)
        case .created, .creating:
            if [SIGCHLD, SIGCONT, SIGURG, SIGWINCH].contains(signal) { return }
            try state.cgroup.killAll(signal: SIGKILL)
            Self.reap(state, blocking: false)
        case .paused where state.gvisor?.podSandbox != nil:
            throw RuntimeError(
                .paused,
                "cannot signal container \(state.id): its pod sandbox \(state.gvisor!.podSandbox!) is paused (its kernel is frozen); resume the pod sandbox first",
                operation: "kill")
        case .paused:
            // A frozen sentry cannot take runsc's request. SIGKILL goes to the sandbox's host
            // processes and lands when the cgroup thaws, as runc's does for a paused container.
            guard signal == SIGKILL else {
                throw RuntimeError(
                    .paused,
                    "cannot deliver signal \(signal) to a paused gVisor container: its kernel (the sentry) is frozen; resume it first",
                    operation: "kill")
            }
            try state.cgroup.killAll(signal: SIGKILL)
        case .running:
            try Self.runsc(state, in: runtime).check(["kill"] + (all ? ["--all"] : []) + [state.id, "\(signal)"])
        }
    }

    // MARK: delete

    /// `runsc delete --force` while the sandbox lives, then any process left in the cgroup (a
    /// gofer winding down). `ContainerRuntime.delete` then removes the cgroup and the state
    /// directory (runsc's state inside it). Once the sandbox is gone, runsc holds nothing but
    /// its state files in that directory (the cgroup is this runtime's), so no runsc process is
    /// started for them.
    public func stop(_ state: ContainerState, status: Status, force: Bool, in runtime: ContainerRuntime) throws {
        if status == .paused, let sandbox = state.gvisor?.podSandbox {
            throw RuntimeError(
                .paused,
                "cannot delete container \(state.id): its pod sandbox \(sandbox) is paused (its kernel is frozen); resume the pod sandbox first",
                operation: "delete")
        }
        try ContainerRuntime.checkDeletable(state, status: status, force: force)
        let sessions = Self.sessions(of: state)
        Self.reap(state, blocking: false)
        // A pod container stays in its sandbox (runsc's state, the sentry's record) after it
        // exits, until runsc deletes it.
        if status != .stopped || state.gvisor?.podSandbox != nil {
            if status == .paused { try? state.cgroup.setFrozen(false) }
            let result = try? Self.runsc(state, in: runtime).run(["delete", "--force", state.id])
            if let result, result.status != 0 {
                runtime.log.log(.debug, "runsc delete: \(result.stderr.trimmed)")
            }
        }
        // The sandbox is gone; its gofer, which serves nothing any more, ends now (as runsc's
        // own destroy kills it) rather than after a freeze of the cgroup that waits for it.
        Self.killHelpers(state)
        _ = try? state.cgroup.killAll(signal: SIGKILL)
        Self.reap(state, blocking: true)
        Self.reapSessions(sessions)
        runtime.log.log(.debug, "gVisor delete \(state.id): sandbox gone (was \(status.rawValue))")
    }

    /// A container of a pod: the pod sandbox's cgroup limits without it.
    public func removed(_ state: ContainerState, in runtime: ContainerRuntime) throws {
        if let sandboxID = state.gvisor?.podSandbox, let sandbox = try? runtime.store.load(sandboxID),
            status(of: sandbox, in: runtime) != .stopped
        {
            let lock = try runtime.store.lock()
            defer { withExtendedLifetime(lock) {} }
            do { try Self.applyPodLimits(sandbox: sandbox, in: runtime) } catch {
                runtime.log.warn("pod sandbox \(sandboxID): limits after removing \(state.id): \(error)")
            }
        }
    }

    // MARK: wait

    /// Waits for the sandbox process (this process's child, or reparented to it as subreaper):
    /// it exits with the workload's status (128+N when the workload was killed by signal N).
    public func wait(_ state: ContainerState, in runtime: ContainerRuntime) throws -> Int32 {
        let code = try waitChild(state.pid)
        // The gofer follows the sandbox out; `delete` reaps it (after SIGKILL, if need be).
        Self.reap(state, blocking: false)
        runtime.log.log(.debug, "gVisor sandbox \(state.pid) exited \(code)")
        return code
    }

    /// Reaps the sandbox and its helpers where they are this process's children; others are
    /// reaped by whoever is their parent (containerd's shim). Blocking waits are bounded.
    static func reap(_ state: ContainerState, blocking: Bool) {
        let known =
            [GVisorState.HelperProcess(pid: state.pid, startTime: state.startTime)] + (state.gvisor?.helpers ?? [])
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

    /// SIGKILL to the sandbox's helper processes (`GVisorState.helpers`, matched by pid and
    /// start time, so a reused pid is never signalled), then reaps those that are this
    /// process's children, waiting up to 5 s for each.
    static func killHelpers(_ state: ContainerState) {
        for p in state.gvisor?.helpers ?? [] {
            guard let stat = ProcStat.read(pid: p.pid), stat.startTime == p.startTime else { continue }
            if stat.state != "Z" { _ = Glibc.kill(p.pid, SIGKILL) }
            guard isChild(p.pid) else { continue }
            var st: Int32 = 0
            for _ in 0..<5000 {
                let r = waitpid(p.pid, &st, WNOHANG)
                if r == p.pid || (r < 0 && errno != EINTR) { break }
                usleep(1000)
            }
        }
    }

    /// After a failed create: the processes runsc left in `cgroup` that are our children.
    static func reapChildren(of cgroup: Cgroup, including: [Int32]) {
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
    public func exec(_ state: ContainerState, options: ExecOptions, in runtime: ContainerRuntime) throws -> Int32 {
        let store = runtime.store
        guard status(of: state, in: runtime) == .running else {
            throw RuntimeError(
                .notRunning,
                "cannot exec in a container that is not running (gVisor starts processes only in a started sandbox)",
                operation: "exec")
        }
        if options.preserveFds > 0 {
            throw RuntimeError(
                .unsupported, field: "--preserve-fds", "runsc exec cannot pass extra file descriptors (gVisor level)",
                operation: "exec")
        }
        try SpecValidation.validate(process: options.process, field: "process")
        // Never weaker than the container: its seccomp profile and the umask asked for.
        try GVisorSpec.checkExec(process: options.process, container: state.spec, id: state.id) {
            try RuntimeConfiguration.load().gvisor?.execSeccomp ?? false
        }
        if let stdio = options.stdio { return try execCaptured(state, options: options, stdio: stdio, in: runtime) }
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
        let result = try Self.runsc(state, in: runtime).run(args + [state.id], inheritStdio: true)
        let pid = (try? Files.readString(pidPath)).flatMap { Int32($0.trimmed) }
        if let pidFile = options.pidFile, let pid {
            try Files.writeAtomically(try absolute(pidFile), Array("\(pid)".utf8), mode: 0o644)
        }
        if options.detach {
            guard result.status == 0, let pid else {
                throw RuntimeError(.runscFailed, "runsc exec: exit status \(result.status)", operation: "exec")
            }
            return pid
        }
        return result.status
    }

    // MARK: ps

    /// The workload's processes as gVisor numbers them (`runsc ps --format json`): gVisor's
    /// processes are not host processes, so there are no host pids to give.
    public func processes(_ state: ContainerState, in runtime: ContainerRuntime) throws -> [Int32] {
        guard let result = try runscPs(state, json: true, in: runtime) else { return [] }
        if let pids = try? JSONDecoder().decode([Int32].self, from: Data(result.stdout.utf8)) { return pids }
        let entries = try JSONDecoder().decode([[String: JSONScalar]].self, from: Data(result.stdout.utf8))
        return entries.compactMap { if case .number(let n)? = $0["PID"] { return Int32(n) } else { return nil } }
    }

    /// `runsc ps` as a table, for `ps` without `--format json` (the host's ps has nothing to show).
    public func processTable(_ state: ContainerState, in runtime: ContainerRuntime) throws -> String? {
        try runscPs(state, json: false, in: runtime)?.stdout ?? ""
    }

    /// `runsc ps [--format json]`; nil for a stopped container. A container of a paused pod
    /// sandbox is refused: its frozen sentry would never answer.
    private func runscPs(_ state: ContainerState, json: Bool, in runtime: ContainerRuntime) throws -> RunscResult? {
        let status = status(of: state, in: runtime)
        guard status != .stopped else { return nil }
        if status == .paused, let sandbox = state.gvisor?.podSandbox {
            throw RuntimeError(
                .paused,
                "cannot list the processes of container \(state.id): its pod sandbox \(sandbox) is paused; resume it first",
                operation: "ps")
        }
        return try Self.runsc(state, in: runtime).check(["ps"] + (json ? ["--format", "json"] : []) + [state.id])
    }

    // MARK: pause, update

    /// A container of a pod is frozen only with its sandbox (it shares the sandbox's kernel).
    public func pause(_ state: ContainerState, in runtime: ContainerRuntime) throws {
        if let sandbox = state.gvisor?.podSandbox {
            throw RuntimeError(
                .unsupported,
                "cannot pause container \(state.id) alone: it runs inside gVisor pod sandbox \(sandbox), whose kernel it shares; pause the pod sandbox",
                operation: "pause")
        }
        try runtime.freeze(state)
    }

    /// The container's cgroup, except for a container of a pod, whose limits count in the
    /// sandbox's cgroup (GVisorPod.swift); a pod sandbox's cgroup gets the pod's sum again.
    public func update(_ state: ContainerState, apply: Resources, merged: Resources, in runtime: ContainerRuntime)
        throws
    {
        let store = runtime.store
        var state = state
        if let sandboxID = state.gvisor?.podSandbox {
            try GVisorPodResources.check(merged)
            let sandbox = try store.load(sandboxID)
            let old = state
            state.spec.linux?.resources = merged
            try store.save(state)
            do { try Self.applyPodLimits(sandbox: sandbox, in: runtime) } catch {
                try? store.save(old)
                try? Self.applyPodLimits(sandbox: sandbox, in: runtime)
                throw error
            }
            return
        }
        state = try runtime.updateCgroup(state, apply: apply, merged: merged)
        if try PodRole.of(state.spec.annotations) == .sandbox {
            try Self.applyPodLimits(sandbox: state, in: runtime)
        }
    }
}

/// A JSON value decoded loosely: only the scalars this backend reads.
enum JSONScalar: Decodable {
    case string(String), number(Double), bool(Bool), other

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else {
            self = .other
        }
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
