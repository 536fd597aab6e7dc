import Glibc
import LinuxKernel

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Whole CPUs given to one pinned sandbox alone (`cpuPinning: true`), recorded as leases in the
/// node's `LeaseStore` (kind `cpus`, key the sandbox id, under the store's one lock, beside the
/// host id ranges), so two pinned sandboxes never share a CPU, whichever process (the CLI, the
/// daemon) creates them.
///
/// The store lives in /run (default `/run/safespace-leases`): it goes with a reboot, as the
/// sandboxes do. An allocation belongs to the process that made it (the lease's holder:
/// `safespace run`, later the daemon; pid + start time, so a reused pid does not count). It is
/// released by `release` (on delete) or, once the holder is dead, reclaimed: the holder's
/// sandbox is torn down first (`GarbageCollector.reclaimCPUHolders` in SandboxHosting, which
/// `safespace run` calls before it allocates, and `safespace gc`), since its workload may still
/// run on the CPUs; `allocate` itself drops an allocation of a dead holder only once no container
/// directory `<runtimeRoot>/<id>` is left.
///
/// An earlier version kept the allocations in one JSON file (`legacyPath`,
/// `/run/safespace-cpus.json`): the first operation that finds it moves its allocations into
/// the store and removes it.
public struct CPUAllocator: Sendable {
    /// The allocation file of an earlier version (lock `<file>.lock`).
    public static let legacyPath = "/run/safespace-cpus.json"

    /// The leases of pinned CPUs: `<store>/cpus/<sandbox id>.json`.
    static let kind = LeaseStore.Kind<CPURecord>("cpus")

    /// What the lease of a sandbox's CPUs records besides its holder.
    struct CPURecord: Codable, Sendable, Equatable {
        var cpus: [Int]
        var runtimeRoot: String
        var lease: String?
    }

    /// One sandbox's CPUs and who holds them. (Also the format of the legacy file's entries.)
    public struct Allocation: Codable, Sendable, Equatable {
        public var cpus: [Int]
        /// The runtime's `--root`: the sandbox's container is `<runtimeRoot>/<id>`.
        public var runtimeRoot: String
        public var holderPid: Int32
        /// /proc/<pid>/stat field 22 of the holder when it allocated.
        public var holderStartTime: UInt64
        /// The holder's record of the sandbox (`safespace run`'s bundle directory, which holds
        /// its lease), to tear the whole sandbox down once the holder is dead.
        public var lease: String?

        public var holder: ProcessIdentity { ProcessIdentity(pid: holderPid, startTime: holderStartTime) }
    }

    /// The legacy file: allocations by sandbox id.
    struct File: Codable {
        var allocations: [String: Allocation] = [:]
    }

    public let store: LeaseStore
    /// The CPUs that may be pinned, ascending.
    public let pool: [Int]
    /// The allocation file of an earlier version to move into the store, if any.
    public let legacyPath: String?

    /// - Parameters:
    ///   - store: where the leases are kept.
    ///   - pool: CPUs that may be pinned; default: the online CPUs
    ///     (/sys/devices/system/cpu/online) less `reserved`.
    ///   - reserved: CPUs never pinned (e.g. `[0]` for the node's own work).
    ///   - legacyPath: an earlier version's allocation file (`CPUAllocator.legacyPath` on a
    ///     node upgraded in place).
    public init(
        store: LeaseStore = LeaseStore(), pool: [Int]? = nil, reserved: Set<Int> = [], legacyPath: String? = nil
    ) {
        self.store = store
        self.legacyPath = legacyPath
        let online = pool ?? CPUList.parse((try? Self.readText("/sys/devices/system/cpu/online")) ?? "0") ?? [0]
        self.pool = online.filter { !reserved.contains($0) }.sorted()
    }

    /// Allocates `count` CPUs to sandbox `id`, the lowest free ones; the same `id` allocating
    /// again gets what it holds when the count matches and its holder lives.
    /// - Throws: `ResourceError` naming `spec.resources.cpu` when fewer than `count` CPUs are
    ///   free (the message lists who holds them), or naming `cpuPinning` for an error of the
    ///   store. `lease`: see `Allocation.lease`.
    public func allocate(
        sandbox id: String, count: Int, runtimeRoot: String, lease: String? = nil, field: String = "spec.resources.cpu"
    ) throws(ResourceError) -> [Int] {
        try withLeases { leases in
            try prune(leases)
            if let mine = try leases.lease(Self.kind, key: id) {
                if mine.record.cpus.count == count, mine.holder.isAlive { return mine.record.cpus }
                // A dead holder's CPUs are not handed on under its record: the new holder's own.
                try leases.remove(Self.kind, key: id)
            }
            let held = try leases.leases(Self.kind)
            let taken = Set(held.flatMap(\.record.cpus))
            let free = pool.filter { !taken.contains($0) }
            guard count > 0, free.count >= count else {
                let holders = held.map { "\($0.key): \(CPUList.format($0.record.cpus))" }
                throw ResourceError(
                    .exhausted, field: field,
                    "cpuPinning: \(count) whole CPU(s) asked for, \(free.count) free of \(pool.count) pinnable (\(CPUList.format(pool)))\(holders.isEmpty ? "" : "; pinned: " + holders.joined(separator: ", "))"
                )
            }
            let cpus = Array(free.prefix(count))
            try leases.write(
                Self.kind,
                LeaseStore.Lease(key: id, record: CPURecord(cpus: cpus, runtimeRoot: runtimeRoot, lease: lease)))
            return cpus
        }
    }

