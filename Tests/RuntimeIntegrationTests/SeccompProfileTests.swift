import Foundation
import OCI
import Runtime
import SeccompFilters
import TestSupport
import Testing

/// The profiles of seccomp/ and Podman's, with real interpreters: `safespace run` runs the
/// workloads of Tests/Probes (uid 1000, no capabilities, syscall events on: any denial during a
/// workload would be printed), and the probe checks the denied set inside the same profiles.
@Suite(.enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs"))
struct SeccompProfileTests {
    typealias H = SeccompHarness

    /// `safespace run` with its own state root and bundle directory.
    static func safespace(_ args: [String], profileDir: String? = nil) throws -> (
        Harness.Result, root: String, bundles: String
    ) {
        let root = try Harness.tempDir("ssroot")
        let bundles = try Harness.tempDir("ssbundles")
        let extra = ["--root", root, "--bundle-root", bundles] + (profileDir.map { ["--profile-dir", $0] } ?? [])
        let r = try Harness.run(Harness.cliBinary, ["run"] + extra + args)
        return (r, root, bundles)
    }

    /// Nothing of a `safespace run` left: no state, no bundle, no mount.
    static func leftovers(root: String, bundles: String) -> [String] {
        var found = ((try? FileManager.default.contentsOfDirectory(atPath: bundles)) ?? []).filter {
            !$0.hasPrefix(".")
        }.map { "bundle: \($0)" }
        found += ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.map
        { "state: \($0)" }
        if let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) {
            found += mounts.split(separator: "\n").filter { $0.contains(bundles) }.map { "mount: \($0)" }
        }
        Harness.cleanup(root, bundles)
        return found
    }

    static func workload(_ name: String) throws -> String {
        try String(contentsOfFile: H.repo + "/Tests/Probes/" + name, encoding: .utf8)
    }

    static let pythonWorkload = ["--runtime", "python:3.11", "--", "python3", "-c"]
    static let nodeWorkload = ["--runtime", "node:18", "--", "node", "-e"]

    @Test(
        "the Python workload runs under default, python and Podman's profile with nothing denied",
        arguments: ["seccomp/default.json", "seccomp/python.json", H.podmanProfile])
    func pythonWorkload(profile: String) throws {
        let path = profile.hasPrefix("/") ? profile : H.repo + "/" + profile
        try #require(FileManager.default.fileExists(atPath: path), "\(path)")
        let (r, root, bundles) = try Self.safespace(
            ["--seccomp", path] + Self.pythonWorkload + [try Self.workload("workload.py")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("WORKLOAD-OK"), "\(r.stdout)")
        #expect(!r.stderr.contains("seccomp denied"), "a syscall was denied: \(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    @Test(
        "the Node.js workload runs under default, node and Podman's profile with nothing denied",
        .enabled(if: H.hasNodeRootfs, "needs the node rootfs"),
        arguments: ["seccomp/default.json", "seccomp/node.json", H.podmanProfile])
    func nodeWorkload(profile: String) throws {
        let path = profile.hasPrefix("/") ? profile : H.repo + "/" + profile
        try #require(FileManager.default.fileExists(atPath: path), "\(path)")
        let (r, root, bundles) = try Self.safespace(
            ["--seccomp", path] + Self.nodeWorkload + [try Self.workload("workload.js")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("WORKLOAD-OK"), "\(r.stdout)")
        #expect(!r.stderr.contains("seccomp denied"), "a syscall was denied: \(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    /// The denied set, as the probe names it, and what each profile answers.
    static let deniedSet = [
        "mount", "umount2", "ptrace", "process_vm_readv", "unshare", "setns", "keyctl", "add_key", "bpf",
        "perf_event_open",
        "userfaultfd", "io_uring_setup", "kexec_load", "init_module", "pivot_root", "open_tree", "fsopen", "syslog",
        "clone-newuser", "personality-addr-no-randomize", "ioctl-tiocsti", "ioctl-tiocsti-high", "ioctl-tioclinux-high",
        "socket-vsock", "socket-vsock-high", "get_mempolicy",
    ]

    @Test(
        "each profile blocks the denied set (EPERM), and clone3 answers ENOSYS",
        arguments: [
            ("seccomp/default.json", Harness.pythonRootfs), ("seccomp/python.json", Harness.pythonRootfs),
            ("seccomp/node.json", H.nodeRootfs),
        ])
    func deniedSet(profile: String, rootfs: String) throws {
        try #require(FileManager.default.fileExists(atPath: rootfs), "\(rootfs)")
        let seccomp = try H.resolved(H.repo + "/" + profile)
        let edit: (inout Spec) -> Void = { spec in
            spec.linux?.seccomp = seccomp
            spec.mounts!.append(try! H.probeMount())
            // As a sandbox: no capabilities, not root.
            spec.process?.user = User(uid: 1000, gid: 1000)
            spec.process?.capabilities = Capabilities(
                bounding: [], effective: [], inheritable: [], permitted: [], ambient: [])
        }
        let args = ["/mnt/seccomp_probe", "denied"]
        let bundle =
            rootfs == H.nodeRootfs ? try H.nodeBundle(args, edit: edit) : try Harness.pythonBundle(args, edit: edit)
        let c = try TestContainer("denied", bundle: bundle)
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        let results = H.results(r.stdout)
        for name in Self.deniedSet {
            #expect(results[name] == "EPERM", "\(profile): \(name) -> \(results[name] ?? "nothing")")
        }
        #expect(results["clone3"] == "ENOSYS", "\(profile): clone3 -> \(results["clone3"] ?? "nothing")")
        #expect(c.leftovers().isEmpty)
    }

    /// As the probe runs in `deniedSet`: uid 1000, no capabilities, the profile of the file.
    static func asSandbox(_ profile: String) throws -> (inout Spec) -> Void {
        let seccomp = try H.resolved(H.repo + "/" + profile)
        let mount = try H.probeMount()
        return { spec in
            spec.linux?.seccomp = seccomp
            spec.mounts!.append(mount)
            spec.process?.user = User(uid: 1000, gid: 1000)
            spec.process?.capabilities = Capabilities(
                bounding: [], effective: [], inheritable: [], permitted: [], ambient: [])
        }
    }

    @Test(
        "each profile: syscalls newer than it (statmount 457, mseal 462) answer ENOSYS; older ones it does not name (get_mempolicy, tuxcall) EPERM",
        arguments: ["seccomp/default.json", "seccomp/python.json", "seccomp/node.json"])
    func unnamedSyscalls(profile: String) throws {
        let bundle = try Harness.pythonBundle(
            ["/mnt/seccomp_probe", "syscalls", "457", "462", "239", "184"], edit: try Self.asSandbox(profile))
        let c = try TestContainer("unnamed", bundle: bundle)
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        let results = H.results(r.stdout)
        for (nr, expected) in [("457", "ENOSYS"), ("462", "ENOSYS"), ("239", "EPERM"), ("184", "EPERM")] {
            #expect(
                results["syscall \(nr)"] == expected,
                "\(profile): syscall \(nr) -> \(results["syscall \(nr)"] ?? "nothing")")
        }
        #expect(c.leftovers().isEmpty)
    }

    @Test(
        "a standard sandbox (built-in default profile): AF_VSOCK sockets, TIOCSTI with the upper half set and NUMA policy are denied, newer syscalls answer ENOSYS"
    )
    func standardSandboxDenials() throws {
        let script = """
            import ctypes, errno, fcntl, socket
            libc = ctypes.CDLL(None, use_errno=True)
            def show(what, rc):
                print(what, "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()])
            try:
                socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
                print("vsock ok")
            except OSError as e:
                print("vsock", errno.errorcode[e.errno])
            show("vsock-high", libc.syscall(41, ctypes.c_long(40 | 1 << 32), 1, 0))
            show("tiocsti-high", libc.syscall(16, 0, ctypes.c_ulong(0x5412 | 1 << 32), ctypes.c_char_p(b"x")))
            show("get_mempolicy", libc.syscall(239, 0, 0, 0, 0, 0))
            show("statmount", libc.syscall(457, 0, 0, 0, 0))
            show("mseal", libc.syscall(462, 0, 0, 0))
            """
        let (r, root, bundles) = try Self.safespace(Self.pythonWorkload + [script])
        #expect(r.status == 0, "\(r.stderr)")
        let results = H.results(r.stdout)
        for (what, expected) in [
            ("vsock", "EPERM"), ("vsock-high", "EPERM"), ("tiocsti-high", "EPERM"), ("get_mempolicy", "EPERM"),
            ("statmount", "ENOSYS"), ("mseal", "ENOSYS"),
        ] {
            #expect(results[what] == expected, "\(what) -> \(results[what] ?? "nothing"): \(r.stdout) \(r.stderr)")
        }
        // The denials are events; the ENOSYS answers are compatibility, not denials.
        #expect(
            r.stderr.contains("safespace: seccomp denied 4 syscalls: socket (2), get_mempolicy (1), ioctl (1)"),
            "\(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    @Test(
        "a standard sandbox (built-in default profile) runs Python threads, subprocess and pip --version with nothing denied"
    )
    func standardSandboxPython() throws {
        let script = """
            import subprocess, sys, threading
            out = []
            threads = [threading.Thread(target=lambda i=i: out.append(i)) for i in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            assert sorted(out) == [0, 1, 2, 3], out
            assert subprocess.run(["sh", "-c", "echo sub | cat"], capture_output=True, text=True, check=True).stdout == "sub\\n"
            pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True)
            print(pip.stdout.split()[0])
            print("PY-OK")
            """
        let (r, root, bundles) = try Self.safespace(Self.pythonWorkload + [script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("pip\nPY-OK"), "\(r.stdout) \(r.stderr)")
        #expect(!r.stderr.contains("seccomp denied"), "a syscall was denied: \(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    @Test(
        "a standard sandbox (built-in default profile) runs Node.js workers and child processes with nothing denied",
        .enabled(if: H.hasNodeRootfs, "needs the node rootfs"))
    func standardSandboxNode() throws {
        let script = """
            const { Worker } = require('worker_threads');
            const { execFileSync } = require('child_process');
            const w = new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
            w.on('message', (n) => {
              const sub = execFileSync('sh', ['-c', 'echo sub | cat']).toString();
              if (n !== 42 || sub !== 'sub\\n') throw new Error(`${n} ${sub}`);
              require('fs').writeFileSync('/tmp/x', 'y');
              console.log('NODE-OK');
            });
            """
        let (r, root, bundles) = try Self.safespace(Self.nodeWorkload + [script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("NODE-OK"), "\(r.stdout) \(r.stderr)")
        #expect(!r.stderr.contains("seccomp denied"), "a syscall was denied: \(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    @Test("safespace run prints one line of the syscalls it denied, by name and count")
    func eventsSummary() throws {
        let script = """
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            for nr in (165, 165, 101, 250):  # mount twice, ptrace, keyctl
                assert libc.syscall(nr, 0, 0, 0, 0, 0) == -1 and ctypes.get_errno() == 1
            print("denied-as-expected")
            """
        let (r, root, bundles) = try Self.safespace(Self.pythonWorkload + [script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("denied-as-expected"))
        #expect(
            r.stderr.contains("safespace: seccomp denied 4 syscalls: mount (2), keyctl (1), ptrace (1)"), "\(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    @Test(
        "bad profiles: a clear error naming the file and entry, exit 125, no sandbox",
        arguments: [
            ("{not json", "not JSON"),
            (
                #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_DENY"}]}"#,
                "syscalls[0].action: unknown action \"SCMP_ACT_DENY\""
            ),
            (
                #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]}"#,
                "syscalls[0].args[0].op: unknown operator \"SCMP_CMP_ABOUT\""
            ),
            (
                #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99999}]}"#,
                "syscalls[0].action: errnoRet 99999 is out of range"
            ),
            (
                #"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#,
                "architectures[0]: architecture \"SCMP_ARCH_Z80\" is not known to libseccomp"
            ),
            (
                #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].names[0]: empty syscall name"
            ),
        ])
    func badProfile(text: String, message: String) throws {
        let dir = try Harness.tempDir("badprofile")
        defer { Harness.cleanup(dir) }
        let path = dir + "/bad.json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let (r, root, bundles) = try Self.safespace(["--seccomp", path] + Self.pythonWorkload + ["print('ran')"])
        #expect(r.status == 125, "\(r.status) \(r.stderr)")
        #expect(
            r.stderr.contains("spec.securityContext.seccompProfile.localhostProfile: \(path): \(message)"),
            "\(r.stderr)")
        #expect(!r.stdout.contains("ran"))
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)
    }

    @Test("a SandboxProfile named by spec.profileRef brings its seccomp profile; a language mismatch is refused")
    func sandboxProfile() throws {
        let dir = try Harness.tempDir("profiles")
        defer { Harness.cleanup(dir) }
        try FileManager.default.createDirectory(atPath: dir + "/profiles", withIntermediateDirectories: true)
        try
            #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#
            .write(toFile: dir + "/profiles/no-mkdir.json", atomically: true, encoding: .utf8)
        try
            "apiVersion: llmsafespace.dev/v1\nkind: SandboxProfile\nmetadata:\n  name: custom-python\nspec:\n  language: python\n  seccompProfile: profiles/no-mkdir.json\n"
            .write(toFile: dir + "/custom-python.yaml", atomically: true, encoding: .utf8)
        let sandbox = dir + "/sandbox.yaml"
        try "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nspec:\n  profileRef:\n    name: custom-python\n".write(
            toFile: sandbox, atomically: true, encoding: .utf8)
        let script =
            "import os\ntry:\n    os.mkdir('/tmp/d')\nexcept PermissionError as e:\n    print('errno', e.errno)\n"
        let (r, root, bundles) = try Self.safespace(
            ["-f", sandbox, "--runtime", "python:3.11", "--", "python3", "-c", script], profileDir: dir)
        #expect(r.stdout.contains("errno 13"), "\(r.stdout) \(r.stderr)")
        #expect(Self.leftovers(root: root, bundles: bundles).isEmpty)

        let (mismatch, root2, bundles2) = try Self.safespace(
            ["-f", sandbox, "--runtime", "node:18", "--", "node", "-e", "1"], profileDir: dir)
        #expect(mismatch.status == 125)
        #expect(
            mismatch.stderr.contains(
                "spec.profileRef: SandboxProfile custom-python is for python; the sandbox runs node:18"),
            "\(mismatch.stderr)")
        #expect(Self.leftovers(root: root2, bundles: bundles2).isEmpty)

        // The built-in SandboxProfile `python`: python.json, whose allowlist has no reboot(2).
        try "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nspec:\n  profileRef:\n    name: python\n".write(
            toFile: sandbox, atomically: true, encoding: .utf8)
        let reboot =
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.syscall(169, 0, 0, 0, 0), ctypes.get_errno())\n"
        let (builtin, root3, bundles3) = try Self.safespace(
            ["-f", sandbox, "--", "python3", "-c", reboot], profileDir: dir)
        #expect(builtin.stdout.contains("-1 1"), "\(builtin.stdout) \(builtin.stderr)")
        #expect(builtin.stderr.contains("seccomp denied 1 syscall: reboot (1)"), "\(builtin.stderr)")
        #expect(Self.leftovers(root: root3, bundles: bundles3).isEmpty)
    }
}
