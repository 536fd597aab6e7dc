import Foundation
import TestSupport
import Testing

/// Helpers for the tests in which real clients (containerd's `ctr`, podman) drive
/// `safespace-runtime`: finding the tools, running them with a timeout, an OCI image made from the
/// python rootfs, a private containerd, and exact cleanup of what the clients leave on the host.
enum ClientTools {
    static let containerd = Harness.find("containerd")
    static let ctr = Harness.find("ctr")
    static let shim = Harness.find("containerd-shim-runc-v2")
    static let podman = Harness.find("podman")
    static let runc = Harness.find("runc")

    static var hasContainerd: Bool { containerd != nil && ctr != nil && shim != nil }
    static var hasPodman: Bool { podman != nil }

    /// The repository (for scripts/build-rootfs).
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// `Harness.run` with a `timeout` (seconds) after which the program is SIGKILLed.
    @discardableResult
    static func run(
        _ path: String, _ args: [String], stdin: String? = nil, env: [String: String]? = nil, timeout: Double = 120
    ) throws -> Harness.Result {
        try Harness.run(path, args, stdin: stdin, env: env, timeout: timeout)
    }

    /// `Harness.eventually`, polling every 50 ms for up to `timeout` seconds.
    static func eventually(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
        Harness.eventually(timeout: timeout, every: 0.05, condition)
    }

    static func sha256(file: String) throws -> String {
        let r = try run("/usr/bin/sha256sum", [file], timeout: 300)
        guard r.status == 0, let hex = r.stdout.split(separator: " ").first, hex.count == 64 else {
            throw ClientError("sha256sum \(file): \(r.stderr)")
        }
        return String(hex)
    }

    static func sha256(_ text: String) throws -> String {
        let r = try run("/usr/bin/sha256sum", [], stdin: text)
        guard r.status == 0, let hex = r.stdout.split(separator: " ").first else {
            throw ClientError("sha256sum: \(r.stderr)")
        }
        return String(hex)
    }

    static func fileSize(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
    }

    /// The python rootfs, built with scripts/build-rootfs when it is missing (a debootstrap
    /// from the Debian mirror: minutes, once per machine).
    static func ensurePythonRootfs() throws {
        if Harness.hasPythonRootfs { return }
        let r = try run(repo + "/scripts/build-rootfs", ["python"], timeout: 3600)
        guard r.status == 0, Harness.hasPythonRootfs else {
            throw ClientError("scripts/build-rootfs python failed (\(r.status)): \(r.stderr.suffix(2000))")
        }
    }

    /// Mount points at or below `dir`, deepest first.
    static func mounts(under dir: String) -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        let points = text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            return point == dir || point.hasPrefix(dir + "/") ? point : nil
        }
        return points.sorted { $0.count > $1.count }
    }

    /// Lazily unmounts whatever a client left mounted under `dir`, then removes `dir`.
    static func removeTree(_ dir: String) {
        for point in mounts(under: dir) { _ = try? run("/bin/umount", ["-l", point], timeout: 30) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Host pids whose command line contains every one of `needles` (never our own process).
    static func pids(matching needles: [String]) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { pid in
            guard pid != getpid(), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
                return false
            }
            let cmd = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return needles.allSatisfy { cmd.contains($0) }
        }
    }
}

/// A directory on the host that a client creates on first use if it is missing
/// (/run/containerd, /run/runc, /var/lib/containers…): removed afterwards only if this test saw it
/// absent before, so a machine that had it keeps it.
struct HostDirectoryGuard {
    let path: String
    let existed: Bool
    init(_ path: String) {
        self.path = path
        var isDir: ObjCBool = false
        existed = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
    }

    /// Removes the directory if the test created it: recursively when `recursive` (a cache the
    /// client made for itself), else only when empty.
    func restore(recursive: Bool = false) {
        guard !existed else { return }
        if recursive {
            try? FileManager.default.removeItem(atPath: path)
        } else {
            rmdir(path)
        }
    }
}

