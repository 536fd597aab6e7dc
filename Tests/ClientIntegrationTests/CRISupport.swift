import Foundation
import TestSupport
import Testing

/// What the CRI tests need besides containerd: a Python with grpcio and grpcio-tools for the
/// client in Tests/cri, a C compiler for the pause image, the CNI plugins, and how far the
/// installed runsc can go on this kernel.
enum CRITools {
    static let clientScript = ClientTools.repo + "/Tests/cri/cri_client.py"
    static let pauseSource = ClientTools.repo + "/Tests/cri/pause.c"
    static let cniDir = "/usr/lib/cni"

    /// `$SAFESPACE_PYTHON`, else the first `python3` on PATH that imports grpc and grpc_tools.
    static let python: String? = {
        let env = ProcessInfo.processInfo.environment
        var candidates = [env["SAFESPACE_PYTHON"]].compactMap { $0 }
        for dir in (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            candidates.append("\(dir)/python3")
        }
        return candidates.first { path in
            FileManager.default.isExecutableFile(atPath: path)
                && (try? ClientTools.run(path, ["-c", "import grpc, grpc_tools"], timeout: 60).status) == 0
        }
    }()

    static let cc = Harness.find("cc")
    static let unshare = Harness.find("unshare")
    static let ip = Harness.find("ip")
    static var hasCNI: Bool {
        ["bridge", "host-local", "loopback"].allSatisfy {
            FileManager.default.isExecutableFile(atPath: cniDir + "/" + $0)
        }
    }

    static var ready: Bool {
        ClientTools.hasContainerd && python != nil && cc != nil && unshare != nil && ip != nil && hasCNI
    }
    static let notReady =
        "needs containerd, python3 with grpcio and grpcio-tools (pip install grpcio grpcio-tools), cc, unshare, ip and the CNI plugins (apt-get install containernetworking-plugins)"

    static var runsc: String? { Harness.find("runsc") }

    /// Whether the installed runsc misreads a pod's network namespace as the host's on this
    /// kernel, so that safespace-runtime's workaround is what lets safespace-high pods start:
    /// runsc releases before 2024-08 take "/proc/sys/net/core/rmem_default exists" for "this is
    /// the host's network namespace" (gVisor issue 10704); kernels since about 6.11 show that
    /// file in every network namespace.
    static let runscMisreadsPodNetns: Bool = {
        guard let runsc else { return false }
        let probe = try? ClientTools.run(
            unshare ?? "/usr/bin/unshare", ["--net", "--", "/bin/sh", "-c", "test -e /proc/sys/net/core/rmem_default"],
            timeout: 30)
        guard probe?.status == 0 else { return false }
        let version = (try? ClientTools.run(runsc, ["--version"], timeout: 30).stdout) ?? ""
        // Debian: "runsc version 0.0~20221219.0"; upstream: "runsc version release-20240807.0".
        let date = version.split(whereSeparator: { !$0.isNumber }).first { $0.count == 8 }.flatMap { Int($0) } ?? 0
        return date < 20240801
    }()
}

/// A pod's answers from `cri_client.py pod`: the calls made, the sandbox's and the container's
/// runtime spec as containerd reports them, ExecSync, the exit status and the container log.
struct CRIPodReport {
    let json: [String: Any]

    var steps: [[String: Any]] { json["steps"] as? [[String: Any]] ?? [] }
    var failedSteps: [[String: Any]] { steps.filter { ($0["ok"] as? Bool) != true } }
    func step(_ call: String) -> [String: Any]? { steps.first { $0["call"] as? String == call } }
    func error(of call: String) -> String? { (step(call)?["error"] as? [String: Any])?["details"] as? String }
    var sandboxID: String? { json["sandbox_id"] as? String }
    var sandbox: [String: Any] { json["sandbox"] as? [String: Any] ?? [:] }
    var container: [String: Any] { json["container"] as? [String: Any] ?? [:] }
    var exec: [String: Any] { json["exec"] as? [String: Any] ?? [:] }
    var exited: [String: Any] { json["exited"] as? [String: Any] ?? [:] }
    var log: String { json["log"] as? String ?? "" }
    var probe: String { (json["probe"] as? [String: Any])?["stdout"] as? String ?? "" }

    /// `(stream, text)` of each CRI log line (`<RFC3339Nano> <stream> <F|P> <text>`).
    var logLines: [(stream: String, text: String)] {
        log.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            return f.count == 4 ? (String(f[1]), String(f[3])) : nil
        }
    }

    /// The namespaces of a runtime spec summary: type -> path ("" for a new one).
    static func namespaces(_ summary: [String: Any]) -> [String: String] {
        var out: [String: String] = [:]
        for ns in summary["namespaces"] as? [[String: Any]] ?? [] {
            if let type = ns["type"] as? String { out[type] = ns["path"] as? String ?? "" }
        }
        return out
    }
}

