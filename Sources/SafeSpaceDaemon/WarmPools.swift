/// Warm pools (issue 14): sandboxes made ahead of need from a `WarmPool`'s template, through
/// the daemon's ordinary create (`SandboxManager.create`: admission, SandboxHost
/// plan/prepare/create/start, limits, seccomp, the same PID 1 as any sandbox), kept ready and
/// handed to a caller by a claim in one round trip.
///
/// - A ready sandbox belongs to the daemon (uid 0) and is hidden: no caller, root included,
///   sees or touches it (`SandboxRecord.isPoolReady`). A claim pops the oldest ready one under
///   the pool's lock (never handed out twice), makes the caller its owner (record saved,
///   audited `pool.claimed`), and answers with `status.warm: true`.
/// - With `recycle: false` (the default) used sandboxes are never returned: a claimed sandbox
///   is the caller's and is destroyed by the caller's delete (or its lifetime) like any other;
///   the pool refills.
/// - With `recycle: true` the owner's delete or the lifetime's end releases a claimed sandbox
///   to the pool (`release`): it is hidden at once (the owner's later requests get 404), its
///   execs are killed and its port forwards closed, then the checks of PoolRecycle.swift run
///   against the digests taken when it was made (`RecycleBaseline`, at refill). All passed:
///   it is ready again (its age still counted from when it was made, owner and lifetime
///   cleared, counters re-based, a fresh warm interpreter); one failed: it is destroyed and
///   the pool refills. Every check's outcome is audited (`pool.recycle`) and counted
///   (`safespaced_pool_recycle_checks_total`).
/// - Refills run in the background, one create at a time for all pools, at most
///   `pools.refillPerSecond` per second, through the daemon's admission (a 429 backs off:
///   0.5 s doubling to 30 s, `status.lastError`). A ready sandbox older than `maxAgeSeconds`
///   is destroyed and replaced.
/// - A refill runs under SCHED_IDLE (sched(7)): the thread that makes the sandbox and every
///   process it starts (runtime helpers, the sandbox's agent, warm interpreter and spare
///   child) run only on CPU time that nothing else wants, and a claim's or an exec's thread
///   that wakes preempts them at once, so a refill does not slow the claims and execs it
///   runs beside (a refill is a whole sandbox create, ~200 ms of CPU). A claim moves the
///   sandbox's threads back to SCHED_OTHER before it answers. The cost: on a node whose CPUs
///   are saturated refills wait (the pool empties and claims fall back to cold creates, which
///   run at the normal policy), and a node-wide lock a refill holds (the lease store) is
///   released only when it gets CPU time again. The rate bound `pools.refillPerSecond` holds
///   as before.
/// - Pools come from `pools.directory` (`*.yaml`, loaded at start; a bad file stops the start
///   naming the file and field) and from `POST /v1/warmpools` (kept until the daemon stops;
///   not written to disk). Only root may create or remove pools: a pool's template decides
///   which node resources and profiles its sandboxes hold. Root and the group may list pools
///   and claim.
/// - A daemon restart destroys the ready sandboxes it finds (`pool: daemon restart`); claimed
///   ones are adopted as their owners' sandboxes and count as claimed again. A graceful stop
///   destroys the ready ones.
import Foundation
import Glibc
import Hummingbird
import LinuxKernel
import Logging
import Metrics
import OCI
import Runtime
import SandboxSpec
import ServiceLifecycle

/// The pool metrics (`GET /metrics`), labelled `pool`.
enum PoolMetrics {
    static let claimDurationLabel = "safespaced_pool_claim_duration_seconds"
    /// Claim latency buckets: a warm claim is well under a millisecond to a few; a cold
    /// fallback is a create (hundreds of ms).
    static let claimBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
        .milliseconds(3), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
    ]
    static func ready(_ pool: String) -> Gauge { Gauge(label: "safespaced_pool_ready", dimensions: [("pool", pool)]) }
    static func claimed(_ pool: String) -> Gauge {
        Gauge(label: "safespaced_pool_claimed", dimensions: [("pool", pool)])
    }
    /// `outcome`: warm (a ready sandbox), cold (an empty pool's fallback create), refused (503).
    static func claims(_ pool: String, _ outcome: String) -> Counter {
        Counter(label: "safespaced_pool_claims_total", dimensions: [("pool", pool), ("outcome", outcome)])
    }
    static func claimDuration(_ pool: String) -> MetricsTimer {
        MetricsTimer(label: claimDurationLabel, dimensions: [("pool", pool)])
    }
    static func refillDuration(_ pool: String) -> MetricsTimer {
        MetricsTimer(label: "safespaced_pool_refill_duration_seconds", dimensions: [("pool", pool)])
    }
    /// `outcome`: ok, error.
    static func refills(_ pool: String, _ outcome: String) -> Counter {
        Counter(label: "safespaced_pool_refills_total", dimensions: [("pool", pool), ("outcome", outcome)])
    }
    /// Ready sandboxes destroyed by the pool, by `reason` (max age, pool removed, daemon
    /// restart, shutdown, dead: its init was gone).
    static func discarded(_ pool: String, _ reason: String) -> Counter {
        Counter(label: "safespaced_pool_discarded_total", dimensions: [("pool", pool), ("reason", reason)])
    }
    /// Released sandboxes of a `recycle: true` pool by `outcome`: recycled (back in the ready
    /// set) or failed (destroyed).
    static func recycles(_ pool: String, _ outcome: String) -> Counter {
        Counter(label: "safespaced_pool_recycles_total", dimensions: [("pool", pool), ("outcome", outcome)])
    }
    /// Each recycle check's outcome: `check` (age, securityEvents, agent, processes,
    /// writablePaths, packages, counters, python), `result` passed or failed.
    static func recycleChecks(_ pool: String, _ check: String, _ result: String) -> Counter {
        Counter(
            label: "safespaced_pool_recycle_checks_total",
            dimensions: [("pool", pool), ("check", check), ("result", result)])
    }
}

