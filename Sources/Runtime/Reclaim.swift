#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import Cgroups
import LinuxKernel
import NodeResources

// Crash recovery: a process that holds node state can be killed at any moment (SIGKILL, OOM,
// a reboot of the daemon), and nothing it would have released on its way out gets released.
// One rule makes every such resource recoverable: each is recorded, before it is taken, with
// its owner (`ProcessIdentity`: pid + start time, so a reused pid is not the owner); a resource
// whose owner is dead is reclaimed by the next operation that needs it, and `GarbageCollector`
// (`safespace gc`, and the daemon at start) sweeps the rest.
//
// | resource | record | owner | reclaimed by |
// |---|---|---|---|
// | half-made container | `<root>/<id>/creating.json` | the `create` process | `create` of the id, `delete`, gc |
// | `safespace run` sandbox: bundle dir and its mounts, container, CPUs, id range, volume | `<bundles>/<id>/lease.json` | the `safespace` process | a run of the same name, a CPU allocation, gc |
// | CPU allocation | `/run/safespace-cpus.json` | holder pid | the sandbox's teardown, a CPU allocation, gc |
// | host id range | `/run/safespace-idmap/<n>.json` | holder pid, then the container (`state.json`) | `allocate`, gc |
// | ephemeral storage volume | `<base>/<id>/owner.json` | the creating process | every `safespace run`, gc |

