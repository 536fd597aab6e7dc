import Foundation
import TestSupport
import Testing

/// Real clients drive `safespace-runtime` through runc's command line: containerd 1.6 (its
/// io.containerd.runc.v2 shim, via `ctr run --runc-binary`) and podman 4.3 (`--runtime`), on an
/// image made here from the python rootfs. Each client also runs the same thing with runc, side by
/// side, so a failure can be told apart from a client or host problem.
///
/// Root only. A test is skipped only when its client is not installed (CI installs them). The
/// suite is serialized: the clients share host paths (/run/containerd/s, /run/containers,
/// /var/lib/containers) that a test removes when it created them.
@Suite(
    "Real clients drive safespace-runtime", .serialized,
    .enabled(if: Harness.isRoot, "needs root: containerd and podman run containers as root"))
struct ClientTests {
    static let image = "local/python:3.11"
    static let script = #"import sys; print("hi"); sys.exit(7)"#

    /// An OCI archive of the python rootfs at `path` (built with scripts/build-rootfs if missing).
    static func pythonImage(at path: String) throws {
        try ClientTools.ensurePythonRootfs()
        try OCIImageArchive.write(rootfs: Harness.pythonRootfs, name: image, to: path)
    }

    /// The runtimes each client runs: ours, and runc (the client's default) when installed.
    static var runtimes: [(label: String, binary: String?)] {
        [("safespace-runtime", Harness.runtimeBinary)] + (ClientTools.runc != nil ? [("runc", nil)] : [])
    }

    // MARK: containerd

    @Test(
        "ctr run --runc-binary: python's stdout and exit code come back through containerd's runc shim",
        .enabled(
            if: ClientTools.hasContainerd,
            "containerd, ctr or containerd-shim-runc-v2 not installed (apt-get install containerd)"))
    func containerdRun() throws {
        let d = try PrivateContainerd()
        defer { d.stop() }
        try d.start()
        try Self.pythonImage(at: d.dir + "/image.tar")
        try d.importImage(d.dir + "/image.tar")
        try? FileManager.default.removeItem(atPath: d.dir + "/image.tar")

        for (label, runtime) in Self.runtimes {
            let id = d.newID("ctr-run")
            let r = try d.ctr(
                ["run", "--rm"] + d.runOptions(runtime: runtime) + [Self.image, id, "python3", "-c", Self.script])
            #expect(r.status == 7, "\(label): ctr run exit status; stderr: \(r.stderr)")
            #expect(r.stdout == "hi\n", "\(label): stdout")
            // The shim exits shortly after `ctr run --rm` returns; then nothing may remain.
            var left: [String] = []
            let clean = ClientTools.eventually(timeout: 10) {
                left = Harness.leftovers(id: id, root: d.runtimeRoot + "/" + d.namespace)
                return left.isEmpty
            }
            #expect(clean, "\(label) left: \(left)")
        }
        // A missing command: containerd reports the runtime's last JSON error line.
        let id = d.newID("ctr-enoent")
        let r = try d.ctr(
            ["run", "--rm"] + d.runOptions(runtime: Harness.runtimeBinary) + [Self.image, id, "/no/such/program"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("/no/such/program"), "the runtime's error should name the program: \(r.stderr)")
    }

    @Test(
        "ctr task exec / ps / kill / metrics on a container run by safespace-runtime",
        .enabled(
            if: ClientTools.hasContainerd,
            "containerd, ctr or containerd-shim-runc-v2 not installed (apt-get install containerd)"))
    func containerdTaskLifecycle() throws {
        let d = try PrivateContainerd()
        defer { d.stop() }
        try d.start()
        try Self.pythonImage(at: d.dir + "/image.tar")
        try d.importImage(d.dir + "/image.tar")
        try? FileManager.default.removeItem(atPath: d.dir + "/image.tar")

        // The init traps SIGTERM (a PID 1 without a handler ignores it) and waits on a child.
        let id = d.newID("ctr-task")
        let initScript = "trap 'echo got-term; exit 42' TERM; sleep 1000 & touch /tmp/ready; wait"
        let run = try ClientProcess(
            ClientTools.ctr!,
            ["-a", d.address, "-n", d.namespace, "run", "--rm"] + d.runOptions(runtime: Harness.runtimeBinary)
                + ["--memory-limit", "104857600", Self.image, id, "sh", "-c", initScript],
            stdout: d.dir + "/run.out", stderr: d.dir + "/run.err")
        defer { run.kill() }
        func exec(_ args: [String], stdin: String? = nil, user: String? = nil, cwd: String? = nil) throws
            -> Harness.Result
        {
            var opts = ["tasks", "exec", "--fifo-dir", d.fifoDir, "--exec-id", "e\(UInt32.random(in: 0..<UInt32.max))"]
            if let user { opts += ["--user", user] }
            if let cwd { opts += ["--cwd", cwd] }
            return try d.ctr(opts + [id] + args, stdin: stdin)
        }
        let ready = ClientTools.eventually(timeout: 30) { (try? exec(["test", "-e", "/tmp/ready"]))?.status == 0 }
        let runErr = (try? String(contentsOfFile: d.dir + "/run.err", encoding: .utf8)) ?? ""
        try #require(
            ready, "container never became ready; ctr run stderr: \(runErr)\ncontainerd log: \(d.log.suffix(2000))")

        // ps: runc ps --format json <id>; the init and its sleep.
        let ps = try d.ctr(["tasks", "ps", id])
        #expect(ps.status == 0, "ctr tasks ps: \(ps.stderr)")
        let pids = ps.stdout.split(separator: "\n").dropFirst().compactMap {
            Int32($0.split(separator: " ").first ?? "")
        }
        let ls = try d.ctr(["tasks", "ls"])
        let initPid = ls.stdout.split(separator: "\n").first { $0.hasPrefix(id + " ") }.flatMap {
            Int32($0.split(separator: " ")[1])
        }
        #expect(
            initPid != nil && pids.contains(initPid!), "ps \(pids) should list the init \(String(describing: initPid))")
        #expect(pids.count >= 2, "ps should list the init and its sleep: \(ps.stdout)")

