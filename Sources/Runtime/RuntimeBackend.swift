import Cgroups
import Glibc
import LinuxKernel
import OCI

/// A way to run containers: this runtime's own (`NativeBackend`: namespaces, cgroups, seccomp
/// and the `init` helper) or gVisor's (`GVisorBackend` of the GVisor module: runsc).
///
/// `ContainerRuntime` runs every verb once for all backends and calls the backend only for
/// what is its own: the `create` transaction (validation, the store lock, the state
/// directory, the exec FIFO, the host id range, the cgroup, the state, the pid file, and the
/// rollback of all of it) with the backend's steps (`ContainerCreation`), the status checks and
/// hooks of `start` and `delete` around the backend's step, and `kill`, `exec`, `wait`, `ps`,
/// `pause` and `update` as the backend's own. A container's backend is recorded in its
/// state.json (`ContainerState.backend`); every later verb goes to that backend.
///
/// Backends are given to `ContainerRuntime` by its front end (`RuntimeBackends`); the Runtime
/// module never imports one but its own.
public protocol RuntimeBackend: Sendable {
    /// The backend a security level picks (`SecurityLevel.backend`) and a state records.
    var kind: Backend { get }

    /// The backend's checks of a validated bundle (what it cannot enforce, naming the field)
    /// and the steps of its create, run by `ContainerRuntime.create` in the order of
    /// `ContainerCreation`. Runs before the store lock is taken; takes nothing on the node
    /// but what the returned creation releases when it goes (open fds).
    /// - Throws: `RuntimeError`/`SysError` naming the field at fault.
    func prepareCreate(_ request: CreateRequest, in runtime: ContainerRuntime) throws -> any ContainerCreation

    /// The container's status (runtime.md#state), derived from its live processes and the
    /// exec FIFO. Default: `StateStore.status(of:)`.
    func status(of state: ContainerState, in runtime: ContainerRuntime) -> Status

    /// Lets a created container run its workload (runtime.md#start). Called once the status
    /// is `created`; the exec FIFO is removed and the poststart hooks run after it returns.
    func start(_ state: ContainerState, in runtime: ContainerRuntime) throws

    /// runtime.md#kill: `signal` to the container's process, or with `all` to every process
    /// of the container.
    /// - Throws: "container not running" when there is no process to signal.
    func kill(_ state: ContainerState, signal: Int32, all: Bool, in runtime: ContainerRuntime) throws

    /// The backend's part of `delete` (runtime.md#delete): refuses a container that may not be
    /// deleted (`ContainerRuntime.checkDeletable` for one that is not stopped without `force`),
    /// else ends every process of the container. `ContainerRuntime.delete` then removes the
    /// cgroup, the state directory and the id range, calls `removed`, and runs the poststop hooks.
    /// - Parameter status: the container's status (`status(of:in:)`) before anything was done.
    func stop(_ state: ContainerState, status: Status, force: Bool, in runtime: ContainerRuntime) throws

    /// After `delete` removed the container's cgroup and state directory, before the poststop
    /// hooks: what else its going changes. Default: nothing.
    func removed(_ state: ContainerState, in runtime: ContainerRuntime) throws

    /// Waits for the container's process, which this process created (its child).
    /// - Returns: the exit code, 128+N when killed by signal N.
    func wait(_ state: ContainerState, in runtime: ContainerRuntime) throws -> Int32

    /// runc's `exec`: another process in the running container.
    /// - Returns: the process's pid (detached) or its exit status (128+N for signal N).
    func exec(_ state: ContainerState, options: ExecOptions, in runtime: ContainerRuntime) throws -> Int32

    /// Signals a process `exec` started with captured stdio (`ContainerRuntime.signalExec`)
    /// and the processes it started. Default: `signal` to the process group of `hostPid`
    /// when it leads one of its own (the native exec helper calls setsid(2)), else to
    /// `hostPid` alone.
    func signalExec(
        _ state: ContainerState, hostPid: Int32, internalPid: Int32?, signal: Int32, in runtime: ContainerRuntime)
        throws

    /// The pids of the container's processes (runc's `ps --format json`).
    func processes(_ state: ContainerState, in runtime: ContainerRuntime) throws -> [Int32]

    /// `ps`'s table when the host's ps(1) cannot show the container's processes; nil when it
    /// can (the front end filters ps(1) to `processes`). Default: nil.
    func processTable(_ state: ContainerState, in runtime: ContainerRuntime) throws -> String?

    /// runc's `pause`: freezes the running container (`ContainerRuntime.freeze`).
    func pause(_ state: ContainerState, in runtime: ContainerRuntime) throws

    /// runc's `update`, under the store lock, of a container that is not stopped: `apply`
    /// to its limits and `merged` (the result) into its state (`ContainerRuntime.updateCgroup`).
    /// - Parameters: `ResourceUpdate.merge` of the update into the recorded resources.
    func update(_ state: ContainerState, apply: Resources, merged: Resources, in runtime: ContainerRuntime) throws
}

extension RuntimeBackend {
    public func status(of state: ContainerState, in runtime: ContainerRuntime) -> Status {
        runtime.store.status(of: state)
    }

    public func removed(_ state: ContainerState, in runtime: ContainerRuntime) throws {}

    public func processTable(_ state: ContainerState, in runtime: ContainerRuntime) throws -> String? { nil }