extension Cgroup {
    /// This cgroup with `created` set to the levels (parents first) that do not exist yet: the
    /// record written before `create()`, so a process killed during its mkdirs leaves nothing
    /// `destroy` would not remove. A level made by someone else meanwhile is a shared one;
    /// `destroy` removes only what is empty.
    func planned() -> Cgroup {
        var copy = self
        var levels: [String] = []
        for (key, dir) in directories.sorted(by: { $0.key < $1.key }) {
            let top = mountPoints[key] ?? ""
            var missing: [String] = []
            var level = dir
            while level.count > top.count, level.hasPrefix(top), !Files.exists(level) {
                missing.append(level)
                guard let slash = level.lastIndex(of: "/"), slash > level.startIndex else { break }
                level = String(level[..<slash])
            }
            levels += missing.reversed().filter { !levels.contains($0) }
        }
        copy.created = levels
        return copy
    }
}

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
    /// `CPUAllocator` file of `cpuPinning`.
    public var cpuAllocations: String?
    /// `IDAllocator` directory of the host id range (reserved for owner `<stateRoot>/<id>`).
    public var idRanges: String?
    /// `EphemeralStorage` base of the volume (`<base>/<id>`).
    public var ephemeralStorageBase: String?
    /// RFC 3339.
    public var created: String

    public init(id: String, owner: ProcessIdentity = .current(), stateRoot: String, cpuAllocations: String? = nil, idRanges: String? = nil, ephemeralStorageBase: String? = nil) {
        self.id = id
        self.owner = owner
        self.stateRoot = stateRoot
        self.cpuAllocations = cpuAllocations
        self.idRanges = idRanges
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
    /// - Throws: `RuntimeError` "metadata.name: a sandbox named … exists already" while its
    ///   owner lives; what reclaiming the dead one failed with.
    public func acquire(_ lease: SandboxLease) throws -> String {
        if mkdir(directory, 0o711) != 0 && errno != EEXIST { throw SysError("mkdir", path: directory) }
        _ = chmod(directory, 0o711)
        let lock = try FileLock(path: directory + "/.lock")
        defer { withExtendedLifetime(lock) {} }
        let path = bundle(lease.id)
        if Files.exists(path) {
            if let current = self.lease(lease.id), current.owner.isAlive {
                throw RuntimeError("metadata.name: a sandbox named \(lease.id) exists already (\(path), run by \(current.owner))")
            }
            try reclaimLocked(lease.id, stateRoot: lease.stateRoot)
        }
        try sys("mkdir", path: path) { mkdir(path, 0o711) }
        _ = chmod(path, 0o711)
        do {
            try Files.writeAtomically(path + "/" + SandboxLease.fileName, Array(try JSONEncoder().encode(lease)), mode: 0o600)
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
        var reclaimed: [String] = [], errors: [String] = []
        for id in ids() {
            do { if try reclaimIfDead(id, stateRoot: stateRoot) { reclaimed.append(id) } } catch { errors.append("sandbox \(id): \(error)") }
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
            if let dir = lease.idRanges {
                try IDAllocator(directory: dir).releaseIfStale(owner: lease.stateRoot + "/" + id)
            }
            if let file = lease.cpuAllocations {
                try CPUAllocator(path: file).release(sandbox: id, heldBy: lease.owner)
            }
            if let base = lease.ephemeralStorageBase {
                let volume = EphemeralStorage.existing(sandbox: id, base: base)
                // Only its own: a volume of that name another (live) process made stays.
                if Files.exists(volume.directory), volume.owner == nil || volume.owner == lease.owner || volume.owner?.isAlive == false {
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
    /// - Throws: `SysError` when a mount cannot be detached, or `RuntimeError` when mounts stay.
    static func detachAll(under path: String) throws {
        for _ in 0..<8 {
            let points = self.points(under: path)
            if points.isEmpty { return }
            for point in points where umount2(point, Int32(MNT_DETACH)) != 0 && errno != EINVAL && errno != ENOENT {
                throw SysError("umount", path: point)
            }
        }
        if !points(under: path).isEmpty { throw RuntimeError("\(path): mounts remain after unmounting: \(points(under: path))") }
    }
}

/// The sweep of `safespace gc` (and of the daemon at start): everything of this node's
/// sandboxes and containers whose owner is dead. Safe while other sandboxes run: it touches
/// only what a dead owner held.
public struct GarbageCollector: Sendable {
    /// The runtime's `--root`.
    public var stateRoot: String
    /// `safespace run`'s bundle directory parent.
    public var bundleRoot: String
    public var cpuAllocations: String
    public var idAllocator: IDAllocator
    public var ephemeralStorageBase: String
    /// What the containers of reclaimed sandboxes are deleted with.
    public var backends: RuntimeBackends

    public init(stateRoot: String, bundleRoot: String, cpuAllocations: String = CPUAllocator.defaultPath, idAllocator: IDAllocator = IDAllocator(), ephemeralStorageBase: String = EphemeralStorage.defaultBase, backends: RuntimeBackends) {
        self.stateRoot = stateRoot
        self.bundleRoot = bundleRoot
        self.cpuAllocations = cpuAllocations
        self.idAllocator = idAllocator
        self.ephemeralStorageBase = ephemeralStorageBase
        self.backends = backends
    }

    /// What one sweep reclaimed.
    public struct Report: Sendable, Equatable, CustomStringConvertible {
        /// `safespace run` sandboxes (bundle directory, container, CPUs, range, volume, mounts).
        public var sandboxes: [String] = []
        /// Half-made containers of `stateRoot`.
        public var containers: [String] = []
        /// Sandbox ids whose CPU allocation was released.
        public var cpuAllocations: [String] = []
        /// Host id ranges freed, by host id.
        public var idRanges: [UInt32] = []
        /// Ephemeral storage volumes destroyed.
        public var volumes: [String] = []
        /// What could not be reclaimed (it stays recorded; the next sweep tries again).
        public var errors: [String] = []

        public var description: String {
            func list(_ items: [String]) -> String { items.isEmpty ? "0" : "\(items.count) (\(items.joined(separator: ", ")))" }
            return """
                sandboxes: \(list(sandboxes))
                half-made containers: \(list(containers))
                CPU allocations: \(list(cpuAllocations))
                host id ranges: \(list(idRanges.map { String($0) }))
                ephemeral storage volumes: \(list(volumes))
                """
        }
    }

    /// Sweeps, in dependency order: sandboxes of dead `safespace` processes (each takes its
    /// own container, CPUs, range and volume), half-made containers of dead creators, CPU
    /// allocations of dead holders, stale id ranges, volumes of dead owners.
    public func sweep() -> Report {
        var report = Report()
        let leases = SandboxLeases(directory: bundleRoot, backends: backends).reclaimAbandoned(stateRoot: stateRoot)
        report.sandboxes = leases.reclaimed
        report.errors += leases.errors
        do { report.containers = try ContainerRuntime(root: stateRoot, backends: backends).reclaimAbandoned() } catch {
            report.errors.append("containers of \(stateRoot): \(error)")
        }
        let cpus = Self.reclaimCPUHolders(CPUAllocator(path: cpuAllocations), backends: backends)
        report.cpuAllocations = cpus.reclaimed
        report.errors += cpus.errors
        do { report.idRanges = try idAllocator.reclaimStale().map(\.hostID) } catch {
            report.errors.append("host id ranges of \(idAllocator.directory): \(error)")
        }
        report.volumes = EphemeralStorage.reap(base: ephemeralStorageBase) { id in
            // A volume without an owner record: kept while its sandbox has state or a bundle.
            Files.exists("\(stateRoot)/\(id)/state.json") || Files.exists("\(bundleRoot)/\(id)")
        }.sorted()
        return report
    }

    /// Releases the CPUs of every dead holder, after tearing its sandbox down: the whole
    /// sandbox when the allocation names its lease, else its container `<runtimeRoot>/<id>`
    /// (its workload may still run on those CPUs). `safespace run` calls this before it
    /// allocates; `CPUAllocator.allocate` alone frees nothing a container may still use.
    /// - Parameter backends: what their containers are deleted with.
    /// - Returns: the sandbox ids released, and errors of those that stay held.
    public static func reclaimCPUHolders(_ allocator: CPUAllocator, backends: RuntimeBackends) -> (reclaimed: [String], errors: [String]) {
        var reclaimed: [String] = [], errors: [String] = []
        let dead: [String: CPUAllocator.Allocation]
        do { dead = try allocator.deadHolders() } catch { return ([], ["CPU allocations of \(allocator.path): \(error)"]) }
        for (id, allocation) in dead.sorted(by: { $0.key < $1.key }) {
            do {
                let runtime = ContainerRuntime(root: allocation.runtimeRoot, backends: backends)
                var containerIsOthers = runtime.store.loadCreating(id: id)?.creatorAlive == true
                if let lease = allocation.lease {
                    let leases = SandboxLeases(directory: String(lease[..<(lease.lastIndex(of: "/") ?? lease.startIndex)]), backends: backends)
                    try leases.reclaimIfDead(id, stateRoot: allocation.runtimeRoot)
                    // The name was taken again by a live run: the container of that id is its.
                    if let current = leases.lease(id), current.owner.isAlive { containerIsOthers = true }
                }
                if !containerIsOthers { try runtime.delete(id: id, force: true) }
                try allocator.release(sandbox: id, heldBy: allocation.holder)
                reclaimed.append(id)
            } catch {
                errors.append("CPUs of \(id): \(error)")
            }
        }
        return (reclaimed, errors)
    }
}
