import Testing

@testable import OCI
@testable import SeccompFilters

/// Argument conditions, checked by running the compiled BPF (BPFSimulator) on 64-bit values.
struct ArgumentTests {
    static let eperm = SeccompNames.actionErrno | 1
    static let allow = SeccompNames.actionAllow

    /// A filter that denies getppid(2) when `args` hold for its arguments, else allows.
    func deny(when args: [Seccomp.Arg]) throws -> BPFSimulator {
        try BPFSimulator(
            try SeccompCompiler.compile(profile([.init(names: ["getppid"], action: "SCMP_ACT_ERRNO", args: args)])))
    }

    func denied(_ sim: BPFSimulator, _ values: UInt64...) -> [Bool] {
        values.map { sim.run(.init("getppid", args: [$0, 0])) == Self.eperm }
    }

    @Test(
        "each operator compares the whole 64-bit argument",
        arguments: [
            ("SCMP_CMP_EQ", [false, true, false, false]),
            ("SCMP_CMP_NE", [true, false, true, true]),
            ("SCMP_CMP_LT", [true, false, false, false]),
            ("SCMP_CMP_LE", [true, true, false, false]),
            ("SCMP_CMP_GT", [false, false, true, true]),
            ("SCMP_CMP_GE", [false, true, true, true]),
        ])
    func operators(op: String, expected: [Bool]) throws {
        // Values below, at, above 0x5412, and 0x5412 with bit 32 set.
        let sim = try deny(when: [.init(index: 0, value: 0x5412, op: op)])
        #expect(denied(sim, 0x5411, 0x5412, 0x5413, 0x1_0000_5412) == expected)
    }

    @Test("MASKED_EQ: value is the mask, valueTwo the datum (arg & value == valueTwo)")
    func maskedEq() throws {
        // Namespace flags of clone: deny when any of CLONE_NEWUSER|CLONE_NEWNET is set... written
        // as one bit: mask 0x10000000, datum 0x10000000.
        let sim = try deny(when: [.init(index: 0, value: 0x1000_0000, valueTwo: 0x1000_0000, op: "SCMP_CMP_MASKED_EQ")])
        #expect(
            denied(sim, 0, 0x1000_0000, 0x1000_0011, 0x2000_0000, 0xffff_ffff_ffff_ffff) == [
                false, true, true, false, true,
            ])
        // mask 0xff00, datum 0x5400: any tty ioctl ('T' << 8), whatever the low byte.
        let tty = try deny(when: [.init(index: 0, value: 0xff00, valueTwo: 0x5400, op: "SCMP_CMP_MASKED_EQ")])
        #expect(denied(tty, 0x5401, 0x54ff, 0x5501, 0x1_0000_5412) == [true, true, false, true])
        // A 64-bit mask checks the high word too.
        let wide = try deny(when: [
            .init(index: 0, value: 0xffff_ffff_0000_0000, valueTwo: 0x1_0000_0000, op: "SCMP_CMP_MASKED_EQ")
        ])
        #expect(denied(wide, 0x1_0000_0000, 0x1_0000_5412, 0x2_0000_0000, 0x5412) == [true, true, false, false])
    }

    @Test(
        "TIOCSTI: the masked rule catches 0x5412 | 1<<32 (the kernel truncates the command to 32 bits); plain EQ does not"
    )
    func tiocsti() throws {
        let masked = try BPFSimulator(
            try SeccompCompiler.compile(
                profile([
                    .init(
                        names: ["ioctl"], action: "SCMP_ACT_ERRNO",
                        args: [.init(index: 1, value: 0xffff_ffff, valueTwo: 0x5412, op: "SCMP_CMP_MASKED_EQ")])
                ])))
        let plain = try BPFSimulator(
            try SeccompCompiler.compile(
                profile([
                    .init(
                        names: ["ioctl"], action: "SCMP_ACT_ERRNO",
                        args: [.init(index: 1, value: 0x5412, op: "SCMP_CMP_EQ")])
                ])))
        for cmd: UInt64 in [0x5412, 0x1_0000_5412, 0xffff_ffff_0000_5412] {
            #expect(masked.run(.init("ioctl", args: [0, cmd])) == Self.eperm, "masked \(cmd)")
        }
        #expect(plain.run(.init("ioctl", args: [0, 0x5412])) == Self.eperm)
        #expect(
            plain.run(.init("ioctl", args: [0, 0x1_0000_5412])) == Self.allow, "plain EQ lets the high-bit form through"
        )
        #expect(masked.run(.init("ioctl", args: [0, 0x5401])) == Self.allow)
    }

    @Test("conditions on different arguments are ANDed in one rule")
    func andedAcrossArguments() throws {
        // Podman's socket rule: deny socket(AF_NETLINK, *, NETLINK_AUDIT).
        let sim = try BPFSimulator(
            try SeccompCompiler.compile(
                profile([
                    .init(
                        names: ["socket"], action: "SCMP_ACT_ERRNO",
                        args: [
                            .init(index: 0, value: 16, op: "SCMP_CMP_EQ"), .init(index: 2, value: 9, op: "SCMP_CMP_EQ"),
                        ])
                ])))
        #expect(sim.run(.init("socket", args: [16, 3, 9])) == Self.eperm)
        #expect(sim.run(.init("socket", args: [16, 3, 0])) == Self.allow)
        #expect(sim.run(.init("socket", args: [2, 1, 9])) == Self.allow)
    }

    @Test("a repeated argument index makes each condition a rule of its own (ORed), as runc does")
    func repeatedIndexIsOr() throws {
        let sim = try deny(when: [
            .init(index: 0, value: 1, op: "SCMP_CMP_EQ"), .init(index: 0, value: 2, op: "SCMP_CMP_EQ"),
            .init(index: 1, value: 7, op: "SCMP_CMP_EQ"),
        ])
        #expect(sim.run(.init("getppid", args: [1, 0])) == Self.eperm)
        #expect(sim.run(.init("getppid", args: [2, 0])) == Self.eperm)
        // The condition on arg 1 stands alone too: ORed, not ANDed.
        #expect(sim.run(.init("getppid", args: [3, 7])) == Self.eperm)
        #expect(sim.run(.init("getppid", args: [3, 0])) == Self.allow)
    }
}
