import Foundation
import Testing

@testable import OCI
@testable import SeccompFilters

/// The profiles of seccomp/: they resolve and compile cleanly, and their compiled BPF answers
/// what seccomp/README.md says they do.
struct BuiltinProfileTests {
    static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path + "/seccomp"
    }()

    static let amd64 = SeccompTarget(architecture: "SCMP_ARCH_X86_64", capabilities: [], kernelRelease: "6.1.0")
    static let eperm = SeccompNames.actionErrno | 1
    static let enosys = SeccompNames.actionErrno | 38
    static let allow = SeccompNames.actionAllow

    static func compiled(_ name: String) throws -> (Seccomp, SeccompProgram) {
        let path = directory + "/" + name + ".json"
        let profile = try SeccompProfile.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))), source: path)
        let seccomp = try profile.resolved(for: amd64, source: path)
        return (seccomp, try SeccompCompiler.compile(seccomp))
    }

    @Test(
        "each profile compiles with no unknown name, no dropped rule, native architecture only",
        arguments: ["default", "python", "node"])
    func compilesCleanly(name: String) throws {
        let (seccomp, program) = try Self.compiled(name)
        #expect(program.unknownSyscalls.isEmpty, "\(program.unknownSyscalls)")
        #expect(program.warnings.isEmpty, "\(program.warnings)")
        #expect(seccomp.architectures == ["SCMP_ARCH_X86_64"])
        #expect(program.instructionCount < 1000, "\(program.instructionCount) instructions")
        let sim = try BPFSimulator(program)
        #expect(
            sim.run(.init("getpid", arch: SeccompNames.archX86)) == SeccompNames.actionKillProcess,
            "32-bit calls are killed")
    }

    /// What every profile denies, with the same answers (SeccompProfileTests runs them for real).
    @Test("the denied set is EPERM, clone3 ENOSYS, in every profile", arguments: ["default", "python", "node"])
    func deniedSet(name: String) throws {
        let sim = try BPFSimulator(try Self.compiled(name).1)
        for call in [
            "mount", "umount2", "ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "keyctl",
            "add_key",
            "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "kexec_load",
            "init_module", "finit_module", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "mount_setattr",
            "syslog", "open_by_handle_at", "kcmp", "pidfd_getfd",
        ] {
            #expect(sim.run(.init(call)) == Self.eperm, "\(name): \(call)")
        }
        #expect(sim.run(.init("clone3")) == Self.enosys)
        #expect(sim.run(.init("clone", args: [0x1000_0000 | 17])) == Self.eperm, "CLONE_NEWUSER")
        #expect(sim.run(.init("clone", args: [0x4000_0000 | 17])) == Self.eperm, "CLONE_NEWNET")
        #expect(sim.run(.init("clone", args: [0x0120_0011])) == Self.allow, "fork: CHILD_SETTID|CHILD_CLEARTID|SIGCHLD")
        #expect(sim.run(.init("clone", args: [0x003d_0f00])) == Self.allow, "a thread")
        for cmd: UInt64 in [0x5412, 0x1_0000_5412, 0x541c, 0xffff_ffff_0000_541c] {
            #expect(sim.run(.init("ioctl", args: [0, cmd])) == Self.eperm, "\(name): ioctl \(cmd)")
        }
        #expect(sim.run(.init("ioctl", args: [0, 0x5401])) == Self.allow, "TCGETS")
        #expect(sim.run(.init("personality", args: [0x0040000])) == Self.eperm, "ADDR_NO_RANDOMIZE")
        #expect(sim.run(.init("personality", args: [0x0400000])) == Self.eperm, "READ_IMPLIES_EXEC")
        #expect(sim.run(.init("read")) == Self.allow && sim.run(.init("execve")) == Self.allow)
        for family: UInt64 in [40, 0x1_0000_0028] {
            #expect(sim.run(.init("socket", args: [family, 1, 0])) == Self.eperm, "\(name): AF_VSOCK \(family)")
        }
        #expect(sim.run(.init("socket", args: [2, 1, 0])) == Self.allow, "AF_INET")
        #expect(sim.run(.init("get_mempolicy")) == Self.eperm, "\(name): NUMA policy")
    }

    @Test("default: an allowlist (EPERM); an old syscall it does not name is denied, a newer one answers ENOSYS")
    func defaultIsAllowlist() throws {
        let (seccomp, program) = try Self.compiled("default")
        #expect(seccomp.defaultAction == "SCMP_ACT_ERRNO" && seccomp.defaultErrnoRet == 1)
        let sim = try BPFSimulator(program)
        // Unnamed and older than the newest name (futex_requeue, 456): the default, EPERM. None
        // of them is in moby's default list either (NUMA policy only with CAP_SYS_NICE).
        for call in [
            "get_mempolicy", "mbind", "set_mempolicy", "tuxcall", "security", "sethostname", "name_to_handle_at",
            "modify_ldt",
        ] {
            #expect(sim.run(.init(call)) == Self.eperm, "\(call)")
        }
        // Newer than every name: ENOSYS, so that glibc falls back (statmount, listmount, mseal...).
        for nr: Int32 in [457, 458, 462, 467, 1000] { #expect(sim.run(.init(nr: nr)) == Self.enosys, "syscall \(nr)") }
        #expect(sim.run(.init("futex_requeue")) == Self.allow && sim.run(.init("fchmodat2")) == Self.allow)
        #expect(sim.run(.init("set_mempolicy_home_node")) == Self.eperm)
        for value: UInt64 in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            #expect(sim.run(.init("personality", args: [value])) == Self.allow, "personality \(value)")
        }
        for value: UInt64 in [0x0040000, 0x0400000, 0x1_0000_0000, 0x0100000] {
            #expect(sim.run(.init("personality", args: [value])) == Self.eperm, "personality \(value)")
        }
        #expect(
            sim.run(.init("socket", args: [17, 3, 0])) == Self.allow, "AF_PACKET: the missing CAP_NET_RAW denies it")
    }

    @Test("default: socket(2) for every family but AF_VSOCK, also when the register's upper half is set")
    func defaultSocketFamilies() throws {
        let sim = try BPFSimulator(try Self.compiled("default").1)
        for family: UInt64 in 0..<80 {
            // The families that exist (AF_MAX is 46) but AF_VSOCK.
            let expected = family == 40 || family >= 46 ? Self.eperm : Self.allow
            #expect(sim.run(.init("socket", args: [family, 1, 0])) == expected, "family \(family)")
        }
        // The kernel reads the family as an int: 40 with any upper half is AF_VSOCK.
        for family: UInt64 in [0x1_0000_0028, 0xffff_ffff_0000_0028, 0x8000_0000_0000_0028] {
            #expect(sim.run(.init("socket", args: [family, 1, 0])) == Self.eperm, "family \(family)")
        }
        #expect(
            sim.run(.init("socket", args: [0x1_0000_0002, 1, 0])) == Self.eperm, "no real family has an upper half")
    }

    @Test(
        "the built-in profiles hold no number above 2^53: jq 1.6 (scripts/bench) and other float64 JSON readers would round it",
        arguments: ["default", "python", "node"])
    func numbersSurviveFloat64(name: String) throws {
        let (seccomp, _) = try Self.compiled(name)
        for entry in seccomp.syscalls ?? [] {
            for arg in entry.args ?? [] {
                #expect(arg.value < 1 << 53 && (arg.valueTwo ?? 0) < 1 << 53, "\(entry.names) \(arg)")
            }
        }
    }

    /// The ioctl rules of default.json, as (mask, datum) blocks of the low 32 bits.
    static func ioctlBlocks(_ seccomp: Seccomp) throws -> [(mask: UInt64, datum: UInt64)] {
        try (seccomp.syscalls ?? []).filter { $0.names.contains("ioctl") && $0.action == "SCMP_ACT_ALLOW" }.map {
            entry in
            try #require(entry.names == ["ioctl"] && entry.args?.count == 1)
            let arg = try #require(entry.args?.first)
            try #require(arg.index == 1 && arg.op == "SCMP_CMP_MASKED_EQ", "\(arg)")
            return (arg.value, arg.valueTwo ?? 0)
        }
    }

    @Test("default: the ioctl blocks cover every 32-bit command but TIOCSTI and TIOCLINUX, whatever the upper half")
    func defaultIoctlBlocks() throws {
        let (seccomp, program) = try Self.compiled("default")
        let blocks = try Self.ioctlBlocks(seccomp)
        #expect(!blocks.isEmpty)
        // Each block ignores the upper half (the kernel truncates the command) and is aligned:
        // its mask is contiguous high bits of the low word and its datum has no bit outside it.
        var total: UInt64 = 0
        for b in blocks {
            #expect(b.mask >> 32 == 0 && b.mask != 0, "\(b)")
            let size = (~b.mask & 0xffff_ffff) + 1
            #expect(size & (size - 1) == 0, "mask \(b.mask) is not contiguous")
            #expect(b.datum & ~b.mask == 0, "\(b)")
            total += size
        }
        // Disjoint, and together 2^32 - 2 commands: all but the two that no block holds.
        for (i, a) in blocks.enumerated() {
            for c in blocks[(i + 1)...] {
                let wider = a.mask < c.mask ? a : c
                let narrower = a.mask < c.mask ? c : a
                #expect(narrower.datum & wider.mask != wider.datum, "blocks \(a) and \(c) overlap")
            }
        }
        #expect(total == (1 << 32) - 2)
        for denied: UInt64 in [0x5412, 0x541c] {
            #expect(!blocks.contains { denied & $0.mask == $0.datum }, "\(denied) is in a block")
        }
        // The compiled filter agrees, around the two commands and with upper halves set.
        let sim = try BPFSimulator(program)
        for upper: UInt64 in [0, 1 << 32, 0xffff_ffff << 32, 1 << 63] {
            for low: UInt64 in Array(0x5400...0x5430) + [0, 0x4004_9409, 0x8004_5430, 0xffff_ffff, 0x5412_0000] {
                let expected = low == 0x5412 || low == 0x541c ? Self.eperm : Self.allow
                #expect(sim.run(.init("ioctl", args: [0, upper | low])) == expected, "ioctl \(upper | low)")
            }
        }
    }

    @Test(
        "default: each allowed name is a syscall of x86_64 or aarch64 here, and everything python.json and node.json allow is allowed"
    )
    func defaultCoversLanguages() throws {
        let (seccomp, _) = try Self.compiled("default")
        func allowed(_ s: Seccomp) -> Set<String> {
            Set((s.syscalls ?? []).filter { $0.action == "SCMP_ACT_ALLOW" }.flatMap(\.names))
        }
        // An allowed name that is no syscall here would allow nothing (32-bit-only names resolve
        // to libseccomp's negative pseudo numbers on both).
        for name in allowed(seccomp).sorted() {
            let native = [SeccompNames.archX86_64, 0xC000_00B7 /* AUDIT_ARCH_AARCH64 */].compactMap {
                SeccompNames.syscall(name, arch: $0)
            }.filter { $0 >= 0 }
            #expect(!native.isEmpty, "\(name) is not a syscall of x86_64 or aarch64 in this libseccomp")
        }
        for language in ["python", "node"] {
            let missing = allowed(try Self.compiled(language).0).subtracting(allowed(seccomp))
            #expect(missing.isEmpty, "\(language) allows \(missing.sorted()), default does not")
        }
    }

    @Test(
        "python and node: allowlists; socket families and ioctl commands are listed; newer syscalls answer ENOSYS",
        arguments: ["python", "node"])
    func languageAllowlists(name: String) throws {
        let (seccomp, program) = try Self.compiled(name)
        #expect(seccomp.defaultAction == "SCMP_ACT_ERRNO" && seccomp.defaultErrnoRet == 1)
        let sim = try BPFSimulator(program)
        for family: UInt64 in [1, 2, 10] {
            #expect(sim.run(.init("socket", args: [family, 1, 0])) == Self.allow, "family \(family)")
        }
        #expect(sim.run(.init("socket", args: [16, 3, 0])) == Self.allow, "NETLINK_ROUTE")
        #expect(sim.run(.init("socket", args: [16, 3, 9])) == Self.eperm, "NETLINK_AUDIT")
        #expect(sim.run(.init("socket", args: [17, 3, 0])) == Self.eperm, "AF_PACKET")
        #expect(sim.run(.init("socket", args: [38, 5, 0])) == Self.eperm, "AF_ALG")
        for cmd: UInt64 in [0x5401, 0x5413, 0x5421, 0x4004_9409] {
            #expect(sim.run(.init("ioctl", args: [0, cmd])) == Self.allow, "ioctl \(cmd)")
        }
        #expect(sim.run(.init("ioctl", args: [0, 0x5423])) == Self.eperm, "TIOCSETD is not listed")
        #expect(sim.run(.init("reboot")) == Self.eperm && sim.run(.init("personality")) == Self.eperm)
        // Newer than every name (quotactl_fd, 443): ENOSYS, so glibc falls back.
        #expect(sim.run(.init("fchmodat2")) == Self.enosys && sim.run(.init("futex_waitv")) == Self.enosys)
        #expect(sim.run(.init(nr: 462)) == Self.enosys, "mseal")
        #expect(sim.run(.init("faccessat2")) == Self.allow && sim.run(.init("close_range")) == Self.allow)
        #expect(sim.run(.init("sendmsg")) == Self.allow, "the runtime hands a NOTIFY listener over with it")
    }
}
