import Testing

@testable import OCI
@testable import SeccompFilters

/// Syscalls newer than every syscall a profile names return ENOSYS (EnosysStub), checked on the
/// compiled BPF; architectures: native plus the listed ones, anything else kills.
struct EnosysStubTests {
    static let enosys = SeccompNames.actionErrno | 38
    static let eperm = SeccompNames.actionErrno | 1
    static let allow = SeccompNames.actionAllow
    static let kill = SeccompNames.actionKillProcess

    /// Allows a fixed set of syscalls up to rseq (334), denies mkdir explicitly; default EPERM.
    func fixedSet(architectures: [String]? = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]) throws
        -> BPFSimulator
    {
        try BPFSimulator(
            try SeccompCompiler.compile(
                profile(
                    [
                        .init(names: ["read", "write", "exit_group", "faccessat", "rseq"], action: "SCMP_ACT_ALLOW"),
                        .init(names: ["mkdir"], action: "SCMP_ACT_ERRNO"),
                    ], defaultAction: "SCMP_ACT_ERRNO", architectures: architectures)))
    }

    @Test("above the largest named syscall: ENOSYS; a denied or unnamed one below it: EPERM")
    func horizon() throws {
        let sim = try fixedSet()
        #expect(sim.run(.init("rseq")) == Self.allow)
        #expect(sim.run(.init(nr: 335)) == Self.enosys)
        #expect(sim.run(.init("faccessat2")) == Self.enosys)
        #expect(sim.run(.init("clone3")) == Self.enosys)
        #expect(sim.run(.init(nr: 1000)) == Self.enosys)
        #expect(sim.run(.init("mkdir")) == Self.eperm)
        #expect(sim.run(.init("getpid")) == Self.eperm, "unnamed but older than rseq")
    }

    @Test("each architecture has its own horizon; x32 calls (bit 30) are kept apart from x86_64 ones")
    func perArchitecture() throws {
        let sim = try fixedSet()
        // i386: rseq is 386 there.
        #expect(sim.run(.init("rseq", arch: SeccompNames.archX86)) == Self.allow)
        #expect(sim.run(.init(nr: 387, arch: SeccompNames.archX86)) == Self.enosys)
        #expect(sim.run(.init("mkdir", arch: SeccompNames.archX86)) == Self.eperm)
        // x32: numbers with bit 30, horizon at x32 rseq.
        let x32rseq = SeccompNames.syscall("rseq", arch: SeccompNames.archX32)!
        #expect(sim.run(.init(nr: x32rseq, arch: SeccompNames.archX86_64)) == Self.allow)
        #expect(sim.run(.init(nr: x32rseq + 1, arch: SeccompNames.archX86_64)) == Self.enosys)
        #expect(sim.run(.init(nr: 0x4000_0000 | 83, arch: SeccompNames.archX86_64)) == Self.eperm, "x32 mkdir")
    }

    @Test("a native-only filter kills 32-bit and x32 calls; listing x86 makes its rules apply to them")
    func nativeOnly() throws {
        let native = try fixedSet(architectures: nil)
        #expect(native.run(.init("mkdir")) == Self.eperm)
        #expect(native.run(.init("mkdir", arch: SeccompNames.archX86)) == Self.kill)
        #expect(
            native.run(.init(nr: 0x4000_0000 | 83, arch: SeccompNames.archX86_64)) == Self.kill,
            "x32 is not in the filter")
        #expect(
            native.run(.init(nr: 0x4000_0000 | 2000, arch: SeccompNames.archX86_64)) == Self.kill,
            "not ENOSYS: the stub leaves x32 to libseccomp")
        let withX86 = try fixedSet(architectures: ["SCMP_ARCH_X86"])
        #expect(withX86.run(.init("mkdir", arch: SeccompNames.archX86)) == Self.eperm)
        #expect(withX86.run(.init("read", arch: SeccompNames.archX86)) == Self.allow)
        #expect(
            withX86.run(.init(nr: 0, arch: SeccompNames.archX86_64 - 1)) == Self.kill,
            "an architecture not in the filter")
    }

    @Test(
        "no stub when the default already lets newer syscalls through, or already is ENOSYS",
        arguments: [
            ("SCMP_ACT_ALLOW", nil), ("SCMP_ACT_LOG", nil), ("SCMP_ACT_TRACE", nil), ("SCMP_ACT_ERRNO", 38),
        ] as [(String, UInt32?)])
    func noStub(defaultAction: String, errnoRet: UInt32?) throws {
        let rules: [Seccomp.Syscall] = [
            .init(names: ["mkdir"], action: "SCMP_ACT_KILL_PROCESS"), .init(names: ["read"], action: "SCMP_ACT_ALLOW"),
        ]
        let p = try SeccompCompiler.compile(profile(rules, defaultAction: defaultAction, errnoRet: errnoRet))
        let first = try BPFInstruction.decode(p.bpf)
        // libseccomp's program starts with its own architecture load; the stub would add a
        // second one right behind the first jump table.
        #expect(first.filter { $0 == .load(BPFInstruction.offsetArch) }.count == 1)
    }

    @Test("KILL and TRAP defaults get the stub too: newer syscalls answer ENOSYS instead of killing")
    func killDefault() throws {
        let p = try SeccompCompiler.compile(
            profile(
                [.init(names: ["read", "exit_group"], action: "SCMP_ACT_ALLOW")], defaultAction: "SCMP_ACT_KILL_PROCESS"
            ))
        let sim = try BPFSimulator(p)
        #expect(sim.run(.init("clone3")) == Self.enosys)
        #expect(sim.run(.init("mkdir")) == Self.kill)
    }

    @Test("a name libseccomp does not know counts for nothing: its number (if newer) gets ENOSYS")
    func unknownNameIsNewer() throws {
        let p = try SeccompCompiler.compile(
            profile(
                [.init(names: ["read", "write", "exit_group", "mseal"], action: "SCMP_ACT_ALLOW")],
                defaultAction: "SCMP_ACT_ERRNO"))
        #expect(p.unknownSyscalls == ["mseal"])
        #expect(try BPFSimulator(p).run(.init(nr: 462)) == Self.enosys)
    }
}
