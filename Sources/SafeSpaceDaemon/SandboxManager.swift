/// The daemon's sandboxes: create (admission, SandboxHost plan/prepare/create/start, the node
/// state handed to the sandbox's init), exec, files, delete, lifetimes, and recovery after a
/// crash. Every blocking call into SandboxHosting/Runtime runs on a thread of its own
/// (`blocking`), never on the server's event loops or the concurrency pool.
import Cgroups
import Foundation
import Glibc
import LinuxKernel
import Logging
import Metrics
import NodeResources
import OCI
import Runtime
import SandboxHosting
import SandboxSpec

/// One sandbox the daemon holds.
final class ManagedSandbox: @unchecked Sendable {
    let name: String
    private let lock = NSLock()
    // Guarded by `lock`.
    private var _record: SandboxRecord
    private var _execs: [UInt64: ExecHandle] = [:]
    private var deleting = false
    /// Set for sandboxes this process created; nil for adopted ones (released by reclaim).
    let prepared: PreparedSandbox?
    /// The seccomp event agent an adopted sandbox's execs hand their filters to.
    let agent: AdoptedSeccompAgent?

    init(record: SandboxRecord, prepared: PreparedSandbox?, agent: AdoptedSeccompAgent? = nil) {
        name = record.name
        _record = record
        self.prepared = prepared
        self.agent = agent
    }

    var record: SandboxRecord { lock.withLock { _record } }
    func update(_ body: (inout SandboxRecord) -> Void) -> SandboxRecord {
        lock.withLock {
            body(&_record)
            return _record
        }
    }

    /// Registers an exec of `caller`; false once the sandbox is no longer running, or no
    /// longer `caller`'s (a pool sandbox released to its pool since the request found it:
    /// checked under the lock its release hides it with, so no exec of a former owner starts
    /// after the release killed the running ones).
    func add(_ exec: ExecHandle, caller: Caller) -> Bool {
        lock.withLock {
            guard _record.phase == .running, !_record.isPoolReady, caller.isRoot || _record.creatorUID == caller.uid
            else { return false }
            _execs[exec.id] = exec
            return true
        }
    }

    // Guarded by `lock`: file reads and writes under way (`beginFileOperation`).
    private var fileOperations = 0

    /// Starts a file read or write of `caller`'s; false when the sandbox is no longer
    /// `caller`'s (released to its pool since the request found it). A pool's release waits
    /// for `fileOperationsInFlight` to drop to 0 after hiding the sandbox.
    func beginFileOperation(for caller: Caller) -> Bool {
        lock.withLock {
            guard _record.phase == .running, !_record.isPoolReady, caller.isRoot || _record.creatorUID == caller.uid
            else { return false }
            fileOperations += 1
            return true
        }
    }
    func endFileOperation() { lock.withLock { fileOperations -= 1 } }
    var fileOperationsInFlight: Int { lock.withLock { fileOperations } }
    func remove(_ exec: ExecHandle) { lock.withLock { _ = _execs.removeValue(forKey: exec.id) } }

    /// Marks the sandbox as being deleted (phase Deleting); false when a delete runs already.
    func beginDelete() -> Bool {
        lock.withLock {
            if deleting { return false }
            deleting = true
            _record.phase = .deleting
            return true
        }
    }

    /// A delete that failed: the next one may retry.
    func deleteFailed() { lock.withLock { deleting = false } }

    /// The sandbox's cgroup (for its OOM kill count), loaded once from the container's state.
    private var _cgroup: Cgroup?
    func cgroup(_ load: () -> Cgroup?) -> Cgroup? {
        lock.withLock {
            if _cgroup == nil { _cgroup = load() }
            return _cgroup
        }
    }
    var execs: [ExecHandle] { lock.withLock { Array(_execs.values) } }
}

/// Why a sandbox was removed (audit `sandbox.deleted`'s `reason`).
enum DeleteReason: String, Sendable {
    case request, timeout, shutdown = "daemon shutdown", error
    /// A warm pool's own removals: a ready sandbox past `maxAgeSeconds`, a pool removed, a
    /// ready sandbox found after a daemon restart.
    case poolMaxAge = "pool max age", poolRemoved = "pool removed", poolRestart = "pool: daemon restart"
}

/// The sandbox registry and everything done to sandboxes.
final class SandboxManager: @unchecked Sendable {
    let config: DaemonConfig
    let host: SandboxHost
    let runtime: ContainerRuntime
    let records: RecordStore
    let audit: AuditTrail
    let logger: Logger
    /// Port forwards into sandboxes (`SandboxManager+Ports.swift`).
    let ports: PortForwards
    /// Allocatable CPU (millicores) and memory (bytes) of the node.
    let allocatableCPUMillis: Int64
    let allocatableMemoryBytes: Int64
    /// The in-sandbox agent (AgentInstall.swift); nil: sandboxes run `idleCommand`.
    let agentInstall: AgentInstall?

