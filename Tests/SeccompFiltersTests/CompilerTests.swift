import Testing

@testable import OCI
@testable import SeccompFilters

/// A profile for x86_64 with x86 and x32, as Docker's and Podman's resolve on this machine.
func profile(
    _ syscalls: [Seccomp.Syscall], defaultAction: String = "SCMP_ACT_ALLOW", errnoRet: UInt32? = nil,
    architectures: [String]? = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
) -> Seccomp {
    var s = Seccomp(defaultAction: defaultAction, defaultErrnoRet: errnoRet)
    s.architectures = architectures
    s.syscalls = syscalls
    return s
}

/// The message of the error compiling `s` throws, "" when it compiles.
func compileError(_ s: Seccomp) -> String {
    do {
        _ = try SeccompCompiler.compile(s)
        return ""
    } catch { return "\(error)" }
}

struct CompilerTests {
    @Test("action values follow seccomp.h, with errnoRet in the low 16 bits")
    func actions() throws {
        #expect(try SeccompNames.action("SCMP_ACT_ALLOW", errnoRet: nil, field: "f") == 0x7fff_0000)
        #expect(try SeccompNames.action("SCMP_ACT_ERRNO", errnoRet: nil, field: "f") == 0x0005_0001)
        #expect(try SeccompNames.action("SCMP_ACT_ERRNO", errnoRet: 38, field: "f") == 0x0005_0026)
        #expect(try SeccompNames.action("SCMP_ACT_TRACE", errnoRet: nil, field: "f") == 0x7ff0_0001)
        #expect(try SeccompNames.action("SCMP_ACT_KILL", errnoRet: nil, field: "f") == 0)
        #expect(try SeccompNames.action("SCMP_ACT_KILL_THREAD", errnoRet: nil, field: "f") == 0)
        #expect(try SeccompNames.action("SCMP_ACT_KILL_PROCESS", errnoRet: nil, field: "f") == 0x8000_0000)
        #expect(try SeccompNames.action("SCMP_ACT_TRAP", errnoRet: nil, field: "f") == 0x0003_0000)
        #expect(try SeccompNames.action("SCMP_ACT_LOG", errnoRet: nil, field: "f") == 0x7ffc_0000)
        #expect(try SeccompNames.action("SCMP_ACT_NOTIFY", errnoRet: nil, field: "f") == 0x7fc0_0000)
    }

