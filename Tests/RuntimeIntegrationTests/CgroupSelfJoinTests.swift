import Foundation
import OCI
import TestSupport
import Testing

/// The container's first process and `exec`'s helper join their cgroups by themselves
/// (`CgroupSelfJoin`: `0` written to each v1 `tasks` file, clone3 `CLONE_INTO_CGROUP` on v2)
/// instead of being moved by the runtime. Runs on this v1/hybrid host and on cgroup v2 in
/// scripts/vm-test's VM.
@Suite(.enabled(if: Harness.isRoot, "needs root to run containers"), .serialized)
struct CgroupSelfJoinTests {
    /// The cgroup path of each hierarchy in `/proc/self/cgroup` text, keyed by its controllers
    /// (`unified` for the v2 line).
    static func paths(_ procSelfCgroup: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in procSelfCgroup.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3 else { continue }
            out[parts[1].isEmpty ? "unified" : parts[1]] = parts[2]
        }
        return out
    }

    /// Whether this process may make a user namespace (not in a chroot, as scripts/vm-test's
    /// VM runs its command: unshare(2) EPERM).
    static let userNamespacesWork: Bool = {
        (try? Harness.run("/usr/bin/unshare", ["--user", "/bin/true"]).status) == 0
    }()

    @Test("run with pids.limit 1: the init is in the container's cgroup in every hierarchy, alone")
    func everyHierarchyWithOnePid() throws {
        try Self.joinsEveryHierarchy(userNamespace: false)
    }

    @Test(
        "the same with a user namespace",
        .enabled(if: userNamespacesWork, "this process cannot make a user namespace (a chroot: scripts/vm-test)"))
    func everyHierarchyWithOnePidInUserNamespace() throws {
        try Self.joinsEveryHierarchy(userNamespace: true)
    }

    static func joinsEveryHierarchy(userNamespace: Bool) throws {
        // pids.max 1 leaves no room for a second task in the cgroup at any moment: the init
        // must get there alone (a migration, not a fork charged to the cgroup). With a user
        // namespace stage 1 is born in the v2 cgroup and stage 2 joins the v1 hierarchies (on a
        // cgroup v2 host the runtime moves it).
        let c = try TestContainer(
            "selfjoin",
            bundle: try Harness.busyboxBundle(["sh", "-c", "exec cat /proc/self/cgroup"]) { spec in
                spec.linux?.resources = Resources(pids: .init(limit: 1))
                if userNamespace { RuncParityBehaviourTests.userNamespace(&spec) }
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        let seen = Self.paths(r.stdout)
        let own = Set(Self.paths(try String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)).keys)
        #expect(!seen.isEmpty && Set(seen.keys) == own, "\(r.stdout)")
        for (key, path) in seen {
            #expect(path.hasSuffix("/" + c.id), "\(key) is \(path), not the container's cgroup")
        }
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("exec into a sub-cgroup that takes no task: the error names --cgroup, the file and errno; no process stays")
    func joinRefused() throws {
        let c = try TestContainer("selfjoinx", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.run(["--detach"]).status == 0)
        let state =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(c.root)/\(c.id)/state.json"))) as? [String: Any]
        let cgroup = try #require(state?["cgroup"] as? [String: Any])
        let dirs = try #require(cgroup["directories"] as? [String: String])
        let unified = cgroup["mode"] as? String == "unified"
        // v1: an empty cpuset takes no task (ENOSPC). v2: the container cgroup, holding a
        // process and with a threaded controller (pids) enabled for its children, becomes a
        // thread root, and a domain cgroup below a thread root is an invalid domain that takes
        // no process (cgroup-v2.rst "Threads"; clone3 CLONE_INTO_CGROUP: EOPNOTSUPP).
        let key = try #require(unified ? "unified" : dirs.keys.first { $0.split(separator: ",").contains("cpuset") })
        let sub = try #require(dirs[key]) + "/sub"
        if unified {
            try "+pids".write(
                toFile: try #require(dirs[key]) + "/cgroup.subtree_control", atomically: false, encoding: .utf8)
        }
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
        defer { rmdir(sub) }
        let r = try c.rt(["exec", "--cgroup", unified ? "sub" : "cpuset:sub", c.id, "true"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--cgroup"), "\(r.stderr)")
        #expect(r.stderr.contains(unified ? "EOPNOTSUPP" : "ENOSPC"), "\(r.stderr)")
        #expect(r.stderr.contains(sub), "\(r.stderr)")
        let procs = { (dir: String) in
            ((try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n")
        }
        #expect(procs(sub).isEmpty)
        #expect(procs(try #require(dirs[key])).count == 1, "only the container's sleep")
        #expect(try c.rt(["exec", c.id, "true"]).status == 0, "the container still takes an exec")
    }
}