    private let lock = NSLock()
    // Guarded by `lock`.
    private var sandboxes: [String: ManagedSandbox] = [:]
    /// Names being created, with the CPU/memory they reserve.
    private var reserved: [String: (cpu: Int64, memory: Int64)] = [:]
    private var draining = false
    private var nextExecID: UInt64 = 0
    /// The warm pools' release of a claimed sandbox (`PoolManager.release`), asked first by
    /// `delete` for an owner's delete or a lifetime's end.
    private var releaseHook: (@Sendable (ManagedSandbox, DeleteReason) async -> ReleaseOutcome)?

    func setReleaseHook(_ hook: @escaping @Sendable (ManagedSandbox, DeleteReason) async -> ReleaseOutcome) {
        lock.withLock { releaseHook = hook }
    }

    /// The idle init of every sandbox: a shell as PID 1 of the sandbox, which reaps the
    /// orphans execs leave (dash reaps any child in `wait`) and ends on SIGTERM.
    static let idleCommand = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 2147483647 & wait $!; done"]

    /// The node's egress filter (nil: sandboxes with egress rules are refused).
    let egress: DaemonEgress?

    init(config: DaemonConfig, stateDir: String, audit: AuditTrail, logger: Logger, egress: DaemonEgress? = nil) throws
    {
        self.config = config
        self.audit = audit
        self.logger = logger
        ports = PortForwards(logger: logger)
        self.egress = egress
        records = try RecordStore(stateDir: stateDir)
        var configuration = SandboxHost.Configuration(
            stateRoot: config.runtimeRoot, bundleRoot: config.bundleRoot,
            ephemeralStorageBase: config.ephemeralStorage, rootfsStore: config.rootfsStore,
            seccompProfiles: config.seccompProfiles)
        configuration.egressFilter = egress?.host.adapter
        configuration.networkPool = config.network.pool
        host = SandboxHost(configuration: configuration)
        runtime = ContainerRuntime(root: config.runtimeRoot, backends: host.configuration.backends)
        var cpu = config.allocatableCPUMillis
        var memory = config.allocatableMemoryBytes
        if cpu == nil || memory == nil {
            let capacity = try NodeCapacity.read()
            cpu = cpu ?? Int64(capacity.cpus) * 1000
            memory = memory ?? capacity.memoryBytes
        }
        allocatableCPUMillis = cpu!
        allocatableMemoryBytes = memory!
        agentInstall = AgentInstall.install(bundleRoot: config.bundleRoot, logger: logger)
    }

    // MARK: lookup and access

    /// The sandbox `name` as `caller` may touch it.
    /// - Throws: 404 when it does not exist; 403 (audited `api.denied`) when it belongs to
    ///   another caller and `caller` is not root.
    func sandbox(_ name: String, for caller: Caller) throws -> ManagedSandbox {
        // A ready sandbox of a warm pool is nobody's until claimed.
        guard let sandbox = lock.withLock({ sandboxes[name] }), !sandbox.record.isPoolReady else {
            throw APIError.notFound(name)
        }
        if !caller.isRoot && sandbox.record.creatorUID != caller.uid {
            Metrics.accessDenied.increment()
            let message = "sandbox \(name) was created by another user; uid \(caller.uid) may touch only its own"
            audit.record(
                "api.denied", sandbox: name, caller: caller, outcome: "denied", fields: ["reason": .string(message)])
            throw APIError(.forbidden, "forbidden", message, field: "name")
        }
        return sandbox
    }

    func list(for caller: Caller) -> [ManagedSandbox] {
        lock.withLock { Array(sandboxes.values) }
            .filter { !$0.record.isPoolReady && (caller.isRoot || $0.record.creatorUID == caller.uid) }
            .sorted { $0.name < $1.name }
    }

    var count: Int { lock.withLock { sandboxes.count } }
    /// The sandbox `name` without an access check (the warm pools' own use), nil when none.
    func managed(_ name: String) -> ManagedSandbox? { lock.withLock { sandboxes[name] } }
    /// Every sandbox, pool ones included, without an access check.
    var all: [ManagedSandbox] { lock.withLock { Array(sandboxes.values) } }
    var isDraining: Bool { lock.withLock { draining } }

    private func checkNotDraining() throws {
        if isDraining {
            throw APIError(.serviceUnavailable, "shutting_down", "safespaced is shutting down: no new work is accepted")
        }
    }

    // MARK: create