/// What a claim got.
enum ClaimOutcome: String, Sendable {
    /// A ready sandbox of the pool.
    case warm
    /// The pool was empty: a sandbox made for the claim from the template.
    case cold
}

/// One pool and its sandboxes (guarded by `PoolManager`'s lock).
final class PoolEntry: @unchecked Sendable {
    struct Ready {
        let name: String
        let made: ContinuousClock.Instant
    }

    var pool: WarmPool
    /// The layer of `spec.preloadPackages` (PackageLayer.swift); nil without packages.
    var layer: PackageLayer?
    /// `file:<path>` or `api`.
    let source: String
    /// Oldest first.
    var ready: [Ready] = []
    var claimed: Set<String> = []
    /// Released sandboxes being checked (`recycle: true`).
    var recycling: Set<String> = []
    /// When each sandbox of the pool was made (its age for `maxAgeSeconds`, kept over claims).
    var made: [String: ContinuousClock.Instant] = [:]
    /// What each sandbox looked like when made (`recycle: true` pools).
    var baselines: [String: RecycleBaseline] = [:]
    var recycled = 0
    var recycleFailures = 0
    var creating = 0
    var refills = 0
    var refillFailures = 0
    var hits = 0
    var misses = 0
    var refusals = 0
    var lastError: String?
    var consecutiveFailures = 0
    var retryAt: ContinuousClock.Instant?
    var removed = false

    init(pool: WarmPool, source: String) {
        self.pool = pool
        self.source = source
    }

    var name: String { pool.metadata.name ?? "" }
}

/// The daemon's warm pools.
final class PoolManager: @unchecked Sendable {
    let manager: SandboxManager
    let logger: Logger
    private let lock = NSLock()
    // Guarded by `lock`.
    private var pools: [String: PoolEntry] = [:]
    private var stopping = false
    private var lastRefillStart: ContinuousClock.Instant?

    /// The daemon itself, as the maker and owner of ready sandboxes.
    static let daemonCaller = Caller(pid: getpid(), uid: 0, gid: 0)

    init(manager: SandboxManager, logger: Logger) {
        self.manager = manager
        self.logger = logger
        manager.setReleaseHook { [weak self] sandbox, reason in
            await self?.release(sandbox, reason: reason) ?? .destroy
        }
    }

    // MARK: pools

    /// Loads every `*.yaml` of `directory` (sorted by name); a missing directory is no pools.
    /// - Throws: `ConfigError` naming the file and the field of the first bad pool, or a name
    ///   given by two files.
    func load(directory: String) throws {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for entry in entries.sorted() where entry.hasSuffix(".yaml") || entry.hasSuffix(".yml") {
            let path = directory + "/" + entry
            let pool: WarmPool
            do {
                pool = try WarmPool.load(path: path)
                try pool.validate()
            } catch {
                let text = "\(error)".replacingOccurrences(of: "\n", with: "; ")
                throw ConfigError("\(path): \(text)")
            }
            let name = pool.metadata.name!
            let layer: PackageLayer?
            do { layer = try layerBuilder.build(pool) } catch { throw ConfigError("\(path): \(error)") }
            try lock.withLock {
                if let other = pools[name] {
                    throw ConfigError("\(path): metadata.name: pool \(name) is defined already by \(other.source)")
                }
                let entry = PoolEntry(pool: pool, source: "file:" + path)
                entry.layer = layer
                pools[name] = entry
            }
            logger.info("warm pool loaded", metadata: ["pool": "\(name)", "file": "\(path)"])
        }
    }

    /// Adds a pool from the API (`POST /v1/warmpools`), root only.
    /// - Throws: `APIError`: 403 for a caller that is not root, 400 naming the field of a bad
    ///   pool (a template the host cannot plan included; a package refused by the allowlist or
    ///   the advisory scan, or a layer that cannot be built, `PackageLayerError`'s code), 409
    ///   for a name in use.
    func add(_ body: [UInt8], caller: Caller) async throws -> PoolEntry {
        try requireRoot(caller, "create warm pools")
        guard let text = String(bytes: body, encoding: .utf8) else {
            throw APIError.badRequest("the body is not UTF-8 text", field: "body", code: "malformed")
        }
        let pool: WarmPool
        do {
            pool = try WarmPool.decode(yaml: text)
            try pool.validate()
        } catch { throw APIError.from(error) }
        try checkPlannable(pool)
        let name = pool.metadata.name!
        let layer = try await buildLayer(pool, caller: caller)
        let entry = try lock.withLock { () throws -> PoolEntry in
            if stopping {
                throw APIError(
                    .serviceUnavailable, "shutting_down", "safespaced is shutting down: no new work is accepted")
            }
            if pools[name] != nil {
                throw APIError(.conflict, "exists", "a warm pool named \(name) exists already", field: "metadata.name")
            }
            let entry = PoolEntry(pool: pool, source: "api")
            entry.layer = layer
            pools[name] = entry
            return entry
        }
        manager.audit.record(
            "pool.created", sandbox: nil, caller: caller, outcome: "ok",
            fields: [
                "pool": .string(name), "minSize": .int(pool.minSize), "maxSize": .int(pool.maxSize),
            ])
        return entry
    }

