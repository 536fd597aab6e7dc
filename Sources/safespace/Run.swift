/// The part of `safespace run` that drives the runtime core: create, start, wait, and the
/// release of everything on every path (normal exit, signal, timeout, error).
import Foundation
import Glibc
import OCI
import Resources
import Runtime

/// Everything `SandboxRun` needs, decided by `RunCommand` from the Sandbox and the flags.
struct SandboxRunPlan {
    /// Container id; the sandbox name.
    var id: String
    /// The bundle's config.json. With `writableLayer`, `root.path` is `<bundle>/rootfs`.
    var spec: Spec
    /// For a writable root: the store's rootfs (overlay lowerdir) and the tmpfs size of the layer.
    var writableLayer: (lowerdir: String, size: String)?
    /// Seconds the workload may run; nil for no limit.
    var timeout: Int?
    /// `--root` of the runtime's state.
    var stateRoot: String
    /// Parent of the bundle directory, `/run/safespace-bundles`.
    var bundleParent: String
    /// `spec.resources` as numbers; `spec.linux.resources` holds all but the pinned CPUs and
    /// the ephemeral storage volume, which `RunResources.prepare` takes (Run+Resources.swift).
    var limits = SandboxLimits()
    /// The sandbox's writable paths (the tmpfs mounts an ephemeral storage volume replaces).
    var writablePaths: [String] = []
    /// `CPUAllocator` file of `cpuPinning` (`--cpu-allocations`).
    var cpuAllocations: String = CPUAllocator.defaultPath
    /// `EphemeralStorage` base of the volume (`--ephemeral-storage`).
    var ephemeralStorageBase: String = EphemeralStorage.defaultBase
}

/// Exit codes of `safespace run` besides the workload's own (timeout(1)'s and the shell's).
enum RunExit {
    static let timedOut: Int32 = 124
    static func signaled(_ signo: Int32) -> Int32 { 128 + signo }
}

/// One run of a sandbox, from bundle to cleanup.
struct SandboxRun {
    let plan: SandboxRunPlan

    /// How long a forwarded SIGINT/SIGTERM/SIGHUP has to end the workload before SIGKILL.
    static let gracePeriod: Duration = .seconds(2)

