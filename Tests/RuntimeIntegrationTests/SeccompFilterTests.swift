import Foundation
import OCI
import Runtime
import SeccompFilters
import TestSupport
import Testing

/// linux.seccomp compiled and loaded for real: the static C probe (Tests/Probes) reports what
/// the kernel answered inside a busybox container run by `safespace-runtime run`.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct SeccompFilterTests {
    typealias H = SeccompHarness

    @Test("clone3 denied with EPERM breaks pthread_create; with the default profile (ENOSYS) glibc falls back to clone")
    func clone3() throws {
        let (eperm, left1) = try H.runProbe(
            ["thread"], seccomp: H.allowing([.init(names: ["clone3"], action: "SCMP_ACT_ERRNO")]))
        #expect(eperm.status == 0, "\(eperm.stderr)")
        #expect(H.results(eperm.stdout)["thread"] == "EPERM", "\(eperm.stdout)")
        let (enosys, left2) = try H.runProbe(["thread"], seccomp: try H.resolved(H.repo + "/seccomp/default.json"))
        #expect(H.results(enosys.stdout)["thread"] == "ok", "\(enosys.stdout) \(enosys.stderr)")
        #expect(left1.isEmpty && left2.isEmpty, "\(left1) \(left2)")
    }

    /// A fixed set that runs a static binary, largest close_range (436): faccessat2 (439) and
    /// openat2 (437) are newer than every name.
    static let fixedSet = Seccomp(
        defaultAction: "SCMP_ACT_ERRNO",
        syscalls: [
            .init(
                names: [
                    "execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64",
                    "readlink",
                    "getrandom", "mprotect", "mmap", "munmap", "newfstatat", "fstat", "write", "exit_group",
                    "faccessat", "close_range",
                ],
                action: "SCMP_ACT_ALLOW"),
            .init(names: ["mkdir"], action: "SCMP_ACT_ERRNO"),
        ])

    @Test(
        "without faccessat2 in the set, faccessat(AT_EACCESS) still works: faccessat2 gets ENOSYS and glibc falls back")
    func faccessatFallback() throws {
        let (r, left) = try H.runProbe(["faccessat"], seccomp: Self.fixedSet)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(H.results(r.stdout)["faccessat"] == "ok", "\(r.stdout) \(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test(
        "one above the largest named syscall gives ENOSYS; an explicitly denied one EPERM; an unnamed older one the default (EPERM)"
    )
    func enosysAboveHorizon() throws {
        let cases: [(nr: Int, expected: String)] = [(437, "ENOSYS"), (83, "EPERM"), (39, "EPERM")]
        for c in cases {
            let (r, _) = try H.runProbe(["syscall", "\(c.nr)"], seccomp: Self.fixedSet)
            #expect(H.results(r.stdout)["syscall \(c.nr)"] == c.expected, "nr \(c.nr): \(r.stdout) \(r.stderr)")
        }
    }

    @Test(
        "TIOCSTI with MASKED_EQ blocks 0x5412 and 0x5412|1<<32; with plain EQ the high-bit form reaches the kernel (ENOTTY)"
    )
    func tiocsti() throws {
        func rule(_ arg: Seccomp.Arg) -> Seccomp {
            H.allowing([.init(names: ["ioctl"], action: "SCMP_ACT_ERRNO", args: [arg])])
        }
        let masked = rule(.init(index: 1, value: 0xffff_ffff, valueTwo: 0x5412, op: "SCMP_CMP_MASKED_EQ"))
        let plain = rule(.init(index: 1, value: 0x5412, op: "SCMP_CMP_EQ"))
        for (profile, low, high) in [(masked, "EPERM", "EPERM"), (plain, "EPERM", "ENOTTY")] {
            let (a, _) = try H.runProbe(["ioctl", "0x5412"], seccomp: profile)
            let (b, _) = try H.runProbe(["ioctl", "0x100005412"], seccomp: profile)
            #expect(H.results(a.stdout)["ioctl 0x5412"] == low, "\(a.stdout) \(a.stderr)")
            #expect(H.results(b.stdout)["ioctl 0x100005412"] == high, "\(b.stdout) \(b.stderr)")
        }
        // Without a rule, a tty ioctl on /dev/null is the kernel's ENOTTY.
        let (none, _) = try H.runProbe(["ioctl", "0x5412"], seccomp: H.allowing([]))
        #expect(H.results(none.stdout)["ioctl 0x5412"] == "ENOTTY")
    }

    @Test(
        "AF_VSOCK: moby's SCMP_CMP_NE 40 lets 40|1<<32 through (the kernel reads an int); the default profile denies both forms"
    )
    func vsockFamily() throws {
        // The fixed set plus moby's socket rule: allow every family but 40, on all 64 bits.
        var moby = Self.fixedSet
        moby.syscalls!.append(
            .init(names: ["socket"], action: "SCMP_ACT_ALLOW", args: [.init(index: 0, value: 40, op: "SCMP_CMP_NE")]))
        let profile = try H.resolved(H.repo + "/seccomp/default.json")
        for (seccomp, low, high) in [(moby, "EPERM", "ok"), (profile, "EPERM", "EPERM")] {
            let (a, left1) = try H.runProbe(["socket", "40", "1"], seccomp: seccomp)
            let (b, left2) = try H.runProbe(["socket", "0x100000028", "1"], seccomp: seccomp)
            #expect(H.results(a.stdout)["socket 0x28"] == low, "\(a.stdout) \(a.stderr)")
            #expect(H.results(b.stdout)["socket 0x100000028"] == high, "\(b.stdout) \(b.stderr)")
            #expect(left1.isEmpty && left2.isEmpty)
        }
    }

    @Test(
        "a native-only filter kills a 32-bit int 0x80 syscall with SIGSYS (159); with x86 listed the rule applies to it"
    )
    func int80() throws {
        let deny = Seccomp.Syscall(names: ["getpid"], action: "SCMP_ACT_ERRNO", errnoRet: 77)
        let (native, left1) = try H.runProbe(["int80", "20"], seccomp: H.allowing([deny]))
        #expect(native.status == 159, "\(native.status) \(native.stdout) \(native.stderr)")
        let (listed, left2) = try H.runProbe(
            ["int80", "20"], seccomp: H.allowing([deny], architectures: ["SCMP_ARCH_X86"]))
        #expect(listed.status == 0)
        #expect(
            H.results(listed.stdout)["int80"] == "EBADFD",
            "errno 77 from the i386 rule: \(listed.stdout) \(listed.stderr)")
        let (allowed, _) = try H.runProbe(["int80", "20"], seccomp: H.allowing([], architectures: ["SCMP_ARCH_X86"]))
        #expect(H.results(allowed.stdout)["int80"] == "ok", "\(allowed.stdout) \(allowed.stderr)")
        #expect(left1.isEmpty && left2.isEmpty)
    }

    @Test(
        "actions: KILL_PROCESS and KILL kill with SIGSYS, TRAP raises SIGSYS, TRACE without a tracer is ENOSYS, LOG allows",
        arguments: [
            ("SCMP_ACT_KILL_PROCESS", 159, nil), ("SCMP_ACT_KILL", 159, nil), ("SCMP_ACT_KILL_THREAD", 159, nil),
            ("SCMP_ACT_TRAP", 159, nil),
            ("SCMP_ACT_TRACE", 0, "ENOSYS"), ("SCMP_ACT_LOG", 0, "ok"), ("SCMP_ACT_ERRNO", 0, "EPERM"),
        ] as [(String, Int32, String?)])
    func actions(action: String, status: Int32, result: String?) throws {
        // getppid: a syscall the probe does not otherwise make.
        let (r, left) = try H.runProbe(
            ["syscall", "110"], seccomp: H.allowing([.init(names: ["getppid"], action: action)]))
        #expect(r.status == status, "\(action): \(r.status) \(r.stdout) \(r.stderr)")
        if let result { #expect(H.results(r.stdout)["syscall 110"] == result, "\(action): \(r.stdout)") }
        #expect(left.isEmpty, "\(left)")
    }

    @Test("operators on a real argument: MASKED_EQ is value=mask, valueTwo=datum")
    func maskedEqForReal() throws {
        // Deny getppid when bit 4 of its first argument register is set.
        let rule = Seccomp.Syscall(
            names: ["getppid"], action: "SCMP_ACT_ERRNO",
            args: [.init(index: 0, value: 0x10, valueTwo: 0x10, op: "SCMP_CMP_MASKED_EQ")])
        for (arg, expected) in [("0x10", "EPERM"), ("0x1f", "EPERM"), ("0x0f", "ok"), ("0x100000010", "EPERM")] {
            let (r, _) = try H.runProbe(["syscall", "110", arg], seccomp: H.allowing([rule]))
            #expect(H.results(r.stdout)["syscall 110"] == expected, "arg \(arg): \(r.stdout) \(r.stderr)")
        }
    }

    @Test(
        "an unknown name is a warning and skipped, the entry's other names stay; an empty name fails create naming the entry"
    )
    func unknownAndEmptyNames() throws {
        let unknown = H.allowing([.init(names: ["no_such_syscall", "getppid"], action: "SCMP_ACT_ERRNO")])
        let (r, left) = try H.runProbe(["syscall", "110"], seccomp: unknown)
        #expect(r.status == 0)
        #expect(H.results(r.stdout)["syscall 110"] == "EPERM", "\(r.stdout)")
        #expect(r.stderr.contains("no_such_syscall"), "the warning names it: \(r.stderr)")
        let empty = H.allowing([.init(names: ["getppid", ""], action: "SCMP_ACT_ERRNO")])
        let (e, left2) = try H.runProbe(["syscall", "110"], seccomp: empty)
        #expect(e.status != 0)
        #expect(e.stderr.contains("linux.seccomp.syscalls[0].names[1]: empty syscall name"), "\(e.stderr)")
        #expect(left.isEmpty && left2.isEmpty, "\(left) \(left2)")
    }

    @Test(
        "bad profiles fail create with the entry named, and leave nothing behind",
        arguments: [
            (
                Seccomp.Syscall(names: ["getppid"], action: "SCMP_ACT_BOGUS"),
                "linux.seccomp.syscalls[0].action: unknown action"
            ),
            (
                Seccomp.Syscall(names: ["getppid"], action: "SCMP_ACT_ERRNO", errnoRet: 5000),
                "linux.seccomp.syscalls[0].action: errnoRet 5000 is out of range"
            ),
            (
                Seccomp.Syscall(
                    names: ["getppid"], action: "SCMP_ACT_ERRNO",
                    args: [.init(index: 0, value: 1, op: "SCMP_CMP_SIMILAR")]),
                "linux.seccomp.syscalls[0].args[0].op: unknown operator"
            ),
        ])
    func badProfiles(rule: Seccomp.Syscall, message: String) throws {
        let (r, left) = try H.runProbe(["thread"], seccomp: H.allowing([rule]))
        #expect(r.status != 0 && r.stdout.isEmpty)
        #expect(r.stderr.contains(message), "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
        let (arch, left2) = try H.runProbe(["thread"], seccomp: H.allowing([], architectures: ["SCMP_ARCH_PDP11"]))
        // The text log quotes msg as logrus does (Go %q): inner quotes escaped.
        #expect(
            arch.stderr.contains(
                #"linux.seccomp.architectures[0]: architecture \"SCMP_ARCH_PDP11\" is not known to libseccomp"#),
            "\(arch.stderr)")
        #expect(left2.isEmpty, "\(left2)")
    }

    @Test("flags: SECCOMP_FILTER_FLAG_LOG, SPEC_ALLOW and TSYNC load")
    func flags() throws {
        var s = H.allowing([.init(names: ["getppid"], action: "SCMP_ACT_ERRNO")])
        s.flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"]
        let (r, _) = try H.runProbe(["syscall", "110"], seccomp: s)
        #expect(H.results(r.stdout)["syscall 110"] == "EPERM", "\(r.stdout) \(r.stderr)")
    }

    @Test("the compiled filter is cached under the state root and a second create reuses it")
    func cache() throws {
        let s = H.allowing([.init(names: ["getppid"], action: "SCMP_ACT_ERRNO", errnoRet: 13)])
        let c = try TestContainer("cache", bundle: try H.probeBundle(["syscall", "110"], seccomp: s))
        defer { c.destroy() }
        let first = try c.run()
        let files = try FileManager.default.contentsOfDirectory(atPath: c.root + "/.seccomp-cache")
        #expect(files.count == 1 && files[0].hasSuffix(".bin"), "\(files)")
        let second = try c.run()
        #expect(H.results(first.stdout)["syscall 110"] == "EACCES" && first.stdout == second.stdout)
        #expect(try FileManager.default.contentsOfDirectory(atPath: c.root + "/.seccomp-cache") == files)
    }
}