    /// Parses a `POST /v1/sandboxes` body: a Sandbox (JSON) with an optional
    /// `spec.timeoutSeconds`.
    static func parseCreate(_ bytes: [UInt8]) throws -> (Sandbox, Int?) {
        var object = try JSON.object(bytes)
        var timeout: Int?
        if var spec = object["spec"] as? [String: Any], let value = spec["timeoutSeconds"] {
            let fields = try JSONFields(["timeoutSeconds": value], prefix: "spec.", allowed: ["timeoutSeconds"])
            guard let seconds = try fields.int("timeoutSeconds"), seconds > 0 else {
                throw APIError.badRequest("must be a positive number of seconds", field: "spec.timeoutSeconds")
            }
            timeout = seconds
            spec["timeoutSeconds"] = nil
            object["spec"] = spec
        }
        if object["apiVersion"] == nil { object["apiVersion"] = "llmsafespace.dev/v1" }
        if object["kind"] == nil { object["kind"] = "Sandbox" }
        if object["metadata"] == nil { object["metadata"] = [String: Any]() }
        if object["spec"] == nil { object["spec"] = [String: Any]() }
        let sandbox: Sandbox
        do { sandbox = try Sandbox.decode(data: Data(JSON.encode(object))) } catch { throw APIError.from(error) }
        return (sandbox, timeout)
    }

