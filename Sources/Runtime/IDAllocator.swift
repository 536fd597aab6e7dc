import Glibc
import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Host uid/gid ranges for user namespaces: every sandbox gets `IDAllocator.rangeSize` (65536)
/// consecutive host ids of its own, so its uid 0..65535 are host ids no other sandbox and no
/// host account uses, and a process that escapes is an unprivileged stranger on the host.
///
/// On disk (user_namespaces(7) leaves bookkeeping to the allocator): one lease per range in the
/// node's `LeaseStore` (kind `uid-ranges`, key the range's index), which also holds the pinned
/// CPUs, under its one lock. The store lives on /run by default: ranges, like the sandboxes
/// using them, end at reboot.
///
/// A range belongs to an *owner*, the container's state directory (`<root>/<id>`). It is freed
/// by `release(owner:)` (`delete`), and recovered by the next `allocate` once it is stale: its
/// owner has no `state.json` and the process that took it (the lease's holder, pid + start
/// time) is gone — a `create` or `safespace run` that crashed.
///
/// Ranges of an earlier version (one `<index>.json` per range in a directory of their own,
/// `legacyDirectories`) stay taken: they are read with the leases, freed by `release` and
/// removed once stale, and never written again.
public struct IDAllocator: Sendable {
    /// Ids per sandbox: uid and gid 0..65535 inside.
    public static let rangeSize: UInt32 = 65536
    /// Where ranges were kept before the lease store (`<index>.json` files under `.lock`).
    public static let legacyDirectory = "/run/safespace-idmap"
    /// 0x40000000: far above login accounts (1000…) and the usual /etc/subuid ranges (100000…),
    /// below 2^31 so no tool that keeps ids in a signed int misreads them.
    public static let defaultFirstHostID: UInt32 = 0x4000_0000
    public static let defaultRanges = 4096

    /// The leases of ranges: `<store>/uid-ranges/<index>.json`.
    static let kind = LeaseStore.Kind<RangeRecord>("uid-ranges")

    /// What the lease of a range records besides its holder.
    struct RangeRecord: Codable, Sendable, Equatable {
        var hostID: UInt32
        var size: UInt32
        /// The container state directory the range belongs to.
        var owner: String
    }

    /// One allocated range. (Also the format of a range file of `legacyDirectories`.)
    public struct Allocation: Codable, Sendable, Equatable {
        public var index: Int
        public var hostID: UInt32
        public var size: UInt32
        /// The container state directory this range belongs to.
        public var owner: String
        /// The process that allocated it, with its /proc start time (guards against pid reuse).
        public var holderPid: Int32
        public var holderStartTime: UInt64
        public var created: String

        public init(
            index: Int, hostID: UInt32, size: UInt32, owner: String, holderPid: Int32, holderStartTime: UInt64,
            created: String
        ) {
            self.index = index
            self.hostID = hostID
            self.size = size
            self.owner = owner
            self.holderPid = holderPid
            self.holderStartTime = holderStartTime
            self.created = created
        }

        /// `containerID 0 -> hostID`, `size` ids: the same map for uids and gids.
        public var mappings: [IDMapping] { [IDMapping(containerID: 0, hostID: hostID, size: size)] }

        var holder: ProcessIdentity { ProcessIdentity(pid: holderPid, startTime: holderStartTime) }
    }

    public let store: LeaseStore
    public let firstHostID: UInt32
    public let ranges: Int
    /// Directories of ranges in the earlier format, read besides the store; the store's own
    /// directory is always one (an id range directory of an earlier version opened as a store).
    public let legacyDirectories: [String]

    /// The store's directory.
    public var directory: String { store.directory }

