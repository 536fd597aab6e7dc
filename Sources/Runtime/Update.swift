import Cgroups
import Glibc
import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

extension ContainerRuntime {
    /// runc's `update`: applies `resources` to a created or running container's cgroup and
    /// records the result in its state, so fields not given keep their value (see
    /// `ResourceUpdate.merge`), including on a later update.
    /// - Throws: `RuntimeError` for an unknown or stopped container; `CgroupError` naming the
    ///   OCI field for a value the drivers or the kernel reject (the state is left unchanged).
    public func update(id: String, resources: Resources) throws {
        let lock = try store.lock()
        defer { withExtendedLifetime(lock) {} }
        let state = try store.load(id)
        guard status(of: state) != .stopped else {
            throw RuntimeError(.stopped, "cannot update container \(id): it is stopped")
        }
        let (apply, merged) = try ResourceUpdate.merge(resources, into: state.spec.linux?.resources)
        try backends.backend(for: state).update(state, apply: apply, merged: merged, in: self)
    }

    /// Applies `apply` to the container's own cgroup and records `merged` in its state: a
    /// backend's `update` (the caller holds the store lock).
    /// - Returns: the state saved.
    /// - Throws: `CgroupError` naming the OCI field (the state is left unchanged).
    @discardableResult
    package func updateCgroup(_ state: ContainerState, apply: Resources, merged: Resources) throws -> ContainerState {
        var state = state
        for warning in try state.cgroup.apply(apply) { log.warn(warning) }
        if state.spec.linux == nil { state.spec.linux = Linux() }
        state.spec.linux?.resources = merged
        try store.save(state)
        return state
    }

    /// The container's `linux.resources` as last created or updated.
    public func resources(id: String) throws -> Resources? {
        try store.load(id).spec.linux?.resources
    }
}