    /// Releases sandbox `id`'s CPUs (delete). Releasing what is not held is not an error.
    public func release(sandbox id: String) throws(ResourceError) {
        try withLeases { leases in
            try leases.remove(Self.kind, key: id)
            try prune(leases)
        }
    }

    /// Releases sandbox `id`'s CPUs only while `holder` holds them: reclaiming a dead holder's
    /// sandbox must not free what a new holder of the same name took since.
    public func release(sandbox id: String, heldBy holder: ProcessIdentity) throws(ResourceError) {
        try withLeases { leases in
            if try leases.lease(Self.kind, key: id)?.holder == holder { try leases.remove(Self.kind, key: id) }
            try prune(leases)
        }
    }

    /// Allocations whose holder is dead, by sandbox id: what `GarbageCollector` reclaims.
    public func deadHolders() throws(ResourceError) -> [String: Allocation] {
        try withLeases { leases in
            try Self.allocations(leases).filter { !$0.value.holder.isAlive }
        }
    }

    /// The live allocations (stale ones are dropped first).
    public func allocations() throws(ResourceError) -> [String: Allocation] {
        try withLeases { leases in
            try prune(leases)
            return try Self.allocations(leases)
        }
    }

    static func allocations(_ leases: LeaseStore.Transaction) throws -> [String: Allocation] {
        var out: [String: Allocation] = [:]
        for lease in try leases.leases(kind) {
            out[lease.key] = Allocation(
                cpus: lease.record.cpus, runtimeRoot: lease.record.runtimeRoot, holderPid: lease.holder.pid,
                holderStartTime: lease.holder.startTime, lease: lease.record.lease)
        }
        return out
    }

    /// Drops allocations whose holder is dead and whose container is gone: no directory
    /// `<runtimeRoot>/<id>` (created or half-made) that could still run on the CPUs.
    func prune(_ leases: LeaseStore.Transaction) throws {
        try leases.reclaim(Self.kind) { access("\($0.record.runtimeRoot)/\($0.key)", F_OK) == 0 }
    }

    /// Runs `body` under the store's lock, after moving the legacy file's allocations in.
    /// - Throws: `ResourceError`: `body`'s own, or one naming `cpuPinning` for the store's.
    func withLeases<T>(_ body: (LeaseStore.Transaction) throws -> T) throws(ResourceError) -> T {
        do {
            return try store.withLock { leases in
                try importLegacy(leases)
                return try body(leases)
            }
        } catch let error as ResourceError {
            throw error
        } catch {
            throw ResourceError(
                .failed, field: "cpuPinning", "\(error)", operation: (error as? SysError)?.operation,
                errno: (error as? SysError)?.errno)
        }
    }

    /// Moves the allocations of the legacy file into the store (a sandbox the store has a lease
    /// for already keeps it) and removes the file, under the file's own lock, which an earlier
    /// version takes. Its lock file stays: such a process may be waiting on it.
    /// - Throws: `ResourceError` when the file is corrupt (it stays: it may hold CPUs in use).
    func importLegacy(_ leases: LeaseStore.Transaction) throws {
        guard let legacyPath, Files.exists(legacyPath) else { return }
        let lock = try FileLock(path: legacyPath + ".lock")
        defer { lock.release() }
        unlink(legacyPath + ".tmp")
        guard Files.exists(legacyPath) else { return }
        let text = try Self.readText(legacyPath)
        if !text.isEmpty {
            let file: File
            do { file = try JSONDecoder().decode(File.self, from: Data(text.utf8)) } catch {
                throw ResourceError(
                    .failed, field: "cpuPinning",
                    "\(legacyPath) is corrupt (\(error)); remove it only when no pinned sandbox runs")
            }
            for (id, allocation) in file.allocations.sorted(by: { $0.key < $1.key })
            where try leases.lease(Self.kind, key: id) == nil {
                let record = CPURecord(
                    cpus: allocation.cpus, runtimeRoot: allocation.runtimeRoot, lease: allocation.lease)
                try leases.write(Self.kind, LeaseStore.Lease(key: id, holder: allocation.holder, record: record))
            }
        }
        try sys("unlink", path: legacyPath) { unlink(legacyPath) }
    }

    /// A whole file (`Files.readString`).
    /// - Throws: `ResourceError` naming `path`, with the errno of open(2) or read(2).
    static func readText(_ path: String) throws(ResourceError) -> String {
        do { return try Files.readString(path) } catch {
            let code = (error as? SysError)?.errno ?? EIO
            let operation = (error as? SysError)?.operation ?? "read"
            throw ResourceError(
                .failed, field: path, "\(operation): \(String(cString: strerror(code)))", operation: operation,
                errno: code)
        }
    }
}
