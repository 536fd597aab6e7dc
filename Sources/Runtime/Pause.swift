import Glibc
import LinuxKernel
import OCI

extension ContainerRuntime {
    /// Freezes every process of a running container (runc pause; containerd's `tasks pause`).
    /// - Throws: "container not running" unless it is running; `CgroupError` without a freezer.
    public func pause(id: String) throws {
        let state = try store.load(id)
        if let sandbox = state.gvisor?.podSandbox {
            throw RuntimeError(.unsupported, "cannot pause container \(id) alone: it runs inside gVisor pod sandbox \(sandbox), whose kernel it shares; pause the pod sandbox")
        }
        guard store.status(of: state) == .running else {
            throw RuntimeError.notRunning("container \(id) is not running")
        }
        try state.cgroup.setFrozen(true)
    }

    /// Thaws a paused container (runc resume).
    /// - Throws: "container not paused" unless it is paused.
    public func resume(id: String) throws {
        let state = try store.load(id)
        guard store.status(of: state) == .paused else {
            throw RuntimeError.notPaused(id)
        }
        try state.cgroup.setFrozen(false)
    }
}
