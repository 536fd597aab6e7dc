#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Cgroups
import Glibc
import LinuxKernel
import OCI

extension ContainerRuntime {
    /// runc's `update`: applies `resources` to a created or running container's cgroup and
    /// records the result in its state, so fields not given keep their value (see
    /// `ResourceUpdate.merge`), including on a later update.
    /// - Throws: `RuntimeError` for an unknown or stopped container; `CgroupError` naming the
    ///   OCI field for a value the drivers or the kernel reject (the state is left unchanged).
    public func update(id: String, resources: Resources) throws {
        let lock = try store.lock()
        defer { withExtendedLifetime(lock) {} }
        var state = try store.load(id)
        guard store.status(of: state) != .stopped else {
            throw RuntimeError(.stopped, "cannot update container \(id): it is stopped")
        }
        let (apply, merged) = try ResourceUpdate.merge(resources, into: state.spec.linux?.resources)
        // A container of a gVisor pod: its limits count in the sandbox's cgroup (GVisorPod.swift).
        if let sandboxID = state.gvisor?.podSandbox {
            try GVisorPodResources.check(merged)
            let sandbox = try store.load(sandboxID)
            let old = state
            state.spec.linux?.resources = merged
            try store.save(state)
            do { try GVisorBackend(runtime: self).applyPodLimits(sandbox: sandbox) } catch {
                try? store.save(old)
                try? GVisorBackend(runtime: self).applyPodLimits(sandbox: sandbox)
                throw error
            }
            return
        }
        for warning in try state.cgroup.apply(apply) { log.warn(warning) }
        if state.spec.linux == nil { state.spec.linux = Linux() }
        state.spec.linux?.resources = merged
        try store.save(state)
        if state.backend == .gvisor, try PodRole.of(state.spec.annotations) == .sandbox {
            try GVisorBackend(runtime: self).applyPodLimits(sandbox: state)
        }
    }

    /// The container's `linux.resources` as last created or updated.
    public func resources(id: String) throws -> Resources? {
        try store.load(id).spec.linux?.resources
    }
}
