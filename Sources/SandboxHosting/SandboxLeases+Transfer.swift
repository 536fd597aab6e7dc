/// Handing a running sandbox to its own init (safespaced): see `SandboxLeases.transfer`.
import Foundation
import Glibc
import LinuxKernel
import NodeResources
import Runtime
import SandboxNetwork

extension SandboxLeases {
    /// Makes `owner` the owner of sandbox `id`: its lease, its pinned CPUs, its network and its
    /// ephemeral storage volume, each record rewritten under its lock. The daemon hands a running
    /// sandbox to its init this way: the sandbox then survives the daemon, and `gc` (or the
    /// next holder of the name) reclaims it once the init is dead. The lease goes last: a
    /// process killed half-way leaves a lease of the old owner, whose death lets the whole
    /// sandbox be reclaimed.
    /// - Throws: `RuntimeError` when there is no lease; what writing a record failed with.
    public func transfer(_ id: String, to owner: ProcessIdentity) throws {
        let lock = try FileLock(path: directory + "/.lock")
        defer { withExtendedLifetime(lock) {} }
        guard var lease = lease(id) else { throw SandboxHostError(.failed, "sandbox \(id): no lease in \(bundle(id))") }
        if let dir = lease.leases {
            try CPUAllocator(store: LeaseStore(directory: dir)).transfer(sandbox: id, to: owner)
            try SandboxNetworks(leases: LeaseStore(directory: dir)).transfer(sandbox: id, to: owner)
        }
        if let base = lease.ephemeralStorageBase {
            let volume = EphemeralStorage.existing(sandbox: id, base: base)
            if volume.owner == nil || volume.owner == lease.owner { try volume.transferOwner(to: owner) }
        }
        lease.owner = owner
        try Files.writeAtomically(
            bundle(id) + "/" + SandboxLease.fileName, Array(try JSONEncoder().encode(lease)), mode: 0o600)
    }
}