    /// A template the host cannot serve is refused when the pool is made, not at every refill:
    /// gVisor levels (safespaced does not serve them yet) and what `SandboxHost.plan` refuses.
    private func checkPlannable(_ pool: WarmPool) throws {
        let sandbox = pool.sandbox(named: pool.metadata.name! + "-00000000")
        if SecurityLevel.of(sandbox)?.profile.backend == .gvisor {
            throw APIError.badRequest(
                "\(sandbox.spec.securityLevel ?? "") runs under gVisor, which safespaced does not serve yet",
                field: "spec.template.securityLevel", code: "not_enforceable")
        }
        do { _ = try manager.host.plan(for: sandbox, args: SandboxManager.idleCommand) } catch let error
            as SandboxError
        {
            throw APIError.from(error)
        } catch {
            let text = "\(error)"
            let field =
                text.hasPrefix("spec.") ? "spec.template." + String(text.dropFirst(5).prefix { $0 != ":" }) : nil
            throw APIError.badRequest(text, field: field)
        }
    }

    /// Removes pool `name` and destroys its ready sandboxes (also one a refill was making);
    /// claimed ones stay their owners'.
    /// - Throws: 403 for a caller that is not root, 404 for no such pool.
    func remove(_ name: String, caller: Caller) async throws {
        try requireRoot(caller, "remove warm pools")
        let entry = try lock.withLock { () throws -> PoolEntry in
            guard let entry = pools.removeValue(forKey: name) else { throw Self.noPool(name) }
            entry.removed = true
            return entry
        }
        let ready = lock.withLock { () -> [PoolEntry.Ready] in
            defer { entry.ready = [] }
            return entry.ready
        }
        for sandbox in ready { await discard(sandbox.name, pool: name, reason: .poolRemoved) }
        // A refill in flight discards its sandbox when it ends (the pool is marked removed):
        // the answer waits for it, so that nothing of the pool is left once it is given.
        // Likewise a release being checked: it is destroyed when its checks end.
        while lock.withLock({ entry.creating > 0 || !entry.recycling.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        PoolMetrics.ready(name).record(0)
        PoolMetrics.claimed(name).record(0)
        manager.audit.record(
            "pool.deleted", sandbox: nil, caller: caller, outcome: "ok",
            fields: ["pool": .string(name), "readyDestroyed": .int(ready.count)])
    }

    func entry(_ name: String) throws -> PoolEntry {
        guard let entry = lock.withLock({ pools[name] }) else { throw Self.noPool(name) }
        return entry
    }

    var all: [PoolEntry] { lock.withLock { pools.values.sorted { $0.name < $1.name } } }

    static func noPool(_ name: String) -> APIError {
        APIError(.notFound, "pool_not_found", "no warm pool named \(name)", field: "name")
    }

    private func requireRoot(_ caller: Caller, _ what: String) throws {
        guard caller.isRoot else {
            Metrics.accessDenied.increment()
            let message = "only root may \(what) (a pool's template decides what node resources its sandboxes hold)"
            manager.audit.record(
                "api.denied", sandbox: nil, caller: caller, outcome: "denied", fields: ["reason": .string(message)])
            throw APIError(.forbidden, "forbidden", message)
        }
    }

    /// The JSON of a pool: the resource and a `status` (ready, claimed, creating, refills,
    /// refillFailures, hits, misses, refusals, hitRatio, lastError, source).
    func describe(_ entry: PoolEntry) -> [String: Any] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let (pool, status): (WarmPool, [String: Any]) = lock.withLock {
            let asked = entry.hits + entry.misses
            let status: [String: Any] = [
                "ready": entry.ready.count, "claimed": liveClaimed(entry), "creating": entry.creating,
                "refills": entry.refills, "refillFailures": entry.refillFailures, "hits": entry.hits,
                "recycle": entry.pool.spec.recycle == true, "recycled": entry.recycled,
                "recycleFailures": entry.recycleFailures, "recycling": entry.recycling.count,
                "misses": entry.misses, "refusals": entry.refusals,
                "hitRatio": asked == 0 ? (NSNull() as Any) : (Double(entry.hits) / Double(asked) as Any),
                "lastError": entry.lastError ?? NSNull(), "source": entry.source,
                "minSize": entry.pool.minSize, "maxSize": entry.pool.maxSize,
                "maxAgeSeconds": entry.pool.maxAgeSeconds,
                "whenEmpty": refusesWhenEmpty(entry.pool) ? "refuse" : "create",
                "packages": entry.layer.map { $0.json as Any } ?? NSNull(),
            ]
            return (entry.pool, status)
        }
        var object =
            (try? encoder.encode(pool)).flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: Any] ?? [:]
        object["status"] = status
        return object
    }