    public func signalExec(
        _ state: ContainerState, hostPid: Int32, internalPid: Int32?, signal: Int32, in runtime: ContainerRuntime
    ) throws {
        if getpgid(hostPid) == hostPid { Glibc.kill(-hostPid, signal) }
        Glibc.kill(hostPid, signal)
    }
}

/// A validated `create` (`ContainerRuntime.create`): the container's id, bundle, root and
/// config.json, and the runtime configuration it was read with.
public struct CreateRequest: Sendable {
    public var id: String
    /// Absolute path of the bundle directory.
    public var bundle: String
    /// Absolute host path of `root.path`, a directory.
    public var rootfs: String
    /// The bundle's config.json, validated (`SpecValidation`).
    public var spec: Spec
    public var options: CreateOptions
    /// `/etc/safespace/runtime.json` (or `$SAFESPACE_RUNTIME_CONFIG`) as read for this create.
    public var configuration: RuntimeConfiguration
}

/// The steps of one backend's `create`, which `ContainerRuntime.create` calls in this order:
/// `locked` (under the store lock, before the id is claimed), then, once the state directory,
/// `creating.json`, the exec FIFO (`fifoMode`) and the host id range exist, `reserve`; once the
/// cgroup is made, `configure`; the store lock is released (unless `holdsLockUntilSaved`);
/// `launch`, which calls back when the container exists, and the callback `record`s the state,
/// saves it, calls `saved` and writes the pid file.
///
/// When any of them, or the transaction between them, fails: `abort` (it ends what `launch`
/// started), then the transaction kills the cgroup's processes and removes the cgroup, the
/// state directory and the id range, then `rolledBack`. Nothing of the container remains.
///
/// One object per create, used from one thread; what it holds open (a console socket, a
/// namespace fd) is closed when it goes.
public protocol ContainerCreation: AnyObject {
    /// Mode of `<state>/exec.fifo`, the marker of `created` until `start`. Default 0600.
    var fifoMode: mode_t { get }
    /// Whether the store lock stays held through `launch` until the state is saved and
    /// `saved` has run (the state of other containers depends on it). Default false: it is
    /// released once the cgroup is set up, so a create that hangs later blocks no other.
    var holdsLockUntilSaved: Bool { get }
    /// Whether `launch` also started the workload (asked by `CreateOptions.startWithCreate`):
    /// `createAndStart` then does what `start` does after the backend's part (the exec FIFO
    /// removed, the poststart hooks) instead of calling `start`. Read after `launch`.
    /// Default false.
    var startedWithCreate: Bool { get }

    /// Under the store lock, before the id is claimed. Default: nothing.
    func locked() throws
    /// Files of the container's own in its state directory `directory`. Default: nothing.
    func reserve(directory: String) throws
    /// The made cgroup (recorded in `creating.json`): limits, device rules, what the
    /// container is started from. `spec` has the host id range's mappings filled in.
    func configure(_ cgroup: Cgroup, spec: Spec) throws
    /// Starts the container in `cgroup`, in the created state; the prestart and
    /// createRuntime hooks run. Calls `created` with the container's pid and its start time
    /// (/proc/PID/stat field 22) once it exists and before it may run its workload.
    /// - Returns: the container's pid.
    func launch(spec: Spec, cgroup: Cgroup, created: (Int32, UInt64) throws -> Void) throws -> Int32
    /// The state about to be saved: what the backend records besides the common fields.
    /// Default: nothing.
    func record(_ state: inout ContainerState)
    /// After the state is saved, before the pid file is written. Default: nothing.
    func saved(_ state: ContainerState) throws
    /// After a failure: ends what `launch` started (`cgroup` is nil when it was not made).
    /// - Returns: the error `create` throws (`failure`, or one naming its cause better).
    func abort(_ failure: any Error, cgroup: Cgroup?) -> any Error
    /// After the rollback removed the cgroup, the state directory and the id range. Default: nothing.
    func rolledBack()
}

extension ContainerCreation {
    public var fifoMode: mode_t { 0o600 }
    public var holdsLockUntilSaved: Bool { false }
    public var startedWithCreate: Bool { false }
    public func locked() throws {}
    public func reserve(directory: String) throws {}
    public func record(_ state: inout ContainerState) {}
    public func saved(_ state: ContainerState) throws {}
    public func rolledBack() {}
}

/// The backends a `ContainerRuntime` can run containers with, given by its front end
/// (safespace-runtime, SandboxHosting): `RuntimeBackends([NativeBackend(), GVisorBackend()])`.
public struct RuntimeBackends: Sendable {
    public let all: [any RuntimeBackend]

    public init(_ backends: [any RuntimeBackend]) { self.all = backends }

    /// This runtime's own backend only (what needs no other module).
    public static var native: RuntimeBackends { RuntimeBackends([NativeBackend()]) }

    /// The backend of `kind`.
    /// - Throws: `RuntimeError` when the front end gave none of that kind.
    public func backend(_ kind: Backend) throws -> any RuntimeBackend {
        guard let backend = all.first(where: { $0.kind == kind }) else {
            throw RuntimeError(
                .unsupported,
                "the \(kind.rawValue) backend is not available in this program (it runs \(all.map(\.kind.rawValue).joined(separator: ", ")))"
            )
        }
        return backend
    }

    /// The backend `state` was created with (a state without one: native).
    public func backend(for state: ContainerState) throws -> any RuntimeBackend {
        try backend(state.backend ?? .native)
    }
}
