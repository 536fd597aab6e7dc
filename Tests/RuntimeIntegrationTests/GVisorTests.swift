import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// The gVisor backend (securityLevel `high`): the real safespace-runtime and safespace binaries
/// driving the installed runsc, checked from inside the sandbox and from the host.
@Suite(
    "gVisor backend",
    .enabled(if: GVisor.available, "needs root, runsc (apt-get install runsc) and the python rootfs (scripts/setup)"))
struct GVisorTests {
    static let snippet = """
        import os, subprocess
        print(open("/proc/version").read().strip())
        print(subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()[0])
        print(os.getuid(), os.getgid(), os.getgroups())
        """

    @Test("safespace run --security-level high: gVisor's kernel, uid 1000, nothing left behind")
    func cliSnippet() throws {
        let name = "gv-cli-\(UInt32.random(in: 0 ... .max))"
        let r = try Harness.run(
            Harness.cliBinary, ["run", "--security-level", "high", "--name", name, "--", "python3", "-c", Self.snippet])
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        #expect(out.count == 3, "\(r.stdout)")
        // gVisor's sentry answers uname and dmesg itself; the host kernel is 6.x.
        #expect(out.first?.hasPrefix("Linux version 4.4.0") == true, "\(r.stdout)")
        #expect(out.dropFirst().first?.contains("Starting gVisor...") == true, "\(r.stdout)")
        #expect(out.last == "1000 1000 []")
        #expect(GVisor.runscProcesses(name).isEmpty)
        #expect(Harness.leftovers(id: name, root: "/run/safespace").isEmpty)
    }

    @Test(
        "exit codes pass through safespace run: 0, 3 and 137 for SIGKILL",
        arguments: [
            ("raise SystemExit(0)", Int32(0)), ("raise SystemExit(3)", 3), ("import os; os.kill(os.getpid(), 9)", 137),
        ])
    func cliExitCodes(code: String, expected: Int32) throws {
        let r = try Harness.run(Harness.cliBinary, ["run", "--security-level", "high", "--", "python3", "-c", code])
        #expect(r.status == expected, "\(r.stderr)")
    }

