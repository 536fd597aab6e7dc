import Foundation
import TestSupport
import Testing

/// Kubernetes' path to SafeSpace, end to end: the CRI v1 calls kubelet makes (Tests/cri, a
/// Python gRPC client) to a containerd whose RuntimeClass handlers `safespace` and
/// `safespace-high` run the built safespace-runtime through containerd's runc shim, next to
/// `runc` as the control. Pods get an IP from the CNI bridge plugin; the pause image is built
/// here from Tests/cri/pause.c, the python image from the python rootfs.
///
/// Root only; skipped when containerd, python3 with grpcio/grpcio-tools, cc or the CNI plugins
/// are missing. Serialized: every test starts its own containerd, and containerd 1.6 puts every
/// shim socket in /run/containerd/s.
@Suite(
    "CRI: kubelet's calls through containerd reach safespace-runtime", .serialized,
    .enabled(if: Harness.isRoot, "needs root: containerd runs pods as root"),
    .enabled(if: CRITools.ready, Comment(rawValue: CRITools.notReady)))
struct CRITests {
    /// Prints what it sees (kernel, interfaces, uid, hostname, seccomp mode, no_new_privs) on
    /// stdout and a line on stderr, waits for ExecSync to create /tmp/release and for the exec'd
    /// process to be gone (the init's exit would kill it), exits 3.
    static let workload = [
        "python3", "-c",
        """
        import os, sys, time, platform, socket
        st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
        f = lambda k: st.get(k, "?").strip()
        names = ",".join(n for _, n in socket.if_nameindex())
        print("hello", platform.release(), names, os.getuid(), socket.gethostname(), "seccomp=" + f("Seccomp"), "nnp=" + f("NoNewPrivs"), flush=True)
        print("err-line", file=sys.stderr, flush=True)
        deadline = time.time() + 60
        while not os.path.exists("/tmp/release") and time.time() < deadline:
            time.sleep(0.02)
        others = lambda: [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
        while others() and time.time() < deadline:
            time.sleep(0.02)
        sys.exit(3 if os.path.exists("/tmp/release") else 99)
        """,
    ]
    static let execCommand = [
        "python3", "-c", "import os; open('/tmp/release', 'w').close(); print('exec-ok', os.getuid())",
    ]

    static var hostRelease: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// While the pod runs: the handler's runtime lists both containers, and the container's
    /// memory cgroup.
    static func probe(_ node: CRINode, handler: String) -> [String] {
        let binary = handler == "runc" ? (ClientTools.runc ?? "runc") : Harness.runtimeBinary
        return [
            "/bin/sh", "-c",
            "\"$0\" --root \"$1\" list --format json; echo ---; grep memory /proc/{container_pid}/cgroup", binary,
            node.runtimeRoot(handler),
        ]
    }

    // MARK: the pod flow

