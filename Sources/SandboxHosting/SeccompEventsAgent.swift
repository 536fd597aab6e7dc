/// Syscall events of a sandbox: its seccomp denials go to an agent in this process
/// (SCMP_ACT_NOTIFY), which answers them as the profile says and counts them; when the
/// sandbox ends, one line (`SandboxHost.Message.seccompSummary`) names what was denied
/// (seccomp/README.md, "Syscall events"). Native backend only.
import Foundation
import LinuxKernel
import OCI
import Runtime
import SandboxSpec
import SeccompFilters

final class SeccompEventsRun: @unchecked Sendable {
    private let agent: SeccompEventAgent
    private let configuration: SandboxHost.Configuration
    private let done = DispatchSemaphore(value: 0)

    private init(agent: SeccompEventAgent, configuration: SandboxHost.Configuration) {
        self.agent = agent
        self.configuration = configuration
    }

    /// Rewrites `spec`'s profile so that its EPERM denials notify an agent listening on
    /// `socket`, and starts the agent. nil (spec unchanged) when the sandbox has no filter or
    /// its profile cannot give events; a warning says why when that is the profile's doing.
    static func start(spec: inout Spec, socket: String, configuration: SandboxHost.Configuration) -> SeccompEventsRun? {
        guard let seccomp = spec.linux?.seccomp else { return nil }
        // Under gVisor the profile is enforced by runsc inside its sentry, which has no NOTIFY.
        let level = spec.annotations?[SandboxPolicy.Annotation.securityLevel].flatMap(SecurityLevel.init(rawValue:))
        if level?.profile.backend == .gvisor { return nil }
        let (notifying, reason) = SeccompEvents.notifying(seccomp, listenerPath: socket)
        guard let notifying else {
            if let reason, !reason.contains("denies nothing") {
                configuration.warn("seccomp events are off: \(reason)")
            }
            return nil
        }
        let agent: SeccompEventAgent
        do { agent = try SeccompEventAgent(path: socket) } catch {
            configuration.warn("seccomp events are off: \(error)")
            return nil
        }
        spec.linux?.seccomp = notifying
        let run = SeccompEventsRun(agent: agent, configuration: configuration)
        Thread.detachNewThread { [run] in
            // It answers the sandbox's syscalls for the sandbox's whole life: never at the
            // SCHED_IDLE of a warm pool's refill that made the sandbox (a thread inherits its
            // creator's policy, sched(7)).
            if Scheduling.policy() == .idle { try? Scheduling.set(.other) }
            run.agent.serve()
            run.done.signal()
        }
        return run
    }

    /// Syscalls denied so far, by name (live: the agent counts each as it answers it).
    var counts: [String: Int] { agent.counts }

    /// Stops the agent, removes its socket and reports the summary line of denied syscalls.
    func finish() {
        agent.stop()
        done.wait()
        agent.close()
        for error in agent.errors { configuration.warn("seccomp events: \(error)") }
        if let summary = agent.summary { configuration.messages(.seccompSummary(summary)) }
    }
}
