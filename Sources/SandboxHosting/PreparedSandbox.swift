/// One sandbox of `SandboxHost`, from bundle to cleanup: create, start, wait, kill, and the
/// release of everything it took, on every path (normal exit, signal, timeout, error).
import Foundation
import Glibc
import NodeResources
import OCI
import Runtime

/// A sandbox whose node state is taken and whose bundle is written (`SandboxHost.prepare`).
///
/// Thread-safe: `kill` may be called from any thread while another waits. Every piece taken
/// is released by `cleanup()`, in the reverse order of taking; until then each is recorded
/// with this process as its owner, so a killed process leaves nothing `gc` cannot reclaim.
public final class PreparedSandbox: @unchecked Sendable {
    public let plan: SandboxPlan
    public let configuration: SandboxHost.Configuration
    private let runtime: ContainerRuntime
    private let lock = NSLock()
    // Guarded by `lock`: the releases still to run, in the order taken.
    private var releases: [(String, () throws -> Void)] = []
    private var cleanedUp = false
    // Guarded by `lock`: the sandbox's seccomp event agent, nil when its filter gives no events.
    private var events: SeccompEventsRun?

    /// The container id; the sandbox name.
    public var id: String { plan.id }
    /// The bundle directory, `<bundleRoot>/<id>` (`SandboxLeases.bundle`).
    public var bundle: String {
        SandboxLeases(directory: configuration.bundleRoot, backends: configuration.backends).bundle(plan.id)
    }

    init(plan: SandboxPlan, configuration: SandboxHost.Configuration) {
        self.plan = plan
        self.configuration = configuration
        self.runtime = ContainerRuntime(root: configuration.stateRoot, backends: configuration.backends)
    }

    private func onCleanup(_ what: String, _ step: @escaping () throws -> Void) {
        lock.withLock { releases.append((what, step)) }
    }

    /// The steps of `SandboxHost.prepare`; on a throw, what was taken is in `releases`.
    func prepare() throws {
        // The sandbox's lease: what a later run of the name or `safespace gc` reclaims if
        // this process is killed (SandboxLeases.swift).
        let lease = SandboxLease(
            id: plan.id, stateRoot: configuration.stateRoot,
            leases: (try? RuntimeConfiguration.load())?.leaseStore.directory,
            ephemeralStorageBase: configuration.ephemeralStorageBase)
        let bundle = try BundleDirectory(
            leases: SandboxLeases(directory: configuration.bundleRoot, backends: configuration.backends), lease: lease)
        onCleanup("bundle \(bundle.path)", bundle.remove)
        var spec = plan.spec
        var cleanup: [(String, () throws -> Void)] = []
        defer { for (what, step) in cleanup { onCleanup(what, step) } }
        // Pinned CPUs and the ephemeral storage volume, which then holds the writable layer.
        let volume = try RunResources.prepare(
            plan: plan, configuration: configuration, runtime: runtime, spec: &spec, cleanup: &cleanup)
        if let layer = plan.writableLayer, volume == nil {
            // In a user namespace the overlay's lower layer is the store's rootfs idmapped to
            // the sandbox's host range (an overlay cannot be idmapped itself): the range is
            // reserved here for the container created next, which adopts it (same owner).
            var idMapping: [IDMapping]?
            if plan.spec.annotations?[UserNamespaceRange.annotation] == UserNamespaceRange.auto {
                idMapping = try RunResources.reserveHostRange(id: plan.id, runtime: runtime, cleanup: &cleanup).mappings
            }
            try bundle.mountWritableLayer(lowerdir: layer.lowerdir, size: layer.size, idMapping: idMapping)
        }
        // Syscall events: this process answers the filter's denials and counts them (SeccompEventsAgent.swift).
        if let events = SeccompEventsRun.start(
            spec: &spec, socket: bundle.path + "/seccomp.sock", configuration: configuration)
        {
            cleanup.append(("seccomp events", events.finish))
            lock.withLock { self.events = events }
        }
        // spec.networkAccess.egress: namespace, veth, nftables, the filter (SandboxNetworkHosting.swift).
        if let network = plan.network {
            try NetworkHosting.prepare(
                network, plan: plan, bundle: bundle.path, configuration: configuration, spec: &spec, cleanup: &cleanup)
        }
        try bundle.writeConfig(spec)
    }

