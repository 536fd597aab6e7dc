import Foundation
import OCI
import Runtime
import SeccompFilters
import TestSupport
import Testing

/// SCMP_ACT_NOTIFY with `listenerPath`: the runtime hands the listener fd and the container
/// process state to an agent (config-linux.md#seccomp); the agent here is the runtime's own
/// SeccompEventAgent, which answers with the errno of `listenerMetadata` and counts.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct SeccompNotifyTests {
    typealias H = SeccompHarness

    /// An agent serving on a thread of its own until `finish`.
    final class RunningAgent: @unchecked Sendable {
        let agent: SeccompEventAgent
        let dir: String
        private let done = DispatchSemaphore(value: 0)

        init() throws {
            dir = try Harness.tempDir("agent")
            agent = try SeccompEventAgent(path: dir + "/agent.sock")
            Thread.detachNewThread { [self] in
                agent.serve()
                done.signal()
            }
        }

        func finish() {
            agent.stop()
            done.wait()
            agent.close()
            Harness.cleanup(dir)
        }
    }

    func notifying(_ path: String, metadata: String?) -> Seccomp {
        var s = H.allowing([.init(names: ["getppid", "getpgrp"], action: "SCMP_ACT_NOTIFY")])
        s.listenerPath = path
        s.listenerMetadata = metadata
        return s
    }

    @Test("the agent gets the listener fd and the container process state; its answer is what the workload sees")
    func handoff() throws {
        let running = try RunningAgent()
        defer { running.finish() }
        let c = try TestContainer(
            "notify",
            bundle: try H.probeBundle(
                ["syscall", "110"], seccomp: notifying(running.agent.path, metadata: "safespace-events errno=13")))
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(H.results(r.stdout)["syscall 110"] == "EACCES", "\(r.stdout) \(r.stderr)")
        #expect(running.agent.counts == ["getppid": 1])
        let states = running.agent.processStates
        try #require(states.count == 1, "\(states)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(states[0].utf8)) as? [String: Any])
        #expect(json["ociVersion"] as? String == Spec.version)
        #expect(json["fds"] as? [String] == ["seccompFd"])
        #expect(json["metadata"] as? String == "safespace-events errno=13")
        #expect((json["pid"] as? NSNumber)?.int32Value ?? 0 > 1, "the host pid of the container process")
        let state = try #require(json["state"] as? [String: Any])
        #expect(state["id"] as? String == c.id)
        #expect(state["status"] as? String == "creating")
        #expect(state["bundle"] as? String == c.bundle)
        #expect(running.agent.errors.isEmpty, "\(running.agent.errors)")
    }

    @Test("exec: the exec'd process hands its own listener fd over, with the container running")
    func exec() throws {
        let running = try RunningAgent()
        defer { running.finish() }
        let bundle = try Harness.busyboxBundle(["sleep", "30"]) {
            $0.linux?.seccomp = notifying(running.agent.path, metadata: nil)
        }
        try FileManager.default.copyItem(
            atPath: try H.probeDir.get() + "/seccomp_probe", toPath: bundle + "/rootfs/bin/seccomp_probe")
        let c = try TestContainer("notifyx", bundle: bundle)
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        let r = try c.rt(["exec", c.id, "/bin/seccomp_probe", "syscall", "111"])
        #expect(
            H.results(r.stdout)["syscall 111"] == "EPERM",
            "getpgrp, answered EPERM by default: \(r.status) \(r.stdout) \(r.stderr)")
        let states = running.agent.processStates
        #expect(states.count == 2, "one for the init, one for the exec: \(states)")
        #expect(states.last?.contains("\"status\":\"running\"") == true, "\(states)")
        #expect(running.agent.counts["getpgrp"] == 1)
    }

    @Test("no agent listening: create fails naming linux.seccomp.listenerPath")
    func noAgent() throws {
        let dir = try Harness.tempDir("noagent")
        defer { Harness.cleanup(dir) }
        let (r, left) = try H.runProbe(["syscall", "110"], seccomp: notifying(dir + "/nobody.sock", metadata: nil))
        #expect(r.status != 0)
        #expect(r.stderr.contains("linux.seccomp.listenerPath"), "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("NOTIFY without listenerPath, or on sendmsg, is refused before anything is created")
    func refused() throws {
        let (r, left) = try H.runProbe(
            ["thread"], seccomp: H.allowing([.init(names: ["getppid"], action: "SCMP_ACT_NOTIFY")]))
        #expect(r.stderr.contains("SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath"), "\(r.stderr)")
        var s = H.allowing([.init(names: ["sendmsg"], action: "SCMP_ACT_NOTIFY")])
        s.listenerPath = "/run/whatever.sock"
        let (m, left2) = try H.runProbe(["thread"], seccomp: s)
        #expect(m.stderr.contains("SCMP_ACT_NOTIFY cannot apply to sendmsg"), "\(m.stderr)")
        #expect(left.isEmpty && left2.isEmpty)
    }
}