    /// Creates and starts a sandbox for `caller`.
    /// - Throws: `APIError`: 400 for a bad Sandbox, 409 for a name in use, 429 when the node's
    ///   allocatable CPU or memory (or `limits.maxSandboxes`) would be exceeded, 503 while
    ///   shutting down; 500 for a host failure (nothing is left then).
    /// With `pool`, the sandbox is a ready sandbox of that warm pool (hidden until claimed).
    /// - Parameter preloadModules: modules the warm Python interpreter imports before its
    ///   first exec (a python runtime with the agent only).
    /// - Parameter layer: a pool's package layer, bound read-only and put on `PYTHONPATH`;
    ///   its modules are preloaded.
    /// - Parameter background: made ahead of need (a pool refill): the thread that makes it,
    ///   and so every process it starts (the runtime's helpers, the sandbox's init, agent and
    ///   warm interpreter, which inherit the policy), runs under SCHED_IDLE (sched(7)), so
    ///   that it takes only CPU time that claims and execs leave; a claim puts the sandbox's
    ///   threads back to SCHED_OTHER (`PoolManager.take`).
    func create(
        _ body: [UInt8], caller: Caller, pool: String? = nil, preloadModules: [String] = [],
        layer: PackageLayer? = nil, background: Bool = false
    ) async throws -> ManagedSandbox {
        try checkNotDraining()
        let (decoded, lifetime) = try Self.parseCreate(body)
        var sandbox = decoded.applying(SandboxOverrides())
        do { try sandbox.validate() } catch { throw APIError.from(error) }
        let name = sandbox.metadata.name!
        // The daemon reads a Localhost profile as root: a caller that is not root names only
        // profiles of the node's profile directory, never any file of the node.
        if !caller.isRoot, let path = sandbox.spec.securityContext?.seccompProfile?.localhostProfile,
            path.hasPrefix("/")
        {
            throw APIError.badRequest(
                "an absolute path names a file of the node, which only root may have the daemon read; name a profile of the node's profile directory (\(config.seccompProfiles))",
                field: "spec.securityContext.seccompProfile.localhostProfile")
        }
        sandbox.spec.runtime = sandbox.spec.runtime ?? Sandbox.defaultRuntime
        // The agent as PID 1 on the native backend; gVisor sandboxes keep the idle shell and
        // the runtime exec path.
        let agentInstall = SecurityLevel.of(sandbox)?.profile.backend == .gvisor ? nil : self.agentInstall
        let warmPython = agentInstall != nil && sandbox.spec.runtime!.hasPrefix("python")
        var plan: SandboxPlan
        do {
            plan = try host.plan(
                for: sandbox,
                args: agentInstall?.args(python: warmPython, preload: preloadModules + (layer?.modules ?? []))
                    ?? Self.idleCommand)
        } catch let error as SandboxError {
            throw APIError.from(error)
        } catch let error as ResourceError {
            throw APIError.from(error)
        } catch let error as SandboxHostError where error.code == .unsupported {
            // A feature this host cannot give (an egress filter): refused as the Sandbox
            // resource's not-enforceable fields are, naming the field.
            throw APIError.badRequest(error.message, field: error.field, code: "not_enforceable")
        } catch {
            let text = "\(error)"
            let field = text.hasPrefix("spec.") ? String(text.prefix { $0 != ":" }) : nil
            throw APIError.badRequest(text, field: field)
        }

        if let agentInstall { plan.spec.mounts = (plan.spec.mounts ?? []) + agentInstall.mounts(name) }
        if let layer {
            plan.spec.mounts = (plan.spec.mounts ?? []) + [layer.mount]
            let env = plan.spec.process?.env ?? []
            plan.spec.process?.env = env + [layer.environment]
        }
        let finalPlan = plan

        // Admission: reserve the name and the limits, or refuse.
        let cpu = plan.limits.cpuMillis ?? 0
        let memory = plan.limits.memoryBytes ?? 0
        try lock.withLock {
            if draining {
                throw APIError(
                    .serviceUnavailable, "shutting_down", "safespaced is shutting down: no new work is accepted")
            }
            if sandboxes[name] != nil || reserved[name] != nil {
                throw APIError(.conflict, "exists", "a sandbox named \(name) exists already", field: "metadata.name")
            }
            if sandboxes.count + reserved.count >= config.maxSandboxes {
                throw APIError(
                    .tooManyRequests, "too_many_sandboxes",
                    "this node runs \(config.maxSandboxes) sandboxes, its limit (limits.maxSandboxes); delete one first"
                )
            }
            let usedCPU =
                sandboxes.values.reduce(0) { $0 + ($1.record.cpuMillis ?? 0) }
                + reserved.values.reduce(0) { $0 + $1.cpu }
            let usedMemory =
                sandboxes.values.reduce(0) { $0 + ($1.record.memoryBytes ?? 0) }
                + reserved.values.reduce(0) { $0 + $1.memory }
            if usedCPU + cpu > allocatableCPUMillis {
                Metrics.admissionRefusals.increment()
                throw APIError(
                    .tooManyRequests, "overcommitted",
                    "spec.resources.cpu: \(formatMillis(cpu)) CPUs asked for, but only \(formatMillis(max(0, allocatableCPUMillis - usedCPU))) of the node's allocatable \(formatMillis(allocatableCPUMillis)) are free",
                    field: "spec.resources.cpu")
            }
            if usedMemory + memory > allocatableMemoryBytes {
                Metrics.admissionRefusals.increment()
                throw APIError(
                    .tooManyRequests, "overcommitted",
                    "spec.resources.memory: \(memory) bytes asked for, but only \(max(0, allocatableMemoryBytes - usedMemory)) of the node's allocatable \(allocatableMemoryBytes) bytes are free",
                    field: "spec.resources.memory")
            }
            reserved[name] = (cpu, memory)
        }
        defer { lock.withLock { _ = reserved.removeValue(forKey: name) } }

        var resource = sandbox
        resource.metadata.name = name
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var record = SandboxRecord(
            name: name, phase: .creating, creatorUID: caller.uid, creatorPID: caller.pid, created: Self.now(),
            timeoutSeconds: lifetime, expiresAt: lifetime.map { Date().timeIntervalSince1970 + Double($0) },
            level: sandbox.spec.securityLevel ?? SecurityLevel.default.rawValue, runtime: sandbox.spec.runtime!,
            cpuMillis: plan.limits.cpuMillis, memoryBytes: plan.limits.memoryBytes,
            ephemeralStorageBytes: plan.limits.ephemeralStorageBytes,
            writablePaths: plan.writablePaths, execTimeoutSeconds: sandbox.spec.timeout,
            resource: (try? encoder.encode(resource)) ?? Data(),
            agentDirectory: agentInstall?.directory(name), warmPython: warmPython ? true : nil)
        record.pool = pool
        do { try records.save(record) } catch {
            throw APIError(.internalServerError, "internal", "cannot write the sandbox's record: \(error)")
        }

        // Seccomp denials of this sandbox come back as one summary line when it ends.
        let audit = self.audit
        let logger = self.logger
        var configuration = host.configuration
        configuration.messages = { message in
            switch message {
            case .warning(let text): logger.warning("\(text)", metadata: ["sandbox": "\(name)"])
            case .seccompSummary(let summary):
                for (syscall, count) in Self.parseSeccompSummary(summary) {
                    audit.record(
                        "seccomp.denied", sandbox: name, caller: nil, outcome: "denied",
                        fields: ["syscall": .string(syscall), "count": .int(count)])
                }
            }
        }
        let sandboxHost = SandboxHost(configuration: configuration)
        // Its filter decisions are counted from the first one (its network is registered
        // with the filter in prepare).
        if sandbox.spec.networkAccess?.egress?.isEmpty == false { egress?.ledger.begin(name) }
        let started = ContinuousClock.now
        do {
            let (prepared, identity, cgroup) = try await blocking {
                () throws -> (PreparedSandbox, ProcessIdentity, Cgroup?) in
                // A thread of its own (`blocking`), so the policy changes nothing else; put
                // back before the continuation resumes (a dispatch worker that the resume
                // starts inherits the policy of the thread that starts it).
                try Scheduling.running(background ? .idle : nil) {
                    let prepared = try sandboxHost.prepare(finalPlan)
                    do {
                        try agentInstall?.prepare(name)
                        try prepared.create()
                        if let agentInstall { try agentInstall.own(name, spec: try self.runtime.store.load(name).spec) }
                        try prepared.start()
                        agentInstall?.waitForSockets(name, python: warmPython)
                        // The sandbox's node state now belongs to its init: it outlives the daemon.
                        let state = try self.runtime.store.load(name)
                        let identity = ProcessIdentity(pid: state.pid, startTime: state.startTime)
                        try SandboxLeases(directory: self.config.bundleRoot, backends: self.host.configuration.backends)
                            .transfer(name, to: identity)
                        return (prepared, identity, state.cgroup)
                    } catch {
                        do { try prepared.cleanup() } catch {
                            for line in (error as? SandboxHostError)?.lines ?? ["\(error)"] {
                                logger.warning("\(line)")
                            }
                        }
                        for problem in agentInstall?.remove(name) ?? [] { logger.warning("\(problem)") }
                        throw error
                    }
                }
            }
            record.initPid = identity.pid
            record.initStartTime = identity.startTime
            record.phase = .running
            do { try records.save(record) } catch {
                _ = await blocking { self.release(name: name, prepared: prepared) }
                throw error
            }
            let managed = ManagedSandbox(record: record, prepared: prepared)
            // Known now: the first exec (a warm pool's claimant's) does not read state.json for it.
            _ = managed.cgroup { cgroup }
            lock.withLock { sandboxes[name] = managed }
            Metrics.createDuration.recordInterval(ContinuousClock.now - started)
            Metrics.sandboxesCreated.increment()
            audit.record(
                "sandbox.created", sandbox: name, caller: caller, outcome: "ok",
                fields: [
                    "runtime": .string(record.runtime), "level": .string(record.level),
                    "timeoutSeconds": record.timeoutSeconds.map { .int($0) } ?? .null,
                    "pool": pool.map { .string($0) } ?? .null,
                ])
            logger.info("sandbox created", metadata: ["sandbox": "\(name)", "uid": "\(caller.uid)"])
            return managed
        } catch {
            records.remove(name)
            egress?.forget(name)
            let apiError: APIError
            if let e = error as? APIError {
                apiError = e
            } else {
                let text = "\(error)"
                if text.contains("exists already") {
                    apiError = APIError(.conflict, "exists", text, field: "metadata.name")
                } else if let e = error as? ResourceError {
                    apiError = APIError(.tooManyRequests, "overcommitted", "\(e)", field: e.field)
                } else {
                    apiError = APIError(.internalServerError, "create_failed", "cannot create sandbox \(name): \(text)")
                }
            }
            audit.record(
                "sandbox.created", sandbox: name, caller: caller, outcome: "error",
                fields: ["error": .string(apiError.message)])
            throw apiError
        }
    }

