import OCI
import Testing

@testable import Cgroups

/// Device rules: the v1 model, the v1 writes and the v2 eBPF program, which a tiny interpreter
/// here runs against (type, access, major, minor) requests, so the program is checked without a kernel.
struct DeviceRulesTests {
    typealias Rule = Resources.DeviceCgroup

    /// Runs the subset of eBPF the generator emits; returns r0.
    static func run(_ program: [UInt64], type: UInt32, access: UInt32, major: UInt32, minor: UInt32) -> UInt32 {
        let ctx: [UInt32] = [type | access << 16, major, minor]
        var r = [UInt64](repeating: 0, count: 11)
        var pc = 0
        for _ in 0..<10_000 {
            let i = program[pc]
            let code = UInt8(i & 0xff)
            let dst = Int((i >> 8) & 0xf)
            let src = Int((i >> 12) & 0xf)
            let off = Int(Int16(bitPattern: UInt16((i >> 16) & 0xffff)))
            let imm = UInt32((i >> 32) & 0xffff_ffff)
            pc += 1
            switch code {
            case DeviceFilter.ldxMemW: r[dst] = UInt64(ctx[off / 4])
            case DeviceFilter.alu32AndK: r[dst] = UInt64(UInt32(truncatingIfNeeded: r[dst]) & imm)
            case DeviceFilter.alu32RshK: r[dst] = UInt64(UInt32(truncatingIfNeeded: r[dst]) >> imm)
            case DeviceFilter.alu32MovK: r[dst] = UInt64(imm)
            case DeviceFilter.alu32MovX: r[dst] = UInt64(UInt32(truncatingIfNeeded: r[src]))
            case DeviceFilter.jmpJneK: if r[dst] != UInt64(imm) { pc += off }
            case DeviceFilter.jmpJeqK: if r[dst] == UInt64(imm) { pc += off }
            case DeviceFilter.exit: return UInt32(truncatingIfNeeded: r[0])
            default:
                Issue.record("unknown opcode \(code)")
                return 99
            }
        }
        Issue.record("program did not exit")
        return 99
    }

    static let c: UInt32 = 2, b: UInt32 = 1
    static let r: UInt32 = 2, w: UInt32 = 4, m: UInt32 = 1

    /// v1 semantics, evaluated directly (the reference the program must agree with).
    static func v1Allows(_ rules: DeviceRules, type: Character, access: DeviceRules.Access, major: Int64, minor: Int64)
        -> Bool
    {
        let matching = rules.exceptions.filter {
            $0.type == type && ($0.major == nil || $0.major == major) && ($0.minor == nil || $0.minor == minor)
        }
        if rules.defaultAllow { return !matching.contains { !$0.access.isDisjoint(with: access) } }
        return matching.contains { $0.access.isSuperset(of: access) }
    }

