/// The node-level records of crash recovery: the lease of each `safespace run` sandbox (its
/// bundle directory), and how a dead owner's sandbox is torn down.
///
/// The rule (Runtime/Reclaim.swift): every resource is recorded, before it is taken, with its
/// owner (`ProcessIdentity`: pid + start time); a resource whose owner is dead is reclaimed by
/// the next operation that needs it, and `GarbageCollector` sweeps the rest.
///
/// | resource | record | owner | reclaimed by |
/// |---|---|---|---|
/// | half-made container | `<root>/<id>/creating.json` | the `create` process | `create` of the id, `delete`, gc |
/// | sandbox: bundle dir and its mounts, container, CPUs, id range, volume | `<bundles>/<id>/lease.json` | the `safespace` process | a run of the same name, a CPU allocation, gc |
/// | CPU allocation | lease `cpus/<id>` of the `LeaseStore` | holder pid | the sandbox's teardown, a CPU allocation, gc |
/// | host id range | lease `uid-ranges/<n>` of the `LeaseStore` | holder pid, then the container (`state.json`) | `allocate`, gc |
/// | ephemeral storage volume | `<base>/<id>/owner.json` | the creating process | every `safespace run`, gc |
/// | sandbox network: veth, nftables table, namespace file | lease `network/<n>` of the `LeaseStore` | holder pid | the sandbox's teardown, an attach, a reclaim of the name, gc |
import Foundation
import Glibc
import LinuxKernel
import NodeResources
import Runtime
import SandboxNetwork

/// The lease of one `safespace run` sandbox: `<bundles>/<id>/lease.json`, written with the
/// bundle directory (which reserves the name) before anything else of the sandbox is taken,
/// and removed last. It names its owner, the `safespace` process, and where the sandbox's
/// node state lives, so that once the owner is dead `reclaim` can undo all of it.
public struct SandboxLease: Codable, Sendable, Equatable {
    public static let fileName = "lease.json"

    public var id: String
    public var owner: ProcessIdentity
    /// The runtime's `--root`: the container is `<stateRoot>/<id>`.
    public var stateRoot: String
    /// `LeaseStore` directory of its pinned CPUs and its host id range (reserved for owner
    /// `<stateRoot>/<id>`).
    public var leases: String?
    /// In a lease of an earlier version: the directory of its id range file. (Its CPUs, then in
    /// a file of their own, are moved into the node's store and reclaimed there.)
    public var idRanges: String?
    /// `EphemeralStorage` base of the volume (`<base>/<id>`).
    public var ephemeralStorageBase: String?
    /// RFC 3339.
    public var created: String

    public init(
        id: String, owner: ProcessIdentity = .current(), stateRoot: String, leases: String? = nil,
        ephemeralStorageBase: String? = nil
    ) {
        self.id = id
        self.owner = owner
        self.stateRoot = stateRoot
        self.leases = leases
        self.ephemeralStorageBase = ephemeralStorageBase
        self.created = rfc3339Now()
    }
}

/// The leases of `safespace run` sandboxes: one bundle directory per sandbox name under
/// `directory` (`/run/safespace-bundles`), made and reclaimed under `<directory>/.lock`.
public struct SandboxLeases: Sendable {
    public let directory: String
    /// What the containers of reclaimed sandboxes are deleted with.
    public let backends: RuntimeBackends

    public init(directory: String, backends: RuntimeBackends) {
        self.directory = directory
        self.backends = backends
    }

    public func bundle(_ id: String) -> String { directory + "/" + id }

    /// Makes the bundle directory `<directory>/<id>` (0711; `directory` too, if missing) with
    /// `lease` in it. A directory of that name whose lease's owner is dead is reclaimed first
    /// (`reclaim`): a killed run does not keep its name.
    /// - Returns: the bundle directory.
    /// - Throws: `SandboxHostError` `.nameInUse` "metadata.name: a sandbox named … exists already" while its
    ///   owner lives; what reclaiming the dead one failed with.
    public func acquire(_ lease: SandboxLease) throws -> String {
        if mkdir(directory, 0o711) != 0 && errno != EEXIST { throw SysError("mkdir", path: directory) }
        _ = chmod(directory, 0o711)
        let lock = try FileLock(path: directory + "/.lock")
        defer { withExtendedLifetime(lock) {} }
        let path = bundle(lease.id)
        if Files.exists(path) {
            if let current = self.lease(lease.id), current.owner.isAlive {
                throw SandboxHostError(
                    .nameInUse, field: "metadata.name",
                    "a sandbox named \(lease.id) exists already (\(path), run by \(current.owner))")
            }
            try reclaimLocked(lease.id, stateRoot: lease.stateRoot)
        }
        try sys("mkdir", path: path) { mkdir(path, 0o711) }
        _ = chmod(path, 0o711)
        do {
            try Files.writeAtomically(
                path + "/" + SandboxLease.fileName, Array(try JSONEncoder().encode(lease)), mode: 0o600)
        } catch {
            try? Files.removeTree(path)
            throw error
        }
        return path
    }

    /// The lease of sandbox `id`; nil when there is none or it cannot be read (a bundle
    /// directory made before leases, or by a run killed between its mkdir and the lease, both
    /// under the lock: its owner is gone).
    public func lease(_ id: String) -> SandboxLease? {
        guard let bytes = try? Files.read(bundle(id) + "/" + SandboxLease.fileName) else { return nil }
        return try? JSONDecoder().decode(SandboxLease.self, from: Data(bytes))
    }