    /// Claimed sandboxes of `entry` that still exist (a delete is seen at once, not at the
    /// next upkeep round). Call with `lock` held.
    private func liveClaimed(_ entry: PoolEntry) -> Int {
        entry.claimed.count { manager.managed($0) != nil }
    }

    private func refusesWhenEmpty(_ pool: WarmPool) -> Bool {
        pool.spec.whenEmpty.map { $0 == WarmPoolSpec.WhenEmpty.refuse.rawValue } ?? manager.config.poolsRefuseWhenEmpty
    }

    /// Publishes the ready and claimed gauges (before `/metrics` is answered).
    func publishMetrics() {
        for entry in all {
            let (ready, claimed) = lock.withLock { (entry.ready.count, liveClaimed(entry)) }
            PoolMetrics.ready(entry.name).record(ready)
            PoolMetrics.claimed(entry.name).record(claimed)
        }
    }

    // MARK: claims

    /// The pool whose template `spec` is, with a ready sandbox (first by name); nil when none.
    func pool(matching spec: SandboxSpec) -> String? {
        lock.withLock {
            pools.values.sorted { $0.name < $1.name }.first { $0.pool.matches(spec) && !$0.ready.isEmpty }?.name
        }
    }

    /// Claims a sandbox of pool `name` for `caller` (`POST /v1/sandboxes?pool=NAME`). `body`
    /// may be empty, or a Sandbox with no metadata whose spec is empty or the pool's template,
    /// with an optional `spec.timeoutSeconds` (the lifetime from the claim on).
    /// - Returns: the sandbox, now `caller`'s, and whether it was warm or made cold.
    /// - Throws: `APIError`: 404 (no pool, field `pool`), 400 naming a field of the body that a
    ///   claim cannot honour, 503 `pool_empty` for an empty pool that refuses, and the errors
    ///   of a create for a cold one.
    ///   With `viaTemplate` (the body's spec matched the template, no `?pool=`), an empty pool
    ///   answers nil: the request is then an ordinary create.
    func claim(_ name: String, body: [UInt8], caller: Caller, viaTemplate: Bool = false) async throws -> (
        ManagedSandbox, ClaimOutcome
    )? {
        let started = ContinuousClock.now
        guard let entry = lock.withLock({ pools[name] }) else {
            throw APIError(.notFound, "pool_not_found", "no warm pool named \(name)", field: "pool")
        }
        var lifetime: Int?
        if !body.allSatisfy({ [0x20, 0x0A, 0x0D, 0x09].contains($0) }) {
            let (asked, timeout) = try SandboxManager.parseCreate(body)
            lifetime = timeout
            if asked.metadata != ObjectMeta() {
                throw APIError.badRequest(
                    "a claimed sandbox keeps the name and metadata it was made with; leave metadata out",
                    field: "metadata")
            }
            if asked.spec != SandboxSpec(), !entry.pool.matches(asked.spec) {
                throw APIError.badRequest(
                    "differs from the template of pool \(name); leave spec out (or give only spec.timeoutSeconds) to claim",
                    field: "spec")
            }
        }
        if let sandbox = try await take(entry, caller: caller, lifetime: lifetime) {
            PoolMetrics.claimDuration(name).recordInterval(ContinuousClock.now - started)
            PoolMetrics.claims(name, ClaimOutcome.warm.rawValue).increment()
            return (sandbox, .warm)
        }
        // Empty.
        if viaTemplate { return nil }
        if lock.withLock({ refusesWhenEmpty(entry.pool) }) {
            lock.withLock { entry.refusals += 1 }
            PoolMetrics.claims(name, "refused").increment()
            manager.audit.record(
                "pool.claimed", sandbox: nil, caller: caller, outcome: "error",
                fields: ["pool": .string(name), "error": .string("pool empty (whenEmpty: refuse)")])
            throw APIError(
                .serviceUnavailable, "pool_empty",
                "warm pool \(name) has no ready sandbox (spec.whenEmpty: refuse); retry later", field: "pool")
        }
        var object: [String: Any] = [
            "spec":
                (try? JSONSerialization.jsonObject(
                    with: JSONEncoder().encode(lock.withLock { entry.pool.sandbox(named: "x").spec }))) ?? [:]
        ]
        if let lifetime {
            var spec = object["spec"] as? [String: Any] ?? [:]
            spec["timeoutSeconds"] = lifetime
            object["spec"] = spec
        }
        let layer = lock.withLock { entry.layer }
        let sandbox = try await manager.create(JSON.encode(object), caller: caller, layer: layer)
        try await verifyLayer(sandbox, layer: layer, pool: name)
        PoolMetrics.claimDuration(name).recordInterval(ContinuousClock.now - started)
        PoolMetrics.claims(name, ClaimOutcome.cold.rawValue).increment()
        manager.audit.record(
            "pool.claimed", sandbox: sandbox.name, caller: caller, outcome: "ok",
            fields: ["pool": .string(name), "warm": .bool(false)])
        return (sandbox, .cold)
    }