/// A containerd with the CRI plugin, in a network namespace of its own (so the CNI bridge, the
/// veths and every pod network live and die there and the host's network is never touched),
/// with three runtime handlers — `runc`, and `safespace` and `safespace-high` with
/// `BinaryName` = the built safespace-runtime — whose state roots, CNI config, IPAM data and
/// logs are all under its temp dir; pods go under a cgroup parent below the test's own cgroup.
/// `stop()` removes every pod through the CRI first, then everything `PrivateContainerd.stop()`
/// removes, the cgroup parent, and /var/lib/cni if libcni created it.
final class CRINode {
    static let pauseImage = "safespace.test/pause:1"
    static let pythonImage = "safespace.test/python:3.11"
    static let handlers = ["runc", "safespace", "safespace-high"]
    /// The handlers this host can test: runc and runsc installed.
    static var testable: [String] {
        handlers.filter {
            ($0 != "runc" || ClientTools.runc != nil) && ($0 != "safespace-high" || CRITools.runsc != nil)
        }
    }

    let containerd: PrivateContainerd
    let cgroupParent: CgroupParent
    /// The handlers' roots, the runtime configuration, the CNI config and IPAM data.
    let home: String
    var dir: String { containerd.dir }
    var socket: String { containerd.address }
    private let cniCache = HostDirectoryGuard("/var/lib/cni")

    /// `--root` of a handler as containerd's runc shim passes it: the handler's `Root` plus the
    /// containerd namespace.
    func runtimeRoot(_ handler: String) -> String { "\(baseRoot)/\(handler)/k8s.io" }
    private let baseRoot: String

    init() throws {
        let tmp = try Harness.tempDir("cri-node")
        home = tmp
        baseRoot = tmp + "/runtime"
        let runtimeConfig = tmp + "/runtime.json"
        let levels = ["\(baseRoot)/safespace-high/k8s.io": "high"]
        try JSONSerialization.data(withJSONObject: ["rootSecurityLevels": levels]).write(
            to: URL(fileURLWithPath: runtimeConfig))
        var env = ProcessInfo.processInfo.environment
        env["SAFESPACE_RUNTIME_CONFIG"] = runtimeConfig  // the shims, so the runtime, inherit it
        cgroupParent = try CgroupParent(name: "safespace-cri-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))")
        containerd = try PrivateContainerd(
            namespace: "k8s.io", criConfig: try Self.criConfig(tmp: tmp, base: baseRoot), environment: env,
            launcher: [
                CRITools.unshare!, "--net", "--", "/bin/sh", "-c",
                "\(CRITools.ip!) link set lo up && exec \"$0\" \"$@\"",
            ])
        try Self.writeCNIConfig(dir: tmp)
    }

    /// The CRI plugin's section: `runc`, and SafeSpace's handlers as the node install ships them
    /// (systemd/containerd/safespace-runtimes.toml) with the built binary and roots under `base`.
    private static func criConfig(tmp: String, base: String) throws -> String {
        let shipped = try String(
            contentsOfFile: ClientTools.repo + "/systemd/containerd/safespace-runtimes.toml", encoding: .utf8)
        let tables = shipped.split(separator: "\n", omittingEmptySubsequences: false)
            .drop { !$0.contains("[plugins.") }.joined(separator: "\n")
            .replacingOccurrences(of: "@PREFIX@/bin/safespace-runtime", with: Harness.runtimeBinary)
            .replacingOccurrences(of: "\"/run/safespace-high\"", with: "\"\(base)/safespace-high\"")
            .replacingOccurrences(of: "\"/run/safespace\"", with: "\"\(base)/safespace\"")
        // restrict_oom_score_adj: the pause container asks for -998, which needs
        // CAP_SYS_RESOURCE (missing here); containerd then clamps it to its own score.
        return """
            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "\(pauseImage)"
              restrict_oom_score_adj = true
              netns_mounts_under_state_dir = true
              disable_apparmor = true
              stream_server_address = "127.0.0.1"
              stream_server_port = "0"
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "\(CRITools.cniDir)"
                conf_dir = "\(tmp)/cni"
              [plugins."io.containerd.grpc.v1.cri".containerd]
                snapshotter = "overlayfs"
                default_runtime_name = "runc"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                  runtime_type = "io.containerd.runc.v2"
                  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                    BinaryName = "\(ClientTools.runc ?? "runc")"
                    Root = "\(base)/runc"
            \(tables)
            """
    }