    @Test(
        "RunPodSandbox → CreateContainer → StartContainer → ExecSync → exit code → log → Stop/Remove, per handler",
        arguments: CRINode.testable)
    func podFlow(handler: String) throws {
        let node = try CRINode()
        defer { node.stop() }
        try node.start()
        let high = handler == "safespace-high"
        // gVisor at the default kubelet profile (unconfined): containerd's RuntimeDefault has
        // errnoRet values the installed runsc cannot enforce, which the runtime refuses.
        let report = try node.pod(
            handler: handler, command: Self.workload, exec: Self.execCommand,
            seccomp: high ? "unconfined" : "runtime-default",
            probe: Self.probe(node, handler: handler), logUntil: ["stdout F hello", "stderr F err-line"])
        try expectPodRan(report, node: node, handler: handler)
        // Each call's duration, for the log (reported, never asserted).
        print(
            "CRI \(handler): "
                + report.steps.map {
                    "\($0["call"] as? String ?? "?") \(($0["ms"] as? NSNumber)?.doubleValue ?? -1) ms"
                }.joined(separator: ", "))
        var left: [String] = []
        #expect(
            ClientTools.eventually(timeout: 20) {
                left = node.leftovers()
                return left.isEmpty
            }, "\(handler) left: \(left)")
    }

    func expectPodRan(_ r: CRIPodReport, node: CRINode, handler: String) throws {
        let high = handler == "safespace-high"
        #expect(r.failedSteps.isEmpty, "\(handler): failed calls \(r.failedSteps); error \(r.json["error"] ?? "-")")
        #expect(
            r.steps.map { $0["call"] as? String ?? "" } == [
                "RunPodSandbox", "PodSandboxStatus", "CreateContainer", "StartContainer", "ContainerStatus", "ExecSync",
                "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox",
            ])
        // The handler's runtime ran both the sandbox and the container.
        let binary = handler == "runc" ? ClientTools.runc : Harness.runtimeBinary
        for (what, summary) in [("sandbox", r.sandbox), ("container", r.container)] {
            let options = summary["runtimeOptions"] as? [String: Any] ?? [:]
            #expect(options["binary_name"] as? String == binary, "\(handler) \(what): \(options)")
            #expect(
                options["root"] as? String == node.runtimeRoot(handler).replacingOccurrences(of: "/k8s.io", with: ""))
        }
        #expect(r.sandbox["state"] as? String == "SANDBOX_READY")
        #expect((r.sandbox["ip"] as? String ?? "").hasPrefix("10.88.0."), "pod IP from the CNI bridge: \(r.sandbox)")
        #expect(r.container["state"] as? String == "CONTAINER_RUNNING")

        // Pod containers join the pause container's network, ipc and uts namespaces by path.
        let sandboxPid = (r.sandbox["pid"] as? NSNumber)?.intValue ?? -1
        let ns = CRIPodReport.namespaces(r.container)
        for type in ["network", "ipc", "uts"] {
            #expect(
                ns[type] == "/proc/\(sandboxPid)/ns/\(type == "network" ? "net" : type)",
                "\(handler): \(type) namespace \(ns)")
        }
        #expect(ns["pid"] == "" && ns["mount"] == "", "\(handler): own pid and mount namespaces: \(ns)")

        // While it ran: the runtime listed both, and the container sat in its cgroup below the
        // pod's cgroup parent.
        let parts = r.probe.components(separatedBy: "---\n")
        let listed = (try? JSONSerialization.jsonObject(with: Data((parts.first ?? "").utf8))) as? [[String: Any]] ?? []
        let running = Set(listed.filter { $0["status"] as? String == "running" }.compactMap { $0["id"] as? String })
        #expect(
            running.isSuperset(of: [r.sandboxID ?? "?", r.json["container_id"] as? String ?? "?"]),
            "\(handler) list: \(r.probe)")
        let cid = r.json["container_id"] as? String ?? "?"
        #expect(
            parts.count == 2
                && parts[1].trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix(
                    node.cgroupParent.path + "/" + cid),
            "\(handler) cgroup: \(r.probe)")

        #expect(r.exec["exit_code"] as? Int == 0, "\(handler) ExecSync: \(r.exec)")
        #expect(r.exec["stdout"] as? String == "exec-ok 1000\n", "\(handler) ExecSync: \(r.exec)")
        #expect(r.exited["state"] as? String == "CONTAINER_EXITED")
        #expect(r.exited["exit_code"] as? Int == 3, "\(handler) exit: \(r.exited)")

        // The container log, in CRI's format, from the shim's pipes.
        let out = r.logLines.filter { $0.stream == "stdout" }.map(\.text)
        let err = r.logLines.filter { $0.stream == "stderr" }.map(\.text)
        #expect(err == ["err-line"], "\(handler) log: \(r.log)")
        let hello = (out.first ?? "").split(separator: " ").map(String.init)
        #expect(hello.count == 7 && hello[0] == "hello", "\(handler) log: \(r.log)")
        guard hello.count == 7 else { return }
        #expect(
            hello[1] == (high ? "4.4.0" : Self.hostRelease),
            "\(handler): kernel release seen inside (gVisor reports 4.4.0)")
        #expect(
            hello[2].split(separator: ",").contains("eth0"),
            "\(handler): the pod's eth0 from the CNI bridge: \(hello[2])")
        #expect(hello[3] == "1000")
        #expect(
            hello[4] == r.sandbox["hostname"] as? String,
            "\(handler): the pod's hostname through the shared uts namespace")
        if !high {
            #expect(hello[5] == "seccomp=2", "\(handler): containerd's RuntimeDefault seccomp profile is loaded")
            #expect(hello[6] == "nnp=1")
        }
    }

    // MARK: the security level from a pod annotation

    @Test(
        "the pod annotation llmsafespace.dev/security-level: high takes a `safespace` pod to gVisor",
        .enabled(if: CRITools.runsc != nil, "runsc (gVisor) is not installed"))
    func annotationRaisesLevel() throws {
        let node = try CRINode()
        defer { node.stop() }
        try node.start()
        let r = try node.pod(
            handler: "safespace", command: Self.workload, exec: Self.execCommand,
            annotations: ["llmsafespace.dev/security-level": "high"], seccomp: "unconfined",
            logUntil: ["stdout F hello"])
        #expect(r.failedSteps.isEmpty, "failed calls: \(r.failedSteps)")
        // The shim copies stdout and stderr apart: the first stdout line, whatever came first.
        let hello = r.logLines.first { $0.stream == "stdout" }?.text ?? ""
        #expect(hello.split(separator: " ").dropFirst().first == "4.4.0", "gVisor's kernel release inside: \(r.log)")
        #expect(r.exited["exit_code"] as? Int == 3)
        #expect(r.exec["stdout"] as? String == "exec-ok 1000\n", "ExecSync: \(r.exec)")
        var left: [String] = []
        #expect(
            ClientTools.eventually(timeout: 20) {
                left = node.leftovers()
                return left.isEmpty
            }, "left: \(left)")
    }

    // MARK: errors

    @Test("a missing program fails StartContainer with the runtime's error; the pod still tears down cleanly")
    func startErrorReported() throws {
        let node = try CRINode()
        defer { node.stop() }
        try node.start()
        let r = try node.pod(handler: "safespace", command: ["/no/such/program"])
        let error = r.error(of: "StartContainer") ?? ""
        #expect(error.contains("/no/such/program"), "containerd reports the runtime's last JSON error line: \(error)")
        #expect(r.failedSteps.count == 1, "only StartContainer fails: \(r.failedSteps)")
        var left: [String] = []
        #expect(
            ClientTools.eventually(timeout: 20) {
                left = node.leftovers()
                return left.isEmpty
            }, "left: \(left)")
    }

    // MARK: timing (reported, never asserted)

    /// `SAFESPACE_CRI_BENCH=N swift test --filter CRITests/timing`: RunPodSandbox to container
    /// exit of `python3 -c pass`, N times per handler, alternating, after a warm-up each.
    @Test(
        "pod flow timing: safespace against runc",
        .enabled(
            if: ProcessInfo.processInfo.environment["SAFESPACE_CRI_BENCH"] != nil,
            "set SAFESPACE_CRI_BENCH=N to time N pods per handler"))
    func timing() throws {
        let n = Int(ProcessInfo.processInfo.environment["SAFESPACE_CRI_BENCH"] ?? "") ?? 10
        let node = try CRINode()
        defer { node.stop() }
        try node.start()
        let handlers = CRINode.testable
        let r = try node.client(
            [
                "bench", "--handlers", handlers.joined(separator: ","), "-n", "\(n)", "--image", CRINode.pythonImage,
                "--log-dir", node.dir + "/logs", "--cgroup-parent", node.cgroupParent.path, "--seccomp", "unconfined",
                "--command", try CRINode.json(["python3", "-c", "pass"]),
            ], timeout: 3600)
        #expect(r["error"] == nil, "\(r)")
        let data = try JSONSerialization.data(withJSONObject: r, options: [.prettyPrinted, .sortedKeys])
        print(
            "CRI pod flow, RunPodSandbox to exit (\(Harness.runtimeBinary)):\n" + String(decoding: data, as: UTF8.self))
    }
}