    // MARK: delete

    /// Removes `sandbox`: kills its execs, deletes the container and releases everything.
    /// - Throws: `APIError` 500 with the releases that failed (kept for a retry; the record
    ///   stays in phase Deleting and is finished by the next delete or daemon start).
    func delete(_ sandbox: ManagedSandbox, reason: DeleteReason, caller: Caller?) async throws {
        // A claimed sandbox of a `recycle: true` pool may go back to its pool instead.
        if reason == .request || reason == .timeout, sandbox.record.pool != nil, sandbox.record.claimed == true,
            let hook = lock.withLock({ releaseHook })
        {
            switch await hook(sandbox, reason) {
            case .recycled: return
            case .busy:
                if reason != .request { return }
                throw APIError(.conflict, "being_deleted", "sandbox \(sandbox.name) is being deleted", field: "name")
            case .destroy: break
            }
        }
        guard sandbox.beginDelete() else {
            if reason != .request { return }
            throw APIError(.conflict, "being_deleted", "sandbox \(sandbox.name) is being deleted", field: "name")
        }
        let record = sandbox.record
        try? records.save(record)
        closePorts(sandbox.name, reason: reason)
        for exec in sandbox.execs { exec.kill(reason: "sandbox deleted") }
        let initPid = record.initPid
        let problems: [String] = await blocking {
            let problems = self.release(name: sandbox.name, prepared: sandbox.prepared)
            if let initPid { Self.reap(initPid) }
            return problems
        }
        if let agent = sandbox.agent {
            for (syscall, count) in Self.parseSeccompSummary(agent.finish() ?? "") {
                audit.record(
                    "seccomp.denied", sandbox: sandbox.name, caller: nil, outcome: "denied",
                    fields: ["syscall": .string(syscall), "count": .int(count)])
            }
        }
        if !problems.isEmpty {
            sandbox.deleteFailed()
            audit.record(
                "sandbox.deleted", sandbox: sandbox.name, caller: caller, outcome: "error",
                fields: [
                    "reason": .string(reason.rawValue), "error": .string(problems.joined(separator: "; ")),
                ])
            throw APIError(
                .internalServerError, "delete_failed",
                "sandbox \(sandbox.name) was not fully removed: \(problems.joined(separator: "; "))")
        }
        records.remove(sandbox.name)
        lock.withLock { _ = sandboxes.removeValue(forKey: sandbox.name) }
        Metrics.sandboxesDeleted.increment()
        audit.record(
            "sandbox.deleted", sandbox: sandbox.name, caller: caller, outcome: "ok",
            fields: ["reason": .string(reason.rawValue)])
        logger.info("sandbox deleted", metadata: ["sandbox": "\(sandbox.name)", "reason": "\(reason.rawValue)"])
    }

    /// Releases everything of sandbox `name` (blocking): through its `PreparedSandbox` when
    /// this process made it, else (adopted, or half-made by a dead daemon) by deleting the
    /// container, which kills its init, and reclaiming the lease it held.
    /// - Returns: what could not be released.
    private func release(name: String, prepared: PreparedSandbox?) -> [String] {
        releaseContainer(name: name, prepared: prepared) + (agentInstall?.remove(name) ?? [])
    }

