import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// A gVisor pod as containerd's CRI lays it out, without containerd: a pod sandbox container in
/// a network namespace of its own (made here with `ip netns`), and containers that name it in
/// `io.kubernetes.cri.sandbox-id` and join its network, ipc and uts namespaces by path.
final class GVisorPodFixture {
    let root: String
    let netns: String
    let sandbox: String
    let sandboxBundle: String
    var sandboxPid: Int32 = -1
    private var bundles: [String] = []
    private var ids: [String] = []

    static let ip = Harness.find("ip")

    init(hostname: String = "gvpod") throws {
        root = try Harness.tempDir("gvpod-root")
        netns = "ssgv\(UInt32.random(in: 0 ... .max))"
        sandbox = Harness.uniqueID("gvpod-sb")
        let ip = try #require(Self.ip, "ip (iproute2) is needed")
        try #require(try Harness.run(ip, ["netns", "add", netns]).status == 0)
        _ = try Harness.run(ip, ["netns", "exec", netns, ip, "link", "set", "lo", "up"])
        let nsPath = "/run/netns/" + netns
        sandboxBundle = try GVisor.bundle(["sleep", "600"]) { spec in
            spec.annotations?["io.kubernetes.cri.container-type"] = "sandbox"
            spec.annotations?["io.kubernetes.cri.sandbox-id"] = "sandbox"
            spec.hostname = hostname
            spec.linux?.namespaces =
                ["pid", "ipc", "uts", "mount"].map { Namespace(type: $0) } + [Namespace(type: "network", path: nsPath)]
        }
        bundles.append(sandboxBundle)
    }

    /// `safespace-runtime --root ROOT ARGS…`
    @discardableResult
    func rt(_ args: [String]) throws -> Harness.Result {
        try Harness.spawn([Harness.runtimeBinary, "--root", root] + args)
    }

    /// Creates and starts the pod sandbox.
    func startSandbox() throws {
        let c = try rt(["create", "--bundle", sandboxBundle, sandbox])
        try #require(c.status == 0, "pod sandbox create: \(c.stderr)")
        let s = try rt(["start", sandbox])
        try #require(s.status == 0, "pod sandbox start: \(s.stderr)")
        sandboxPid = try #require(state(sandbox)?["pid"] as? Int32 ?? (state(sandbox)?["pid"] as? NSNumber)?.int32Value)
    }

    /// A container bundle of the pod: the CRI annotations, the sandbox's namespaces by path.
    func containerBundle(_ args: [String], edit: (inout Spec) -> Void = { _ in }) throws -> String {
        let pid = sandboxPid
        let sandbox = sandbox
        let bundle = try GVisor.bundle(args) { spec in
            spec.annotations?["io.kubernetes.cri.container-type"] = "container"
            spec.annotations?["io.kubernetes.cri.sandbox-id"] = sandbox
            spec.hostname = nil
            spec.linux?.namespaces =
                [Namespace(type: "pid"), Namespace(type: "mount")]
                + [("network", "net"), ("ipc", "ipc"), ("uts", "uts")].map {
                    Namespace(type: $0.0, path: "/proc/\(pid)/ns/\($0.1)")
                }
            edit(&spec)
        }
        bundles.append(bundle)
        return bundle
    }

    func newID(_ prefix: String) -> String {
        let id = Harness.uniqueID(prefix)
        ids.append(id)
        return id
    }

    /// `create` with the container's stdout and stderr in files (the waiter keeps them until
    /// start, so a pipe to this process would not reach EOF at create's exit).
    /// (gVisor writes a host file at offsets of its own per fd: one file for both would be
    /// overwritten.)
    func create(_ id: String, bundle: String) throws -> (Harness.Result, out: String, err: String) {
        let out = root + "/\(id).out"
        let err = root + "/\(id).err"
        let r = try Harness.run(
            "/bin/sh",
            [
                "-c", "exec \"$0\" --root \"$1\" create --bundle \"$2\" \"$3\" >\"$4\" 2>\"$5\"", Harness.runtimeBinary,
                root, bundle, id, out, err,
            ])
        return (r, out, err)
    }