    /// A bridge network with host-local IPAM (its data under `dir`), inside containerd's own
    /// network namespace.
    private static func writeCNIConfig(dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir + "/cni", withIntermediateDirectories: true)
        let conf: [String: Any] = [
            "cniVersion": "0.4.0", "name": "safespace-cri-test",
            "plugins": [
                [
                    "type": "bridge", "bridge": "sscri0", "isGateway": false, "ipMasq": false,
                    "ipam": [
                        "type": "host-local", "ranges": [[["subnet": "10.88.0.0/24"]]], "dataDir": dir + "/cni-ipam",
                    ],
                ]
            ],
        ]
        try JSONSerialization.data(withJSONObject: conf, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: dir + "/cni/10-safespace-test.conflist"))
    }

    /// Starts containerd and imports the pause image (built here from Tests/cri/pause.c) and
    /// the python image (the python rootfs).
    func start() throws {
        try containerd.start()
        let pauseRoot = dir + "/pause-rootfs"
        try FileManager.default.createDirectory(atPath: pauseRoot, withIntermediateDirectories: true)
        let cc = try ClientTools.run(
            CRITools.cc!, ["-static", "-O2", "-s", "-o", pauseRoot + "/pause", CRITools.pauseSource], timeout: 120)
        guard cc.status == 0 else { throw ClientError("cc -static pause.c: \(cc.stderr)") }
        try OCIImageArchive.write(
            rootfs: pauseRoot, name: Self.pauseImage, to: dir + "/pause.tar",
            imageConfig: ["Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"])
        try ClientTools.ensurePythonRootfs()
        try OCIImageArchive.write(rootfs: Harness.pythonRootfs, name: Self.pythonImage, to: dir + "/python.tar")
        for archive in ["pause.tar", "python.tar"] {
            try containerd.importImage(dir + "/" + archive)
            try? FileManager.default.removeItem(atPath: dir + "/" + archive)
        }
    }

    /// `cri_client.py --socket SOCK ARGS…`, its JSON output parsed.
    func client(_ args: [String], timeout: Double = 300) throws -> [String: Any] {
        let r = try ClientTools.run(
            CRITools.python!, [CRITools.clientScript, "--socket", socket] + args, timeout: timeout)
        guard let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] else {
            throw ClientError(
                "cri_client.py \(args.first ?? ""): exit \(r.status)\nstdout: \(r.stdout.suffix(2000))\nstderr: \(r.stderr.suffix(3000))"
            )
        }
        return json
    }

    /// One pod through the whole flow (`cri_client.py pod`); the sandbox id is adopted for
    /// cleanup of its shim socket.
    func pod(
        handler: String, command: [String], exec: [String]? = nil, annotations: [String: String] = [:],
        seccomp: String = "runtime-default", probe: [String]? = nil, logUntil: [String] = []
    ) throws -> CRIPodReport {
        var args = [
            "pod", "--handler", handler, "--image", Self.pythonImage, "--log-dir", dir + "/logs", "--cgroup-parent",
            cgroupParent.path, "--seccomp", seccomp, "--command", try Self.json(command),
        ]
        if let exec { args += ["--exec", try Self.json(exec)] }
        if let probe { args += ["--probe", try Self.json(probe)] }
        for (k, v) in annotations.sorted(by: { $0.key < $1.key }) { args += ["--annotation", "\(k)=\(v)"] }
        for text in logUntil { args += ["--log-until", text] }
        let report = CRIPodReport(json: try client(args))
        if let id = report.sandboxID { containerd.adopt(id) }
        if ProcessInfo.processInfo.environment["SAFESPACE_CRI_VERBOSE"] != nil,
            let data = try? JSONSerialization.data(withJSONObject: report.json, options: [.prettyPrinted, .sortedKeys])
        {
            print("cri_client.py pod --handler \(handler):\n" + String(decoding: data, as: UTF8.self))
        }
        return report
    }

    static func json(_ array: [String]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: array), as: UTF8.self)
    }

    /// What a pod may leave behind: state dirs in the handler roots, pinned network
    /// namespaces, cgroups below the parent, shims of this containerd.
    func leftovers() -> [String] {
        var found: [String] = []
        for handler in Self.handlers {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: runtimeRoot(handler))) ?? []
            found += entries.filter { !$0.hasPrefix(".") }.map { "state: \(handler)/\($0)" }
        }
        let netns = dir + "/state/io.containerd.grpc.v1.cri/netns"
        found += ((try? FileManager.default.contentsOfDirectory(atPath: netns)) ?? []).map { "netns: \($0)" }
        found += cgroupParent.children().map { "cgroup: \($0)" }
        found += ClientTools.pids(matching: ["containerd-shim", "-address " + socket]).map { "shim: \($0)" }
        return found
    }

    func stop() {
        _ = try? client(["cleanup"], timeout: 300)
        containerd.stop()
        cgroupParent.remove()
        cniCache.restore(recursive: true)
        ClientTools.removeTree(home)
    }
}