    private func releaseContainer(name: String, prepared: PreparedSandbox?) -> [String] {
        var problems: [String] = []
        defer { egress?.forget(name) }
        if let prepared {
            do { try prepared.cleanup() } catch { problems += error.lines }
            return problems
        }
        do { try runtime.delete(id: name, force: true) } catch { problems.append("container: \(error)") }
        do {
            let leases = SandboxLeases(directory: config.bundleRoot, backends: host.configuration.backends)
            if Files.exists(leases.bundle(name)), try !leases.reclaimIfDead(name, stateRoot: config.runtimeRoot) {
                problems.append("the lease of \(name) is held by a live process")
            }
        } catch { problems.append("lease: \(error)") }
        host.reapVolumes()
        return problems
    }

    // MARK: exec

    /// Runs an exec in `sandbox`; with `emit`, output is streamed there and not kept.
    func exec(
        _ sandbox: ManagedSandbox, request: ExecRequest, caller: Caller,
        emit: (@Sendable (OutputStream, [UInt8]) -> Void)?,
        onHandle: @Sendable (ExecHandle) -> Void = { _ in }
    ) async throws -> ExecResult {
        try checkNotDraining()
        var request = request
        if request.timeoutSeconds == nil { request.timeoutSeconds = sandbox.record.execTimeoutSeconds }
        let handle = lock.withLock { () -> ExecHandle in
            nextExecID += 1
            return ExecHandle(id: nextExecID, request: request)
        }
        guard sandbox.add(handle, caller: caller) else {
            // Released to its pool since the request found it: no longer the caller's.
            if sandbox.record.phase == .running { throw APIError.notFound(sandbox.name) }
            throw APIError(
                .conflict, "not_running", "sandbox \(sandbox.name) is \(sandbox.record.phase.rawValue.lowercased())")
        }
        defer { sandbox.remove(handle) }
        onHandle(handle)
        audit.record(
            "exec.started", sandbox: sandbox.name, caller: caller, outcome: "ok",
            fields: [
                "argv": .strings(request.command), "stdinSHA256": .string(SandboxFiles.sha256(request.stdin)),
                "execID": .int(Int(handle.id)),
            ])
        Metrics.execsRunning.increment()
        defer { Metrics.execsRunning.decrement() }
        let runtime = self.runtime
        let maxOutput = config.maxExecOutputBytes
        let name = sandbox.name
        do {
            let record = sandbox.record
            let endpoint = record.agentDirectory.flatMap { directory in
                record.initPid.map { AgentEndpoint(directory: directory, initPid: $0) }
            }
            // Code for Python goes to the warm interpreter when the sandbox has one.
            let sockets =
                request.code != nil && request.language == .python && record.warmPython == true
                ? [AgentExec.pythonSocket, AgentExec.agentSocket] : [AgentExec.agentSocket]
            let logger = self.logger
            let cgroup = endpoint == nil ? nil : sandbox.cgroup { try? runtime.store.load(name).cgroup }
            let result = try await blocking { () throws -> ExecResult in
                if let endpoint {
                    for socket in sockets {
                        do {
                            return try AgentExec.run(
                                endpoint: endpoint, socket: socket, handle: handle, maxOutput: maxOutput,
                                oomKills: { cgroup?.oomKillsSinceCreate() }, emit: emit)
                        } catch let error as AgentUnavailable {
                            Metrics.agentFallbacks.increment()
                            logger.warning(
                                "agent unavailable (\(socket)): \(error); the exec runs another way",
                                metadata: ["sandbox": "\(name)"])
                        }
                    }
                }
                return try ExecRunner.run(runtime: runtime, id: name, handle: handle, maxOutput: maxOutput, emit: emit)
            }
            Metrics.execs.increment()
            Metrics.execDuration.recordMilliseconds(result.durationMs)
            var fields: [String: AuditField] = [
                "execID": .int(Int(handle.id)), "exitCode": .int(Int(result.exitCode)),
                "durationMs": .int(result.durationMs),
                "oomKilled": .bool(result.oomKilled), "timedOut": .bool(result.timedOut),
            ]
            if let killed = result.killedBy { fields["killedBy"] = .string(killed) }
            audit.record("exec.finished", sandbox: name, caller: caller, outcome: "ok", fields: fields)
            return result
        } catch {
            audit.record(
                "exec.finished", sandbox: name, caller: caller, outcome: "error",
                fields: [
                    "execID": .int(Int(handle.id)), "error": .string("\(error)"),
                ])
            throw error
        }
    }

    // MARK: files