    func state(_ id: String) -> [String: Any]? {
        guard let r = try? rt(["state", id]), r.status == 0 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]
    }

    func status(_ id: String) -> String? { state(id)?["status"] as? String }

    /// The sandbox's v1 memory (or v2) cgroup directory, from its stored state.
    func cgroupDir(_ id: String, controller: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: root + "/" + id + "/state.json"))
        let state = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let dirs = try #require((state["cgroup"] as? [String: Any])?["directories"] as? [String: String])
        return try #require(
            dirs.first { $0.key.split(separator: ",").contains(Substring(controller)) }?.value ?? dirs["unified"])
    }

    func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func leftovers() -> [String] {
        (ids + [sandbox]).flatMap { Harness.leftovers(id: $0, root: root) + GVisor.runscProcesses($0) }
            + (((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").contains(
                "safespace-net-core") ? ["mount: safespace-net-core"] : [])
    }

    func destroy() {
        for id in ids.reversed() { _ = try? rt(["delete", "--force", id]) }
        _ = try? rt(["delete", "--force", sandbox])
        if let ip = Self.ip { _ = try? Harness.run(ip, ["netns", "del", netns]) }
        for b in bundles { Harness.cleanup(b) }
        Harness.cleanup(root)
    }
}

@Suite(
    "gVisor pods: containers run inside their pod's sandbox", .serialized,
    .enabled(
        if: GVisor.available && GVisorPodFixture.ip != nil, "needs root, runsc, ip (iproute2) and the python rootfs"))
struct GVisorPodTests {
    @Test(
        "a pod container: stdio given at create, the sandbox's hostname and network, its exit status through the waiter; nothing left"
    )
    func podContainer() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        #expect(pod.status(pod.sandbox) == "running")

