/// The error wordings clients of the runtime match on, written once.
///
/// containerd, podman, docker and buildkit drive a runc-compatible runtime through its CLI and
/// tell failures apart by substrings of the message (the last `"level":"error"` line of `--log`,
/// or stderr), not by exit status. Each wording keeps runc's and names who matches it; the
/// `RuntimeError` constructors below are the only places that make these messages.
public enum ClientWordings {
    /// containerd pkg/process/utils.go `checkKillError` (kill: "does not exist" becomes
    /// ErrNotFound "no such container"); pkg/process/init.go `delete` (the error is ignored);
    /// podman libpod/oci_conmon_common.go `UpdateContainerStatus` (`state` failing with it marks
    /// the container exited). runc: libcontainer/error.go `ErrNotExist`.
    public static let doesNotExist = "does not exist"
    /// containerd pkg/process/utils.go `checkKillError` (kill: becomes ErrNotFound "process
    /// already finished"); buildkit executor/runcexecutor (ends its kill loop).
    /// runc: libcontainer/error.go `ErrNotRunning`.
    public static let containerNotRunning = "container not running"
    /// runc: libcontainer/error.go `ErrNotPaused` (resume); no client is known to match it.
    public static let containerNotPaused = "container not paused"
    /// runc libcontainer/error.go `ErrExist` says "container with given ID already exists";
    /// no client is known to match it (containerd checks its own metadata first).
    public static let alreadyExists = "already exists"
    /// podman libpod/oci_util.go `getOCIRuntimeError` (matches "executable file not found in":
    /// ErrOCIRuntimeNotFound, exit 127); docker cli/command/container/run.go
    /// `runStartContainerErr` (exit 127). runc: Go's exec.LookPath error for `process.args[0]`.
    public static let executableNotFound = "executable file not found in $PATH"
}

extension RuntimeError {
    /// `container "ID" does not exist` (`ClientWordings.doesNotExist`): state, kill, delete,
    /// ... of an id with no state.
    public static func containerNotFound(_ id: String) -> RuntimeError {
        RuntimeError(.notFound, "container \"\(id)\" \(ClientWordings.doesNotExist)")
    }

    /// `container "ID" already exists`, with `(being created by CREATOR)` while another
    /// process's create of that id is under way.
    public static func containerExists(_ id: String, beingCreatedBy creator: String? = nil) -> RuntimeError {
        RuntimeError(
            .alreadyExists,
            "container \"\(id)\" \(ClientWordings.alreadyExists)" + (creator.map { " (being created by \($0))" } ?? ""))
    }

    /// `container not running` (`ClientWordings.containerNotRunning`), after `context` when
    /// given: `cannot exec in a stopped container: container not running`.
    public static func notRunning(_ context: String? = nil) -> RuntimeError {
        RuntimeError(
            .notRunning,
            context.map { "\($0): \(ClientWordings.containerNotRunning)" } ?? ClientWordings.containerNotRunning)
    }

    /// `container ID is not paused: container not paused` (resume).
    public static func notPaused(_ id: String) -> RuntimeError {
        RuntimeError(.notPaused, "container \(id) is not paused: \(ClientWordings.containerNotPaused)")
    }

    /// runc start.go: `cannot start a container that has stopped`.
    public static func startStopped() -> RuntimeError {
        RuntimeError(.stopped, "cannot start a container that has stopped")
    }

    /// runc start.go: `cannot start an already running container`.
    public static func startRunning() -> RuntimeError {
        RuntimeError(.alreadyRunning, "cannot start an already running container")
    }

    /// runc delete.go: `cannot delete container ID that is not stopped: STATUS`; `status` is the
    /// state's (`running`) or a longer account (`creating (create by pid 12 still runs)`).
    public static func deleteNotStopped(_ id: String, status: String) -> RuntimeError {
        RuntimeError(.notStopped, "cannot delete container \(id) that is not stopped: \(status)")
    }

    /// `process.args[0]: exec: "NAME": executable file not found in $PATH`
    /// (`ClientWordings.executableNotFound`), runc's text for a name no PATH entry holds.
    public static func executableNotFound(_ name: String) -> RuntimeError {
        RuntimeError(
            .executableNotFound, field: "process.args[0]", "exec: \"\(name)\": \(ClientWordings.executableNotFound)",
            operation: "exec")
    }
}