    /// Pops ready sandboxes of `entry` (oldest first) until one is still running and hands it
    /// to `caller`; nil when the pool is empty (a miss, counted).
    private func take(_ entry: PoolEntry, caller: Caller, lifetime: Int?) async throws -> ManagedSandbox? {
        while true {
            let next = lock.withLock { () -> PoolEntry.Ready? in
                guard !entry.ready.isEmpty else {
                    entry.misses += 1
                    return nil
                }
                let ready = entry.ready.removeFirst()
                entry.claimed.insert(ready.name)
                entry.made[ready.name] = ready.made
                return ready
            }
            guard let next else { return nil }
            guard let sandbox = manager.managed(next.name), sandbox.record.phase == .running,
                sandbox.record.isPoolReady,
                sandbox.record.initPid.map({ SandboxManager.isAlive(pid: $0, startTime: sandbox.record.initStartTime) })
                    ?? false
            else {
                lock.withLock { _ = entry.claimed.remove(next.name) }
                await discard(next.name, pool: entry.name, reason: .error)
                continue
            }
            let record = sandbox.update { record in
                record.claimed = true
                record.creatorUID = caller.uid
                record.creatorPID = caller.pid
                if let lifetime {
                    record.timeoutSeconds = lifetime
                    record.expiresAt = Date().timeIntervalSince1970 + Double(lifetime)
                }
            }
            // Not fsync'd (`durable: false`): a claim takes no node state. A daemon killed after
            // it finds the renamed record (claimed, the caller's) and adopts the sandbox; after
            // a host crash the sandbox's processes are gone and it is removed whichever record,
            // ready or claimed, the disk kept. So recovery never depends on this write's
            // durability, and a claim does not wait for a disk flush.
            do { try manager.records.save(record, durable: false) } catch {
                // Not handed over: the record on disk would not say whose it is.
                try? await manager.delete(sandbox, reason: .error, caller: nil)
                lock.withLock { _ = entry.claimed.remove(next.name) }
                throw APIError(.internalServerError, "internal", "cannot write the sandbox's record: \(error)")
            }
            // Made by a refill under SCHED_IDLE (`SandboxManager.create`'s `background`): its
            // threads run under the default policy from now on. One that cannot be moved is
            // not handed out: its owner's code would run only on CPU time nobody else wants.
            do { try Self.leaveIdle(sandbox, runtime: manager.runtime) } catch {
                logger.error(
                    "a ready sandbox's threads cannot leave SCHED_IDLE: \(error); it is destroyed",
                    metadata: ["pool": "\(entry.name)", "sandbox": "\(sandbox.name)"])
                try? await manager.delete(sandbox, reason: .error, caller: nil)
                lock.withLock { _ = entry.claimed.remove(next.name) }
                continue
            }
            lock.withLock { entry.hits += 1 }
            manager.audit.record(
                "pool.claimed", sandbox: sandbox.name, caller: caller, outcome: "ok",
                fields: [
                    "pool": .string(entry.name), "warm": .bool(true), "owner": .int(Int(caller.uid)),
                    "timeoutSeconds": lifetime.map { .int($0) } ?? .null,
                ])
            return sandbox
        }
    }

    /// Moves every thread of `sandbox`'s cgroup that runs under SCHED_IDLE to SCHED_OTHER
    /// (`Scheduling.move`: `cgroup.threads` on cgroup v2 and hybrid hosts, `tasks` on v1).
    /// - Throws: `SysError` when the sandbox has no known cgroup, or its threads cannot be moved.
    static func leaveIdle(_ sandbox: ManagedSandbox, runtime: ContainerRuntime) throws {
        let name = sandbox.name
        guard let cgroup = sandbox.cgroup({ try? runtime.store.load(name).cgroup }) else {
            throw SysError(.refused, "sandbox \(name) has no known cgroup")
        }
        let file: String
        if let unified = cgroup.directories["unified"] {
            file = unified + "/cgroup.threads"
        } else if let directory = cgroup.directories.sorted(by: { $0.key < $1.key }).first?.value {
            file = directory + "/tasks"
        } else {
            throw SysError(.refused, "sandbox \(name)'s cgroup has no directory")
        }
        try Scheduling.move(threadsIn: file, from: .idle, to: .other)
    }

    // MARK: upkeep

    /// At start, after `SandboxManager.recover`: ready sandboxes a previous daemon left are
    /// destroyed; claimed ones of a known pool count as claimed again.
    func recoverAfterRestart() async {
        for sandbox in manager.all {
            let record = sandbox.record
            guard let pool = record.pool else { continue }
            if record.claimed == true {
                lock.withLock { _ = pools[pool]?.claimed.insert(record.name) }
            } else {
                await discard(record.name, pool: pool, reason: .poolRestart)
            }
        }
    }