/// An OCI image made from a root file system directory: one uncompressed layer (a tar of the
/// directory), a config, a manifest and index.json, all addressed by sha256, tarred into an OCI
/// archive that `ctr images import`, `podman load` and `skopeo` read.
enum OCIImageArchive {
    /// - Parameters:
    ///   - rootfs: the directory that becomes the image's only layer.
    ///   - name: the image name (`io.containerd.image.name`; the tag is also `ref.name`).
    ///   - archive: the OCI archive to write; `archive + ".layout"` is used while building.
    ///   - imageConfig: the image config's `config` object (Env, Entrypoint, Cmd, User…); nil
    ///     gives the python image's (PATH, `python3`).
    static func write(rootfs: String, name: String, to archive: String, imageConfig: [String: Any]? = nil) throws {
        let layout = archive + ".layout"
        let blobs = layout + "/blobs/sha256"
        try FileManager.default.createDirectory(atPath: blobs, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: layout) }

        let layerTmp = layout + "/layer.tar"
        let tar = try ClientTools.run(
            "/bin/tar", ["--numeric-owner", "-C", rootfs, "-cf", layerTmp, "."], timeout: 600)
        guard tar.status == 0 else { throw ClientError("tar \(rootfs): \(tar.stderr)") }
        let layerDigest = try ClientTools.sha256(file: layerTmp)
        let layerSize = try ClientTools.fileSize(layerTmp)
        try FileManager.default.moveItem(atPath: layerTmp, toPath: blobs + "/" + layerDigest)

        func blob(_ object: [String: Any]) throws -> (digest: String, size: Int) {
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            let tmp = layout + "/blob.tmp"
            try data.write(to: URL(fileURLWithPath: tmp))
            let digest = try ClientTools.sha256(file: tmp)
            try FileManager.default.moveItem(atPath: tmp, toPath: blobs + "/" + digest)
            return (digest, data.count)
        }

        let config = try blob([
            "architecture": "amd64",
            "os": "linux",
            "config": imageConfig ?? [
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["python3"],
                "WorkingDir": "/",
            ],
            "rootfs": ["type": "layers", "diff_ids": ["sha256:" + layerDigest]],
            "history": [["created_by": "SafeSpace ClientTests: tar of \(rootfs)"]],
        ])
        let manifest = try blob([
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": [
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + config.digest, "size": config.size,
            ],
            "layers": [
                [
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + layerDigest, "size": layerSize,
                ]
            ],
        ])
        let tag = name.split(separator: ":").last.map(String.init) ?? "latest"
        let index: [String: Any] = [
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                [
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + manifest.digest, "size": manifest.size,
                    "platform": ["architecture": "amd64", "os": "linux"],
                    "annotations": ["io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag],
                ]
            ],
        ]
        try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: layout + "/index.json"))
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: layout + "/oci-layout"))
        let pack = try ClientTools.run(
            "/bin/tar", ["-C", layout, "-cf", archive, "oci-layout", "index.json", "blobs"], timeout: 600)
        guard pack.status == 0 else { throw ClientError("tar \(layout): \(pack.stderr)") }
    }
}

/// A private containerd: config, root, state and sockets in a temp dir, the CRI plugin off.
/// `stop()` deletes its tasks and containers, stops it by pid, kills the shims it started (found
/// by its socket address in their command line), unmounts and removes its directories, and
/// removes the shim sockets it left in /run/containerd/s (containerd 1.6 always puts them
/// there) and /run/containerd itself if it was not there before.
final class PrivateContainerd {
    let dir: String
    let address: String
    let namespace: String
    var fifoDir: String { dir + "/fifo" }
    /// `--runc-root` for every container: runc-style state dirs stay under `dir`.
    var runtimeRoot: String { dir + "/runtime-root" }
    private var process: ClientProcess?
    private var ids: [String] = []
    private let runDir = HostDirectoryGuard("/run/containerd")
    private let socketDir = HostDirectoryGuard("/run/containerd/s")
    /// The CRI plugin's TOML (CRITests); nil leaves the plugin disabled.
    private let criConfig: String?
    private let environment: [String: String]?
    /// A command containerd is started under (CRITests: a network namespace of its own).
    private let launcher: [String]