    /// Names of the bundle directories.
    public func ids() -> [String] {
        (Files.entries(directory) ?? []).filter { !$0.hasPrefix(".") && Files.isDirectory(bundle($0)) }.sorted()
    }

    /// Reclaims sandbox `id` if its owner is dead (or unknown).
    /// - Parameter stateRoot: where the container of a sandbox without a lease is looked for.
    /// - Returns: whether it was reclaimed (false: a live owner holds it, or there is none).
    @discardableResult
    public func reclaimIfDead(_ id: String, stateRoot: String? = nil) throws -> Bool {
        let lock = try FileLock(path: directory + "/.lock")
        defer { withExtendedLifetime(lock) {} }
        guard Files.exists(bundle(id)) else { return false }
        if let lease = lease(id), lease.owner.isAlive { return false }
        try reclaimLocked(id, stateRoot: stateRoot)
        return true
    }

    /// Every sandbox whose owner is dead (`safespace gc`).
    /// - Parameter stateRoot: see `reclaimIfDead`.
    /// - Returns: the names reclaimed and the errors of those that could not be.
    public func reclaimAbandoned(stateRoot: String? = nil) -> (reclaimed: [String], errors: [String]) {
        var reclaimed: [String] = []
        var errors: [String] = []
        for id in ids() {
            do { if try reclaimIfDead(id, stateRoot: stateRoot) { reclaimed.append(id) } } catch {
                errors.append("sandbox \(id): \(error)")
            }
        }
        return (reclaimed, errors)
    }

    /// Tears down the sandbox of a dead owner, in the reverse order of `safespace run`'s
    /// setup: the container (`ContainerRuntime.delete --force`: its processes, cgroup, state
    /// and id range), the id range it reserved before create, its CPUs, its volume, the mounts
    /// under the bundle directory, and last the directory with the lease — so a teardown that
    /// fails half-way keeps the lease and the next attempt starts over.
    ///
    /// A bundle directory without a lease (made before leases, or by a run killed between its
    /// mkdir and the lease) names no paths: its container is looked for in `stateRoot`, the
    /// root of the run that wants the name (or gc's), where it would block that run's create.
    func reclaimLocked(_ id: String, stateRoot: String?) throws {
        let path = bundle(id)
        if lease(id) == nil, let stateRoot {
            try ContainerRuntime(root: stateRoot, backends: backends).delete(id: id, force: true)
        }
        if let lease = lease(id) {
            try ContainerRuntime(root: lease.stateRoot, backends: backends).delete(id: id, force: true)
            if let dir = lease.leases {
                let store = LeaseStore(directory: dir)
                try IDAllocator(store: store).releaseIfStale(owner: lease.stateRoot + "/" + id)
                try CPUAllocator(store: store).release(sandbox: id, heldBy: lease.owner)
                // Its network (veth, table, namespace file), when its holder is dead too.
                let networks = try SandboxNetworks(leases: store).sweep()
                if let problem = networks.errors.first {
                    throw SandboxHostError(.failed, problem, operation: "network")
                }
            } else if let dir = lease.idRanges {
                // An earlier version's lease: its range file. Its CPUs are in the node's store by
                // now (`CPUAllocator.importLegacy`), where a dead holder's are reclaimed.
                try IDAllocator(directory: dir).releaseIfStale(owner: lease.stateRoot + "/" + id)
            }
            if let base = lease.ephemeralStorageBase {
                let volume = EphemeralStorage.existing(sandbox: id, base: base)
                // Only its own: a volume of that name another (live) process made stays.
                if Files.exists(volume.directory),
                    volume.owner == nil || volume.owner == lease.owner || volume.owner?.isAlive == false
                {
                    try volume.destroy()
                }
            }
        }
        try Mounts.detachAll(under: path)
        try Files.removeTree(path)
    }
}

/// Mounts by mount point, from /proc/self/mountinfo (proc(5)).
enum Mounts {
    /// Mount points at or below `path`, deepest first.
    static func points(under path: String) -> [String] {
        guard let mounts = try? MountInfo.read() else { return [] }
        let prefix = path.hasSuffix("/") ? path : path + "/"
        var out: [String] = []
        for point in mounts.map(\.mountPoint) where point == path || point.hasPrefix(prefix) {
            if !out.contains(point) { out.append(point) }
        }
        return out.sorted { $0.count > $1.count }
    }

    /// Detaches (MNT_DETACH, umount2(2)) every mount at or below `path`, deepest first, until
    /// none is left: an overlay over an idmapped lower layer over a tmpfs, stacked mounts.
    /// - Throws: `SysError` when a mount cannot be detached, or `SandboxHostError` when mounts stay.
    static func detachAll(under path: String) throws {
        for _ in 0..<8 {
            let points = self.points(under: path)
            if points.isEmpty { return }
            for point in points where umount2(point, Int32(MNT_DETACH)) != 0 && errno != EINVAL && errno != ENOENT {
                throw SysError("umount", path: point)
            }
        }
        if !points(under: path).isEmpty {
            throw SandboxHostError(
                .failed, "\(path): mounts remain after unmounting: \(points(under: path))", operation: "umount")
        }
    }
}