    func files(of sandbox: ManagedSandbox) throws -> SandboxFiles {
        let record = sandbox.record
        guard record.phase == .running, let pid = record.initPid, let start = record.initStartTime else {
            throw APIError(.conflict, "not_running", "sandbox \(sandbox.name) is \(record.phase.rawValue.lowercased())")
        }
        let state: ContainerState
        do { state = try runtime.store.load(sandbox.name) } catch {
            throw APIError(.conflict, "not_running", "sandbox \(sandbox.name) is not running: \(error)")
        }
        let user = state.spec.process?.user
        func host(_ id: UInt32, _ mappings: [IDMapping]?) -> UInt32 {
            guard let mappings, !mappings.isEmpty else { return id }
            for m in mappings where id >= m.containerID && id - m.containerID < m.size {
                return m.hostID + (id - m.containerID)
            }
            return 65534
        }
        var files = SandboxFiles(
            initPid: pid, initStartTime: start, writablePaths: record.writablePaths,
            uid: host(user?.uid ?? 0, state.spec.linux?.uidMappings),
            gid: host(user?.gid ?? 0, state.spec.linux?.gidMappings))
        if state.gvisor != nil { files.inSandbox = InSandboxFiles(runtime: runtime, id: sandbox.name) }
        return files
    }

    // MARK: lifetimes, shutdown, recovery

    /// Removes the sandboxes whose lifetime (`spec.timeoutSeconds`) is over, and those whose
    /// init died (reason error).
    func reapExpired() async {
        let now = Date().timeIntervalSince1970
        let all = lock.withLock { Array(sandboxes.values) }
        for sandbox in all {
            let record = sandbox.record
            guard record.phase == .running else { continue }
            if let expires = record.expiresAt, expires <= now {
                logger.info("sandbox lifetime over", metadata: ["sandbox": "\(sandbox.name)"])
                try? await delete(sandbox, reason: .timeout, caller: nil)
            } else if let pid = record.initPid, !Self.isAlive(pid: pid, startTime: record.initStartTime) {
                logger.warning("sandbox init died", metadata: ["sandbox": "\(sandbox.name)"])
                try? await delete(sandbox, reason: .error, caller: nil)
            }
        }
    }

