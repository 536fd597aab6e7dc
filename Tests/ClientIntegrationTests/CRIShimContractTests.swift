import Foundation
import LinuxKernel
import OCI
import TestSupport
import Testing

/// What containerd's runc v2 shim relies on, called exactly as it calls it (go-runc 1.1):
/// global flags first (`--root <Root>/<namespace> --log <bundle>/log.json --log-format json`),
/// a root directory that does not exist yet, numeric signals, absolute `--pid-file`s, the exec
/// process in a temp file outside the bundle, resources on stdin. The messages
/// checked are the ones the shim matches (`checkKillError`: "container not running", "does not
/// exist") and the one it reports (the last `"level":"error"` line of log.json).
@Suite("containerd's runc shim contract", .enabled(if: Harness.isRoot, "needs root"))
struct CRIShimContractTests {
    /// One container driven through go-runc's command lines.
    struct Shim {
        let dir: String
        let id = Harness.uniqueID("shim")
        var root: String { dir + "/state/k8s.io" }  // created by the runtime on first use
        var log: String { dir + "/bundle/log.json" }
        var bundle: String { dir + "/bundle" }

        init(_ args: [String], edit: (inout Spec) -> Void = { _ in }) throws {
            let bundle = try Harness.busyboxBundle(args, edit: edit)
            dir = try Harness.tempDir("shim")
            try FileManager.default.moveItem(atPath: bundle, toPath: dir + "/bundle")
        }

        @discardableResult
        func call(_ args: [String], stdin: String? = nil) throws -> Harness.Result {
            try Harness.spawn(
                [Harness.runtimeBinary, "--root", root, "--log", log, "--log-format", "json"] + args, stdin: stdin)
        }

        /// `create --bundle B --pid-file P ID`; the init's pid.
        func create() throws -> Int32 {
            let pidFile = bundle + "/init.pid"
            let r = try call(["create", "--bundle", bundle, "--pid-file", pidFile, id])
            try #require(r.status == 0, "create: \(r.stderr)")
            return try #require(
                Int32(
                    try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                ))
        }

        func status() -> String? {
            guard let r = try? call(["state", id]), r.status == 0,
                let obj = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            else { return nil }
            return obj["status"] as? String
        }