    /// One round of upkeep: forgets claimed sandboxes that are gone, replaces ready ones that
    /// are too old or dead, and makes at most one sandbox for the pool that lacks the most
    /// (rate and backoff permitting).
    func tick() async {
        let now = ContinuousClock.now
        var discards: [(String, String, DeleteReason)] = []
        lock.withLock {
            for entry in pools.values {
                entry.claimed = entry.claimed.filter { manager.managed($0) != nil }
                let known = Set(entry.ready.map(\.name)).union(entry.claimed).union(entry.recycling)
                entry.made = entry.made.filter { known.contains($0.key) }
                entry.baselines = entry.baselines.filter { known.contains($0.key) }
                let maxAge = Duration.seconds(entry.pool.maxAgeSeconds)
                entry.ready.removeAll { ready in
                    if now - ready.made >= maxAge {
                        discards.append((ready.name, entry.name, .poolMaxAge))
                        return true
                    }
                    guard let sandbox = manager.managed(ready.name), sandbox.record.phase == .running else {
                        discards.append((ready.name, entry.name, .error))
                        return true
                    }
                    return false
                }
            }
        }
        for (name, pool, reason) in discards { await discard(name, pool: pool, reason: reason) }
        await refillOne()
    }

    private func refillOne() async {
        let now = ContinuousClock.now
        let interval = Duration.seconds(1) / manager.config.poolsRefillPerSecond
        let chosen = lock.withLock { () -> (PoolEntry, String)? in
            if stopping || manager.isDraining { return nil }
            if let last = lastRefillStart, now - last < interval { return nil }
            let wanting = pools.values.filter { entry in
                let total = entry.ready.count + entry.claimed.count + entry.creating + entry.recycling.count
                return entry.ready.count + entry.creating < entry.pool.minSize && total < entry.pool.maxSize
                    && (entry.retryAt.map { now >= $0 } ?? true)
            }
            guard
                let entry = wanting.min(by: {
                    ($0.ready.count + $0.creating - $0.pool.minSize, $0.name)
                        < ($1.ready.count + $1.creating - $1.pool.minSize, $1.name)
                })
            else { return nil }
            entry.creating += 1
            lastRefillStart = now
            let hex = String(UInt32.random(in: .min ... .max), radix: 16)
            return (entry, entry.name + "-" + String(repeating: "0", count: 8 - hex.count) + hex)
        }
        guard let chosen else { return }
        let (entry, sandboxName) = chosen
        let poolName = entry.name
        let started = ContinuousClock.now
        do {
            let sandbox = lock.withLock { entry.pool.sandbox(named: sandboxName) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let body = Array(try encoder.encode(sandbox))
            let layer = lock.withLock { entry.layer }
            let made = try await manager.create(
                body, caller: Self.daemonCaller, pool: poolName, layer: layer, background: true)
            try await verifyLayer(made, layer: layer, pool: poolName, background: true)
            // What it looks like before anyone used it: what a release is compared with.
            var baseline: RecycleBaseline?
            if lock.withLock({ entry.pool.spec.recycle == true }) {
                do { baseline = try await takeBaseline(made, background: true) } catch {
                    logger.warning(
                        "no recycle baseline: the sandbox will be destroyed after use: \(error)",
                        metadata: ["pool": "\(poolName)", "sandbox": "\(sandboxName)"])
                }
            }
            PoolMetrics.refillDuration(poolName).recordInterval(ContinuousClock.now - started)
            PoolMetrics.refills(poolName, "ok").increment()
            let keep = lock.withLock { () -> Bool in
                guard !entry.removed, !stopping else { return false }
                entry.creating -= 1
                entry.ready.append(.init(name: sandboxName, made: ContinuousClock.now))
                if let baseline { entry.baselines[sandboxName] = baseline }
                entry.refills += 1
                entry.consecutiveFailures = 0
                entry.retryAt = nil
                return true
            }
            if !keep {
                // Still counted as creating until it is gone: `remove` and `shutdown` wait
                // for that before they answer.
                await discard(sandboxName, pool: poolName, reason: .poolRemoved)
                lock.withLock { entry.creating -= 1 }
            }
        } catch {
            PoolMetrics.refills(poolName, "error").increment()
            let message = (error as? APIError)?.message ?? "\(error)"
            lock.withLock {
                entry.creating -= 1
                entry.refillFailures += 1
                entry.consecutiveFailures += 1
                entry.lastError = message
                let backoff = min(30.0, 0.5 * pow(2.0, Double(min(entry.consecutiveFailures - 1, 6))))
                entry.retryAt = ContinuousClock.now + .milliseconds(Int(backoff * 1000))
            }
            logger.warning("warm pool refill failed: \(message)", metadata: ["pool": "\(poolName)"])
        }
    }

    /// Destroys the ready sandbox `name` of `pool` (counted by reason).
    private func discard(_ name: String, pool: String, reason: DeleteReason) async {
        PoolMetrics.discarded(pool, reason.rawValue).increment()
        guard let sandbox = manager.managed(name) else { return }
        do { try await manager.delete(sandbox, reason: reason, caller: nil) } catch {
            logger.error(
                "cannot destroy a ready sandbox: \(error)", metadata: ["pool": "\(pool)", "sandbox": "\(name)"])
        }
    }

    /// Graceful stop: no more refills; the ready sandboxes are destroyed.
    func shutdown() async {
        let ready = lock.withLock { () -> [(String, String)] in
            stopping = true
            var all: [(String, String)] = []
            for entry in pools.values {
                all += entry.ready.map { ($0.name, entry.name) }
                entry.ready = []
            }
            return all
        }
        for (name, pool) in ready { await discard(name, pool: pool, reason: .shutdown) }
        // A refill that was running when the stop began: its sandbox is discarded by
        // refillOne; wait for it so that nothing is made after this returns.
        while lock.withLock({ pools.values.contains { $0.creating > 0 } }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// The pools' upkeep while the daemon runs (every 50 ms), and their stop.
struct PoolService: Service {
    let pools: PoolManager

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await pools.tick()
            try? await Task.sleep(for: .milliseconds(50))
        }
        await pools.shutdown()
    }
}

// MARK: routes

extension DaemonAPI {
    /// `GET/POST /v1/warmpools`, `GET/DELETE /v1/warmpools/{name}`.
    func registerPools(on router: Router<DaemonContext>) {
        router.get("/v1/warmpools") { _, context in
            _ = try context.requireCaller()
            return JSON.response(["items": pools.all.map { pools.describe($0) }])
        }
        router.post("/v1/warmpools") { request, context in
            let caller = try context.requireCaller()
            var buffer = try await request.body.collect(upTo: manager.config.maxRequestBytes)
            let entry = try await pools.add(buffer.readBytes(length: buffer.readableBytes) ?? [], caller: caller)
            return JSON.response(pools.describe(entry), status: .created)
        }
        router.get("/v1/warmpools/:name") { _, context in
            _ = try context.requireCaller()
            return JSON.response(pools.describe(try pools.entry(context.parameters.get("name") ?? "")))
        }
        router.delete("/v1/warmpools/:name") { _, context in
            let caller = try context.requireCaller()
            let name = context.parameters.get("name") ?? ""
            try await pools.remove(name, caller: caller)
            return JSON.response(["name": name, "deleted": true])
        }
        registerPoolScan(on: router)
    }

    /// `POST /v1/sandboxes`: a claim (`?pool=NAME`, or a body with no metadata whose spec is
    /// a pool's template and that pool has a ready sandbox), else nil (an ordinary create).
    func claimIfPooled(_ request: Request, body: [UInt8], caller: Caller) async throws -> Response? {
        var poolName = request.uri.queryParameters.get("pool")
        if poolName == nil, !pools.all.isEmpty, let parsed = try? SandboxManager.parseCreate(body),
            parsed.0.metadata == ObjectMeta()
        {
            poolName = pools.pool(matching: parsed.0.spec)
        }
        guard let poolName else { return nil }
        if poolName.isEmpty { throw APIError.badRequest("names no pool", field: "pool") }
        let viaTemplate = request.uri.queryParameters.get("pool") == nil
        guard let claimed = try await pools.claim(poolName, body: body, caller: caller, viaTemplate: viaTemplate)
        else { return nil }
        let (sandbox, outcome) = claimed
        var object = describe(sandbox, usage: false)
        var status = object["status"] as? [String: Any] ?? [:]
        status["warm"] = outcome == .warm
        status["claim"] = ["pool": poolName, "outcome": outcome.rawValue]
        object["status"] = status
        return JSON.response(object, status: .created)
    }
}

// MARK: recycling

/// What `SandboxManager.delete` does with a released pool sandbox.
enum ReleaseOutcome: Sendable {
    /// Verified and back in its pool's ready set: not deleted.
    case recycled
    /// Deleted as any sandbox (not a `recycle: true` pool's, or a check failed).
    case destroy
    /// Its release runs already.
    case busy
}

extension PoolManager {
    /// HOME of sandbox `name`'s processes (its container's `process.env`), `/` when none.
    private func home(_ name: String) -> String {
        let env = (try? manager.runtime.store.load(name))?.spec.process?.env ?? []
        return env.last { $0.hasPrefix("HOME=") }.map { String($0.dropFirst(5)) } ?? "/"
    }

    /// The digests of a sandbox just made (`RecycleBaseline.take`), on a thread of its own;
    /// with `background` (a refill) under SCHED_IDLE, as the refill's create.
    func takeBaseline(_ sandbox: ManagedSandbox, background: Bool = false) async throws -> RecycleBaseline {
        let record = sandbox.record
        guard let pid = record.initPid else { throw TreeDigest.WalkError(description: "no init") }
        let home = home(sandbox.name)
        return try await blocking {
            try Scheduling.running(background ? .idle : nil) {
                try RecycleBaseline.take(
                    pid: pid, startTime: record.initStartTime, writablePaths: record.writablePaths,
                    runtime: record.runtime, home: home, agentDirectory: record.agentDirectory)
            }
        }
    }

    /// A claimed sandbox of a `recycle: true` pool released by its owner's delete or its
    /// lifetime's end (`reason` request or timeout): hidden, its execs killed and its port
    /// forwards closed, then checked (`RecycleChecks`); every check audited in one
    /// `pool.recycle` record (fields `check_<name>`: `passed: …` / `failed: …`) and counted.
    /// - Returns: `.recycled` when it is ready again; `.destroy` when the caller deletes it
    ///   (any other sandbox, a failed check, a pool gone meanwhile); `.busy` for a second
    ///   release of the same sandbox.
    func release(_ sandbox: ManagedSandbox, reason: DeleteReason) async -> ReleaseOutcome {
        let record = sandbox.record
        let name = sandbox.name
        guard let poolName = record.pool, record.claimed == true, reason == .request || reason == .timeout,
            record.phase == .running
        else { return .destroy }
        enum Taken {
            case check(PoolEntry, RecycleBaseline?, ContinuousClock.Instant?)
            case not(ReleaseOutcome)
        }
        let taken = lock.withLock { () -> Taken in
            guard let entry = pools[poolName], !entry.removed, !stopping, entry.pool.spec.recycle == true else {
                return .not(.destroy)
            }
            if entry.recycling.contains(name) { return .not(.busy) }
            entry.claimed.remove(name)
            entry.recycling.insert(name)
            return .check(entry, entry.baselines[name], entry.made[name])
        }
        guard case .check(let entry, let baseline, let made) = taken else {
            if case .not(let outcome) = taken { return outcome }
            return .destroy
        }
        let maxAge = Duration.seconds(lock.withLock { entry.pool.maxAgeSeconds })

        // Nobody's from now on: the owner's next request gets 404, a crash destroys it.
        let hidden = sandbox.update { record in
            record.claimed = nil
            record.creatorUID = 0
            record.creatorPID = getpid()
            record.timeoutSeconds = nil
            record.expiresAt = nil
        }
        try? manager.records.save(hidden)
        manager.closePorts(name, reason: reason)
        for exec in sandbox.execs { exec.kill(reason: "sandbox released") }
        // No exec or file operation of the former owner starts from now on (ManagedSandbox
        // `add`, `beginFileOperation`); those under way end first.
        let execDeadline = ContinuousClock.now + .seconds(10)
        while !sandbox.execs.isEmpty || sandbox.fileOperationsInFlight > 0, ContinuousClock.now < execDeadline {
            try? await Task.sleep(for: .milliseconds(5))
        }

        let runtime = manager.runtime
        let checking = ContinuousClock.now
        let subject = RecycleChecks.Subject(
            name: name, initPid: record.initPid ?? 0, initStartTime: record.initStartTime,
            agentDirectory: record.agentDirectory, warmPython: record.warmPython == true,
            writablePaths: record.writablePaths, runtime: record.runtime, home: home(name), baseline: baseline,
            age: made.map { ContinuousClock.now - $0 } ?? maxAge, maxAge: maxAge,
            seccompDenials: sandbox.prepared?.seccompDenials, adopted: sandbox.prepared == nil,
            egressDenials: manager.egress?.ledger.denials(of: name) ?? 0,
            cgroup: sandbox.cgroup { try? runtime.store.load(name).cgroup })
        var checks = await blocking { RecycleChecks.verify(subject) }
        if !sandbox.execs.isEmpty || sandbox.fileOperationsInFlight > 0 {
            checks.append(
                RecycleCheck(name: "execs", passed: false, detail: "an exec or a file operation did not end in 10 s"))
        }
        var cpu: UInt64?
        if checks.allSatisfy(\.passed) {
            cpu = (try? runtime.stats(id: name))?.cpu.usage.total
            let base = cpu
            checks += await blocking { RecycleChecks.renew(subject, cpuNanoseconds: base) }
        }
        var passed = checks.allSatisfy(\.passed)
        if passed {
            manager.egress?.ledger.rebase(name)
            let renewed = sandbox.update { record in
                record.usageBaseCPUNanoseconds = cpu
                if subject.cgroup?.mode == .unified { record.memoryPeakUnknown = true }
            }
            do { try manager.records.save(renewed) } catch {
                checks.append(RecycleCheck(name: "record", passed: false, detail: "cannot write its record: \(error)"))
                passed = false
            }
        }

        var fields: [String: AuditField] = [
            "pool": .string(poolName), "reason": .string(reason.rawValue),
            "durationMs": .int(Int((ContinuousClock.now - checking) / .milliseconds(1))),
            "passed": .strings(checks.filter(\.passed).map(\.name)),
            "failed": .strings(checks.filter { !$0.passed }.map(\.name)),
        ]
        for check in checks {
            fields["check_" + check.name] = .string((check.passed ? "passed: " : "failed: ") + check.detail)
            PoolMetrics.recycleChecks(poolName, check.name, check.passed ? "passed" : "failed").increment()
        }
        manager.audit.record(
            "pool.recycle", sandbox: name, caller: nil, outcome: passed ? "ok" : "denied", fields: fields)
        PoolMetrics.recycles(poolName, passed ? "recycled" : "failed").increment()

        let kept = lock.withLock { () -> Bool in
            entry.recycling.remove(name)
            guard passed, !entry.removed, !stopping else {
                entry.recycleFailures += passed ? 0 : 1
                return false
            }
            entry.ready.append(.init(name: name, made: made ?? ContinuousClock.now))
            entry.recycled += 1
            return true
        }
        if !kept {
            logger.info(
                "pool sandbox not recycled: \(checks.filter { !$0.passed }.map(\.name).joined(separator: ", "))",
                metadata: ["pool": "\(poolName)", "sandbox": "\(name)"])
        }
        return kept ? .recycled : .destroy
    }
}
