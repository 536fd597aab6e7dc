import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// `exec` into a running busybox container: exit codes, detach + pid file, --process, --user,
/// --env, --cwd, and refusal once the container has stopped.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeExecTests {
    /// A started container running `sleep 1000` (with a tmpfs /tmp); `body` gets it.
    func withRunning(_ prefix: String, _ body: (TestContainer) throws -> Void) throws {
        let c = try TestContainer(
            prefix,
            bundle: try Harness.busyboxBundle(["sleep", "1000"]) { spec in
                spec.mounts!.append(
                    Mount(
                        destination: "/tmp", type: "tmpfs", source: "tmpfs",
                        options: ["nosuid", "nodev", "mode=1777", "size=1m"]))
            })
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        try #require(c.status == "running")
        try body(c)
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("`exec ID sh -c 'exit 5'` exits 5")
    func exitStatus() throws {
        try withRunning("exec5") { c in
            let r = try c.rt(["exec", c.id, "sh", "-c", "exit 5"])
            #expect(r.status == 5, "\(r.stderr)")
            #expect(c.status == "running", "the container must survive an exec")
        }
    }

    @Test("exec joins the container: same pid namespace (init is PID 1), same hostname, same cgroup")
    func joinsNamespaces() throws {
        try withRunning("execns") { c in
            let r = try c.rt(["exec", c.id, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo $$"])
            #expect(r.status == 0, "\(r.stderr)")
            let out = lines(r.stdout)
            #expect(out.first == "sleep 1000", "\(r.stdout)")
            #expect(out.dropFirst().first == "safespace")
            #expect(out.last != "1")
        }
    }

    @Test("`exec --detach --pid-file F` writes a live pid that `ps --format json` lists")
    func detachPidFile() throws {
        try withRunning("execd") { c in
            let pidFile = c.root + "/exec.pid"
            let r = try c.rt(["exec", "--detach", "--pid-file", pidFile, c.id, "sleep", "500"])
            #expect(r.status == 0, "\(r.stderr)")
            let text = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(
                in: .whitespacesAndNewlines)
            let pid = try #require(Int32(text), "pid file holds \(text)")
            #expect(kill(pid, 0) == 0, "pid \(pid) is not alive")
            let cmdline = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            #expect(cmdline.hasPrefix("sleep\u{0}500"), "\(cmdline)")
            let ps = try c.rt(["ps", "--format", "json", c.id])
            #expect(ps.status == 0, "\(ps.stderr)")
            let pids = try #require(
                try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [NSNumber], "\(ps.stdout)")
            #expect(pids.map(\.int32Value).contains(pid), "\(ps.stdout)")
            #expect(pids.map(\.int32Value).contains(c.pid ?? -1), "\(ps.stdout)")
        }
    }

    @Test("`exec --process FILE` runs the process object of FILE")
    func processFile() throws {
        try withRunning("execp") { c in
            let file = c.root + "/process.json"
            var p = OCI.Process(
                user: User(uid: 1000, gid: 1000), args: ["sh", "-c", "echo from-file $A $(id -u) $(pwd); exit 7"],
                env: ["PATH=/bin", "A=aa"], cwd: "/tmp")
            p.noNewPrivileges = true
            try JSONEncoder().encode(p).write(to: URL(fileURLWithPath: file))
            let r = try c.rt(["exec", "--process", file, c.id])
            #expect(r.status == 7, "\(r.stderr)")
            #expect(lines(r.stdout) == ["from-file aa 1000 /tmp"], "\(r.stdout)")
        }
    }

    @Test("`exec --user 1000:1000 ID id -u` prints 1000 and has no supplementary groups")
    func user() throws {
        try withRunning("execu") { c in
            let r = try c.rt(["exec", "--user", "1000:1000", c.id, "id", "-u"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout) == ["1000"])
            let g = try c.rt(["exec", "--user", "1000:1000", c.id, "id", "-G"])
            #expect(lines(g.stdout) == ["1000"], "\(g.stdout)")
        }
    }

    @Test("`exec --env A=b` sets the variable, keeping the container's PATH")
    func env() throws {
        try withRunning("exece") { c in
            let r = try c.rt(["exec", "--env", "A=b", c.id, "sh", "-c", "echo A=$A PATH=$PATH"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout) == ["A=b PATH=/bin"])
        }
    }

    @Test("`exec --cwd /tmp ID pwd` prints /tmp")
    func cwd() throws {
        try withRunning("execc") { c in
            let r = try c.rt(["exec", "--cwd", "/tmp", c.id, "pwd"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout) == ["/tmp"])
        }
    }

    @Test("exec gets the container's capabilities and no_new_privs, not the runtime's")
    func execPrivileges() throws {
        try withRunning("execcap") { c in
            let r = try c.rt(["exec", c.id, "grep", "-E", "^(CapEff|CapBnd|NoNewPrivs):", "/proc/self/status"])
            #expect(r.status == 0, "\(r.stderr)")
            // DefaultSpec: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE = bits 29, 5, 10.
            #expect(r.stdout.contains("CapEff:\t0000000020000420"), "\(r.stdout)")
            #expect(r.stdout.contains("CapBnd:\t0000000020000420"), "\(r.stdout)")
            #expect(r.stdout.contains("NoNewPrivs:\t1"), "\(r.stdout)")
        }
    }

    @Test("exec of a missing executable fails naming process.args[0]; the container keeps running")
    func missingExecutable() throws {
        try withRunning("execmiss") { c in
            let r = try c.rt(["exec", c.id, "no-such-command"])
            #expect(r.status != 0)
            #expect(r.stderr.contains("executable file not found"), "\(r.stderr)")
            #expect(c.status == "running")
        }
    }

    @Test("exec in a stopped container fails with \"container not running\"")
    func execStopped() throws {
        let c = try TestContainer("execst", bundle: try Harness.busyboxBundle(["true"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        try #require(c.waitFor(status: "stopped"))
        let r = try c.rt(["exec", c.id, "true"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("not running"), "\(r.stderr)")
        #expect(try c.delete().status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("a detached exec'd process is killed by `delete --force` and leaves nothing")
    func detachedKilledByDelete() throws {
        let c = try TestContainer("execdel", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        let pidFile = c.root + "/../\(c.id).exec.pid"
        defer { Harness.cleanup(pidFile) }
        try #require(try c.rt(["exec", "--detach", "--pid-file", pidFile, c.id, "sleep", "600"]).status == 0)
        let pid = try #require(
            Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(try c.delete(force: true).status == 0)
        #expect(
            Harness.eventually { kill(pid, 0) != 0 || RuntimeLifecycleTests.isZombie(pid) },
            "exec'd pid \(pid) survived delete --force")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
