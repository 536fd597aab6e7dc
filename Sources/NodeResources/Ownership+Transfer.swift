/// Handing a sandbox's node resources to another owner: the daemon (`safespaced`) makes a
/// sandbox's own init their owner once it runs, so that the sandbox outlives a crash of the
/// daemon and is reclaimed only once the init itself is gone (the crash-recovery rule: a
/// resource whose owner is dead is reclaimed).
import Glibc
import LinuxKernel

extension CPUAllocator {
    /// Makes `owner` the holder of sandbox `id`'s CPUs, if `id` holds any.
    /// - Throws: `ResourceError` when the lease store cannot be read or written.
    public func transfer(sandbox id: String, to owner: ProcessIdentity) throws(ResourceError) {
        try withLeases { leases in
            guard var lease = try leases.lease(Self.kind, key: id) else { return }
            lease.holder = owner
            try leases.write(Self.kind, lease)
        }
    }
}

extension EphemeralStorage {
    /// Makes `owner` the owner of this volume (`owner.json`), if the volume exists.
    /// - Throws: `ResourceError` when `owner.json` cannot be written.
    public func transferOwner(to owner: ProcessIdentity) throws(ResourceError) {
        guard access(directory, F_OK) == 0 else { return }
        try writeOwner(owner)
    }
}