    /// Creates the container from the bundle (`ContainerRuntime.create`): its init waits in
    /// the new namespaces for `start`.
    /// - Throws: what `create` throws; nothing is left of the container then.
    public func create() throws {
        if lock.withLock({ cleanedUp }) { throw SandboxHostError(.cleanedUp, "sandbox \(plan.id) is cleaned up") }
        // Registered before create: a failed create leaves nothing, and delete --force of
        // an id without state is a no-op.
        let runtime = self.runtime
        let id = plan.id
        onCleanup("container \(id)", { try runtime.delete(id: id, force: true) })
        try runtime.create(id: id, bundle: bundle)
    }

    /// Starts the workload (`ContainerRuntime.start`).
    public func start() throws {
        try runtime.start(id: plan.id)
    }

    /// Waits for the workload to end.
    /// - Returns: its exit code, or 128+N when signal N killed it (`ContainerRuntime.wait`).
    public func wait() throws -> Int32 {
        try runtime.wait(id: plan.id)
    }

    /// How `wait(timeout:)` ended.
    public enum Exit: Sendable, Equatable {
        /// The workload ended: its exit code, or 128+N when signal N killed it.
        case exited(Int32)
        /// The timeout passed first: every process of the sandbox was killed (SIGKILL).
        case timedOut
    }

    /// Waits for the workload to end, for at most `timeout`: past it, every process of the
    /// sandbox gets SIGKILL (`kill(signal:all:)`) and the wait ends once the init is reaped.
    /// Installs no signal handler and leaves nothing behind: the deadline is kept by a thread
    /// that ends with the wait. Release the sandbox with `cleanup()`, as on every path.
    /// - Parameter timeout: from now; nil waits without limit. The sandbox's own is
    ///   `plan.timeout` (seconds).
    /// - Returns: `.exited` with the workload's code, or `.timedOut`.
    /// - Throws: what `ContainerRuntime.wait` throws.
    public func wait(timeout: Duration?) throws -> Exit {
        let runtime = self.runtime
        let id = plan.id
        let (code, expired) = try Deadline.run(timeout: timeout, wait: { try runtime.wait(id: id) }) {
            try? runtime.kill(id: id, signal: SIGKILL, all: true)
        }
        return expired ? .timedOut : .exited(code)
    }

    /// Syscalls the sandbox's seccomp filter denied so far (every process of the sandbox,
    /// since it was made), by name: the live count of its event agent
    /// (`SeccompEventAgent.counts`). nil when the filter gives no events (no filter, a
    /// profile without EPERM denials, or the agent could not start): denials are then not
    /// seen at all.
    public var seccompDenials: [String: Int]? {
        lock.withLock { events }?.counts
    }

    /// Whether the OOM killer killed a process of the sandbox (its cgroup's `oom_kill`
    /// count); ask after `wait` and before `cleanup`.
    public func oomKilled() -> Bool {
        (try? runtime.oomKilled(id: plan.id)) == true
    }

    /// Sends `signal` to the workload's init, or with `all` to every process of the sandbox
    /// (`ContainerRuntime.kill`, kill(2)).
    public func kill(signal: Int32, all: Bool = false) throws {
        try runtime.kill(id: plan.id, signal: signal, all: all)
    }

    /// Releases everything taken, newest first: the container (processes, cgroup, state),
    /// the seccomp event agent, the writable layer's mounts, the id range, the volume, the
    /// CPUs, and last the bundle directory with its lease. Idempotent: a release that
    /// succeeded is not run again; one that failed is retried by the next call.
    /// - Throws: `SandboxHostError` `.cleanupFailed` with the releases that failed (the others
    ///   are done).
    public func cleanup() throws(SandboxHostError) {
        let steps = lock.withLock {
            defer {
                releases = []
                cleanedUp = true
            }
            return releases
        }
        var failed: [(String, () throws -> Void)] = []
        var failures: [(step: String, error: any Error)] = []
        for (what, step) in steps.reversed() {
            do { try step() } catch {
                failed.insert((what, step), at: 0)
                failures.append((what, error))
            }
        }
        lock.withLock { releases = failed + releases }
        if !failures.isEmpty { throw SandboxHostError(cleanup: failures) }
    }
}