        let bundle = try pod.containerBundle(["sh", "-c", "hostname; uname -r; echo to-stderr >&2; exit 7"])
        let id = pod.newID("gvpod-c")
        let (created, out, err) = try pod.create(id, bundle: bundle)
        #expect(created.status == 0, "\(created.stderr) \(pod.read(err))")
        #expect(pod.status(id) == "created")
        // The container's host process is the waiter, in the container's cgroup.
        let waiter = try #require((pod.state(id)?["pid"] as? NSNumber)?.int32Value)
        #expect(pod.read("/proc/\(waiter)/cmdline").contains("gvisor-wait"))
        #expect(
            pod.read(try pod.cgroupDir(id, controller: "memory") + "/cgroup.procs").split(separator: "\n").contains(
                "\(waiter)"))
        #expect(try pod.rt(["start", id]).status == 0)
        #expect(Harness.eventually { pod.status(id) == "stopped" })
        #expect(
            pod.read(out).split(separator: "\n") == ["gvpod", "4.4.0"], "the stdout create was given: \(pod.read(out))")
        #expect(pod.read(err) == "to-stderr", "the stderr create was given: \(pod.read(err))")
        #expect(pod.status(pod.sandbox) == "running", "the sandbox outlives its container")
        #expect(try pod.rt(["delete", id]).status == 0)

        // run: the waiter is run's child, so the container's exit status comes back.
        let runID = pod.newID("gvpod-r")
        let r = try pod.rt(["run", "--bundle", bundle, runID])
        #expect(r.status == 7, "\(r.stderr)")
        #expect(r.stdout == "gvpod\n4.4.0\n")

        // Two containers of one pod share the sandbox's network stack: one listens on loopback,
        // the other connects.
        let server = try pod.containerBundle([
            "python3", "-c",
            "import socket; s=socket.socket(); s.bind(('127.0.0.1', 7071)); s.listen(1); c,_=s.accept(); c.send(b'pong'); c.close()",
        ])
        let serverID = pod.newID("gvpod-s")
        #expect(try pod.create(serverID, bundle: server).0.status == 0)
        #expect(try pod.rt(["start", serverID]).status == 0)
        let client = try pod.containerBundle([
            "python3", "-c",
            "import socket, time\nfor _ in range(200):\n    try:\n        s=socket.create_connection(('127.0.0.1', 7071)); break\n    except OSError: time.sleep(0.05)\nprint(s.recv(10).decode())",
        ])
        let c = try pod.rt(["run", "--bundle", client, pod.newID("gvpod-cl")])
        #expect(c.status == 0 && c.stdout == "pong\n", "\(c.stdout) \(c.stderr)")

        for id in [runID, serverID] { _ = try pod.rt(["delete", "--force", id]) }
        _ = try pod.rt(["delete", "--force", pod.sandbox])
        #expect(Harness.eventually { pod.leftovers().isEmpty }, "\(pod.leftovers())")
    }

    @Test("the pod's limits hold in the sandbox's cgroup: summed over its containers, restored as they go")
    func limits() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        let memory = try pod.cgroupDir(pod.sandbox, controller: "memory")
        let pids = try pod.cgroupDir(pod.sandbox, controller: "pids")
        let unlimited = pod.read(memory + "/memory.limit_in_bytes")

        let a = try pod.containerBundle(["sleep", "60"]) {
            $0.linux?.resources = Resources(memory: .init(limit: 96 << 20), pids: .init(limit: 300))
        }
        let b = try pod.containerBundle(["sleep", "60"]) {
            $0.linux?.resources = Resources(memory: .init(limit: 64 << 20), pids: .init(limit: 200))
        }
        let ida = pod.newID("gvpod-a")
        let idb = pod.newID("gvpod-b")
        #expect(try pod.create(ida, bundle: a).0.status == 0)
        #expect(pod.read(memory + "/memory.limit_in_bytes") == "\(96 << 20)")
        #expect(pod.read(pids + "/pids.max") == "300")
        #expect(try pod.create(idb, bundle: b).0.status == 0)
        #expect(pod.read(memory + "/memory.limit_in_bytes") == "\(160 << 20)")
        #expect(pod.read(pids + "/pids.max") == "500")

        // update of one container moves the sum.
        let u = try pod.rt(["update", "--memory", "\(32 << 20)", ida])
        #expect(u.status == 0, "\(u.stderr)")
        #expect(pod.read(memory + "/memory.limit_in_bytes") == "\(96 << 20)")

        #expect(try pod.rt(["delete", "--force", ida]).status == 0)
        #expect(pod.read(memory + "/memory.limit_in_bytes") == "\(64 << 20)")
        #expect(try pod.rt(["delete", "--force", idb]).status == 0)
        #expect(pod.read(memory + "/memory.limit_in_bytes") == unlimited)
        #expect(pod.read(pids + "/pids.max") == "max")
    }

    @Test(
        "a pod container that would not be inside its sandbox is refused, naming the field, leaving nothing",
        arguments: [
            ("host-network", "is not the network namespace of pod sandbox"),
            ("own-network", "shares its sandbox's network stack"),
            ("terminal", "process.terminal"),
            ("cpuset", "linux.resources.cpu.cpus"),
            ("unknown-sandbox", "is not a container of this runtime root"),
            ("standard-level", "runs under gVisor; its containers must too"),
            ("pid-join", "only the sandbox's network, ipc and uts namespaces"),
        ])
    func refused(what: String, message: String) throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        let bundle = try pod.containerBundle(["true"]) { spec in
            switch what {
            case "host-network":
                spec.linux!.namespaces = spec.linux!.namespaces!.map {
                    $0.type == "network" ? Namespace(type: "network", path: "/proc/\(getpid())/ns/net") : $0
                }
            case "own-network":
                spec.linux!.namespaces = spec.linux!.namespaces!.map {
                    $0.type == "network" ? Namespace(type: "network") : $0
                }
            case "terminal": spec.process?.terminal = true
            case "cpuset": spec.linux?.resources = Resources(cpu: .init(cpus: "0"))
            case "unknown-sandbox": spec.annotations?["io.kubernetes.cri.sandbox-id"] = "no-such-sandbox"
            case "standard-level": spec.annotations?["llmsafespace.dev/security-level"] = nil
            case "pid-join":
                spec.linux!.namespaces = spec.linux!.namespaces!.map {
                    $0.type == "pid" ? Namespace(type: "pid", path: "/proc/\(pod.sandboxPid)/ns/pid") : $0
                }
            default: break
            }
        }
        let id = pod.newID("gvpod-x")
        let (r, _, err) = try pod.create(id, bundle: bundle)
        #expect(r.status != 0)
        #expect(pod.read(err).contains(message), "\(what): \(pod.read(err))")
        #expect(Harness.leftovers(id: id, root: pod.root).isEmpty, "\(Harness.leftovers(id: id, root: pod.root))")
        #expect(pod.status(pod.sandbox) == "running")
    }

    @Test("pause of one pod container is refused: it shares the sandbox's kernel")
    func pauseRefused() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        let id = pod.newID("gvpod-p")
        #expect(try pod.create(id, bundle: try pod.containerBundle(["sleep", "60"])).0.status == 0)
        #expect(try pod.rt(["start", id]).status == 0)
        let r = try pod.rt(["pause", id])
        #expect(r.status != 0 && r.stderr.contains("pause the pod sandbox"), "\(r.stderr)")
        #expect(pod.status(id) == "running")
    }

    // The old-runsc workaround hides /proc/sys/net/core from runsc, which disables runsc's own
    // guard against the host's network namespace; the runtime's own check must hold instead.
    @Test(
        "security: a gVisor sandbox is never given the host's network namespace by path (runsc's own guard is worked around)"
    )
    func hostNetnsRefused() throws {
        // The test's own network namespace (the host's), by pid and as the runtime's /proc/self.
        for path in ["/proc/\(getpid())/ns/net", "/proc/self/ns/net"] {
            let c = try TestContainer(
                "gv-hostnet",
                bundle: try GVisor.bundle(["true"]) { spec in
                    spec.linux!.namespaces = spec.linux!.namespaces!.map {
                        $0.type == "network" ? Namespace(type: "network", path: path) : $0
                    }
                })
            defer { c.destroy() }
            let r = try c.create()
            #expect(r.status != 0)
            #expect(r.stderr.contains("is the host's network namespace"), "\(path): \(r.stderr)")
            #expect(c.leftovers().isEmpty && GVisor.runscProcesses(c.id).isEmpty)
        }
    }

    @Test(
        "a pod sandbox in a network namespace gets its interfaces; the net.core workaround leaves no mount on the host")
    func sandboxNetwork() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        let ip = try #require(GVisorPodFixture.ip)
        let veth = "ssgv\(UInt16.random(in: 0 ... .max))"
        try #require(
            try Harness.run(ip, ["link", "add", veth, "type", "veth", "peer", "name", veth + "p", "netns", pod.netns])
                .status == 0)
        defer { _ = try? Harness.run(ip, ["link", "del", veth]) }
        _ = try Harness.run(ip, ["netns", "exec", pod.netns, ip, "addr", "add", "10.251.7.2/24", "dev", veth + "p"])
        _ = try Harness.run(ip, ["netns", "exec", pod.netns, ip, "link", "set", veth + "p", "up"])
        try pod.startSandbox()
        let r = try pod.rt([
            "run", "--bundle",
            try pod.containerBundle([
                "python3", "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))",
            ]), pod.newID("gvpod-n"),
        ])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("'\(veth)p'"), "the pod's interface inside gVisor: \(r.stdout)")
        #expect(!(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)).contains("safespace-net-core"))
        // runsc got the namespace the runtime opened and checked, not the path (which could
        // be swapped for the host's between the check and runsc's open).
        let runscConfig = try Data(
            contentsOf: URL(fileURLWithPath: pod.root + "/" + pod.sandbox + "/bundle/config.json"))
        let runscSpec = try JSONDecoder().decode(Spec.self, from: runscConfig)
        let given = runscSpec.linux?.namespaces?.first { $0.type == "network" }?.path ?? ""
        #expect(given.hasPrefix("/proc/") && given.contains("/fd/"), "runsc's network namespace path: \(given)")
    }

    // Found by attacking the pod support: each of these hung, leaked or ran weaker before.

    @Test("a sandbox-id naming a container not created as a pod sandbox, or a sandbox not yet started, is refused")
    func sandboxMustBeAPodSandbox() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        // Created, not started: runsc would kill the whole sandbox on the container's start.
        let c = try pod.rt(["create", "--bundle", pod.sandboxBundle, pod.sandbox])
        try #require(c.status == 0, "\(c.stderr)")
        pod.sandboxPid = try #require((pod.state(pod.sandbox)?["pid"] as? NSNumber)?.int32Value)
        let bundle = try pod.containerBundle(["true"])
        let early = pod.newID("gvpod-early")
        let (r1, _, e1) = try pod.create(early, bundle: bundle)
        #expect(r1.status != 0 && pod.read(e1).contains("is created, not running"), "\(pod.read(e1))")
        #expect(Harness.leftovers(id: early, root: pod.root).isEmpty)
        #expect(try pod.rt(["start", pod.sandbox]).status == 0)

        // A standalone gVisor container (booted without --oci-seccomp for its pod's profiles).
        let alone = try TestContainer("gv-alone", bundle: try GVisor.bundle(["sleep", "60"]))
        defer {
            _ = try? pod.rt(["delete", "--force", alone.id])
            alone.destroy()
        }
        _ = try Harness.run(
            "/bin/sh",
            [
                "-c", "exec \"$0\" --root \"$1\" create --bundle \"$2\" \"$3\" >/dev/null 2>&1", Harness.runtimeBinary,
                pod.root, alone.bundle, alone.id,
            ])
        #expect(try pod.rt(["start", alone.id]).status == 0)
        let intoAlone = try pod.containerBundle(["true"]) { $0.annotations?["io.kubernetes.cri.sandbox-id"] = alone.id }
        let x = pod.newID("gvpod-alone")
        let (r2, _, e2) = try pod.create(x, bundle: intoAlone)
        #expect(r2.status != 0 && pod.read(e2).contains("was not created as a pod sandbox"), "\(pod.read(e2))")
        #expect(try pod.rt(["delete", "--force", alone.id]).status == 0)
    }

    @Test(
        "while the pod sandbox is paused its containers report paused and refuse kill, ps, exec, start and delete instead of hanging"
    )
    func pausedSandbox() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        let running = pod.newID("gvpod-run")
        let created = pod.newID("gvpod-cr")
        #expect(try pod.create(running, bundle: try pod.containerBundle(["sleep", "60"])).0.status == 0)
        #expect(try pod.rt(["start", running]).status == 0)
        #expect(try pod.create(created, bundle: try pod.containerBundle(["true"])).0.status == 0)
        #expect(try pod.rt(["pause", pod.sandbox]).status == 0)
        #expect(pod.status(running) == "paused")
        for args in [
            ["kill", running, "KILL"], ["ps", running], ["exec", running, "true"], ["delete", "--force", running],
            ["start", created],
        ] {
            let r = try pod.rt(args)
            #expect(
                r.status != 0 && (r.stderr.contains("paused") || r.stderr.contains("not running")),
                "\(args): \(r.stderr)")
        }
        #expect(try pod.rt(["resume", pod.sandbox]).status == 0)
        #expect(pod.status(running) == "running")
        #expect(try pod.rt(["delete", "--force", running]).status == 0)
        #expect(try pod.rt(["start", created]).status == 0)
    }

    @Test(
        "a container whose start failed is deleted promptly with its gofer and every cgroup; one whose sandbox ended before start stops"
    )
    func failedStartAndDeadSandbox() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        let bad = pod.newID("gvpod-bad")
        #expect(try pod.create(bad, bundle: try pod.containerBundle(["/no/such/program"])).0.status == 0)
        let start = try pod.rt(["start", bad])
        #expect(start.status != 0 && start.stderr.contains("/no/such/program"), "\(start.stderr)")
        #expect(try pod.rt(["delete", "--force", bad]).status == 0)
        #expect(
            Harness.eventually(timeout: 30) { Harness.leftovers(id: bad, root: pod.root).isEmpty },
            "\(Harness.leftovers(id: bad, root: pod.root))")

        // The sandbox ends while a container is still created: its waiter goes, status stopped.
        let orphan = pod.newID("gvpod-orphan")
        #expect(try pod.create(orphan, bundle: try pod.containerBundle(["true"])).0.status == 0)
        #expect(pod.status(orphan) == "created")
        #expect(try pod.rt(["kill", pod.sandbox, "KILL"]).status == 0)
        #expect(Harness.eventually(timeout: 10) { pod.status(orphan) == "stopped" })
        #expect(try pod.rt(["delete", orphan]).status == 0)
        #expect(try pod.rt(["delete", "--force", pod.sandbox]).status == 0)
        #expect(Harness.eventually { pod.leftovers().isEmpty }, "\(pod.leftovers())")
    }

    @Test(
        "limits: containers with and without swap mix, shares return to the default, a pids sum past the kernel's maximum is unlimited"
    )
    func limitEdges() throws {
        let pod = try GVisorPodFixture()
        defer { pod.destroy() }
        try pod.startSandbox()
        let cpu = try pod.cgroupDir(pod.sandbox, controller: "cpu")
        let pidsDir = try pod.cgroupDir(pod.sandbox, controller: "pids")
        let shares = pod.read(cpu + "/cpu.shares")
        let a = try pod.containerBundle(["sleep", "60"]) {
            $0.linux?.resources = Resources(
                memory: .init(limit: 96 << 20, swap: 96 << 20), cpu: .init(shares: 4096), pids: .init(limit: 3_000_000))
        }
        let b = try pod.containerBundle(["sleep", "60"]) {
            $0.linux?.resources = Resources(memory: .init(limit: 64 << 20), pids: .init(limit: 3_000_000))
        }
        let ida = pod.newID("gvpod-sa")
        let idb = pod.newID("gvpod-sb")
        let (ra, _, ea) = try pod.create(ida, bundle: a)
        #expect(ra.status == 0, "\(pod.read(ea))")
        #expect(pod.read(cpu + "/cpu.shares") == "4096", "the sandbox sets none of its own (was \(shares))")
        let (rb, _, eb) = try pod.create(idb, bundle: b)
        #expect(rb.status == 0, "\(pod.read(eb))")
        #expect(pod.read(pidsDir + "/pids.max") == "max")
        #expect(try pod.rt(["delete", "--force", ida]).status == 0)
        #expect(try pod.rt(["delete", "--force", idb]).status == 0)
        #expect(pod.read(cpu + "/cpu.shares") == "1024")
    }
}

/// Output of a gVisor workload to a regular file the caller already wrote to.
@Suite("gVisor output to files", .enabled(if: GVisor.available, "needs root, runsc and the python rootfs"))
struct GVisorOutputTests {
    // runsc writes an imported host file from offset 0: without append mode the workload's
    // output overwrote the caller's earlier lines.
    @Test("a workload's stdout and stderr land after what the file held, not over it")
    func appendsToRegularFile() throws {
        let c = try TestContainer("gv-out", bundle: try GVisor.bundle(["sh", "-c", "echo one; echo two >&2"]))
        defer { c.destroy() }
        let file = c.root + "/log"
        let r = try Harness.run(
            "/bin/sh",
            [
                "-c",
                "( echo AAAAAAAAAAAAAAAAAAAA; \"$0\" --root \"$1\" run --bundle \"$2\" \"$3\"; echo BBBB ) >\"$4\" 2>&1",
                Harness.runtimeBinary, c.root, c.bundle, c.id, file,
            ])
        #expect(r.status == 0, "\(r.stderr)")
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text == "AAAAAAAAAAAAAAAAAAAA\none\ntwo\nBBBB\n", "\(text)")
    }
}
