/// Handing a sandbox's node resources to another owner: the daemon (`safespaced`) makes a
/// sandbox's own init their owner once it runs, so that the sandbox outlives a crash of the
/// daemon and is reclaimed only once the init itself is gone (Runtime/Reclaim.swift's rule:
/// a resource whose owner is dead is reclaimed).
import Glibc
import LinuxKernel

extension CPUAllocator {
    /// Makes `owner` the holder of sandbox `id`'s CPUs, if `id` holds any.
    /// - Throws: `ResourceError` when the allocation file cannot be read or written.
    public func transfer(sandbox id: String, to owner: ProcessIdentity) throws(ResourceError) {
        try withLockedFile { file throws(ResourceError) in
            guard var allocation = file.allocations[id] else { return }
            allocation.holderPid = owner.pid
            allocation.holderStartTime = owner.startTime
            file.allocations[id] = allocation
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