    @Test(
        "the OCI annotation llmsafespace.dev/security-level: high picks runsc; run passes exit codes",
        arguments: [
            ("exit 0", Int32(0)), ("exit 3", 3), ("kill -9 $$", 137),
        ])
    func annotation(script: String, expected: Int32) throws {
        let c = try TestContainer(
            "gv-ann", bundle: try GVisor.bundle(["sh", "-c", "head -c 15 /proc/version; echo; " + script]))
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == expected, "\(r.stderr)")
        #expect(r.stdout == "Linux version 4\n")
        #expect(c.leftovers().isEmpty)
        #expect(GVisor.runscProcesses(c.id).isEmpty)
    }

    @Test(
        "gVisor: prestart, createRuntime, poststart and poststop get the state of their lifecycle points (runtime.md#state)"
    )
    func lifecycleHooks() throws {
        try RuntimeHooksTests.checkLifecycleHooks("gv-hooks") { try GVisor.bundle(["sleep", "1000"], edit: $0) }
    }

    @Test(
        "the memory limit holds for the whole sandbox: runsc's sandbox and gofer are in the limited cgroup, and an allocation over it is killed"
    )
    func memoryLimit() throws {
        let limit: Int64 = 128 << 20
        let c = try TestContainer(
            "gv-mem",
            bundle: try GVisor.bundle(["python3", "-c", "b = bytearray(512 << 20); print('survived', len(b))"]) {
                spec in
                spec.linux?.resources = Resources(memory: .init(limit: limit))
            })
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        let pid = try #require(c.pid)
        let dir = try GVisor.memoryCgroup(c)
        #expect(
            try String(contentsOfFile: dir + "/memory.limit_in_bytes", encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines) == "\(limit)")
        let members = lines(try String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8))
        // The sandbox (the container's pid) and the gofer: the host's view of the whole sandbox.
        #expect(members.contains("\(pid)"))
        #expect(members.count >= 2, "\(members)")
        let host = try String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)
        #expect(host.hasPrefix("runsc-sandbox"), "\(host)")
        #expect(try c.delete(force: true).status == 0)

        let r = try c.run(["--keep"])
        #expect(r.status == 137, "out: \(r.stdout) err: \(r.stderr)")
        #expect(!r.stdout.contains("survived"))
        let oom = try String(contentsOfFile: try GVisor.memoryCgroup(c) + "/memory.oom_control", encoding: .utf8)
        #expect(oom.contains("oom_kill 1") || oom.contains("under_oom 0"), "\(oom)")
        #expect(!oom.contains("oom_kill 0"), "\(oom)")
        #expect(try c.delete().status == 0)
        #expect(c.leftovers().isEmpty)
    }

    @Test(
        "kill and delete work on a created container (runsc itself refuses to signal one)",
        arguments: ["kill", "delete", "delete --force", "kill TERM"])
    func killCreated(verb: String) throws {
        let c = try TestContainer("gv-created", bundle: try GVisor.bundle(["sh", "-c", "echo never"]))
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        #expect(c.status == "created")
        switch verb {
        case "kill", "kill TERM":
            let r = try c.rt(["kill", c.id] + (verb == "kill" ? ["KILL"] : ["TERM"]))
            #expect(r.status == 0, "\(r.stderr)")
            #expect(c.waitFor(status: "stopped"))
            #expect(try c.delete().status == 0)
        case "delete":
            #expect(try c.delete().status == 0)
        default:
            #expect(try c.delete(force: true).status == 0)
        }
        #expect(c.state() == nil)
        #expect(c.leftovers().isEmpty)
        #expect(GVisor.runscProcesses(c.id).isEmpty)
    }

    @Test("a created container ignores SIGWINCH and still starts")
    func ignoredSignal() throws {
        let c = try TestContainer("gv-winch", bundle: try GVisor.bundle(["sh", "-c", "sleep 30"]))
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        #expect(try c.rt(["kill", c.id, "WINCH"]).status == 0)
        #expect(c.status == "created")
        #expect(try c.start().status == 0)
        #expect(c.status == "running")
        #expect(try c.rt(["kill", c.id, "KILL"]).status == 0)
        #expect(c.waitFor(status: "stopped"))
        #expect(try c.delete().status == 0)
        #expect(c.leftovers().isEmpty)
    }

    @Test("exec and ps go through runsc: exit codes pass, processes are gVisor's")
    func execAndPs() throws {
        let c = try TestContainer("gv-exec", bundle: try GVisor.bundle(["sleep", "60"]))
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        #expect(try c.start().status == 0)
        let r = try c.rt(["exec", c.id, "sh", "-c", "head -c 15 /proc/version; echo; exit 5"])
        #expect(r.status == 5, "\(r.stderr)")
        #expect(r.stdout == "Linux version 4\n")
        let ps = try c.rt(["ps", "--format", "json", c.id])
        #expect(ps.status == 0, "\(ps.stderr)")
        // The workload is pid 1 of gVisor's own pid namespace: no host pid exists for it.
        #expect((try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [Int]) == [1])
        let table = try c.rt(["ps", c.id])
        #expect(table.stdout.contains("sleep"), "\(table.stdout)")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty)
    }

    @Test("network none: only loopback inside")
    func network() throws {
        let c = try TestContainer(
            "gv-net",
            bundle: try GVisor.bundle(["python3", "-c", "import socket; print([n for _, n in socket.if_nameindex()])"]))
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "['lo']\n")
    }

    @Test("a seccomp profile is enforced inside the sandbox (--oci-seccomp)")
    func seccomp() throws {
        let c = try TestContainer(
            "gv-sec",
            bundle: try GVisor.bundle([
                "python3", "-c",
                "import os\ntry:\n    os.mkdir('/tmp/x'); print('made')\nexcept OSError as e: print(e.errno)",
            ]) { spec in
                spec.linux?.seccomp = Seccomp(
                    defaultAction: "SCMP_ACT_ALLOW",
                    syscalls: [.init(names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO")])
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "1\n")
    }

    /// Prints whether mkdir works, to stdout as `made` or the errno.
    static let mkdirProbe =
        "import os, sys\ntry:\n    os.mkdir(sys.argv[1]); print('made', flush=True)\nexcept OSError as e: print(e.errno, flush=True)"

    @Test(
        "exec into a container whose seccomp profile runsc gives its init only is refused, not run without the profile")
    func execSeccomp() throws {
        // The init reports that the profile holds for it, then waits.
        let c = try TestContainer(
            "gv-exsec",
            bundle: try GVisor.bundle(["python3", "-c", Self.mkdirProbe + "\nimport time; time.sleep(60)", "/tmp/init"])
            { spec in
                spec.linux?.seccomp = Seccomp(
                    defaultAction: "SCMP_ACT_ALLOW",
                    syscalls: [.init(names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO")])
            })
        defer { c.destroy() }
        let out = try Harness.tempDir("gv-exsec-out")
        defer { Harness.cleanup(out) }
        // The init's stdout goes to a file: the created init keeps what create was given.
        let fd = open(out + "/init", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0)
        let cr = try Harness.spawn(
            [Harness.runtimeBinary, "--root", c.root, "create", "--bundle", c.bundle, c.id], inherit: [(fd, 1)])
        close(fd)
        try #require(cr.status == 0, "\(cr.stderr)")
        #expect(try c.start().status == 0)
        #expect(
            Harness.eventually { Self.fileLines(out + "/init") == ["1"] },
            "the init's mkdir: \(Self.fileLines(out + "/init"))")
        let r = try c.rt(["exec", c.id, "python3", "-c", Self.mkdirProbe, "/tmp/exec"])
        #expect(r.status != 0, "exec ran: \(r.stdout)")
        #expect(!r.stdout.contains("made"), "exec ran without the profile: \(r.stdout)")
        #expect(r.stderr.contains("linux.seccomp") && r.stderr.contains("exec is refused"), "\(r.stderr)")
        #expect(c.status == "running")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty)
        #expect(GVisor.runscProcesses(c.id).isEmpty)
    }

    static func fileLines(_ path: String) -> [String] {
        lines((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
    }

    @Test(
        "process.user.umask runsc would not apply is refused at create and at exec, naming the field; 0022 (runsc's own) runs"
    )
    func umask() throws {
        let probe = ["python3", "-c", "import os; m = os.umask(0); print(oct(m))"]
        let refused = try TestContainer("gv-umask", bundle: try GVisor.bundle(probe) { $0.process?.user.umask = 0o077 })
        defer { refused.destroy() }
        let r = try refused.create()
        #expect(r.status != 0)
        #expect(r.stderr.contains("process.user.umask"), "\(r.stderr)")
        #expect(refused.leftovers().isEmpty)
        #expect(GVisor.runscProcesses(refused.id).isEmpty)

        let c = try TestContainer(
            "gv-umask", bundle: try GVisor.bundle(["sleep", "60"]) { $0.process?.user.umask = 0o022 })
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        #expect(try c.start().status == 0)
        let dir = try Harness.tempDir("gv-umask-proc")
        defer { Harness.cleanup(dir) }
        for (mask, expected) in [(UInt32(0o077), nil), (0o022, "0o22")] {
            var process = OCI.Process(user: User(uid: 0, gid: 0, umask: mask), args: probe, cwd: "/")
            process.env = ["PATH=/usr/local/bin:/usr/bin:/bin"]
            try JSONEncoder().encode(process).write(to: URL(fileURLWithPath: dir + "/process.json"))
            let e = try c.rt(["exec", "--process", dir + "/process.json", c.id])
            if let expected {
                #expect(e.status == 0 && e.stdout == expected + "\n", "\(e.stdout) \(e.stderr)")
            } else {
                #expect(e.status != 0 && e.stderr.contains("process.user.umask"), "\(e.stdout) \(e.stderr)")
            }
        }
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty)
    }

    @Test(
        "a control the installed runsc cannot enforce fails create clearly, leaving nothing",
        arguments: [
            ("errnoRet", "errno 38 cannot be enforced"), ("defaultErrnoRet", "errno 38 cannot be enforced"),
            ("action", "SCMP_ACT_LOG is not enforced by runsc"), ("userns", "runsc ignores linux.uidMappings"),
            ("hostnet", "needs a network namespace"), ("hook", "hooks.createContainer"),
            ("rro", "rro (recursive mount attributes) are not enforced by runsc"),
        ])
    func refused(what: String, message: String) throws {
        let c = try TestContainer(
            "gv-refuse",
            bundle: try GVisor.bundle(["true"]) { spec in
                switch what {
                case "errnoRet":
                    spec.linux?.seccomp = Seccomp(
                        defaultAction: "SCMP_ACT_ALLOW",
                        syscalls: [.init(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38)])
                case "defaultErrnoRet":
                    spec.linux?.seccomp = Seccomp(
                        defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: 38,
                        syscalls: [.init(names: ["read"], action: "SCMP_ACT_ALLOW")])
                case "action":
                    spec.linux?.seccomp = Seccomp(defaultAction: "SCMP_ACT_LOG")
                case "userns":
                    spec.linux?.namespaces?.append(Namespace(type: "user"))
                    spec.linux?.uidMappings = [IDMapping(containerID: 0, hostID: 300_000, size: 65536)]
                    spec.linux?.gidMappings = [IDMapping(containerID: 0, hostID: 300_000, size: 65536)]
                case "hostnet":
                    spec.linux?.namespaces?.removeAll { $0.type == "network" }
                case "rro":
                    spec.mounts?.append(
                        Mount(destination: "/data", type: "bind", source: "/tmp", options: ["rbind", "rro"]))
                default:
                    spec.hooks = Hooks(createContainer: [Hook(path: "/bin/true")])
                }
            })
        defer { c.destroy() }
        let r = try c.create()
        #expect(r.status != 0)
        #expect(r.stderr.contains(message), "\(r.stderr)")
        #expect(c.leftovers().isEmpty)
        #expect(GVisor.runscProcesses(c.id).isEmpty)
    }

    @Test(
        "runtime configuration picks high for a RuntimeClass handler: by variable, by --root; an annotation cannot lower it"
    )
    func configuredLevel() throws {
        let dir = try Harness.tempDir("gv-conf")
        defer { Harness.cleanup(dir) }
        let probe = ["sh", "-c", "head -c 15 /proc/version"]
        // SAFESPACE_SECURITY_LEVEL, no annotation.
        let plain = try Harness.pythonBundle(probe) { $0.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" } }
        defer { Harness.cleanup(plain) }
        let id1 = Harness.uniqueID("gv-env")
        let r1 = try GVisor.runtime(
            root: dir + "/root1", ["run", "--bundle", plain, id1], env: ["SAFESPACE_SECURITY_LEVEL": "high"])
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(r1.stdout == "Linux version 4")
        // Without it, the same bundle runs natively (the host's kernel).
        let id0 = Harness.uniqueID("gv-native")
        let r0 = try GVisor.runtime(root: dir + "/root0", ["run", "--bundle", plain, id0], env: [:])
        #expect(r0.status == 0, "\(r0.stderr)")
        #expect(r0.stdout != "Linux version 4")
        // rootSecurityLevels of a configuration file; the bundle says standard, which cannot lower it.
        let root = dir + "/handler-high"
        let config = dir + "/runtime.json"
        try #"{"rootSecurityLevels": {"\#(root)": "high"}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let lowering = try Harness.pythonBundle(probe) { spec in
            spec.annotations = ["llmsafespace.dev/security-level": "standard"]
            spec.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" }
        }
        defer { Harness.cleanup(lowering) }
        let id2 = Harness.uniqueID("gv-root")
        let r2 = try GVisor.runtime(
            root: root, ["run", "--bundle", lowering, id2], env: ["SAFESPACE_RUNTIME_CONFIG": config])
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(r2.stdout == "Linux version 4")
        // A bad value is an error naming where it came from.
        let r3 = try GVisor.runtime(
            root: dir + "/root3", ["run", "--bundle", plain, Harness.uniqueID("gv-bad")],
            env: ["SAFESPACE_SECURITY_LEVEL": "paranoid"])
        #expect(r3.status != 0)
        #expect(r3.stderr.contains("SAFESPACE_SECURITY_LEVEL"), "\(r3.stderr)")
        for (id, r) in [(id0, "/root0"), (id1, "/root1"), (id2, "/handler-high")] {
            #expect(Harness.leftovers(id: id, root: dir + r).isEmpty)
        }
    }

    @Test(
        "a Sandbox with securityLevel high and a field that would weaken it is refused",
        arguments: [
            ("filesystem:\n    readOnlyRoot: false", "spec.filesystem.readOnlyRoot")
        ])
    func weakeningField(body: String, field: String) throws {
        let yaml =
            "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: weak\nspec:\n  runtime: python:3.11\n  securityLevel: high\n  \(body)\n"
        let r = try Harness.run(Harness.cliBinary, ["run", "-f", "-", "--", "true"], stdin: yaml)
        #expect(r.status == 125)
        #expect(r.stderr.contains(field) && r.stderr.contains("weakens securityLevel high"), "\(r.stderr)")
    }
}