    /// - Parameters:
    ///   - store: where the leases are kept (its directory is created 0700 on first use).
    ///   - firstHostID: host id of range 0; range i starts at `firstHostID + i * 65536`.
    ///   - ranges: how many ranges exist; `allocate` fails when all are taken.
    ///   - legacyDirectories: range directories of an earlier version still to honour
    ///     (`IDAllocator.legacyDirectory` on a node upgraded in place).
    public init(
        store: LeaseStore = LeaseStore(), firstHostID: UInt32 = IDAllocator.defaultFirstHostID,
        ranges: Int = IDAllocator.defaultRanges,
        legacyDirectories: [String] = []
    ) {
        self.store = store
        self.firstHostID = firstHostID
        self.ranges = max(0, min(ranges, Int((UInt64(UInt32.max) - UInt64(firstHostID)) / UInt64(Self.rangeSize))))
        self.legacyDirectories = [store.directory] + legacyDirectories.filter { $0 != store.directory }
    }

    /// The allocator of the store in `directory` (`IDRangeRecord.directory` of a container).
    public init(
        directory: String, firstHostID: UInt32 = IDAllocator.defaultFirstHostID, ranges: Int = IDAllocator.defaultRanges
    ) {
        self.init(store: LeaseStore(directory: directory), firstHostID: firstHostID, ranges: ranges)
    }

    /// The range of `owner`: the one it already holds (a `safespace run` that reserved it
    /// before `create`, or a retried create), else the lowest free one. Stale ranges are
    /// recovered first.
    /// - Throws: `RuntimeError` when every range is in use; `SysError` from the files.
    public func allocate(owner: String) throws -> Allocation {
        try locked { held in
            var used = Set<Int>()
            for range in held {
                if range.allocation.owner == owner { return range.allocation }
                if isStale(range.allocation) {
                    try range.remove()
                } else {
                    used.insert(range.allocation.index)
                }
            }
            guard let index = (0..<ranges).first(where: { !used.contains($0) }) else {
                throw RuntimeError(
                    .exhausted,
                    "user namespace: all \(ranges) host id ranges of \(directory) are in use; delete sandboxes or raise userNamespaces.ranges in the runtime configuration"
                )
            }
            let lease = LeaseStore.Lease(
                key: String(index),
                record: RangeRecord(
                    hostID: firstHostID + UInt32(index) * Self.rangeSize, size: Self.rangeSize, owner: owner))
            try held.transaction.write(Self.kind, lease)
            return Self.allocation(lease, index: index)
        }
    }

    /// Frees the range of `owner`, if it holds one. Idempotent.
    public func release(owner: String) throws {
        try lockedIfExists { held in
            for range in held where range.allocation.owner == owner { try range.remove() }
        }
    }

    /// Frees the range of `owner` only if it is stale (`isStale`): what reclaiming a half-made
    /// container does, so a range a live `safespace run` reserved for that id stays. Idempotent.
    public func releaseIfStale(owner: String) throws {
        try lockedIfExists { held in
            for range in held where range.allocation.owner == owner && isStale(range.allocation) { try range.remove() }
        }
    }

    /// Frees every stale range (`safespace gc`; `allocate` does the same before it picks one).
    /// - Returns: the ranges freed.
    @discardableResult
    public func reclaimStale() throws -> [Allocation] {
        try lockedIfExists { held in
            var freed: [Allocation] = []
            for range in held where isStale(range.allocation) {
                try range.remove()
                freed.append(range.allocation)
            }
            return freed
        } ?? []
    }

    /// Every range on disk, stale ones included, by index.
    public func allocations() throws -> [Allocation] {
        try lockedIfExists { held in held.map(\.allocation) } ?? []
    }

    /// The range `owner` holds, if any.
    public func allocation(owner: String) throws -> Allocation? {
        try allocations().first { $0.owner == owner }
    }

    /// No `state.json` in the owner's directory and the allocating process (pid + start time,
    /// `ProcessIdentity`: a reused pid is not the holder) is gone.
    func isStale(_ allocation: Allocation) -> Bool {
        if Files.exists(allocation.owner + "/state.json") { return false }
        return !allocation.holder.isAlive
    }

    static func allocation(_ lease: LeaseStore.Lease<RangeRecord>, index: Int) -> Allocation {
        Allocation(
            index: index, hostID: lease.record.hostID, size: lease.record.size, owner: lease.record.owner,
            holderPid: lease.holder.pid, holderStartTime: lease.holder.startTime, created: lease.created)
    }

