import Testing

@testable import OCI
@testable import SeccompFilters

/// Syscall events: a profile's EPERM denials rewritten to notify an agent that answers EPERM.
struct EventsTests {
    let path = "/run/safespace-bundles/x/seccomp.sock"

    @Test("EPERM denials, default and rules, notify; other errnos, KILL and allows stay; listener and metadata set")
    func rewrite() throws {
        let s = profile(
            [
                .init(names: ["read", "sendmsg"], action: "SCMP_ACT_ALLOW"),
                .init(names: ["mount"], action: "SCMP_ACT_ERRNO"),
                .init(names: ["keyctl"], action: "SCMP_ACT_ERRNO", errnoRet: 1),
                .init(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38),
                .init(names: ["reboot"], action: "SCMP_ACT_KILL_PROCESS"),
            ], defaultAction: "SCMP_ACT_ERRNO", errnoRet: 1)
        let (out, reason) = SeccompEvents.notifying(s, listenerPath: path)
        #expect(reason == nil)
        let n = try #require(out)
        #expect(n.defaultAction == "SCMP_ACT_NOTIFY" && n.defaultErrnoRet == nil)
        #expect(n.listenerPath == path && n.listenerMetadata == "safespace-events errno=1")
        #expect(
            n.syscalls?.map(\.action) == [
                "SCMP_ACT_ALLOW", "SCMP_ACT_NOTIFY", "SCMP_ACT_NOTIFY", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS",
            ])
        let program = try SeccompCompiler.compile(n)
        #expect(program.notifies)
        let sim = try BPFSimulator(program)
        #expect(sim.run(.init("mount")) == SeccompNames.actionNotify)
        #expect(sim.run(.init("getpid")) == SeccompNames.actionNotify, "the default")
        #expect(sim.run(.init("clone3")) == SeccompNames.actionErrno | 38)
        #expect(
            sim.run(.init(nr: 500)) == SeccompNames.actionErrno | 38,
            "the ENOSYS stub stays before the notifying default")
        #expect(sim.run(.init("sendmsg")) == SeccompNames.actionAllow)
    }

    @Test("a (conditional) denial that names sendmsg keeps it as a plain EPERM rule")
    func sendmsgKept() throws {
        let fd99 = [Seccomp.Arg(index: 0, value: 99, op: "SCMP_CMP_EQ")]
        let s = profile([.init(names: ["mount", "sendmsg"], action: "SCMP_ACT_ERRNO", args: fd99)])
        let n = try #require(SeccompEvents.notifying(s, listenerPath: path).0)
        #expect(
            n.syscalls == [
                .init(names: ["mount"], action: "SCMP_ACT_NOTIFY", args: fd99),
                .init(names: ["sendmsg"], action: "SCMP_ACT_ERRNO", args: fd99),
            ])
        #expect(try SeccompCompiler.compile(n).notifies)
    }

    @Test("no events: an own listener, no EPERM denial, or sendmsg not allowed")
    func noEvents() {
        var own = profile([.init(names: ["mount"], action: "SCMP_ACT_ERRNO")])
        own.listenerPath = "/run/agent.sock"
        #expect(SeccompEvents.notifying(own, listenerPath: path).reason?.contains("listener of its own") == true)
        let enosysOnly = profile([.init(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38)])
        #expect(
            SeccompEvents.notifying(enosysOnly, listenerPath: path).reason?.contains("denies nothing with EPERM")
                == true)
        let noSendmsg = profile([.init(names: ["read"], action: "SCMP_ACT_ALLOW")], defaultAction: "SCMP_ACT_ERRNO")
        #expect(
            SeccompEvents.notifying(noSendmsg, listenerPath: path).reason?.contains("does not allow sendmsg") == true)
    }

    @Test("the agent's answer comes from the metadata, EPERM by default")
    func answer() {
        #expect(SeccompEvents.answer(forMetadata: "safespace-events errno=13") == 13)
        #expect(SeccompEvents.answer(forMetadata: nil) == 1)
        #expect(SeccompEvents.answer(forMetadata: "errno=0") == 1)
        #expect(SeccompEvents.answer(forMetadata: "errno=99999") == 1)
    }
}
