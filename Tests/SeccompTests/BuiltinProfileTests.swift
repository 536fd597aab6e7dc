import Foundation
import Testing
@testable import OCI
@testable import Seccomp

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

    @Test("each profile compiles with no unknown name, no dropped rule, native architecture only", arguments: ["default", "python", "node"])
    func compilesCleanly(name: String) throws {
        let (seccomp, program) = try Self.compiled(name)
        #expect(program.unknownSyscalls.isEmpty, "\(program.unknownSyscalls)")
        #expect(program.warnings.isEmpty, "\(program.warnings)")
        #expect(seccomp.architectures == ["SCMP_ARCH_X86_64"])
        #expect(program.instructionCount < 1000, "\(program.instructionCount) instructions")
        let sim = try BPFSimulator(program)
        #expect(sim.run(.init("getpid", arch: SeccompNames.archX86)) == SeccompNames.actionKillProcess, "32-bit calls are killed")
    }

    /// What every profile denies, with the same answers (SeccompProfileTests runs them for real).
    @Test("the denied set is EPERM, clone3 ENOSYS, in every profile", arguments: ["default", "python", "node"])
    func deniedSet(name: String) throws {
        let sim = try BPFSimulator(try Self.compiled(name).1)
        for call in ["mount", "umount2", "ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "keyctl", "add_key",
                     "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "kexec_load",
                     "init_module", "finit_module", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "mount_setattr",
                     "syslog", "open_by_handle_at", "kcmp", "pidfd_getfd"] {
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
    }

    @Test("default: a denylist; syscalls it does not name, newer ones included, are allowed")
    func defaultIsDenylist() throws {
        let (seccomp, program) = try Self.compiled("default")
        #expect(seccomp.defaultAction == "SCMP_ACT_ALLOW")
        let sim = try BPFSimulator(program)
        #expect(sim.run(.init("personality", args: [8])) == Self.allow, "PER_LINUX32")
        #expect(sim.run(.init(nr: 462)) == Self.allow, "mseal")
        #expect(sim.run(.init("socket", args: [17, 3, 0])) == Self.allow, "AF_PACKET: the missing CAP_NET_RAW denies it")
    }

    @Test("python and node: allowlists; socket families and ioctl commands are listed; newer syscalls answer ENOSYS", arguments: ["python", "node"])
    func languageAllowlists(name: String) throws {
        let (seccomp, program) = try Self.compiled(name)
        #expect(seccomp.defaultAction == "SCMP_ACT_ERRNO" && seccomp.defaultErrnoRet == 1)
        let sim = try BPFSimulator(program)
        for family: UInt64 in [1, 2, 10] { #expect(sim.run(.init("socket", args: [family, 1, 0])) == Self.allow, "family \(family)") }
        #expect(sim.run(.init("socket", args: [16, 3, 0])) == Self.allow, "NETLINK_ROUTE")
        #expect(sim.run(.init("socket", args: [16, 3, 9])) == Self.eperm, "NETLINK_AUDIT")
        #expect(sim.run(.init("socket", args: [17, 3, 0])) == Self.eperm, "AF_PACKET")
        #expect(sim.run(.init("socket", args: [38, 5, 0])) == Self.eperm, "AF_ALG")
        for cmd: UInt64 in [0x5401, 0x5413, 0x5421, 0x4004_9409] { #expect(sim.run(.init("ioctl", args: [0, cmd])) == Self.allow, "ioctl \(cmd)") }
        #expect(sim.run(.init("ioctl", args: [0, 0x5423])) == Self.eperm, "TIOCSETD is not listed")
        #expect(sim.run(.init("reboot")) == Self.eperm && sim.run(.init("personality")) == Self.eperm)
        // Newer than every name (quotactl_fd, 443): ENOSYS, so glibc falls back.
        #expect(sim.run(.init("fchmodat2")) == Self.enosys && sim.run(.init("futex_waitv")) == Self.enosys)
        #expect(sim.run(.init(nr: 462)) == Self.enosys, "mseal")
        #expect(sim.run(.init("faccessat2")) == Self.allow && sim.run(.init("close_range")) == Self.allow)
        #expect(sim.run(.init("sendmsg")) == Self.allow, "the runtime hands a NOTIFY listener over with it")
    }
}
