import Testing
@testable import OCI
@testable import Seccomp

struct CompilerTests {
    func profile(_ syscalls: [Seccomp.Syscall], defaultAction: String = "SCMP_ACT_ALLOW") -> Seccomp {
        var s = Seccomp(defaultAction: defaultAction)
        s.architectures = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        s.syscalls = syscalls
        return s
    }

    @Test("action values follow seccomp.h, with errnoRet in the low 16 bits")
    func actions() throws {
        #expect(try SeccompCompiler.action("SCMP_ACT_ALLOW", errnoRet: nil, field: "f") == 0x7fff_0000)
        #expect(try SeccompCompiler.action("SCMP_ACT_ERRNO", errnoRet: nil, field: "f") == 0x0005_0001)
        #expect(try SeccompCompiler.action("SCMP_ACT_ERRNO", errnoRet: 38, field: "f") == 0x0005_0026)
        #expect(try SeccompCompiler.action("SCMP_ACT_KILL_PROCESS", errnoRet: nil, field: "f") == 0x8000_0000)
        #expect(try SeccompCompiler.action("SCMP_ACT_LOG", errnoRet: nil, field: "f") == 0x7ffc_0000)
        #expect(throws: (any Error).self) { try SeccompCompiler.action("SCMP_ACT_BOGUS", errnoRet: nil, field: "f") }
    }

    @Test("unknown names are reported and skipped; the entry's other names stay")
    func unknownNames() throws {
        let withUnknown = try SeccompCompiler.compile(profile([.init(names: ["mkdir", "no_such_syscall"], action: "SCMP_ACT_ERRNO")]))
        let without = try SeccompCompiler.compile(profile([.init(names: ["mkdir"], action: "SCMP_ACT_ERRNO")]))
        #expect(withUnknown.unknownSyscalls == ["no_such_syscall"])
        #expect(withUnknown.bpf == without.bpf)
        #expect(!without.bpf.isEmpty && without.bpf.count % 8 == 0)
    }

    @Test("an empty name is an error naming the entry")
    func emptyName() {
        #expect {
            try SeccompCompiler.compile(profile([.init(names: ["read", ""], action: "SCMP_ACT_ERRNO")]))
        } throws: { "\($0)".contains("linux.seccomp.syscalls[0].names[1]") }
    }

    @Test("two conditions on one argument compile (as separate rules) instead of failing")
    func repeatedArgument() throws {
        let args = [Seccomp.Arg(index: 0, value: 1, op: "SCMP_CMP_EQ"), Seccomp.Arg(index: 0, value: 2, op: "SCMP_CMP_EQ")]
        let p = try SeccompCompiler.compile(profile([.init(names: ["personality"], action: "SCMP_ACT_ERRNO", args: args)]))
        #expect(!p.bpf.isEmpty)
    }

    @Test("bad operators, indexes, architectures and flags name their field")
    func badFields() {
        func message(_ s: Seccomp) -> String {
            do { _ = try SeccompCompiler.compile(s); return "" } catch { return "\(error)" }
        }
        #expect(message(profile([.init(names: ["read"], action: "SCMP_ACT_ERRNO", args: [.init(index: 0, value: 0, op: "SCMP_CMP_BOGUS")])])).contains("syscalls[0].args[0].op"))
        #expect(message(profile([.init(names: ["read"], action: "SCMP_ACT_ERRNO", args: [.init(index: 6, value: 0, op: "SCMP_CMP_EQ")])])).contains("syscalls[0].args[0].index"))
        var arch = profile([])
        arch.architectures = ["SCMP_ARCH_VAX"]
        #expect(message(arch).contains("architectures[0]"))
        var flags = profile([])
        flags.flags = ["SECCOMP_FILTER_FLAG_BOGUS"]
        #expect(message(flags).contains("flags[0]"))
        #expect(message(profile([.init(names: ["read"], action: "SCMP_ACT_NOTIFY")])).contains("listenerPath"))
    }

    @Test("filter flags map to SECCOMP_FILTER_FLAG_* bits")
    func flags() throws {
        var s = profile([])
        s.flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
        #expect(try SeccompCompiler.compile(s).flags == 6)
    }
}