    @Test("a container gets default deny plus null, zero, full, random, urandom, tty, ptmx, pts")
    func defaults() throws {
        let rules = try DeviceRules.effective([Rule(allow: false, access: "rwm")])
        #expect(!rules.defaultAllow)
        let prog = DeviceFilter.program(rules)
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, 0), (136, 7)]
            as [(UInt32, UInt32)]
        {
            #expect(
                Self.run(prog, type: Self.c, access: Self.r | Self.w, major: major, minor: minor) == 1,
                "\(major):\(minor)")
        }
        for (type, major, minor) in [
            (Self.c, 1, 1), (Self.c, 1, 11), (Self.c, 10, 200), (Self.b, 8, 0), (Self.b, 1, 3), (Self.c, 5, 1),
        ] as [(UInt32, UInt32, UInt32)] {
            #expect(
                Self.run(prog, type: type, access: Self.r, major: major, minor: minor) == 0, "\(type) \(major):\(minor)"
            )
        }
        #expect(rules.v1Writes().first?.description == "devices.deny=a")
        #expect(rules.v1Writes().contains { $0.description == "devices.allow=c 136:* rwm" })
        // No spec rules at all: still default deny.
        #expect(try DeviceRules.effective(nil) == rules)
    }

    @Test("spec rules as written, then the defaults, then runtime devices; partial access; allow-all mode")
    func specRules() throws {
        let rules = try DeviceRules.effective(
            [
                Rule(allow: false, access: "rwm"), Rule(allow: true, type: "c", major: 10, minor: 229, access: "rw"),
                Rule(allow: true, type: "b", major: 8, minor: nil, access: "r"),
            ],
            runtimeDevices: [Device(type: "c", path: "/dev/fuse2", major: 10, minor: 230)])
        let prog = DeviceFilter.program(rules)
        #expect(Self.run(prog, type: Self.c, access: Self.r | Self.w, major: 10, minor: 229) == 1)
        #expect(Self.run(prog, type: Self.c, access: Self.m, major: 10, minor: 229) == 0)
        #expect(Self.run(prog, type: Self.b, access: Self.r, major: 8, minor: 3) == 1)
        #expect(Self.run(prog, type: Self.b, access: Self.w, major: 8, minor: 3) == 0)
        #expect(Self.run(prog, type: Self.c, access: Self.m | Self.r | Self.w, major: 10, minor: 230) == 1)
        #expect(rules.v1Writes().map(\.description).contains("devices.allow=c 10:229 rw"))

        // Allow-all with one denied device: the program and the v1 writes agree.
        let open = try DeviceRules.effective([
            Rule(allow: true, access: "rwm"), Rule(allow: false, type: "c", major: 1, minor: 1, access: "w"),
        ])
        #expect(open.defaultAllow)
        let p2 = DeviceFilter.program(open)
        #expect(Self.run(p2, type: Self.c, access: Self.r, major: 1, minor: 1) == 1)
        #expect(Self.run(p2, type: Self.c, access: Self.r | Self.w, major: 1, minor: 1) == 0)
        #expect(Self.run(p2, type: Self.b, access: Self.w, major: 8, minor: 0) == 1)
        #expect(open.v1Writes().map(\.description) == ["devices.allow=a", "devices.deny=c 1:1 w"])
    }

    @Test(
        "a deny-all spec keeps its deny for every device but the default set (linux.devices are not allowed by themselves)"
    )
    func denyAllHolds() throws {
        let kmsg = Device(type: "c", path: "/dev/kmsg", major: 1, minor: 11)
        let rules = try DeviceRules.effective([Rule(allow: false, access: "rwm")], linuxDevices: [kmsg])
        let prog = DeviceFilter.program(rules)
        for access in [Self.r, Self.w, Self.r | Self.w, Self.r | Self.m] {
            #expect(
                Self.run(prog, type: Self.c, access: access, major: 1, minor: 11) == 0, "/dev/kmsg access \(access)")
        }
        // mknod only: the init creates the node from inside the cgroup.
        #expect(Self.run(prog, type: Self.c, access: Self.m, major: 1, minor: 11) == 1)
        #expect(Self.run(prog, type: Self.c, access: Self.r | Self.w, major: 1, minor: 3) == 1, "/dev/null")
        #expect(
            rules.v1Writes().filter { $0.value.hasPrefix("c 1:11") }.map(\.description) == ["devices.allow=c 1:11 m"])
        // An explicit allow in the spec still opens it.
        let allowed = try DeviceRules.effective(
            [Rule(allow: false, access: "rwm"), Rule(allow: true, type: "c", major: 1, minor: 11, access: "rw")],
            linuxDevices: [kmsg])
        #expect(
            Self.run(DeviceFilter.program(allowed), type: Self.c, access: Self.r | Self.w, major: 1, minor: 11) == 1)
    }

    @Test("a deny after an allow of the same device takes its bits back; `a` with a number is c and b")
    func revoke() throws {
        let rules = try DeviceRules.effective([
            Rule(allow: false, access: "rwm"), Rule(allow: true, type: "c", major: 4, minor: 1, access: "rw"),
            Rule(allow: false, type: "c", major: 4, minor: 1, access: "w"),
            Rule(allow: true, type: "a", major: 7, minor: 0, access: "r"),
        ])
        #expect(rules.exceptions.contains { $0.type == "c" && $0.major == 4 && $0.access == .read })
        #expect(rules.exceptions.contains { $0.type == "b" && $0.major == 7 })
        #expect(!rules.v1Writes().contains { $0.value.hasPrefix("a ") })
    }

    @Test("the program agrees with v1 semantics on every request", arguments: [false, true])
    func agreesWithV1(allowAll: Bool) throws {
        let rules = try DeviceRules.effective([
            Rule(allow: allowAll, access: "rwm"), Rule(allow: !allowAll, type: "c", major: 1, minor: nil, access: "rw"),
            Rule(allow: !allowAll, type: "b", major: nil, minor: 2, access: "m"),
            Rule(allow: !allowAll, type: "c", major: 3, minor: 3, access: "r"),
        ])
        let prog = DeviceFilter.program(rules)
        for (t, tc) in [(Self.c, Character("c")), (Self.b, Character("b"))] {
            for major in [1, 3, 136] as [UInt32] {
                for minor in [0, 2, 3, 5] as [UInt32] {
                    for bits in 1...7 as ClosedRange<UInt8> {
                        let want = Self.v1Allows(
                            rules, type: tc, access: .init(rawValue: bits), major: Int64(major), minor: Int64(minor))
                        #expect(
                            Self.run(prog, type: t, access: UInt32(bits), major: major, minor: minor) == (want ? 1 : 0),
                            "\(tc) \(major):\(minor) \(bits)")
                    }
                }
            }
        }
    }

    @Test(
        "bad type or access names the rule",
        arguments: [Rule(allow: true, type: "x"), Rule(allow: true, type: "c", access: "rx")])
    func badRule(rule: Rule) {
        #expect {
            _ = try DeviceRules.effective([rule])
        } throws: { "\($0)".hasPrefix("linux.resources.devices[0].") }
    }
}