    /// Runs the workload with this process's stdio and returns the code to exit with: the
    /// workload's, 124 on timeout, 128+N on signal N, 125 on a setup error. Everything taken
    /// (container, cgroup, state, mounts, bundle directory) is released before returning.
    func execute() -> Int32 {
        let runtime = ContainerRuntime(root: plan.stateRoot)
        let signalFD: Int32
        do { signalFD = try installSignalPipe() } catch {
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        defer { restoreDefaultSignals() }
        let watcher = Watcher(runtime: runtime, signalFD: signalFD, gracePeriod: Self.gracePeriod)
        watcher.start()

        var cleanup: [(String, () throws -> Void)] = []
        defer {
            watcher.finish()
            for (what, step) in cleanup.reversed() {
                do { try step() } catch { Diagnostics.warning("cleanup: \(what): \(error)") }
            }
        }

        let code: Int32
        var oomExit: Int32?
        do {
            // The sandbox's lease: what a later run of the name or `safespace gc` reclaims if
            // this process is killed (Runtime/Reclaim.swift).
            let lease = SandboxLease(
                id: plan.id, stateRoot: plan.stateRoot, cpuAllocations: plan.cpuAllocations,
                idRanges: (try? RuntimeConfiguration.load())?.idAllocator.directory, ephemeralStorageBase: plan.ephemeralStorageBase)
            let bundle = try BundleDirectory(leases: SandboxLeases(directory: plan.bundleParent), lease: lease)
            cleanup.append(("bundle \(bundle.path)", bundle.remove))
            var spec = plan.spec
            // Pinned CPUs and the ephemeral storage volume, which then holds the writable layer.
            let volume = try RunResources.prepare(plan: plan, runtime: runtime, spec: &spec, cleanup: &cleanup)
            if let layer = plan.writableLayer, volume == nil {
                // In a user namespace the overlay's lower layer is the store's rootfs idmapped to
                // the sandbox's host range (an overlay cannot be idmapped itself): the range is
                // reserved here for the container created next, which adopts it (same owner).
                var idMapping: [IDMapping]?
                if plan.spec.annotations?[UserNamespaceRange.annotation] == UserNamespaceRange.auto {
                    let allocator = try RuntimeConfiguration.load().idAllocator
                    let owner = runtime.store.directory(plan.id)
                    idMapping = try allocator.allocate(owner: owner).mappings
                    cleanup.append(("host id range", { try allocator.release(owner: owner) }))
                }
                try bundle.mountWritableLayer(lowerdir: layer.lowerdir, size: layer.size, idMapping: idMapping)
            }
            // Syscall events: this process answers the filter's denials and counts them (Run+SeccompEvents.swift).
            if let events = SeccompEventsRun.start(spec: &spec, socket: bundle.path + "/seccomp.sock") {
                cleanup.append(("seccomp events", events.finish))
            }
            try bundle.writeConfig(spec)
            if let stop = watcher.stopReason { return stop.exitCode }

            // Registered before create: a failed create leaves nothing, and delete --force of
            // an id without state is a no-op.
            cleanup.append(("container \(plan.id)", { try runtime.delete(id: plan.id, force: true) }))
            try runtime.create(id: plan.id, bundle: bundle.path)
            watcher.containerCreated(id: plan.id)
            if let stop = watcher.stopReason { return stop.exitCode }

            try runtime.start(id: plan.id)
            if let timeout = plan.timeout { watcher.arm(timeout: .seconds(timeout)) }
            code = try runtime.wait(id: plan.id)
            oomExit = RunResources.oomExit(runtime: runtime, id: plan.id, limits: plan.limits)
        } catch {
            if let stop = watcher.stopReason { return stop.exitCode }
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        switch watcher.stopReason {
        case .timedOut?:
            Diagnostics.error("sandbox \(plan.id) timed out after \(plan.timeout ?? 0) seconds (spec.timeout); killed")
            return RunExit.timedOut
        case let stop?:
            return stop.exitCode
        case nil:
            return oomExit ?? code
        }
    }
}

/// Why a run was stopped from outside the workload.
enum StopReason: Equatable {
    case signal(Int32)
    case timedOut

    var exitCode: Int32 {
        switch self {
        case .signal(let signo): return RunExit.signaled(signo)
        case .timedOut: return RunExit.timedOut
        }
    }
}

/// A thread that turns signals and the timeout into kills of the container.
///
/// The first SIGINT/SIGTERM/SIGHUP is forwarded to the workload's init; if the workload has
/// not ended after the grace period (or a second signal comes), every process of the
/// container gets SIGKILL. The timeout sends SIGKILL at once.
final class Watcher: @unchecked Sendable {
    private let runtime: ContainerRuntime
    private let signalFD: Int32
    private let gracePeriod: Duration
    private let lock = NSLock()
    private let clock = ContinuousClock()
    // Guarded by `lock`.
    private var containerID: String?
    private var deadline: ContinuousClock.Instant?
    private var killDeadline: ContinuousClock.Instant?
    private var reason: StopReason?
    private var finished = false

    init(runtime: ContainerRuntime, signalFD: Int32, gracePeriod: Duration) {
        self.runtime = runtime
        self.signalFD = signalFD
        self.gracePeriod = gracePeriod
    }

    /// Why the run was stopped, if it was.
    var stopReason: StopReason? { lock.withLock { reason } }

    func start() {
        Thread.detachNewThread { [self] in loop() }
    }

    /// The container exists: from now on signals are forwarded to it.
    func containerCreated(id: String) {
        lock.withLock { containerID = id }
    }

    /// Starts the wall-clock limit of the workload.
    func arm(timeout: Duration) {
        lock.withLock { deadline = clock.now + timeout }
    }

    /// The run is over: no more kills, the thread ends.
    func finish() {
        lock.withLock { finished = true }
    }

    private enum Action {
        case forward(Int32)
        case killAll
    }

    private func loop() {
        while true {
            let signo = nextSignal(from: signalFD, waitingAtMost: 100)
            let now = clock.now
            var actions: [Action] = []
            let id: String? = lock.withLock {
                if let signo {
                    if reason == nil {
                        reason = .signal(signo)
                        killDeadline = now + gracePeriod
                        actions.append(.forward(signo))
                    } else {
                        actions.append(.killAll)
                    }
                }
                if reason == nil, let deadline, now >= deadline {
                    reason = .timedOut
                    actions.append(.killAll)
                }
                if let deadline = killDeadline, now >= deadline {
                    killDeadline = nil
                    actions.append(.killAll)
                }
                return finished ? nil : containerID
            }
            if lock.withLock({ finished }) { return }
            guard let id else { continue }
            for action in actions {
                switch action {
                case .forward(let signo): try? runtime.kill(id: id, signal: signo, all: false)
                case .killAll: try? runtime.kill(id: id, signal: SIGKILL, all: true)
                }
            }
        }
    }
}