    /// A range on disk: a lease of the store, or a file of a legacy directory.
    struct HeldRange {
        var allocation: Allocation
        /// Frees it: removes its lease or its file.
        var remove: () throws -> Void
    }

    /// The ranges on disk, by index, with the transaction that read them.
    struct HeldRanges: Sequence {
        var transaction: LeaseStore.Transaction
        var ranges: [HeldRange]
        func makeIterator() -> IndexingIterator<[HeldRange]> { ranges.makeIterator() }
    }

    private func lockedIfExists<T>(_ body: (HeldRanges) throws -> T) throws -> T? {
        guard legacyDirectories.contains(where: Files.exists) else { return nil }
        return try locked(body)
    }

    /// Runs `body` on every range under the store's lock and the lock of each legacy directory
    /// (taken after the store's, never created: an earlier version takes only its own).
    private func locked<T>(_ body: (HeldRanges) throws -> T) throws -> T {
        try store.withLock { transaction in
            var held: [HeldRange] = []
            for lease in try transaction.leases(Self.kind) {
                guard let index = Int(lease.key) else { continue }
                held.append(
                    HeldRange(
                        allocation: Self.allocation(lease, index: index),
                        remove: { try transaction.remove(Self.kind, key: lease.key) }))
            }
            var locks: [FileLock] = []
            defer { locks.forEach { $0.release() } }
            for dir in legacyDirectories where Files.isDirectory(dir) {
                // The store's own directory is under the lock held already (same `.lock`).
                if !Self.isSameFile(dir, store.directory) { locks.append(try FileLock(path: dir + "/.lock")) }
                held += try Self.readLegacy(dir)
            }
            return try body(
                HeldRanges(transaction: transaction, ranges: held.sorted { $0.allocation.index < $1.allocation.index }))
        }
    }

    /// The range files `<dir>/<index>.json` of an earlier version.
    private static func readLegacy(_ dir: String) throws -> [HeldRange] {
        guard let names = Files.entries(dir) else { throw SysError("opendir", path: dir) }
        var out: [HeldRange] = []
        for name in names {
            if name.hasSuffix(".json.tmp") {
                // A write killed before its rename; its writer held the lock we hold: gone.
                unlink(dir + "/" + name)
                continue
            }
            guard name.hasSuffix(".json"), let index = Int(name.dropLast(5)) else { continue }
            let path = dir + "/" + name
            guard let bytes = try? Files.read(path),
                let allocation = try? JSONDecoder().decode(Allocation.self, from: Data(bytes)),
                allocation.index == index
            else {
                // A torn or foreign file holds no range anyone can prove: drop it.
                try? Files.removeTree(path)
                continue
            }
            out.append(HeldRange(allocation: allocation, remove: { try Files.removeTree(path) }))
        }
        return out
    }

    /// Whether two paths name the same file (device and inode, stat(2)).
    private static func isSameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat()
        var sb = stat()
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}

/// A bundle asks the runtime to pick its user namespace's host range with the annotation
/// `llmsafespace.dev/userns: auto` on a new user namespace without mappings; the runtime then
/// writes `0 <hostID> 65536` for uids and gids (one range from `IDAllocator`).
public enum UserNamespaceRange {
    public static let annotation = SafeSpaceAnnotation.userNamespace
    public static let auto = SafeSpaceAnnotation.userNamespaceAuto

    /// Whether `spec` asks for a range: the annotation, a new user namespace, no mappings.
    public static func wantsAllocation(_ spec: Spec) -> Bool {
        guard spec.annotations?[annotation] == auto else { return false }
        let newUser = (spec.linux?.namespaces ?? []).contains { $0.type == "user" && ($0.path ?? "").isEmpty }
        return newUser && (spec.linux?.uidMappings ?? []).isEmpty && (spec.linux?.gidMappings ?? []).isEmpty
    }
}