        /// The last error message of log.json, as the shim reads it; every line must be JSON.
        func lastLogError() throws -> String? {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            var last: String?
            for line in text.split(separator: "\n") {
                let obj = try #require(
                    try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    "log.json line is not JSON: \(line)")
                #expect(obj["time"] is String && obj["msg"] is String && obj["level"] is String, "\(line)")
                if obj["level"] as? String == "error" { last = obj["msg"] as? String }
            }
            return last
        }

        func leftovers() -> [String] { Harness.leftovers(id: id, root: root) }

        func destroy() {
            _ = try? call(["delete", "--force", id])
            Harness.cleanup(dir)
        }
    }

    /// Waits until `pid` has ended (gone, or a zombie). The init's parent is the runtime, which
    /// exits; under containerd the orphan goes to the shim (a subreaper), which reaps it. Here it
    /// goes to the host's init, which reaps in its own time: the test only waits for the end.
    static func ended(_ pid: Int32) -> Bool {
        ClientTools.eventually(timeout: 60) {
            guard kill(pid, 0) == 0, let stat = ProcStat.read(pid: pid) else { return true }
            return stat.state == "Z"
        }
    }

    @Test("`kill ID 9` on a created container ends the init; `delete ID` then removes everything")
    func killCreated() throws {
        let c = try Shim(["sleep", "1000"])
        defer { c.destroy() }
        let pid = try c.create()
        #expect(c.status() == "created")
        let k = try c.call(["kill", c.id, "9"])
        #expect(k.status == 0, "\(k.stderr)")
        #expect(Self.ended(pid), "the init outlived SIGKILL")
        #expect(c.status() == "stopped")
        let d = try c.call(["delete", c.id])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("`delete --force ID` on a created container kills and removes it; again on the gone id succeeds")
    func forceDeleteCreated() throws {
        let c = try Shim(["sleep", "1000"])
        defer { c.destroy() }
        let pid = try c.create()
        let d = try c.call(["delete", "--force", c.id])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(Self.ended(pid), "the init was not ended")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        // The shim's cleanup after a crash deletes ids that may be gone already.
        #expect(try c.call(["delete", "--force", c.id]).status == 0)
    }

    @Test(
        "`kill --all ID 9` after the init exited succeeds; `kill ID 9` says \"container not running\" on stderr and in log.json"
    )
    func killAllAfterExit() throws {
        let c = try Shim(["true"])
        defer { c.destroy() }
        let pid = try c.create()
        #expect(try c.call(["start", c.id]).status == 0)
        #expect(Self.ended(pid))
        #expect(c.status() == "stopped")
        let all = try c.call(["kill", "--all", c.id, "9"])
        #expect(all.status == 0, "\(all.stderr)")
        let one = try c.call(["kill", c.id, "9"])
        #expect(one.status != 0)
        // go-runc puts stderr into the error; the shim maps this text to NotFound.
        #expect(one.stderr.contains("container not running"), "\(one.stderr)")
        #expect(try c.lastLogError()?.contains("container not running") == true)
        #expect(try c.call(["delete", c.id]).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "`exec --process FILE --detach --pid-file P ID`: a live pid in the container's namespaces, listed by `ps --format json`"
    )
    func execDetach() throws {
        let c = try Shim(["sh", "-c", "exec >/dev/null 2>&1; exec sleep 1000"])
        defer { c.destroy() }
        let initPid = try c.create()
        #expect(try c.call(["start", c.id]).status == 0)
        // containerd writes the process to a temp file of its own, outside the bundle.
        let tmp = try Harness.tempDir("runc-process")
        defer { Harness.cleanup(tmp) }
        var process = OCI.Process(
            user: User(uid: 1000, gid: 1000), args: ["sleep", "999"], env: ["PATH=/bin"], cwd: "/")
        process.noNewPrivileges = true
        try JSONEncoder().encode(process).write(to: URL(fileURLWithPath: tmp + "/process.json"))
        let pidFile = c.bundle + "/exec-1.pid"
        let e = try c.call(["exec", "--process", tmp + "/process.json", "--detach", "--pid-file", pidFile, c.id])
        #expect(e.status == 0, "\(e.stderr)")
        let pid = try #require(
            Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(pid, 0) == 0)
        let ns = { (p: Int32) in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p)/ns/pid")) ?? "?\(p)"
        }
        #expect(ns(pid) == ns(initPid), "the exec'd process is in the container's pid namespace")
        let ps = try c.call(["ps", "--format", "json", c.id])
        #expect(ps.status == 0, "\(ps.stderr)")
        let pids =
            (try? JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [NSNumber])?.map(\.int32Value) ?? []
        #expect(Set(pids).isSuperset(of: [initPid, pid]), "ps --format json: \(ps.stdout)")
        #expect(try c.call(["kill", "--all", c.id, "9"]).status == 0)
        // The init of a pid namespace finishes exiting once every process in it is reaped.
        #expect(Self.ended(pid) && Self.ended(initPid))
        #expect(ClientTools.eventually(timeout: 60) { c.status() == "stopped" })
        let d = try c.call(["delete", c.id])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("`update --resources - ID` with CRI's UpdateContainerResources JSON on stdin sets the container's cgroup")
    func updateResources() throws {
        let c = try Shim(["sh", "-c", "exec >/dev/null 2>&1; exec sleep 1000"]) { spec in
            spec.linux?.resources = Resources(
                memory: .init(limit: 256 << 20), cpu: .init(shares: 1024, quota: 100_000, period: 100_000))
        }
        defer { c.destroy() }
        let pid = try c.create()
        #expect(try c.call(["start", c.id]).status == 0)
        // What containerd 1.6 sends on cgroup v1: swap equal to the limit (no swap).
        let resources =
            #"{"memory":{"limit":134217728,"swap":134217728},"cpu":{"shares":256,"quota":20000,"period":100000}}"#
        let u = try c.call(["update", "--resources", "-", c.id], stdin: resources)
        #expect(u.status == 0, "\(u.stderr)")
        let v2 = !FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory")
        func read(_ controller: String, _ file: String) -> String {
            let procCgroup = (try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)) ?? ""
            let line = procCgroup.split(separator: "\n").first {
                v2
                    ? $0.hasPrefix("0::")
                    : $0.split(separator: ":")[1].split(separator: ",").contains(Substring(controller))
            }
            let path = line.map { String($0.split(separator: ":", maxSplits: 2)[2]) } ?? "?"
            let base = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/\(controller)"
            return ((try? String(contentsOfFile: base + path + "/" + file, encoding: .utf8)) ?? "").trimmingCharacters(
                in: .whitespacesAndNewlines)
        }
        if v2 {
            #expect(read("memory", "memory.max") == "134217728")
            #expect(read("cpu", "cpu.max") == "20000 100000")
        } else {
            #expect(read("memory", "memory.limit_in_bytes") == "134217728")
            #expect(read("cpu", "cpu.cfs_quota_us") == "20000")
            #expect(read("cpu", "cpu.shares") == "256")
        }
        #expect(try c.call(["kill", c.id, "9"]).status == 0)
        #expect(Self.ended(pid))
        #expect(try c.call(["delete", c.id]).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "a failing create writes JSON lines to --log whose last error names the field; stderr carries it too; nothing remains"
    )
    func errorLinesInLog() throws {
        let c = try Shim(["/no/such/program"])
        defer { c.destroy() }
        let r = try c.call(["create", "--bundle", c.bundle, "--pid-file", c.bundle + "/init.pid", c.id])
        #expect(r.status != 0)
        let msg = try c.lastLogError()
        #expect(
            msg?.contains("process.args") == true && msg?.contains("/no/such/program") == true,
            "last error line: \(msg ?? "none")")
        #expect(r.stderr.contains("/no/such/program"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