        // exec: separate stdout / stderr, the exit code, stdin, --user and --cwd.
        let e = try exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(e.status == 3)
        #expect(e.stdout == "out\n")
        #expect(e.stderr.contains("err"))
        let cat = try exec(["cat"], stdin: "hello-stdin\n")
        #expect(cat.status == 0 && cat.stdout == "hello-stdin\n", "exec stdin: \(cat)")
        let who = try exec(["sh", "-c", "id -u; pwd"], user: "1000", cwd: "/tmp")
        #expect(who.stdout == "1000\n/tmp\n", "exec --user 1000 --cwd /tmp: \(who)")
        let missing = try exec(["/no/such/program"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("/no/such/program"), "exec error should name the program: \(missing.stderr)")

        // metrics: the shim reads the container's cgroup (found from the init's pid).
        let metrics = try d.ctr(["tasks", "metrics", id])
        #expect(
            metrics.stdout.contains("memory.limit_in_bytes") && metrics.stdout.contains("104857600"),
            "ctr tasks metrics: \(metrics.stdout) \(metrics.stderr)")

        // kill (SIGTERM to the init): `ctr run` returns the init's exit status.
        let k = try d.ctr(["tasks", "kill", id])
        #expect(k.status == 0, "ctr tasks kill: \(k.stderr)")
        #expect(run.wait(timeout: 30), "ctr run did not return after SIGTERM")
        #expect(run.status == 42)
        let out = (try? String(contentsOfFile: d.dir + "/run.out", encoding: .utf8)) ?? ""
        #expect(out.contains("got-term"), "init output: \(out)")
        var left: [String] = []
        #expect(
            ClientTools.eventually(timeout: 10) {
                left = Harness.leftovers(id: id, root: d.runtimeRoot + "/" + d.namespace)
                return left.isEmpty
            }, "left: \(left)")
    }

    @Test(
        "ctr run -d, task pause/resume, kill --all, task rm on safespace-runtime",
        .enabled(
            if: ClientTools.hasContainerd,
            "containerd, ctr or containerd-shim-runc-v2 not installed (apt-get install containerd)"))
    func containerdDetachedKillAll() throws {
        let d = try PrivateContainerd()
        defer { d.stop() }
        try d.start()
        try Self.pythonImage(at: d.dir + "/image.tar")
        try d.importImage(d.dir + "/image.tar")
        try? FileManager.default.removeItem(atPath: d.dir + "/image.tar")

        let id = d.newID("ctr-detach")
        let r = try d.ctr(
            ["run", "-d"] + d.runOptions(runtime: Harness.runtimeBinary) + [
                Self.image, id, "sh", "-c", "sleep 1000 & sleep 1000",
            ])
        try #require(r.status == 0, "ctr run -d: \(r.stderr)")
        #expect(ClientTools.eventually { d.taskStatus(id) == "RUNNING" })

        // containerd's shim runs `runc pause` / `runc resume` (freezer cgroup).
        let pause = try d.ctr(["tasks", "pause", id])
        #expect(pause.status == 0, "ctr tasks pause: \(pause.stderr)")
        #expect(d.taskStatus(id) == "PAUSED")
        let resume = try d.ctr(["tasks", "resume", id])
        #expect(resume.status == 0, "ctr tasks resume: \(resume.stderr)")
        #expect(ClientTools.eventually { d.taskStatus(id) == "RUNNING" })

        let k = try d.ctr(["tasks", "kill", "--all", "-s", "SIGKILL", id])
        #expect(k.status == 0, "ctr tasks kill --all: \(k.stderr)")
        #expect(
            ClientTools.eventually(timeout: 20) { d.taskStatus(id) == "STOPPED" },
            "status: \(String(describing: d.taskStatus(id)))")
        let rm = try d.ctr(["tasks", "rm", id])
        #expect(rm.status == 0, "ctr tasks rm: \(rm.stderr)")
        let crm = try d.ctr(["containers", "rm", id])
        #expect(crm.status == 0, "ctr containers rm: \(crm.stderr)")
        var left: [String] = []
        #expect(
            ClientTools.eventually(timeout: 10) {
                left = Harness.leftovers(id: id, root: d.runtimeRoot + "/" + d.namespace)
                return left.isEmpty
            }, "left: \(left)")
    }

    // MARK: podman

    /// `--security-opt seccomp=unconfined`: safespace-runtime does not enforce seccomp yet and
    /// refuses a config.json with linux.seccomp (which podman always writes otherwise) with a clear
    /// error rather than run unfiltered. `--cgroup-manager cgroupfs`: there is no systemd cgroup
    /// driver (`--systemd-cgroup` is refused).
    static let unconfined = ["--security-opt", "seccomp=unconfined"]

    @Test(
        "podman --runtime: run (exit code, stdout, tty), exec, kill, wait, rm; runc side by side",
        .enabled(if: ClientTools.hasPodman, "podman not installed (apt-get install podman)"))
    func podman() throws {
        let pm = try PrivatePodman(runtime: Harness.runtimeBinary)
        defer { pm.destroy() }
        try Self.pythonImage(at: pm.dir + "/image.tar")
        let image = try pm.load(pm.dir + "/image.tar")
        try? FileManager.default.removeItem(atPath: pm.dir + "/image.tar")

        for (label, runtime) in Self.runtimes {
            pm.runtime = runtime ?? ClientTools.runc!
            let cidfile = pm.dir + "/cid-\(label)"
            let r = try pm.podman(
                ["run", "--rm", "--cidfile", cidfile] + pm.runOptions + Self.unconfined + [
                    image, "python3", "-c", Self.script,
                ])
            #expect(r.status == 7, "\(label): podman run exit status; stderr: \(r.stderr)")
            #expect(r.stdout == "hi\n", "\(label): stdout")
            let cid = ((try? String(contentsOfFile: cidfile, encoding: .utf8)) ?? "").trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect(!cid.isEmpty)
            if label == "safespace-runtime" && !cid.isEmpty {
                #expect(
                    !FileManager.default.fileExists(atPath: "/run/safespace/" + cid), "state dir left in /run/safespace"
                )
                let cgroups = pm.cgroupParent.children().filter { $0.contains(cid) }
                #expect(cgroups.isEmpty, "container cgroups left: \(cgroups)")
            }
        }
        pm.runtime = Harness.runtimeBinary

        // A terminal: the pty master comes back over podman's --console-socket.
        let tty = try pm.podman(
            ["run", "--rm", "-t"] + pm.runOptions + Self.unconfined + [
                image, "python3", "-c", "import os, sys; print(os.isatty(1)); sys.exit(5)",
            ])
        #expect(tty.status == 5, "podman run -t: \(tty.stderr)")
        #expect(tty.stdout == "True\r\n", "podman run -t stdout: \(tty.stdout.debugDescription)")

        // Detached: exec (runtime exec --process --detach --pid-file), kill, wait, rm.
        let run = try pm.podman(["run", "-d"] + pm.runOptions + Self.unconfined + [image, "sleep", "1000"])
        try #require(run.status == 0, "podman run -d: \(run.stderr)")
        let cid = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let e = try pm.podman(["exec", cid, "sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(e.status == 3 && e.stdout == "out\n" && e.stderr.contains("err"), "podman exec: \(e)")
        let who = try pm.podman(["exec", "-u", "1000", "-w", "/tmp", cid, "sh", "-c", "id -u; pwd"])
        #expect(who.stdout == "1000\n/tmp\n", "podman exec -u -w: \(who)")
        let k = try pm.podman(["kill", cid])
        #expect(k.status == 0, "podman kill: \(k.stderr)")
        let w = try pm.podman(["wait", cid])
        #expect(w.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "137", "podman wait: \(w)")
        let rm = try pm.podman(["rm", cid])
        #expect(rm.status == 0, "podman rm: \(rm.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace/" + cid), "state dir left in /run/safespace")
        #expect(pm.cgroupParent.children().filter { $0.contains(cid) }.isEmpty)
    }

    @Test(
        "podman without seccomp=unconfined: runs, or is refused with an error naming linux.seccomp",
        .enabled(if: ClientTools.hasPodman, "podman not installed (apt-get install podman)"))
    func podmanDefaultSeccomp() throws {
        let pm = try PrivatePodman(runtime: Harness.runtimeBinary)
        defer { pm.destroy() }
        try Self.pythonImage(at: pm.dir + "/image.tar")
        let image = try pm.load(pm.dir + "/image.tar")
        try? FileManager.default.removeItem(atPath: pm.dir + "/image.tar")

        let r = try pm.podman(["run", "--rm"] + pm.runOptions + [image, "python3", "-c", Self.script])
        if r.status == 7 {
            #expect(r.stdout == "hi\n")  // seccomp is supported now
        } else {
            #expect(r.status == 126, "podman reports an OCI runtime error as 126: \(r.stderr)")
            #expect(r.stderr.contains("linux.seccomp"), "the refusal should name linux.seccomp: \(r.stderr)")
        }
        // conmon (in the cgroup parent) exits shortly after `podman run --rm` returns; then
        // nothing may remain.
        var left: [String] = []
        #expect(
            Harness.eventually(timeout: 10) {
                left = pm.cgroupParent.processes()
                return left.isEmpty
            }, "left in the cgroup parent: \(left)")
    }
}
