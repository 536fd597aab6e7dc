import Foundation
import LinuxKernel
import OCI
import Runtime
import TestSupport
import Testing

/// create / start / state / kill / delete / run through the CLI: exit codes, signals, statuses,
/// error reporting, and that nothing of a container remains afterwards.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeLifecycleTests {
    // MARK: exit codes

    @Test("`exit 3` makes `run` exit 3 and leaves nothing")
    func exitCode() throws {
        let (r, left) = try Harness.runScript("exit 3", prefix: "exit")
        #expect(r.status == 3, "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("a child killed by SIGSEGV, reported by the shell, makes `run` exit 139")
    func segvReportedByShell() throws {
        let (r, left) = try Harness.runScript("sh -c 'kill -SEGV $$'; exit $?", prefix: "segv")
        #expect(r.status == 139, "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("`kill ID KILL` on a running init makes the waiting `run` exit 137")
    func killedRunExits137() throws {
        let c = try TestContainer("kill9", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        let run = try Harness.Background(Harness.runtimeBinary, ["--root", c.root, "run", "--bundle", c.bundle, c.id])
        defer { run.terminate() }
        try #require(c.waitFor(status: "running"), "container never reached running")
        let k = try c.rt(["kill", c.id, "KILL"])
        #expect(k.status == 0, "\(k.stderr)")
        let r = run.wait()
        #expect(r.status == 137, "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    /// Whether `pid` has a handler for `signal` (/proc/PID/status SigCgt).
    static func catches(_ pid: Int32, _ signal: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
            let mask = UInt64(line.dropFirst("SigCgt:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return false }
        return mask & (1 << UInt64(signal - 1)) != 0
    }

    @Test("SIGTERM to an init that traps it (`trap 'exit 143' TERM`) makes `run` exit 143")
    func trappedTerm() throws {
        let c = try TestContainer(
            "term", bundle: try Harness.busyboxBundle(["sh", "-c", "trap 'exit 143' TERM; sleep 1000 & wait"]))
        defer { c.destroy() }
        let run = try Harness.Background(Harness.runtimeBinary, ["--root", c.root, "run", "--bundle", c.bundle, c.id])
        defer { run.terminate() }
        try #require(c.waitFor(status: "running"))
        let pid = try #require(c.pid)
        try #require(Harness.eventually { Self.catches(pid, SIGTERM) }, "the shell never installed its TERM trap")
        let k = try c.rt(["kill", c.id, "TERM"])
        #expect(k.status == 0, "\(k.stderr)")
        let r = run.wait()
        #expect(r.status == 143, "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: statuses

    @Test("create → created, start → running, exit → stopped; --pid-file holds the init's pid")
    func statuses() throws {
        let c = try TestContainer("status", bundle: try Harness.busyboxBundle(["sh", "-c", "read line; exit 0"]))
        defer { c.destroy() }
        let pidFile = c.root + "/../" + c.id + ".pid"
        defer { Harness.cleanup(pidFile) }
        let cr = try c.create(["--pid-file", pidFile])
        try #require(cr.status == 0, "\(cr.stderr)")
        #expect(c.status == "created")
        let pid = try #require(c.pid)
        #expect(
            try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                == "\(pid)")
        #expect(kill(pid, 0) == 0)
        let st = try c.start()
        #expect(st.status == 0, "\(st.stderr)")
        // stdin is /dev/null, so `read` returns at once and the workload exits.
        #expect(c.waitFor(status: "stopped"))
        #expect((c.state()?["pid"] as? NSNumber)?.intValue == 0)
        let d = try c.delete()
        #expect(d.status == 0, "\(d.stderr)")
        #expect(c.state() == nil)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("`start` of a running container and of a stopped one fail")
    func startTwice() throws {
        let c = try TestContainer("start2", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        let again = try c.start()
        #expect(again.status != 0)
        #expect(again.stderr.contains("running"), "\(again.stderr)")
        #expect(try c.delete().status != 0, "delete without --force of a running container must fail")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: kill

    @Test("kill works on a created (not started) container, which then deletes cleanly")
    func killCreated() throws {
        let c = try TestContainer("killcr", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        let pid = try #require(c.pid)
        let k = try c.rt(["kill", c.id, "KILL"])
        #expect(k.status == 0, "\(k.stderr)")
        #expect(c.waitFor(status: "stopped"))
        let d = try c.delete()
        #expect(d.status == 0, "\(d.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        #expect(Harness.eventually { kill(pid, 0) != 0 || Self.isZombie(pid) })
    }

    @Test(
        "`delete` of a stopped container in the host's PID namespace kills what its workload left behind and leaves nothing"
    )
    func deleteStoppedKillsLeftBehind() throws {
        // Without a PID namespace of its own, the init's exit takes nothing with it: the
        // background sleep stays in the container's cgroup, and only delete can end it.
        let dir = FileManager.default.temporaryDirectory.path + "/ss-leftbehind-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try Harness.busyboxBundle([
            "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $! > /report/pid",
        ]) {
            spec in
            let namespaces = spec.linux?.namespaces?.filter { $0.type != "pid" }
            spec.linux?.namespaces = namespaces
            spec.mounts =
                (spec.mounts ?? []) + [
                    Mount(destination: "/report", type: "bind", source: dir, options: ["rbind", "rw"])
                ]
        }
        let c = try TestContainer("leftbehind", bundle: bundle)
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        try #require(c.waitFor(status: "stopped"))
        let pid = try #require(
            Int32(
                try String(contentsOfFile: dir + "/pid", encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines)))
        #expect(kill(pid, 0) == 0 && !Self.isZombie(pid), "the background sleep \(pid) should outlive the init")
        let d = try c.delete()
        #expect(d.status == 0, "\(d.stderr)")
        #expect(
            Harness.eventually { kill(pid, 0) != 0 || Self.isZombie(pid) },
            "the left-behind sleep \(pid) survived delete")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    static func isZombie(_ pid: Int32) -> Bool {
        ProcStat.read(pid: pid)?.state == "Z"
    }

    @Test("`delete --force` of a created container removes it and everything it held")
    func forceDeleteCreated() throws {
        let c = try TestContainer("delcr", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        let pid = try #require(c.pid)
        #expect(!c.leftovers().isEmpty, "a created container should be visible to leftovers()")
        let d = try c.delete(force: true)
        #expect(d.status == 0, "\(d.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        #expect(kill(pid, 0) != 0 || Self.isZombie(pid))
        #expect(try c.delete(force: true).status == 0, "delete --force of a missing container is not an error")
    }

    @Test("`kill --all ID 9` after the init exited succeeds; plain `kill` then fails with \"container not running\"")
    func killAfterExit() throws {
        let c = try TestContainer("killst", bundle: try Harness.busyboxBundle(["true"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        try #require(c.waitFor(status: "stopped"))
        let all = try c.rt(["kill", "--all", c.id, "9"])
        #expect(all.status == 0, "\(all.stderr)")
        let one = try c.rt(["kill", c.id, "KILL"])
        #expect(one.status != 0)
        #expect(one.stderr.contains("container not running"), "\(one.stderr)")
        let d = try c.delete()
        #expect(d.status == 0, "\(d.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: errors

    @Test("`state` of a missing id fails; --log FILE --log-format json holds an error line saying \"does not exist\"")
    func stateMissingJSONLog() throws {
        let root = try Harness.tempDir("root")
        defer { Harness.cleanup(root) }
        let logFile = root + "/log.json"
        let r = try Harness.run(
            Harness.runtimeBinary,
            ["--root", root, "--log", logFile, "--log-format", "json", "state", "no-such-container"])
        #expect(r.status != 0)
        #expect(r.stdout.isEmpty, "\(r.stdout)")
        let text = try String(contentsOfFile: logFile, encoding: .utf8)
        let last = try #require(lines(text).last, "empty log")
        let obj = try #require(
            try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], "not JSON: \(last)")
        #expect(obj["level"] as? String == "error")
        #expect((obj["msg"] as? String)?.contains("does not exist") == true, "\(last)")
        #expect(obj["time"] is String)
    }

    @Test("without --log, errors go to stderr in runc's text format")
    func stateMissingText() throws {
        let root = try Harness.tempDir("root")
        defer { Harness.cleanup(root) }
        let r = try Harness.spawn([Harness.runtimeBinary, "--root", root, "state", "no-such-container"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("level=error"), "\(r.stderr)")
        #expect(r.stderr.contains("does not exist"), "\(r.stderr)")
    }

    // MARK: cleanup

    @Test("after `run` returns, nothing of the container remains; the cgroup existed while it ran")
    func runLeavesNothing() throws {
        let c = try TestContainer("clean", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        let run = try Harness.Background(Harness.runtimeBinary, ["--root", c.root, "run", "--bundle", c.bundle, c.id])
        defer { run.terminate() }
        try #require(c.waitFor(status: "running"))
        let during = c.leftovers()
        #expect(
            during.contains { $0.hasPrefix("cgroup:") }, "no cgroup named after the container while it runs: \(during)")
        #expect(during.contains { $0.hasPrefix("state:") }, "\(during)")
        try #require(try c.rt(["kill", c.id, "KILL"]).status == 0)
        _ = run.wait()
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("list shows a created container in JSON and no longer after delete")
    func list() throws {
        let c = try TestContainer("list", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        let l = try c.rt(["list", "--format", "json"])
        #expect(l.status == 0, "\(l.stderr)")
        let arr = try JSONSerialization.jsonObject(with: Data(l.stdout.utf8)) as? [[String: Any]]
        #expect(
            arr?.contains { $0["id"] as? String == c.id && $0["status"] as? String == "created" } == true, "\(l.stdout)"
        )
        try #require(try c.delete(force: true).status == 0)
        #expect(!(try c.rt(["list", "-q"]).stdout.contains(c.id)))
    }
}