    init(
        namespace: String = "safespace-test", criConfig: String? = nil, environment: [String: String]? = nil,
        launcher: [String] = []
    ) throws {
        dir = try Harness.tempDir("containerd")
        address = dir + "/containerd.sock"
        self.namespace = namespace
        self.criConfig = criConfig
        self.environment = environment
        self.launcher = launcher
    }

    func start() throws {
        for sub in ["root", "state", "opt", "fifo", "runtime-root"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        // oom_score = 0: containerd leaves its own score alone (lowering it needs
        // CAP_SYS_RESOURCE, which root lacks on the development machine); shims only raise theirs.
        let config = """
            version = 2
            root = "\(dir)/root"
            state = "\(dir)/state"
            oom_score = 0
            disabled_plugins = [
            \(criConfig == nil ? "  \"io.containerd.grpc.v1.cri\"," : "")
              "io.containerd.snapshotter.v1.aufs",
              "io.containerd.snapshotter.v1.btrfs",
              "io.containerd.snapshotter.v1.devmapper",
              "io.containerd.snapshotter.v1.zfs",
              "io.containerd.tracing.processor.v1.otlp",
              "io.containerd.internal.v1.tracing",
            ]

            [grpc]
              address = "\(address)"

            [ttrpc]
              address = "\(address).ttrpc"

            [debug]
              address = "\(dir)/debug.sock"
              level = "info"

            [metrics]
              address = ""

            [plugins."io.containerd.internal.v1.opt"]
              path = "\(dir)/opt"

            \(criConfig ?? "")
            """
        try config.write(toFile: dir + "/config.toml", atomically: true, encoding: .utf8)
        let command = launcher + [ClientTools.containerd!, "--config", dir + "/config.toml"]
        process = try ClientProcess(
            command[0], Array(command.dropFirst()), stdout: dir + "/containerd.log", stderr: dir + "/containerd.log",
            env: environment)
        let up = ClientTools.eventually(timeout: 30) {
            guard process?.isRunning == true, FileManager.default.fileExists(atPath: address) else { return false }
            return (try? ctr(["version"], timeout: 10).status) == 0
        }
        guard up else { throw ClientError("containerd did not come up; log:\n\(log.suffix(3000))") }
    }

    var log: String { (try? String(contentsOfFile: dir + "/containerd.log", encoding: .utf8)) ?? "" }

    /// A container id this daemon will know; recorded so that its shim socket can be removed.
    func newID(_ prefix: String) -> String {
        let id = Harness.uniqueID(prefix)
        ids.append(id)
        return id
    }

    /// Records an id containerd made (a CRI pod sandbox's, which names its shim socket).
    func adopt(_ id: String) {
        ids.append(id)
    }

    /// `ctr -a SOCK -n NS ARGS…`
    @discardableResult
    func ctr(_ args: [String], stdin: String? = nil, timeout: Double = 120) throws -> Harness.Result {
        try ClientTools.run(ClientTools.ctr!, ["-a", address, "-n", namespace] + args, stdin: stdin, timeout: timeout)
    }

    /// `ctr … run` options that keep everything under the test's own directories and cgroup:
    /// `--cgroup ""` leaves linux.cgroupsPath unset, so runc and safespace-runtime both nest the
    /// container under the caller's (the shim's, so the test's) cgroup; containerd's default,
    /// `/<namespace>/<id>`, is absolute and would leave the cgroup this test runs in.
    func runOptions(runtime: String?) -> [String] {
        var opts = ["--fifo-dir", fifoDir, "--runc-root", runtimeRoot, "--cgroup", ""]
        if let runtime { opts += ["--runc-binary", runtime] }
        return opts
    }

    func importImage(_ archive: String) throws {
        let r = try ctr(["images", "import", archive], timeout: 300)
        guard r.status == 0 else { throw ClientError("ctr images import: \(r.status) \(r.stderr)") }
    }

    /// Status of a task from `ctr task ls` (RUNNING, STOPPED, PAUSED…), nil if absent.
    func taskStatus(_ id: String) -> String? {
        guard let r = try? ctr(["tasks", "ls"]), r.status == 0 else { return nil }
        for line in r.stdout.split(separator: "\n") {
            let cols = line.split(separator: " ", omittingEmptySubsequences: true)
            if cols.count >= 3, cols[0] == id { return String(cols[2]) }
        }
        return nil
    }

    func stop() {
        if process?.isRunning == true {
            if let tasks = try? ctr(["tasks", "ls", "-q"], timeout: 30), tasks.status == 0 {
                for id in tasks.stdout.split(separator: "\n").map(String.init) where !id.isEmpty {
                    _ = try? ctr(["tasks", "kill", "-a", "-s", "SIGKILL", id], timeout: 30)
                    _ = try? ctr(["tasks", "rm", "-f", id], timeout: 30)
                }
            }
            if let cs = try? ctr(["containers", "ls", "-q"], timeout: 30), cs.status == 0 {
                for id in cs.stdout.split(separator: "\n").map(String.init) where !id.isEmpty {
                    _ = try? ctr(["containers", "rm", id], timeout: 30)
                }
            }
        }
        process?.stop()
        // Shims outlive containerd by design; these ones were started by ours.
        for pid in ClientTools.pids(matching: ["containerd-shim", "-address " + address]) {
            kill(pid, SIGKILL)
        }
        for id in ids {
            if let hash = try? ClientTools.sha256(address + "/" + namespace + "/" + id) {
                unlink("/run/containerd/s/" + hash)
            }
        }
        socketDir.restore()
        runDir.restore()
        ClientTools.removeTree(dir)
    }
}

/// podman with its storage, run root, tmp, network config and volumes in a temp dir, the
/// cgroupfs manager and file events; containers go under a cgroup parent below the test's own
/// cgroup (see `CgroupParent`).
final class PrivatePodman {
    let dir: String
    var runtime: String
    let cgroupParent: CgroupParent
    /// Directories podman 4.3 creates on the host whatever its flags say.
    /// (directory, remove recursively): podman's own caches go entirely; /run/runc only if empty,
    /// since other runc users share it.
    private let guards = [
        (HostDirectoryGuard("/run/containers"), true),  // netavark's run dir (/run/containers/networks)
        (HostDirectoryGuard("/var/lib/containers"), true),  // containers/image's blob-info cache
        (HostDirectoryGuard("/run/runc"), false),  // runc's default --root (podman passes no --root on delete)
    ]

