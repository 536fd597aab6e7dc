/// `spec.resources` of a sandbox: the node state its limits need beyond its
/// `linux.resources` (which the policy sets): the CPUs of `cpuPinning`, leases of the node's
/// `LeaseStore` (`CPUAllocator`), and the `ephemeralStorage` volume (every sandbox has one: the node's
/// default when the Sandbox names none) that holds every writable path, /dev/shm and the
/// writable layer, so their total is capped.
import Foundation
import Glibc
import NodeResources
import OCI
import Runtime

enum RunResources {
    /// Completes `spec` with the node state `plan.limits` asks for, registering the release
    /// of each piece in `cleanup` as soon as it is taken (run in reverse: container delete,
    /// then the volume, then the CPUs).
    /// - Returns: the ephemeral storage volume, when there is one: it then holds the writable
    ///   paths, /dev/shm and, for a writable root, the writable layer (`spec.root.path` points
    ///   at it).
    static func prepare(
        plan: SandboxPlan, configuration: SandboxHost.Configuration, runtime: ContainerRuntime, spec: inout Spec,
        cleanup: inout [(String, () throws -> Void)]
    ) throws -> EphemeralStorage? {
        let id = plan.id
        if let count = plan.limits.pinnedCPUCount {
            let allocator = try RuntimeConfiguration.load().cpuAllocator
            // CPUs of dead holders: their sandboxes are torn down and the CPUs freed first.
            for problem in GarbageCollector.reclaimCPUHolders(allocator, backends: configuration.backends).errors {
                configuration.warn("reclaim: \(problem)")
            }
            cleanup.append(("pinned CPUs of \(id)", { try allocator.release(sandbox: id) }))
            let cpus = try allocator.allocate(
                sandbox: id, count: count, runtimeRoot: runtime.store.root, lease: configuration.bundleRoot + "/" + id)
            var resources = spec.linux?.resources ?? Resources()
            resources.cpu = plan.limits.ociResources(pinnedCPUs: cpus).cpu
            spec.linux?.resources = resources
        }

        guard let bytes = plan.limits.ephemeralStorageBytes else { return nil }
        // In a user namespace the volume's files belong to the sandbox's host ids: the range is
        // reserved here for the container created next, which adopts it (same owner).
        var hostRange: IDAllocator.Allocation?
        if spec.annotations?[UserNamespaceRange.annotation] == UserNamespaceRange.auto {
            hostRange = try reserveHostRange(id: id, runtime: runtime, cleanup: &cleanup)
        }
        let volume = try EphemeralStorage.create(sandbox: id, size: bytes, base: configuration.ephemeralStorageBase)
        cleanup.append(("ephemeral storage \(volume.directory)", { try volume.destroy() }))
        func host(_ id: UInt32) -> UInt32 { (hostRange?.hostID ?? 0) + id }
        let uid = spec.process?.user.uid ?? 0
        let gid = spec.process?.user.gid ?? 0

        // Each writable path's tmpfs becomes a directory of the volume, bind-mounted in place;
        // /dev/shm too (sticky, world-writable, noexec as its tmpfs was), so shared memory
        // files count in the cap instead of adding a tmpfs of their own.
        spec.mounts = try (spec.mounts ?? []).map { mount in
            if mount.destination == "/dev/shm", mount.type == "tmpfs" {
                let dir = try volume.directory(for: mount.destination, uid: host(0), gid: host(0), mode: 0o1777)
                return Mount(
                    destination: mount.destination, type: "bind", source: dir,
                    options: ["rbind", "nosuid", "nodev", "noexec"])
            }
            guard mount.type == "tmpfs", mount.source == "tmpfs", plan.writablePaths.contains(mount.destination) else {
                return mount
            }
            let isTmp = mount.destination == "/tmp"
            let dir = try volume.directory(
                for: mount.destination, uid: host(isTmp ? 0 : uid), gid: host(isTmp ? 0 : gid),
                mode: isTmp ? 0o1777 : 0o755)
            return Mount(
                destination: mount.destination, type: "bind", source: dir, options: ["rbind", "nosuid", "nodev"])
        }

        if let layer = plan.writableLayer {
            var lower = layer.lowerdir
            if let range = hostRange {
                // The overlay's lower layer is the store's rootfs idmapped to the sandbox's range
                // (an overlay cannot be idmapped itself), inside the volume so `destroy` takes it;
                // the upper dir belongs to the mapped root with the rootfs' mode.
                lower = volume.volume + "/layer/lower"
                let upper = volume.volume + "/layer/upper"
                for dir in [volume.volume + "/layer", lower, upper] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
                    throw SandboxHostError.failed("cannot create \(dir)", operation: "mkdir")
                }
                try IDMappedMount.mount(layer.lowerdir, at: lower, mappings: range.mappings)
                var status = stat()
                let mode = stat(layer.lowerdir, &status) == 0 ? status.st_mode & 0o7777 : 0o755
                guard chown(upper, range.hostID, range.hostID) == 0, chmod(upper, mode) == 0 else {
                    throw SandboxHostError.failed("chown \(upper)", operation: "chown")
                }
            }
            spec.root?.path = try volume.writableLayer(lower: lower)
        }
        return volume
    }

    /// Reserves a host id range (runtime.json's `IDAllocator`) for the container `id` created
    /// next, which adopts it (same owner, `<stateRoot>/<id>`); its release goes in `cleanup`.
    static func reserveHostRange(
        id: String, runtime: ContainerRuntime, cleanup: inout [(String, () throws -> Void)]
    ) throws -> IDAllocator.Allocation {
        let allocator = try RuntimeConfiguration.load().idAllocator
        let owner = runtime.store.directory(id)
        let range = try allocator.allocate(owner: owner)
        cleanup.append(("host id range", { try allocator.release(owner: owner) }))
        return range
    }

    /// Destroys the ephemeral storage volumes left by runs that crashed: a volume whose owner
    /// (`owner.json`) is dead; one without an owner record once its sandbox has no state in
    /// `root` and no bundle directory.
    static func reapVolumes(root: String, bundleRoot: String, base: String) {
        guard geteuid() == 0 else { return }
        EphemeralStorage.reap(base: base) { id in
            access("\(root)/\(id)/state.json", F_OK) == 0 || access("\(bundleRoot)/\(id)", F_OK) == 0
        }
    }
}
