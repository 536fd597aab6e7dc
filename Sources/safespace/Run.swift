/// The part of `safespace run` that drives a sandbox through `SandboxHost`: prepare, create,
/// start, wait (with the sandbox's timeout, `PreparedSandbox.wait(timeout:)`), with signals
/// forwarded as kills, and the cleanup on every path (normal exit, signal, timeout, error).
import Foundation
import Glibc
import NodeResources
import SandboxHosting

/// Exit codes of `safespace run` besides the workload's own (timeout(1)'s and the shell's).
enum RunExit {
    static let timedOut: Int32 = 124
    static func signaled(_ signo: Int32) -> Int32 { 128 + signo }
    /// Exit code of a sandbox killed by the OOM killer (128 + SIGKILL).
    static let oomKilled: Int32 = 137
}

/// One run of a sandbox, from bundle to cleanup.
struct SandboxRun {
    let host: SandboxHost
    let plan: SandboxPlan

    /// How long a forwarded SIGINT/SIGTERM/SIGHUP has to end the workload before SIGKILL.
    static let gracePeriod: Duration = .seconds(2)

    /// Runs the workload with this process's stdio and returns the code to exit with: the
    /// workload's, 124 on timeout, 128+N on signal N, 125 on a setup error. Everything taken
    /// (container, cgroup, state, mounts, bundle directory) is released before returning.
    func execute() -> Int32 {
        let signalFD: Int32
        do { signalFD = try installSignalPipe() } catch {
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        defer { restoreDefaultSignals() }
        let watcher = Watcher(signalFD: signalFD, gracePeriod: Self.gracePeriod)
        watcher.start()

        var sandbox: PreparedSandbox?
        defer {
            watcher.finish()
            do { try sandbox?.cleanup() } catch {
                for line in error.lines { Diagnostics.warning(line) }
            }
        }

        let exit: PreparedSandbox.Exit
        var oomExit: Int32?
        do {
            let prepared = try host.prepare(plan)
            sandbox = prepared
            if let signo = watcher.stopSignal { return RunExit.signaled(signo) }

            try prepared.create()
            watcher.containerCreated(prepared)
            if let signo = watcher.stopSignal { return RunExit.signaled(signo) }

            try prepared.start()
            exit = try prepared.wait(timeout: plan.timeout.map { .seconds($0) })
            oomExit = Self.oomExit(prepared)
        } catch {
            if let signo = watcher.stopSignal { return RunExit.signaled(signo) }
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        if let signo = watcher.stopSignal { return RunExit.signaled(signo) }
        switch exit {
        case .timedOut:
            Diagnostics.error("sandbox \(plan.id) timed out after \(plan.timeout ?? 0) seconds (spec.timeout); killed")
            return RunExit.timedOut
        case .exited(let code):
            return oomExit ?? code
        }
    }

    /// After the workload ended and before delete: when the OOM killer killed a process of
    /// the sandbox, prints why and returns 137.
    static func oomExit(_ sandbox: PreparedSandbox) -> Int32? {
        guard sandbox.oomKilled() else { return nil }
        let limit = sandbox.plan.limits.memoryBytes.map { formatBytes($0) } ?? "none"
        writeStandardError("safespace: sandbox \(sandbox.id) was OOM-killed (memory limit \(limit))\n")
        return RunExit.oomKilled
    }
}

/// `1Gi`, `64Mi`, `512Ki` when exact, else bytes.
func formatBytes(_ bytes: Int64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)]
    where bytes >= (1 << shift) && bytes % (1 << shift) == 0 {
        return "\(bytes >> shift)\(suffix)"
    }
    return "\(bytes)"
}

/// A thread that turns signals into kills of the container. (The timeout is the host
/// library's: `PreparedSandbox.wait(timeout:)`.)
///
/// The first SIGINT/SIGTERM/SIGHUP is forwarded to the workload's init; if the workload has
/// not ended after the grace period (or a second signal comes), every process of the
/// container gets SIGKILL.
final class Watcher: @unchecked Sendable {
    private let signalFD: Int32
    private let gracePeriod: Duration
    private let lock = NSLock()
    private let clock = ContinuousClock()
    // Guarded by `lock`.
    private var sandbox: PreparedSandbox?
    private var killDeadline: ContinuousClock.Instant?
    private var signal: Int32?
    private var finished = false

    init(signalFD: Int32, gracePeriod: Duration) {
        self.signalFD = signalFD
        self.gracePeriod = gracePeriod
    }

    /// The signal that stopped the run, if one did.
    var stopSignal: Int32? { lock.withLock { signal } }

    func start() {
        Thread.detachNewThread { [self] in loop() }
    }

    /// The container exists: from now on signals are forwarded to it.
    func containerCreated(_ sandbox: PreparedSandbox) {
        lock.withLock { self.sandbox = sandbox }
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
            let sandbox: PreparedSandbox? = lock.withLock {
                if let signo {
                    if signal == nil {
                        signal = signo
                        killDeadline = now + gracePeriod
                        actions.append(.forward(signo))
                    } else {
                        actions.append(.killAll)
                    }
                }
                if let deadline = killDeadline, now >= deadline {
                    killDeadline = nil
                    actions.append(.killAll)
                }
                return finished ? nil : self.sandbox
            }
            if lock.withLock({ finished }) { return }
            guard let sandbox else { continue }
            for action in actions {
                switch action {
                case .forward(let signo): try? sandbox.kill(signal: signo, all: false)
                case .killAll: try? sandbox.kill(signal: SIGKILL, all: true)
                }
            }
        }
    }
}