    init(runtime: String) throws {
        dir = try Harness.tempDir("podman")
        self.runtime = runtime
        cgroupParent = try CgroupParent(name: "safespace-podman-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))")
        for sub in ["root", "runroot", "tmp", "net", "vol", "vartmp"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
    }

    /// The global flags. No `--runtime-flag root=…`: podman 4.3 passes runtime flags to
    /// create/start but not to `delete`, so a private root would leak every container's state;
    /// safespace-runtime uses its default root (/run/safespace) and the test checks that the
    /// container's state dir is gone.
    var globals: [String] {
        [
            "--root", dir + "/root", "--runroot", dir + "/runroot", "--tmpdir", dir + "/tmp",
            "--network-config-dir", dir + "/net", "--volumepath", dir + "/vol",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", runtime,
        ]
    }

    @discardableResult
    func podman(_ args: [String], timeout: Double = 120) throws -> Harness.Result {
        var env = ProcessInfo.processInfo.environment
        env["TMPDIR"] = dir + "/vartmp"  // image copies, instead of /var/tmp
        return try ClientTools.run(ClientTools.podman!, globals + args, env: env, timeout: timeout)
    }

    /// Loads an OCI archive; returns the image id.
    func load(_ archive: String) throws -> String {
        let r = try podman(["load", "-q", "-i", archive], timeout: 300)
        guard r.status == 0 else { throw ClientError("podman load: \(r.status) \(r.stderr)") }
        let ids = try podman(["images", "-q", "--no-trunc"])
        guard let id = ids.stdout.split(separator: "\n").first else {
            throw ClientError("podman images: no image after load: \(ids.stderr)")
        }
        return String(id)
    }

    /// `run` options every test uses: the cgroup parent below ours, no network, and rlimits
    /// within the caller's (podman asks for RLIMIT_NPROC/NOFILE of 1048576+, which needs
    /// CAP_SYS_RESOURCE here; runc fails the same way).
    var runOptions: [String] {
        [
            "--cgroup-parent", cgroupParent.path, "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit",
            "nproc=4096:4096",
        ]
    }

    func destroy() {
        _ = try? podman(["rm", "-a", "-f"], timeout: 60)
        _ = try? podman(["rmi", "-a", "-f"], timeout: 60)
        // conmon of a container that outlived its test (podman started it; its command line
        // names our storage dirs).
        for pid in ClientTools.pids(matching: ["conmon", dir + "/"]) { kill(pid, SIGKILL) }
        cgroupParent.remove()
        ClientTools.removeTree(dir)
        for (g, recursive) in guards { g.restore(recursive: recursive) }
    }
}

/// An absolute cgroup path below this process's own cgroup in every v1 hierarchy (podman's
/// `--cgroup-parent` is one absolute path for all hierarchies), so podman never moves conmon or a
/// container out of the cgroup the test runs in. `remove()` deletes it, what podman made below
/// it, and the ancestors it had to create in hierarchies where our own cgroup is higher.
struct CgroupParent {
    let path: String
    /// (mount point, own cgroup) per hierarchy.
    private let hierarchies: [(mount: String, own: String)]
    /// Directories that did not exist before, per hierarchy, shallowest first.
    private let created: [String]