    @Test("an unknown action, an errno out of range, errnoRet on an action without errno: errors naming the entry")
    func badActions() {
        #expect(
            compileError(profile([.init(names: ["read"], action: "SCMP_ACT_BOGUS")])).contains(
                "linux.seccomp.syscalls[0].action: unknown action \"SCMP_ACT_BOGUS\""))
        #expect(
            compileError(profile([.init(names: ["read"], action: "SCMP_ACT_ERRNO", errnoRet: 4095)])).contains(
                "syscalls[0].action: errnoRet 4095 is out of range (0-4094)"))
        #expect(compileError(profile([.init(names: ["read"], action: "SCMP_ACT_ERRNO", errnoRet: 4094)])) == "")
        #expect(
            compileError(profile([.init(names: ["read"], action: "SCMP_ACT_KILL", errnoRet: 1)])).contains(
                "syscalls[0].action: errnoRet 1 is given but SCMP_ACT_KILL returns no errno"))
        #expect(
            compileError(profile([], defaultAction: "SCMP_ACT_ERRNO", errnoRet: 70000)).contains(
                "linux.seccomp.defaultAction: errnoRet 70000"))
        #expect(
            compileError(profile([], defaultAction: "SCMP_ACT_FOO")).contains(
                "linux.seccomp.defaultAction: unknown action"))
    }

    @Test(
        "every action compiles as a rule and as the default",
        arguments: [
            "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
            "SCMP_ACT_TRACE", "SCMP_ACT_LOG", "SCMP_ACT_ALLOW",
        ])
    func everyAction(action: String) throws {
        let rule = try SeccompCompiler.compile(
            profile(
                [.init(names: ["mkdir"], action: action)],
                defaultAction: action == "SCMP_ACT_ALLOW" ? "SCMP_ACT_LOG" : "SCMP_ACT_ALLOW"))
        let sim = try BPFSimulator(rule)
        #expect(sim.run(.init("mkdir")) == (try SeccompNames.action(action, errnoRet: nil, field: "")))
        var asDefault = profile(
            [
                .init(
                    names: ["read", "exit_group"],
                    action: action == "SCMP_ACT_ALLOW" ? "SCMP_ACT_LOG" : "SCMP_ACT_ALLOW")
            ], defaultAction: action)
        asDefault.architectures = nil
        #expect(
            try BPFSimulator(try SeccompCompiler.compile(asDefault)).run(.init("mkdir"))
                == (try SeccompNames.action(action, errnoRet: nil, field: "")))
    }

    @Test("unknown names are reported and skipped; the entry's other names stay")
    func unknownNames() throws {
        let withUnknown = try SeccompCompiler.compile(
            profile([.init(names: ["mkdir", "no_such_syscall"], action: "SCMP_ACT_ERRNO")]))
        let without = try SeccompCompiler.compile(profile([.init(names: ["mkdir"], action: "SCMP_ACT_ERRNO")]))
        #expect(withUnknown.unknownSyscalls == ["no_such_syscall"])
        #expect(withUnknown.bpf == without.bpf)
        #expect(try BPFSimulator(withUnknown).run(.init("mkdir")) == SeccompNames.actionErrno | 1)
    }

    @Test("an empty name, or no names, is an error naming the entry")
    func emptyName() {
        #expect(
            compileError(profile([.init(names: ["read", ""], action: "SCMP_ACT_ERRNO")])).contains(
                "linux.seccomp.syscalls[0].names[1]: empty syscall name"))
        #expect(
            compileError(
                profile([.init(names: ["read"], action: "SCMP_ACT_ALLOW"), .init(names: [], action: "SCMP_ACT_ERRNO")])
            ).contains("linux.seccomp.syscalls[1].names: empty"))
    }

    @Test("bad operators, indexes, architectures and flags name their field")
    func badFields() {
        #expect(
            compileError(
                profile([
                    .init(
                        names: ["read"], action: "SCMP_ACT_ERRNO",
                        args: [.init(index: 0, value: 0, op: "SCMP_CMP_BOGUS")])
                ])
            ).contains("syscalls[0].args[0].op: unknown operator \"SCMP_CMP_BOGUS\""))
        #expect(
            compileError(
                profile([
                    .init(
                        names: ["read"], action: "SCMP_ACT_ERRNO", args: [.init(index: 6, value: 0, op: "SCMP_CMP_EQ")])
                ])
            ).contains("syscalls[0].args[0].index"))
        #expect(
            compileError(profile([], architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"])).contains(
                "linux.seccomp.architectures[1]: architecture \"SCMP_ARCH_VAX\" is not known to libseccomp"))
        var flags = profile([])
        flags.flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_BOGUS"]
        #expect(compileError(flags).contains("linux.seccomp.flags[1]: unknown flag"))
    }

    @Test("filter flags map to SECCOMP_FILTER_FLAG_* bits")
    func flags() throws {
        var s = profile([])
        s.flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
        #expect(try SeccompCompiler.compile(s).flags == 7)
        s.flags = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
        #expect(try SeccompCompiler.compile(s).flags == 32)
    }

    @Test("NOTIFY needs listenerPath; with it the filter asks for a listener fd (and TSYNC_ESRCH beside TSYNC)")
    func notify() throws {
        var s = profile([.init(names: ["mkdir"], action: "SCMP_ACT_NOTIFY")])
        #expect(
            compileError(s).contains(
                "linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath"))
        s.listenerPath = "/run/agent.sock"
        let p = try SeccompCompiler.compile(s)
        #expect(p.notifies && p.flags == SeccompNames.flagNewListener)
        #expect(try BPFSimulator(p).run(.init("mkdir")) == SeccompNames.actionNotify)
        s.flags = ["SECCOMP_FILTER_FLAG_TSYNC"]
        #expect(try SeccompCompiler.compile(s).flags == 1 | 8 | 16)
        var meta = profile([])
        meta.listenerMetadata = "x"
        #expect(
            compileError(meta).contains("linux.seccomp.listenerMetadata: listenerMetadata is set without listenerPath"))
    }

    @Test("NOTIFY may not apply to sendmsg, with which the init hands over the listener fd")
    func notifySendmsg() {
        var s = profile([.init(names: ["mkdir", "sendmsg"], action: "SCMP_ACT_NOTIFY")])
        s.listenerPath = "/run/agent.sock"
        #expect(compileError(s).contains("syscalls[0]: SCMP_ACT_NOTIFY cannot apply to sendmsg"))
        var d = profile([.init(names: ["read"], action: "SCMP_ACT_ALLOW")], defaultAction: "SCMP_ACT_NOTIFY")
        d.listenerPath = "/run/agent.sock"
        #expect(
            compileError(d).contains(
                "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY as the default action needs sendmsg named"))
        d.syscalls! += [.init(names: ["sendmsg"], action: "SCMP_ACT_ALLOW")]
        #expect(compileError(d) == "")
    }

    @Test(
        "a rule libseccomp would drop is an error when stricter than the kept unconditional rule, a warning when laxer")
    func shadowing() throws {
        // TIOCSTI denied under an unconditional allow of ioctl: libseccomp keeps only the allow.
        let tiocsti = Seccomp.Arg(index: 1, value: 0xffff_ffff, valueTwo: 0x5412, op: "SCMP_CMP_MASKED_EQ")
        let weaker = profile(
            [
                .init(names: ["ioctl"], action: "SCMP_ACT_ALLOW"),
                .init(names: ["ioctl"], action: "SCMP_ACT_ERRNO", args: [tiocsti]),
            ], defaultAction: "SCMP_ACT_ERRNO", errnoRet: 38)
        #expect(
            compileError(weaker).contains(
                "linux.seccomp.syscalls[1]: the argument-conditional rule for ioctl would be dropped by libseccomp, which keeps only the unconditional rule of linux.seccomp.syscalls[0]"
            ))
        // Two unconditional rules: the more restrictive one applies, whatever the order (libseccomp
        // alone would keep the first).
        for order in [["SCMP_ACT_ALLOW", "SCMP_ACT_KILL_PROCESS"], ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_ALLOW"]] {
            let twice = try SeccompCompiler.compile(
                profile(order.map { .init(names: ["mkdir", "rmdir"], action: $0) }, defaultAction: "SCMP_ACT_ERRNO"))
            #expect(try BPFSimulator(twice).run(.init("mkdir")) == SeccompNames.actionKillProcess)
            #expect(
                twice.warnings.count == 2 && twice.warnings[0].contains("the rule for mkdir is dropped"),
                "\(twice.warnings)")
        }
        // Allowing personality(0) under an unconditional deny only makes the filter stricter.
        let stricter = profile(
            [
                .init(names: ["personality"], action: "SCMP_ACT_ERRNO"),
                .init(
                    names: ["personality"], action: "SCMP_ACT_ALLOW",
                    args: [.init(index: 0, value: 0, op: "SCMP_CMP_EQ")]),
            ], defaultAction: "SCMP_ACT_KILL")
        let p = try SeccompCompiler.compile(stricter)
        #expect(
            p.warnings == [
                "linux.seccomp.syscalls[1]: the argument-conditional rule for personality is dropped: linux.seccomp.syscalls[0] applies to it unconditionally"
            ])
        #expect(try BPFSimulator(p).run(.init("personality", args: [0])) == SeccompNames.actionErrno | 1)
    }

    @Test("a rule with the default action is redundant and skipped, not an error")
    func redundantRule() throws {
        let p = try SeccompCompiler.compile(
            profile([
                .init(names: ["read"], action: "SCMP_ACT_ALLOW"), .init(names: ["mkdir"], action: "SCMP_ACT_ERRNO"),
            ]))
        #expect(try BPFSimulator(p).run(.init("read")) == SeccompNames.actionAllow)
    }

    @Test("the program travels as hex in JSON and comes back equal")
    func codable() throws {
        let p = try SeccompCompiler.compile(profile([.init(names: ["mkdir", "bogus_call"], action: "SCMP_ACT_ERRNO")]))
        let hex = SeccompProgram.hex(p.bpf)
        #expect(hex.count == p.bpf.count * 2)
        #expect(SeccompProgram.bytes(hex: hex) == p.bpf)
        #expect(SeccompProgram.bytes(hex: "abc") == nil && SeccompProgram.bytes(hex: "zz") == nil)
    }
}
