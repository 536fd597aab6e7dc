/// `safespace gc` (and the daemon at start): the sweep of everything of this node's sandboxes
/// and containers whose owner is dead (SandboxLeases.swift has the records).
import Glibc
import LinuxKernel
import NodeResources
import Runtime
import SandboxNetwork

/// The sweep of `safespace gc` (and of the daemon at start): everything of this node's
/// sandboxes and containers whose owner is dead. Safe while other sandboxes run: it touches
/// only what a dead owner held.
public struct GarbageCollector: Sendable {
    /// The runtime's `--root`.
    public var stateRoot: String
    /// `safespace run`'s bundle directory parent.
    public var bundleRoot: String
    /// The node's CPU leases and host id ranges (one `LeaseStore`: `RuntimeConfiguration`'s).
    public var cpuAllocator: CPUAllocator
    public var idAllocator: IDAllocator
    public var ephemeralStorageBase: String
    /// What the containers of reclaimed sandboxes are deleted with.
    public var backends: RuntimeBackends

    public init(
        stateRoot: String, bundleRoot: String, cpuAllocator: CPUAllocator = CPUAllocator(),
        idAllocator: IDAllocator = IDAllocator(),
        ephemeralStorageBase: String = EphemeralStorage.defaultBase, backends: RuntimeBackends
    ) {
        self.stateRoot = stateRoot
        self.bundleRoot = bundleRoot
        self.cpuAllocator = cpuAllocator
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
        /// Sandbox networks removed (veth, nftables table, namespace file, lease).
        public var networks: [String] = []
        /// What could not be reclaimed (it stays recorded; the next sweep tries again).
        public var errors: [String] = []

        public var description: String {
            func list(_ items: [String]) -> String {
                items.isEmpty ? "0" : "\(items.count) (\(items.joined(separator: ", ")))"
            }
            return """
                sandboxes: \(list(sandboxes))
                half-made containers: \(list(containers))
                CPU allocations: \(list(cpuAllocations))
                host id ranges: \(list(idRanges.map { String($0) }))
                ephemeral storage volumes: \(list(volumes))
                sandbox networks: \(list(networks))
                """
        }
    }

    /// Sweeps, in dependency order: sandboxes of dead `safespace` processes (each takes its
    /// own container, CPUs, range and volume), half-made containers of dead creators, CPU
    /// allocations of dead holders, stale id ranges, volumes of dead owners, networks of dead
    /// holders (in the CPU allocator's `LeaseStore`, the node's).
    public func sweep() -> Report {
        var report = Report()
        let leases = SandboxLeases(directory: bundleRoot, backends: backends).reclaimAbandoned(stateRoot: stateRoot)
        report.sandboxes = leases.reclaimed
        report.errors += leases.errors
        do { report.containers = try ContainerRuntime(root: stateRoot, backends: backends).reclaimAbandoned() } catch {
            report.errors.append("containers of \(stateRoot): \(error)")
        }
        let cpus = Self.reclaimCPUHolders(cpuAllocator, backends: backends)
        report.cpuAllocations = cpus.reclaimed
        report.errors += cpus.errors
        do { report.idRanges = try idAllocator.reclaimStale().map(\.hostID) } catch {
            report.errors.append("host id ranges of \(idAllocator.directory): \(error)")
        }
        report.volumes = EphemeralStorage.reap(base: ephemeralStorageBase) { id in
            // A volume without an owner record: kept while its sandbox has state or a bundle.
            Files.exists("\(stateRoot)/\(id)/state.json") || Files.exists("\(bundleRoot)/\(id)")
        }.sorted()
        // The records name everything to remove; the pool does not matter to the sweep.
        if let networks = try? SandboxNetworks(leases: cpuAllocator.store) {
            let swept = networks.sweep()
            report.networks = swept.reclaimed
            report.errors += swept.errors
        }
        return report
    }

    /// Releases the CPUs of every dead holder, after tearing its sandbox down: the whole
    /// sandbox when the allocation names its lease, else its container `<runtimeRoot>/<id>`
    /// (its workload may still run on those CPUs). `safespace run` calls this before it
    /// allocates; `CPUAllocator.allocate` alone frees nothing a container may still use.
    /// - Returns: the sandbox ids released, and errors of those that stay held.
    public static func reclaimCPUHolders(_ allocator: CPUAllocator, backends: RuntimeBackends) -> (
        reclaimed: [String], errors: [String]
    ) {
        var reclaimed: [String] = []
        var errors: [String] = []
        let dead: [String: CPUAllocator.Allocation]
        do { dead = try allocator.deadHolders() } catch {
            return ([], ["CPU allocations of \(allocator.store.directory): \(error)"])
        }
        for (id, allocation) in dead.sorted(by: { $0.key < $1.key }) {
            do {
                let runtime = ContainerRuntime(root: allocation.runtimeRoot, backends: backends)
                var containerIsOthers = runtime.store.loadCreating(id: id)?.creatorAlive == true
                if let lease = allocation.lease {
                    let leases = SandboxLeases(
                        directory: String(lease[..<(lease.lastIndex(of: "/") ?? lease.startIndex)]), backends: backends)
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