    init(name: String) throws {
        let procCgroup = try String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)
        let mountinfo = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        var mountsByKey: [String: String] = [:]
        for line in mountinfo.split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            guard let dash = f.firstIndex(of: "-"), f.count > dash + 3, f[3] == "/" else { continue }
            if f[dash + 1] == "cgroup2" { mountsByKey["unified"] = f[4] }
            if f[dash + 1] == "cgroup" {
                let opts = Set(f[dash + 3].split(separator: ","))
                for (key, _) in Self.parse(procCgroup) where key != "unified" {
                    if Set(key.split(separator: ",")).isSubset(of: opts) { mountsByKey[key] = f[4] }
                }
            }
        }
        var hier: [(String, String)] = []
        for (key, own) in Self.parse(procCgroup) {
            if let mount = mountsByKey[key] { hier.append((mount, own == "/" ? "" : own)) }
        }
        // The deepest own cgroup; every other must be an ancestor of it.
        let deepest = hier.map(\.1).max { $0.count < $1.count } ?? ""
        for (_, own) in hier where !(deepest == own || deepest.hasPrefix(own + "/") || own.isEmpty) {
            throw ClientError(
                "this process's cgroups differ per hierarchy (\(own) vs \(deepest)); no single --cgroup-parent lies below all of them"
            )
        }
        path = deepest + "/" + name
        hierarchies = hier
        var made: [String] = []
        for (mount, own) in hier {
            var current = mount + own
            for component in path.dropFirst(own.count).split(separator: "/") {
                current += "/" + component
                if !FileManager.default.fileExists(atPath: current) { made.append(current) }
            }
        }
        created = made
    }

    private static func parse(_ text: String) -> [(String, String)] {
        text.split(separator: "\n").compactMap { line in
            let p = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard p.count == 3 else { return nil }
            let key = p[1].isEmpty ? (p[0] == "0" ? "unified" : "") : String(p[1])
            return key.isEmpty ? nil : (key, String(p[2]))
        }
    }

    /// Cgroup directories below the parent in every hierarchy (what podman made: conmon,
    /// libpod-<id>), deepest first.
    func children() -> [String] {
        var out: [String] = []
        for (mount, _) in hierarchies {
            let base = mount + path
            guard let e = FileManager.default.enumerator(atPath: base) else { continue }
            while let rel = e.nextObject() as? String {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: base + "/" + rel, isDirectory: &isDir), isDir.boolValue {
                    out.append(base + "/" + rel)
                }
            }
        }
        return out.sorted { $0.count > $1.count }
    }

    /// Processes still in the parent's subtree (a cgroup with processes cannot be removed).
    func processes() -> [String] {
        (children() + hierarchies.map { $0.mount + path }).flatMap { dir in
            ((try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").map {
                "\(dir): \($0)"
            }
        }
    }

    func remove() {
        for dir in children() { rmdir(dir) }
        for dir in created.reversed() { rmdir(dir) }
    }
}
