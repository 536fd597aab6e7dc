#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import LinuxKernel
import OCI

/// Host uid/gid ranges for user namespaces: every sandbox gets `IDAllocator.rangeSize` (65536)
/// consecutive host ids of its own, so its uid 0..65535 are host ids no other sandbox and no
/// host account uses, and a process that escapes is an unprivileged stranger on the host.
///
/// On disk (user_namespaces(7) leaves bookkeeping to the allocator): one JSON file per range,
/// `<directory>/<index>.json`, written atomically under `<directory>/.lock` (flock(2)). The
/// directory lives on /run by default: ranges, like the sandboxes using them, end at reboot.
///
/// A range belongs to an *owner*, the container's state directory (`<root>/<id>`). It is freed
/// by `release(owner:)` (`delete`), and recovered by the next `allocate` once it is stale: its
/// owner has no `state.json` and the process that took it (pid + start time) is gone — a
/// `create` or `safespace run` that crashed.
public struct IDAllocator: Sendable {
    /// Ids per sandbox: uid and gid 0..65535 inside.
    public static let rangeSize: UInt32 = 65536
    public static let defaultDirectory = "/run/safespace-idmap"
    /// 0x40000000: far above login accounts (1000…) and the usual /etc/subuid ranges (100000…),
    /// below 2^31 so no tool that keeps ids in a signed int misreads them.
    public static let defaultFirstHostID: UInt32 = 0x4000_0000
    public static let defaultRanges = 4096

    /// One allocated range.
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

        public init(index: Int, hostID: UInt32, size: UInt32, owner: String, holderPid: Int32, holderStartTime: UInt64, created: String) {
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
    }

    public let directory: String
    public let firstHostID: UInt32
    public let ranges: Int

    /// - Parameters:
    ///   - directory: where allocations are kept (created 0700 on first use).
    ///   - firstHostID: host id of range 0; range i starts at `firstHostID + i * 65536`.
    ///   - ranges: how many ranges exist; `allocate` fails when all are taken.
    public init(directory: String = IDAllocator.defaultDirectory, firstHostID: UInt32 = IDAllocator.defaultFirstHostID, ranges: Int = IDAllocator.defaultRanges) {
        self.directory = directory
        self.firstHostID = firstHostID
        self.ranges = max(0, min(ranges, Int((UInt64(UInt32.max) - UInt64(firstHostID)) / UInt64(Self.rangeSize))))
    }

    /// The range of `owner`: the one it already holds (a `safespace run` that reserved it
    /// before `create`, or a retried create), else the lowest free one. Stale ranges are
    /// recovered first.
    /// - Throws: `RuntimeError` when every range is in use; `SysError` from the files.
    public func allocate(owner: String) throws -> Allocation {
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        var used = Set<Int>()
        for allocation in try readAll() {
            if allocation.owner == owner { return allocation }
            if isStale(allocation) {
                try? Files.removeTree(path(allocation.index))
            } else {
                used.insert(allocation.index)
            }
        }
        guard let index = (0..<ranges).first(where: { !used.contains($0) }) else {
            throw RuntimeError(.exhausted, "user namespace: all \(ranges) host id ranges of \(directory) are in use; delete sandboxes or raise userNamespaces.ranges in the runtime configuration")
        }
        let me = getpid()
        let allocation = Allocation(
            index: index, hostID: firstHostID + UInt32(index) * Self.rangeSize, size: Self.rangeSize, owner: owner,
            holderPid: me, holderStartTime: ProcStat.read(pid: me)?.startTime ?? 0, created: rfc3339Now())
        try Files.writeAtomically(path(index), Array(try JSONEncoder().encode(allocation)), mode: 0o600)
        return allocation
    }

    /// Frees the range of `owner`, if it holds one. Idempotent.
    public func release(owner: String) throws {
        guard Files.exists(directory) else { return }
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        for allocation in try readAll() where allocation.owner == owner {
            try Files.removeTree(path(allocation.index))
        }
    }

    /// Frees the range of `owner` only if it is stale (`isStale`): what reclaiming a half-made
    /// container does, so a range a live `safespace run` reserved for that id stays. Idempotent.
    public func releaseIfStale(owner: String) throws {
        guard Files.exists(directory) else { return }
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        for allocation in try readAll() where allocation.owner == owner && isStale(allocation) {
            try Files.removeTree(path(allocation.index))
        }
    }

    /// Frees every stale range (`safespace gc`; `allocate` does the same before it picks one).
    /// - Returns: the ranges freed.
    @discardableResult
    public func reclaimStale() throws -> [Allocation] {
        guard Files.exists(directory) else { return [] }
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        var freed: [Allocation] = []
        for allocation in try readAll() where isStale(allocation) {
            try Files.removeTree(path(allocation.index))
            freed.append(allocation)
        }
        return freed
    }

    /// Every range on disk, stale ones included, by index.
    public func allocations() throws -> [Allocation] {
        guard Files.exists(directory) else { return [] }
        let lock = try takeLock()
        defer { withExtendedLifetime(lock) {} }
        return try readAll()
    }

    /// The range `owner` holds, if any.
    public func allocation(owner: String) throws -> Allocation? {
        try allocations().first { $0.owner == owner }
    }

    /// No `state.json` in the owner's directory and the allocating process (pid + start time,
    /// `ProcessIdentity`: a reused pid is not the holder) is gone.
    func isStale(_ allocation: Allocation) -> Bool {
        if Files.exists(allocation.owner + "/state.json") { return false }
        return !ProcessIdentity(pid: allocation.holderPid, startTime: allocation.holderStartTime).isAlive
    }

    private func path(_ index: Int) -> String { directory + "/\(index).json" }

    private func takeLock() throws -> FileLock {
        try Files.makeDirectories(directory, mode: 0o700)
        return try FileLock(path: directory + "/.lock")
    }

    private func readAll() throws -> [Allocation] {
        guard let names = Files.entries(directory) else { throw SysError("opendir", path: directory) }
        var out: [Allocation] = []
        for name in names {
            if name.hasSuffix(".json.tmp") {
                // A write killed before its rename (`Files.writeAtomically`); writers hold the
                // lock we hold, so its writer is gone.
                unlink(directory + "/" + name)
                continue
            }
            guard name.hasSuffix(".json"), let index = Int(name.dropLast(5)) else { continue }
            guard let bytes = try? Files.read(path(index)),
                let allocation = try? JSONDecoder().decode(Allocation.self, from: Data(bytes)), allocation.index == index
            else {
                // A torn or foreign file holds no range anyone can prove: drop it.
                try? Files.removeTree(path(index))
                continue
            }
            out.append(allocation)
        }
        return out.sorted { $0.index < $1.index }
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
