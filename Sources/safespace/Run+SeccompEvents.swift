/// Syscall events of `safespace run`: the sandbox's seccomp denials go to an agent in this
/// process (SCMP_ACT_NOTIFY), which answers them as the profile says and counts them; when the
/// sandbox ends, one line on stderr names what was denied (seccomp/README.md, "Syscall events").
/// Native backend only.
import Foundation
import OCI
import Runtime
import Sandbox
import Seccomp

final class SeccompEventsRun: @unchecked Sendable {
    private let agent: SeccompEventAgent
    private let done = DispatchSemaphore(value: 0)

    private init(agent: SeccompEventAgent) {
        self.agent = agent
    }

    /// Rewrites `spec`'s profile so that its EPERM denials notify an agent listening on
    /// `socket`, and starts the agent. nil (spec unchanged) when the sandbox has no filter or
    /// its profile cannot give events; a warning says why when that is the profile's doing.
    static func start(spec: inout Spec, socket: String) -> SeccompEventsRun? {
        guard let seccomp = spec.linux?.seccomp else { return nil }
        // Under gVisor the profile is enforced by runsc inside its sentry, which has no NOTIFY.
        let level = spec.annotations?[SandboxPolicy.Annotation.securityLevel].flatMap(SecurityLevel.init(rawValue:))
        if level?.profile.backend == .gvisor { return nil }
        let (notifying, reason) = SeccompEvents.notifying(seccomp, listenerPath: socket)
        guard let notifying else {
            if let reason, !reason.contains("denies nothing") {
                Diagnostics.warning("seccomp events are off: \(reason)")
            }
            return nil
        }
        let agent: SeccompEventAgent
        do { agent = try SeccompEventAgent(path: socket) } catch {
            Diagnostics.warning("seccomp events are off: \(error)")
            return nil
        }
        spec.linux?.seccomp = notifying
        let run = SeccompEventsRun(agent: agent)
        Thread.detachNewThread { [run] in
            run.agent.serve()
            run.done.signal()
        }
        return run
    }

    /// Stops the agent, removes its socket and prints the summary line of denied syscalls.
    func finish() {
        agent.stop()
        done.wait()
        agent.close()
        for error in agent.errors { Diagnostics.warning("seccomp events: \(error)") }
        if let summary = agent.summary { writeStandardError("safespace: \(summary)\n") }
    }
}
