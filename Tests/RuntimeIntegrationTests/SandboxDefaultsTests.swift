import Foundation
import TestSupport
import Testing

/// Every sandbox has limits (issue 10, finding 5): `safespace run` of a Sandbox without
/// `spec.resources` gets the node's `sandboxDefaults` (a test node configuration with small
/// values, through `$SAFESPACE_RUNTIME_CONFIG`): a memory limit that OOM-kills, pids.max,
/// RLIMIT_NOFILE, and one ephemeral storage cap that /dev/shm counts in. Limits the node can
/// never give are refused, naming the field.
@Suite(.enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs"), .serialized)
struct SandboxDefaultsTests {
    static let mib: Int64 = 1 << 20

    /// A node configuration with small defaults, the state root and bundle directory of one run.
    struct Node {
        let dir: String
        var config: String { dir + "/runtime.json" }
        var root: String { dir + "/root" }
        var bundles: String { dir + "/bundles" }

        init(
            _ json: String =
                #"{"sandboxDefaults": {"cpu": "500m", "memory": "64Mi", "ephemeralStorage": "16Mi", "pids": 64, "nofile": 256}}"#
        ) throws {
            dir = try Harness.tempDir("ssdefaults")
            try json.write(toFile: dir + "/runtime.json", atomically: true, encoding: .utf8)
        }

        var environment: [String: String] {
            [
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "SAFESPACE_RUNTIME_CONFIG": config,
            ]
        }

        func arguments(_ extra: [String]) -> [String] {
            ["run", "--root", root, "--bundle-root", bundles] + extra
        }

        /// `safespace run … -- args` to completion.
        func run(_ extra: [String], stdin: String? = nil) throws -> Harness.Result {
            try Harness.run(Harness.cliBinary, arguments(extra), stdin: stdin, env: environment)
        }

        /// What a run left: state, bundles, mounts of the bundle directory or of its volume.
        func leftovers(id: String) -> [String] {
            var found = ((try? FileManager.default.contentsOfDirectory(atPath: bundles)) ?? []).filter {
                !$0.hasPrefix(".")
            }.map { "bundle: \($0)" }
            found += ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }
                .map { "state: \($0)" }
            if FileManager.default.fileExists(atPath: "/var/lib/safespace/ephemeral/" + id) {
                found.append("volume: \(id)")
            }
            return found + Harness.leftovers(id: id, root: root)
        }

        func remove() { Harness.cleanup(dir) }
    }

    static func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The cgroup directory of `controller` (v1) or the unified one, from the run's state.json.
    static func cgroupDir(root: String, id: String, _ controller: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(id)/state.json"))
        let state = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let cg = try #require(state["cgroup"] as? [String: Any])
        let dirs = try #require(cg["directories"] as? [String: String])
        if cg["mode"] as? String == "unified" { return try #require(dirs["unified"]) }
        return try #require(dirs.first { $0.key.split(separator: ",").contains(Substring(controller)) }?.value)
    }

    @Test(
        "a run without spec.resources gets the node's defaults: memory and pids in its cgroup, RLIMIT_NOFILE and the storage cap in config.json"
    )
    func defaultsInCgroupAndBundle() throws {
        let node = try Node()
        defer { node.remove() }
        let id = Harness.uniqueID("ssdef")
        let p = Foundation.Process()
        p.executableURL = URL(fileURLWithPath: Harness.cliBinary)
        p.arguments = node.arguments(["--name", id, "--runtime", "python:3.11", "--", "sleep", "600"])
        p.environment = node.environment
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let stateFile = "\(node.root)/\(id)/state.json"
        let configFile = "\(node.bundles)/\(id)/config.json"
        #expect(
            Harness.eventually {
                FileManager.default.fileExists(atPath: stateFile) && FileManager.default.fileExists(atPath: configFile)
            })

        let unified = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")
        let memory = try Self.cgroupDir(root: node.root, id: id, "memory")
        let pids = try Self.cgroupDir(root: node.root, id: id, "pids")
        #expect(Self.read(memory + (unified ? "/memory.max" : "/memory.limit_in_bytes")) == "\(64 * Self.mib)")
        #expect(Self.read(pids + "/pids.max") == "64")
        let cpu = try Self.cgroupDir(root: node.root, id: id, "cpu")
        #expect(
            unified ? Self.read(cpu + "/cpu.max") == "50000 100000" : Self.read(cpu + "/cpu.cfs_quota_us") == "50000")

        let config = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configFile))) as? [String: Any]
        )
        let process = try #require(config["process"] as? [String: Any])
        let rlimits = try #require(process["rlimits"] as? [[String: Any]])
        #expect(
            rlimits.contains {
                $0["type"] as? String == "RLIMIT_NOFILE" && $0["hard"] as? Int == 256 && $0["soft"] as? Int == 256
            }, "\(rlimits)")
        let annotations = try #require(config["annotations"] as? [String: String])
        #expect(annotations["llmsafespace.dev/ephemeral-storage"] == "\(16 * Self.mib)")
        let resources = try #require((config["linux"] as? [String: Any])?["resources"] as? [String: Any])
        #expect((resources["memory"] as? [String: Any])?["limit"] as? Int == Int(64 * Self.mib))
        #expect((resources["pids"] as? [String: Any])?["limit"] as? Int == 64)
        let mounts = try #require(config["mounts"] as? [[String: Any]])
        let shm = try #require(mounts.first { $0["destination"] as? String == "/dev/shm" })
        #expect(shm["type"] as? String == "bind", "/dev/shm is on the sandbox's volume: \(shm)")

        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        #expect(node.leftovers(id: id).isEmpty, "\(node.leftovers(id: id))")
    }

    @Test("past the default memory limit the workload is OOM-killed: exit 137")
    func defaultMemoryLimit() throws {
        let node = try Node()
        defer { node.remove() }
        let id = Harness.uniqueID("ssoom")
        let r = try node.run([
            "--name", id, "--runtime", "python:3.11", "--", "python3", "-c",
            "b = bytearray(256 << 20); print('survived', len(b))",
        ])
        #expect(r.status == 137, "\(r.stdout) \(r.stderr)")
        #expect(!r.stdout.contains("survived"))
        #expect(r.stderr.contains("OOM-killed (memory limit 64Mi)"), "\(r.stderr)")
        #expect(node.leftovers(id: id).isEmpty, "\(node.leftovers(id: id))")
    }

    @Test("RLIMIT_NOFILE and pids.max hold inside: the 257th descriptor and the 65th process fail")
    func descriptorsAndProcesses() throws {
        let node = try Node()
        defer { node.remove() }
        let id = Harness.uniqueID("ssfd")
        let code = """
            import os, resource, time
            print("nofile", resource.getrlimit(resource.RLIMIT_NOFILE))
            fds = []
            try:
                while True: fds.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as e: print("open", e.errno, 200 < len(fds) + 3 <= 256)
            for fd in fds: os.close(fd)
            kids = []
            try:
                while len(kids) < 500:
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(30); os._exit(0)
                    kids.append(pid)
            except OSError as e: print("fork", e.errno, len(kids) < 64)
            for k in kids: os.kill(k, 9); os.waitpid(k, 0)
            """
        let r = try node.run(["--name", id, "--runtime", "python:3.11", "--", "python3", "-c", code])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == ["nofile (256, 256)", "open 24 True", "fork 11 True"], "\(r.stdout)")
        #expect(node.leftovers(id: id).isEmpty, "\(node.leftovers(id: id))")
    }

    @Test("/dev/shm counts in the default ephemeral storage cap: /tmp and /dev/shm share 16Mi, past it ENOSPC")
    func devShmInCap() throws {
        let node = try Node()
        defer { node.remove() }
        let id = Harness.uniqueID("ssshm")
        let code = """
            import errno
            def fill(path, mib):
                try:
                    with open(path, "wb") as f:
                        for _ in range(mib): f.write(b"x" * (1 << 20)); f.flush()
                    return "ok"
                except OSError as e: return errno.errorcode[e.errno]
            print("tmp", fill("/tmp/a", 10))
            print("shm", fill("/dev/shm/b", 10))
            """
        let r = try node.run(["--name", id, "--runtime", "python:3.11", "--", "python3", "-c", code])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == ["tmp ok", "shm ENOSPC"], "\(r.stdout)")
        #expect(node.leftovers(id: id).isEmpty, "\(node.leftovers(id: id))")
    }

    static func sandbox(_ resources: String) -> String {
        "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: NAME\nspec:\n  runtime: python:3.11\n  resources:\n    \(resources)\n"
    }

    @Test(
        "a limit the node can never give is refused, naming the field, with nothing left",
        arguments: [
            ("cpu: \"100000\"", "spec.resources.cpu"), ("memory: 1Pi", "spec.resources.memory"),
        ])
    func aboveCapacity(resources: String, field: String) throws {
        let node = try Node()
        defer { node.remove() }
        let id = Harness.uniqueID("sscap")
        let r = try node.run(
            ["-f", "-", "--", "true"], stdin: Self.sandbox(resources).replacingOccurrences(of: "NAME", with: id))
        #expect(r.status == 125)
        #expect(r.stderr.contains(field) && r.stderr.contains("can never be given"), "\(r.stderr)")
        #expect(node.leftovers(id: id).isEmpty, "\(node.leftovers(id: id))")
    }

    @Test("a bad sandboxDefaults in the node configuration is an error naming the key")
    func badNodeConfiguration() throws {
        let node = try Node(#"{"sandboxDefaults": {"memroy": "1Gi"}}"#)
        defer { node.remove() }
        let r = try node.run(["--", "true"])
        #expect(r.status == 125)
        #expect(r.stderr.contains("sandboxDefaults.memroy: unknown key"), "\(r.stderr)")
    }
}
