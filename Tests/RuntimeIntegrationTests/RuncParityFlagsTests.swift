import Cgroups
import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Item 3 of issue 16: runc's flags and argument forms on the real binary — `-v`/`--version`,
/// `help VERB` and `VERB -h` for every verb of runc 1.1, an unknown verb (exit 3), `checkpoint`
/// and `restore` refused by name, `kill ID 0`, negative values of `update`, `update`'s realtime
/// fields, `exec --cgroup` and `exec --ignore-paused`. Where runc is installed, the same command
/// lines go through runc and the exit statuses (and what the container sees) are compared.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuncParityFlagsTests {
    /// runc 1.1's verbs (`runc help`).
    static let runcVerbs = [
        "checkpoint", "create", "delete", "events", "exec", "kill", "list", "pause", "ps", "restore", "resume", "run",
        "spec", "start", "state", "update", "features",
    ]

    /// runc, with a state root of its own, or nil when runc is not installed.
    struct Runc {
        let binary: String
        let root: String
        init?() {
            guard let binary = Harness.find("runc"), let root = try? Harness.tempDir("runcroot") else { return nil }
            self.binary = binary
            self.root = root
        }
        @discardableResult
        func callAsFunction(_ args: [String]) throws -> Harness.Result {
            try Harness.run(binary, ["--root", root] + args, timeout: 60)
        }
        func destroy(_ ids: String...) {
            for id in ids { _ = try? self(["delete", "--force", id]) }
            Harness.cleanup(root)
        }
    }

    // MARK: version, help, unknown verbs, checkpoint/restore

    @Test("-v and --version print runc's shape: `NAME version X`, then spec: and libseccomp: lines; exit 0")
    func version() throws {
        let root = try Harness.tempDir("root")
        defer { Harness.cleanup(root) }
        for args in [["-v"], ["--version"], ["--root", root, "-v"], ["--debug", "--version"]] {
            let r = try Harness.run(Harness.runtimeBinary, args)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            let l = lines(r.stdout)
            #expect(l.first == "safespace-runtime version 0.1.0", "\(args): \(r.stdout)")
            #expect(l.contains("spec: \(Spec.version)"), "\(args): \(r.stdout)")
            #expect(
                l.contains { $0.hasPrefix("libseccomp: ") && $0.dropFirst(12).split(separator: ".").count == 3 },
                "\(args): \(r.stdout)")
        }
        if let runc = Harness.find("runc") {
            // Every line of runc's that this runtime can state has the same key here.
            let theirs = lines(try Harness.run(runc, ["--version"]).stdout)
            let ours = lines(try Harness.run(Harness.runtimeBinary, ["--version"]).stdout)
            #expect(theirs.first?.hasPrefix("runc version ") == true)
            func keys(_ l: [String]) -> Set<String> {
                Set(l.dropFirst().compactMap { $0.split(separator: ":").first.map(String.init) })
            }
            #expect(
                keys(theirs).subtracting(["commit", "go"]) == keys(ours).subtracting(["swift"]),
                "runc \(theirs), ours \(ours)")
        }
    }

    @Test("help VERB, VERB -h and VERB --help for every verb of runc 1.1 exit 0 with the verb's usage")
    func helpForEveryVerb() throws {
        let runc = Harness.find("runc")
        for verb in Self.runcVerbs {
            for args in [["help", verb], [verb, "-h"], [verb, "--help"]] {
                let r = try Harness.run(Harness.runtimeBinary, args)
                #expect(r.status == 0, "\(args): \(r.stderr)")
                #expect(r.stdout.contains("USAGE: safespace-runtime \(verb)"), "\(args): \(r.stdout)")
            }
            if let runc { #expect(try Harness.run(runc, ["help", verb]).status == 0, "runc help \(verb)") }
        }
        let top = try Harness.run(Harness.runtimeBinary, ["help"])
        #expect(top.status == 0)
        for verb in Self.runcVerbs { #expect(top.stdout.contains("  \(verb) "), "help lists \(verb)") }
    }

    @Test("an unknown verb, or help of one, is an error with runc's exit status 3")
    func unknownVerb() throws {
        for args in [["nosuchverb"], ["help", "nosuchverb"], ["--root", "/tmp/x", "nosuchverb", "id"]] {
            let r = try Harness.run(Harness.runtimeBinary, args)
            #expect(r.status == 3, "\(args): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains("No help topic for 'nosuchverb'"), "\(args): \(r.stderr)")
            if let runc = Harness.find("runc") {
                let theirs = try Harness.run(runc, args)
                #expect(theirs.status == r.status, "runc \(args): \(theirs.status) \(theirs.stderr)")
            }
        }
    }

    @Test(
        "checkpoint and restore are refused by name (no CRIU path), exit 1, whatever their options",
        arguments: [
            ["checkpoint", "--image-path", "/tmp/img", "--leave-running", "ctr"],
            ["restore", "--image-path", "/tmp/img", "--detach", "ctr"],
        ])
    func criuRefused(args: [String]) throws {
        let root = try Harness.tempDir("root")
        defer { Harness.cleanup(root) }
        let r = try Harness.runtime(root: root, args)
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("\(args[0]) is not supported") && r.stderr.contains("CRIU"), "\(r.stderr)")
    }

    // MARK: kill ID 0

    @Test("kill ID 0: 0 while the init lives, runc's error once it is gone or the id is unknown")
    func killZero() throws {
        let bundle = try Harness.busyboxBundle(["sleep", "1000"])
        defer { Harness.cleanup(bundle) }
        let id = Harness.uniqueID("kill0")
        let root = try Harness.tempDir("root")
        let runc = Runc()
        defer {
            _ = try? Harness.runtime(root: root, ["delete", "--force", id])
            Harness.cleanup(root)
            runc?.destroy(id)
        }
        typealias Runner = ([String]) throws -> Harness.Result
        var runners: [(String, Runner)] = [("ours", { try Harness.runtime(root: root, $0) })]
        if let runc { runners.append(("runc", { try runc($0) })) }
        var statuses: [String: [Int32]] = [:]
        for (name, rt) in runners {
            try #require(try rt(["run", "--detach", "--bundle", bundle, id]).status == 0, "\(name) run")
            let alive = try rt(["kill", id, "0"])
            #expect(alive.status == 0, "\(name): \(alive.stderr)")
            #expect(try rt(["kill", id, "00"]).status == 0, "\(name): 00")
            let state = try rt(["state", id]).stdout
            #expect(state.contains("\"running\""), "\(name): signal 0 must not stop it: \(state)")
            try #require(try rt(["kill", id, "KILL"]).status == 0)
            #expect(
                Harness.eventually { (try? rt(["state", id]).stdout.contains("\"stopped\"")) == true },
                "\(name) never stopped")
            let gone = try rt(["kill", id, "0"])
            #expect(gone.status != 0 && gone.stderr.contains("not running"), "\(name): \(gone.stderr)")
            let unknown = try rt(["kill", id + "-none", "0"])
            #expect(unknown.status != 0 && unknown.stderr.contains("does not exist"), "\(name): \(unknown.stderr)")
            statuses[name] = [alive.status, gone.status, unknown.status]
            _ = try rt(["delete", "--force", id])
        }
        if runc != nil { #expect(statuses["ours"] == statuses["runc"], "\(statuses)") }
    }

    // MARK: update: negative values, realtime fields

    /// The cgroup directory of `controller` that `pid` is in (host view).
    static func cgroupDirectory(pid: Int32, controller: String) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else { continue }
            if parts[1].split(separator: ",").contains(Substring(controller)) {
                return "/sys/fs/cgroup/\(parts[1])\(parts[2])"
            }
            if parts[1].isEmpty, Cgroup.detectMode() == .unified { return "/sys/fs/cgroup\(parts[2])" }
        }
        return nil
    }

    static func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("update takes -1 as a value (--memory-swap, --cpu-quota, --pids-limit, --memory), as runc does")
    func negativeValues() throws {
        let bundle = try Harness.busyboxBundle(["sleep", "1000"]) { spec in
            spec.linux?.resources = Resources(
                memory: .init(limit: 64 << 20), cpu: .init(quota: 50_000, period: 100_000), pids: .init(limit: 100))
        }
        defer { Harness.cleanup(bundle) }
        let id = Harness.uniqueID("updneg")
        let root = try Harness.tempDir("root")
        let runc = Runc()
        defer {
            _ = try? Harness.runtime(root: root, ["delete", "--force", id])
            Harness.cleanup(root)
            runc?.destroy(id)
        }
        let commands = [
            ["--memory-swap", "-1"], ["--cpu-quota", "-1"], ["--pids-limit", "-1"], ["--memory", "-1"],
            ["--cpu-quota=-1"],
        ]
        try #require(try Harness.runtime(root: root, ["run", "--detach", "--bundle", bundle, id]).status == 0)
        var ours: [Int32] = []
        for flags in commands {
            let r = try Harness.runtime(root: root, ["update"] + flags + [id])
            #expect(r.status == 0, "\(flags): \(r.stderr)")
            ours.append(r.status)
        }
        let pid = try #require(TestContainer.pid(root: root, id: id))
        if Cgroup.detectMode() == .unified {
            let dir = try #require(Self.cgroupDirectory(pid: pid, controller: ""))
            #expect(Self.read(dir + "/cpu.max").hasPrefix("max "), "\(Self.read(dir + "/cpu.max"))")
            #expect(Self.read(dir + "/pids.max") == "max")
            #expect(Self.read(dir + "/memory.max") == "max")
        } else {
            #expect(
                Self.read(try #require(Self.cgroupDirectory(pid: pid, controller: "cpu")) + "/cpu.cfs_quota_us") == "-1"
            )
            #expect(Self.read(try #require(Self.cgroupDirectory(pid: pid, controller: "pids")) + "/pids.max") == "max")
            #expect(
                UInt64(
                    Self.read(
                        try #require(Self.cgroupDirectory(pid: pid, controller: "memory")) + "/memory.limit_in_bytes")
                ).map { $0 > 1 << 50 } == true)
        }
        if let runc {
            try #require(try runc(["run", "--detach", "--bundle", bundle, id]).status == 0)
            let theirs = try commands.map { try runc(["update"] + $0 + [id]).status }
            #expect(theirs == ours, "runc \(theirs), ours \(ours)")
        }
    }

    @Test(
        "update --cpu-rt-period/--cpu-rt-runtime write cpu.rt_* where the kernel has them; else fail naming the field")
    func realtime() throws {
        let id = Harness.uniqueID("updrt")
        // Directly below the hierarchy's root, whose realtime budget a child can draw on (the
        // kernel refuses a runtime the parent cgroup does not have: sched-rt-group.rst).
        let bundle = try Harness.busyboxBundle(["sleep", "1000"]) { spec in spec.linux?.cgroupsPath = "/" + id }
        defer { Harness.cleanup(bundle) }
        let root = try Harness.tempDir("root")
        let runc = Runc()
        defer {
            _ = try? Harness.runtime(root: root, ["delete", "--force", id])
            Harness.cleanup(root)
            runc?.destroy(id + "-runc")
        }
        try #require(try Harness.runtime(root: root, ["run", "--detach", "--bundle", bundle, id]).status == 0)
        let pid = try #require(TestContainer.pid(root: root, id: id))
        let cpuDir = Cgroup.detectMode() == .unified ? nil : Self.cgroupDirectory(pid: pid, controller: "cpu")
        let steps: [(flags: [String], ok: Bool)] = [
            (["--cpu-rt-period", "500000", "--cpu-rt-runtime", "20000"], true),
            (["--cpu-rt-runtime", "10000"], true),
            (["--cpu-rt-runtime", "2000000"], false),  // above the period: EINVAL
        ]
        guard let cpuDir, FileManager.default.fileExists(atPath: cpuDir + "/cpu.rt_runtime_us") else {
            let r = try Harness.runtime(root: root, ["update", "--cpu-rt-runtime", "10000", id])
            #expect(r.status == 1)
            #expect(
                r.stderr.contains("linux.resources.cpu.realtimeRuntime")
                    && (r.stderr.contains("cgroup v2") || r.stderr.contains("CONFIG_RT_GROUP_SCHED")), "\(r.stderr)")
            return
        }
        var ours: [Int32] = []
        for step in steps {
            let r = try Harness.runtime(root: root, ["update"] + step.flags + [id])
            #expect((r.status == 0) == step.ok, "\(step.flags): \(r.stderr)")
            if !step.ok { #expect(r.stderr.contains("linux.resources.cpu.realtimeRuntime"), "\(r.stderr)") }
            ours.append(r.status)
        }
        #expect(Self.read(cpuDir + "/cpu.rt_period_us") == "500000")
        #expect(Self.read(cpuDir + "/cpu.rt_runtime_us") == "10000")
        // Delete gives the budget back before runc's turn.
        try #require(try Harness.runtime(root: root, ["delete", "--force", id]).status == 0)
        if let runc {
            try Harness.patchConfig(bundle: bundle) { obj in
                var linux = obj["linux"] as! [String: Any]
                linux["cgroupsPath"] = "/" + id + "-runc"
                obj["linux"] = linux
            }
            try #require(try runc(["run", "--detach", "--bundle", bundle, id + "-runc"]).status == 0)
            let theirs = try steps.map { try runc(["update"] + $0.flags + [id + "-runc"]).status }
            #expect(theirs == ours, "runc \(theirs), ours \(ours)")
        }
    }

    // MARK: exec --cgroup, --ignore-paused

    /// The sub-cgroup's name in each line of `/proc/self/cgroup` text, by hierarchy.
    static func inSub(_ procSelfCgroup: String) -> [String: Bool] {
        var out: [String: Bool] = [:]
        for line in procSelfCgroup.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else { continue }
            out[parts[1].isEmpty ? "unified" : parts[1]] = parts[2].hasSuffix("/sub")
        }
        return out
    }

    /// mkdir of a sub-cgroup; a v1 cpuset one gets its parent's CPUs and memory nodes (an
    /// empty cpuset takes no task: ENOSPC, for runc as for us).
    static func makeSub(_ dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        let parent = (dir as NSString).deletingLastPathComponent
        for file in ["cpuset.cpus", "cpuset.mems"] where FileManager.default.fileExists(atPath: dir + "/" + file) {
            try Self.read(parent + "/" + file).write(toFile: dir + "/" + file, atomically: false, encoding: .utf8)
        }
    }

    @Test(
        "exec --cgroup joins existing sub-cgroups: the path form everywhere, controller forms per hierarchy; bad forms refused"
    )
    func execCgroup() throws {
        let id = Harness.uniqueID("execcg")
        let bundle = try Harness.busyboxBundle(["sleep", "1000"]) { spec in spec.linux?.cgroupsPath = "/" + id }
        defer { Harness.cleanup(bundle) }
        let root = try Harness.tempDir("root")
        let runc = Runc()
        var made: [String] = []
        defer {
            for dir in made.reversed() { rmdir(dir) }
            _ = try? Harness.runtime(root: root, ["delete", "--force", id])
            Harness.cleanup(root)
            runc?.destroy(id + "-runc")
        }
        try #require(try Harness.runtime(root: root, ["run", "--detach", "--bundle", bundle, id]).status == 0)
        let state = try StateStore(root: root).load(id)
        let unified = state.cgroup.mode == .unified
        for dir in state.cgroup.directories.values {
            try Self.makeSub(dir + "/sub")
            made.append(dir + "/sub")
        }
        let ok: [[String]] = unified ? [["sub"], ["/sub/"]] : [["sub"], ["cpu:sub"], ["cpu,memory:sub", "pids:sub"]]
        let bad: [[String]] = [
            ["a:b:c"], ["sub", "cpu:sub"], ["foo:sub"], ["../x"], [unified ? "nosuch" : "cpu:nosuch"],
        ]
        func exec(_ rt: ([String]) throws -> Harness.Result, _ target: String, _ forms: [String]) throws
            -> Harness.Result
        {
            try rt(["exec"] + forms.flatMap { ["--cgroup", $0] } + [target, "cat", "/proc/self/cgroup"])
        }
        var ours: [[String: Bool]] = []
        for forms in ok {
            let r = try exec({ try Harness.runtime(root: root, $0) }, id, forms)
            #expect(r.status == 0, "\(forms): \(r.stderr)")
            let seen = Self.inSub(r.stdout)
            ours.append(seen)
            if forms == ["sub"] || unified {
                #expect(!seen.isEmpty && seen.values.allSatisfy { $0 }, "\(forms): \(r.stdout)")
            } else {
                let named = Set(forms.flatMap { $0.split(separator: ":")[0].split(separator: ",").map(String.init) })
                for (key, isSub) in seen {
                    let wanted = !named.isDisjoint(with: key.split(separator: ",").map(String.init))
                    #expect(isSub == wanted, "\(forms): \(key) in sub: \(isSub); \(r.stdout)")
                }
            }
        }
        for forms in bad {
            let r = try exec({ try Harness.runtime(root: root, $0) }, id, forms)
            #expect(r.status != 0, "\(forms) accepted: \(r.stdout)")
            #expect(r.stderr.contains("--cgroup"), "\(forms): \(r.stderr)")
        }
        #expect(try Harness.runtime(root: root, ["state", id]).stdout.contains("\"running\""))
        if let runc {
            // runc's container in its own cgroup, with the same sub-cgroups.
            try Harness.patchConfig(bundle: bundle) { obj in
                var linux = obj["linux"] as! [String: Any]
                linux["cgroupsPath"] = "/" + id + "-runc"
                obj["linux"] = linux
            }
            try #require(try runc(["run", "--detach", "--bundle", bundle, id + "-runc"]).status == 0)
            for dir in state.cgroup.directories.values {
                let theirs = CgroupPathForTest.sibling(dir, id + "-runc") + "/sub"
                if (try? Self.makeSub(theirs)) != nil { made.append(theirs) }
            }
            for (i, forms) in ok.enumerated() {
                let r = try exec({ try runc($0) }, id + "-runc", forms)
                #expect(r.status == 0, "runc \(forms): \(r.stderr)")
                #expect(Self.inSub(r.stdout) == ours[i], "runc \(forms): \(r.stdout)")
            }
            for forms in bad {
                #expect(try exec({ try runc($0) }, id + "-runc", forms).status != 0, "runc accepted \(forms)")
            }
            _ = try? runc(["delete", "--force", id + "-runc"])
        }
    }

    @Test(
        "exec into a paused container: refused naming --ignore-paused; with it the process waits for resume, then runs")
    func ignorePaused() throws {
        let c = try TestContainer("execpause", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.run(["--detach"]).status == 0)
        try #require(try c.rt(["pause", c.id]).status == 0)
        let refused = try c.rt(["exec", c.id, "true"])
        #expect(refused.status != 0)
        #expect(
            refused.stderr.contains("cannot exec in a paused container") && refused.stderr.contains("--ignore-paused"),
            "\(refused.stderr)")
        let dir = try Harness.tempDir("io")
        defer { Harness.cleanup(dir) }
        let exec = try ClientProcess(
            Harness.runtimeBinary,
            ["--root", c.root, "exec", "--ignore-paused", c.id, "sh", "-c", "echo ran > /dev/shm/ip"],
            stdout: dir + "/out", stderr: dir + "/err")
        defer { exec.kill() }
        // Frozen with the container: it has not finished while the container stays paused.
        #expect(!exec.wait(timeout: 1), "exec finished in a paused container")
        try #require(try c.rt(["resume", c.id]).status == 0)
        #expect(exec.wait(timeout: 30))
        #expect(exec.wait() == 0, "\((try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")")
        #expect(try c.rt(["exec", c.id, "cat", "/dev/shm/ip"]).stdout == "ran\n")
        if let runc = Runc() {
            let id = c.id + "-runc"
            defer { runc.destroy(id) }
            try #require(try runc(["run", "--detach", "--bundle", c.bundle, id]).status == 0)
            try #require(try runc(["pause", id]).status == 0)
            let theirs = try runc(["exec", id, "true"])
            #expect(theirs.status != 0 && theirs.stderr.contains("--ignore-paused"), "\(theirs.stderr)")
            _ = try runc(["resume", id])
        }
    }
}

enum CgroupPathForTest {
    /// `dir`'s sibling named `name` (`/sys/fs/cgroup/cpu/a` -> `/sys/fs/cgroup/cpu/name`).
    static func sibling(_ dir: String, _ name: String) -> String {
        (dir as NSString).deletingLastPathComponent + "/" + name
    }
}

extension TestContainer {
    /// The init's pid from `state` under `root`, nil when there is none.
    static func pid(root: String, id: String) -> Int32? {
        guard let r = try? Harness.runtime(root: root, ["state", id]), r.status == 0,
            let obj = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        else { return nil }
        return (obj["pid"] as? NSNumber)?.int32Value
    }
}
