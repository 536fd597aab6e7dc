import Glibc
import LinuxKernel
import OCI

extension ContainerRuntime {
    /// Freezes every process of a running container (runc pause; containerd's `tasks pause`).
    /// - Throws: "container not running" unless it is running; `CgroupError` without a freezer.
    public func pause(id: String) throws {
        let state = try store.load(id)
        try backends.backend(for: state).pause(state, in: self)
    }

    /// Freezes the cgroup of a running container: a backend's `pause`.
    /// - Throws: "container not running" unless it is running; `CgroupError` without a freezer.
    package func freeze(_ state: ContainerState) throws {
        guard status(of: state) == .running else {
            throw RuntimeError("container \(state.id) is not running: container not running")
        }
        try state.cgroup.setFrozen(true)
    }

    /// Thaws a paused container (runc resume).
    /// - Throws: "container not paused" unless it is paused.
    public func resume(id: String) throws {
        let state = try store.load(id)
        guard status(of: state) == .paused else {
            throw RuntimeError("container \(id) is not paused: container not paused")
        }
        try state.cgroup.setFrozen(false)
    }
}