    /// SIGTERM: refuse new work, give running execs `gracePeriodSeconds`, kill the rest, then
    /// keep or remove the sandboxes (`shutdown.sandboxes`).
    func shutdown() async {
        lock.withLock { draining = true }
        let deadline = ContinuousClock.now + .seconds(config.gracePeriodSeconds)
        while ContinuousClock.now < deadline, lock.withLock({ sandboxes.values.contains { !$0.execs.isEmpty } }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for sandbox in lock.withLock({ Array(sandboxes.values) }) {
            for exec in sandbox.execs { exec.kill(reason: "daemon shutdown") }
        }
        // The killed execs' requests end; give them a moment to answer.
        let answered = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < answered, lock.withLock({ sandboxes.values.contains { !$0.execs.isEmpty } }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        // A forward serves only while this daemon runs: kept sandboxes lose theirs.
        for name in ports.sandboxes { closePorts(name, reason: .shutdown) }
        if config.removeSandboxesOnShutdown {
            for sandbox in lock.withLock({ Array(sandboxes.values) }) {
                try? await delete(sandbox, reason: .shutdown, caller: nil)
            }
        }
        // Kept sandboxes run on, owned by their inits; the next daemon adopts them. Their
        // seccomp event agents (threads of this process) end with it: denials then fail with
        // ENOSYS instead of EPERM and are no longer counted.
    }

    /// At start: adopts the sandboxes of the records that still run, removes what a crash left
    /// half-made (records in Creating or Deleting, sandboxes whose init is gone), then sweeps
    /// what dead owners left on the node (`SandboxHost.gc`).
    /// - Returns: names adopted and removed.
    func recover() async -> (adopted: [String], removed: [String]) {
        var adopted: [String] = []
        var removed: [String] = []
        let (found, unreadable) = records.all()
        for name in unreadable {
            logger.warning("unreadable sandbox record; removing the sandbox", metadata: ["sandbox": "\(name)"])
            _ = await blocking { self.release(name: name, prepared: nil) }
            records.remove(name)
            removed.append(name)
        }
        for record in found {
            let alive = record.initPid.map { Self.isAlive(pid: $0, startTime: record.initStartTime) } ?? false
            let status = (try? runtime.store.load(record.name)).map { runtime.store.status(of: $0) }
            if record.phase == .running, alive, status == .running {
                // Its execs hand their seccomp listeners to an agent on the bundle's socket:
                // the one of the daemon that died is gone, so a new one listens there.
                var agent: AdoptedSeccompAgent?
                if let path = (try? runtime.store.load(record.name))?.spec.linux?.seccomp?.listenerPath {
                    do { agent = try AdoptedSeccompAgent(path: path) } catch {
                        logger.warning(
                            "seccomp events of an adopted sandbox are off: \(error)",
                            metadata: ["sandbox": "\(record.name)"])
                    }
                }
                // Its network (when it has egress rules) is served by this daemon's filter.
                if let egress {
                    do { try egress.adopt(record.name, resource: record.resource) } catch {
                        logger.warning(
                            "the egress of an adopted sandbox is off (its DNS, 80 and 443 reach no filter): \(error)",
                            metadata: ["sandbox": "\(record.name)"])
                    }
                }
                lock.withLock { sandboxes[record.name] = ManagedSandbox(record: record, prepared: nil, agent: agent) }
                adopted.append(record.name)
                audit.record("sandbox.adopted", sandbox: record.name, caller: nil, outcome: "ok", fields: [:])
                continue
            }
            let problems = await blocking { self.release(name: record.name, prepared: nil) }
            if problems.isEmpty {
                records.remove(record.name)
                removed.append(record.name)
                audit.record(
                    "sandbox.deleted", sandbox: record.name, caller: nil, outcome: "ok",
                    fields: [
                        "reason": .string(DeleteReason.error.rawValue),
                        "detail": .string("found \(record.phase.rawValue.lowercased()) after a daemon restart"),
                    ])
            } else {
                logger.error(
                    "cannot remove a half-made sandbox",
                    metadata: ["sandbox": "\(record.name)", "problems": "\(problems)"])
            }
        }
        // Agent directories of sandboxes that are gone.
        if let agentInstall {
            let kept = lock.withLock { Set(sandboxes.keys) }
            for name in agentInstall.names() where !kept.contains(name) {
                for problem in agentInstall.remove(name) { logger.warning("\(problem)") }
            }
        }
        let report = await blocking { try? self.host.gc() }
        if let report { logger.info("node sweep: \(report)") }
        return (adopted, removed)
    }

    // MARK: helpers

    /// Waits for a sandbox's init once it was killed, when it is this process's child (a
    /// sandbox this daemon created; an adopted one's init is not): no zombie stays behind.
    static func reap(_ pid: Int32) {
        var status: Int32 = 0
        for _ in 0..<500 {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno != EINTR) { return }
            usleep(10_000)
        }
    }

    /// Whether the init `pid` that started at `startTime` still runs (a zombie does not).
    static func isAlive(pid: Int32, startTime: UInt64?) -> Bool {
        guard let stat = ProcStat.read(pid: pid) else { return false }
        return stat.startTime == startTime && stat.state != "Z"
    }

    /// Usage of sandbox `name` from its cgroup.
    /// A recycled sandbox's CPU time counts from its recycle (`usageBaseCPUNanoseconds`), and
    /// its memory peak is null where the recycle could not reset it (cgroup v2).
    func usage(_ name: String) -> [String: Any]? {
        guard let stats = try? runtime.stats(id: name) else { return nil }
        let record = managed(name)?.record
        var usage: [String: Any] = [:]
        if let total = stats.cpu.usage.total {
            let base = record?.usageBaseCPUNanoseconds ?? 0
            usage["cpuSeconds"] = Double(total >= base ? total - base : 0) / 1e9
        }
        usage["memoryBytes"] = stats.memory.usage.usage ?? NSNull()
        usage["memoryPeakBytes"] = record?.memoryPeakUnknown == true ? NSNull() : stats.memory.usage.max ?? NSNull()
        usage["pids"] = stats.pids.current ?? NSNull()
        return usage
    }

    static func parseSeccompSummary(_ summary: String) -> [(String, Int)] {
        guard let colon = summary.firstIndex(of: ":") else { return [] }
        return summary[summary.index(after: colon)...].split(separator: ",").compactMap { part in
            let text = part.trimmingCharacters(in: .whitespaces)
            guard let open = text.lastIndex(of: "("), text.hasSuffix(")"),
                let count = Int(text[text.index(after: open)..<text.index(before: text.endIndex)])
            else { return nil }
            return (text[..<open].trimmingCharacters(in: .whitespaces), count)
        }
    }

    static func now() -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date())
    }
}

/// `1500` -> `1.5`.
func formatMillis(_ millis: Int64) -> String {
    millis % 1000 == 0 ? "\(millis / 1000)" : String(format: "%.3g", Double(millis) / 1000)
}

/// Runs `body` on a thread of its own and returns its result: for the blocking calls into
/// Runtime/SandboxHosting (fork, waitpid, mounts, file locks), which must not hold one of the
/// few threads of the concurrency pool or an event loop.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

/// A seccomp event agent (Runtime's `SeccompEventAgent`) for an adopted sandbox, on the
/// socket its spec names (`linux.seccomp.listenerPath`), serving on a thread of its own.
final class AdoptedSeccompAgent: @unchecked Sendable {
    private let agent: SeccompEventAgent
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var finished = false

    /// Replaces the dead daemon's socket file at `path` and starts serving.
    init(path: String) throws {
        unlink(path)
        agent = try SeccompEventAgent(path: path)
        Thread.detachNewThread { [agent, done] in
            agent.serve()
            done.signal()
        }
    }

    /// Stops the agent and removes its socket.
    /// - Returns: the summary line of denied syscalls, nil when none were (or it was done).
    func finish() -> String? {
        guard
            lock.withLock({ () -> Bool in
                defer { finished = true }
                return !finished
            })
        else { return nil }
        agent.stop()
        done.wait()
        agent.close()
        return agent.summary
    }
}
