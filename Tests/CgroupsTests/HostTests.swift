import Foundation
import OCI
import Testing

@testable import Cgroups

let hostCanRunCgroupTests = getuid() == 0 && Cgroup.detectMode() != .unified

/// Real cgroups on this host (root, cgroup v1 / hybrid). Each test works under a unique
/// relative path, so below the test process's own cgroups, and removes all it creates.
@Suite(.enabled(if: hostCanRunCgroupTests, "needs root on a cgroup v1/hybrid host"))
struct HostTests {
    static func uniqueParent() -> String {
        "safespace-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    func readValue(_ cg: Cgroup, _ controller: String, _ file: String) throws -> String {
        let dir = try #require(cg.directory(forController: controller))
        return CgroupFS.trimmed(try CgroupFS.read(dir + "/" + file))
    }

    /// Starts `/bin/sleep 60` with posix_spawn (no fork from a threaded test process).
    func spawnSleep() throws -> pid_t {
        var pid: pid_t = 0
        let args: [UnsafeMutablePointer<CChar>?] = ["/bin/sleep", "60"].map { $0.withCString { strdup($0) } } + [nil]
        var env: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { args.forEach { free($0) } }
        var argv = args
        let rc = posix_spawn(&pid, "/bin/sleep", nil, nil, &argv, &env)
        try #require(rc == 0, "posix_spawn: \(rc)")
        return pid
    }

    func waitExit(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status & 0x7f  // the terminating signal
    }

    @Test("create, apply, attach, killAll, destroy: nothing remains")
    func lifecycle() throws {
        let parent = Self.uniqueParent()
        var cg = try Cgroup.resolve(cgroupsPath: "\(parent)/c1", id: "c1")
        #expect(cg.mode != .unified)
        let own = try String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)
        let memoryOwn = try #require(CgroupPath.parseProcCgroup(own).first { $0.key == "memory" }?.path)
        #expect(cg.directories["memory"] == CgroupPath.join("/sys/fs/cgroup/memory", memoryOwn, parent, "c1"))

        try cg.create()
        var cleaned = false
        defer {
            if !cleaned {
                _ = try? cg.killAll(signal: SIGKILL)
                try? cg.destroy()
            }
        }
        // Two levels per hierarchy: the unique parent and the leaf.
        #expect(cg.created.count == 2 * cg.directories.count)
        for dir in cg.directories.values { #expect(CgroupFS.isDirectory(dir)) }
        // cpuset levels inherited the parent's CPUs and memory nodes.
        #expect(try !readValue(cg, "cpuset", "cpuset.cpus").isEmpty)
        #expect(try !readValue(cg, "cpuset", "cpuset.mems").isEmpty)

        let memswAvailable = CgroupFS.exists(
            try #require(cg.directory(forController: "memory")) + "/memory.memsw.limit_in_bytes")
        let resources = OCIResources(
            memory: .init(limit: 64 << 20, reservation: 32 << 20, swap: memswAvailable ? 128 << 20 : nil),
            cpu: .init(shares: 512, quota: 50_000, period: 100_000, cpus: "0", mems: "0"),
            pids: .init(limit: 32))
        try cg.apply(resources)
        #expect(try readValue(cg, "memory", "memory.limit_in_bytes") == "67108864")
        #expect(try readValue(cg, "memory", "memory.soft_limit_in_bytes") == "33554432")
        if memswAvailable {
            #expect(try readValue(cg, "memory", "memory.memsw.limit_in_bytes") == "134217728")
        }
        #expect(try readValue(cg, "cpu", "cpu.shares") == "512")
        #expect(try readValue(cg, "cpu", "cpu.cfs_period_us") == "100000")
        #expect(try readValue(cg, "cpu", "cpu.cfs_quota_us") == "50000")
        #expect(try readValue(cg, "cpuset", "cpuset.cpus") == "0")
        #expect(try readValue(cg, "pids", "pids.max") == "32")

        // Raising limits later (update) must order memsw and memory writes correctly.
        try cg.apply(
            OCIResources(
                memory: .init(limit: 256 << 20, swap: memswAvailable ? 512 << 20 : nil), pids: .init(limit: -1)))
        #expect(try readValue(cg, "memory", "memory.limit_in_bytes") == "268435456")
        #expect(try readValue(cg, "pids", "pids.max") == "max")

        let pid = try spawnSleep()
        try cg.attach(pid: pid)
        #expect(try cg.processes() == [pid])
        for dir in cg.directories.values {
            #expect(try CgroupFS.procs(in: dir) == [pid])
        }
        try cg.killAll(signal: SIGKILL)
        #expect(waitExit(pid) == SIGKILL)
        #expect(try cg.processes().isEmpty)

        try cg.destroy()
        cleaned = true
        for dir in cg.created { #expect(!CgroupFS.exists(dir), "\(dir) remains") }
        // Idempotent: a second destroy and a kill of a destroyed cgroup succeed.
        try cg.destroy()
        try cg.killAll(signal: SIGKILL)
    }

    @Test("a value the kernel rejects is reported with the file, errno and OCI field")
    func kernelRejects() throws {
        var cg = try Cgroup.resolve(cgroupsPath: "\(Self.uniqueParent())/c2", id: "c2")
        try cg.create()
        defer { try? cg.destroy() }
        #expect {
            try cg.apply(OCIResources(cpu: .init(cpus: "4095")))
        } throws: { error in
            let text = "\(error)"
            // A CPU beyond nr_cpu_ids: ERANGE on current kernels, EINVAL on older ones.
            let code = (error as? CgroupError)?.errno ?? 0
            return text.hasPrefix("linux.resources.cpu.cpus: write cpuset.cpus: \(CgroupError.errnoName(code)) ")
                && code != 0
        }
        #expect {
            var r = OCIResources()
            r.unified = ["memory.high": "1"]
            try cg.apply(r)
        } throws: { error in
            "\(error)".hasPrefix("linux.resources.unified: ")
        }
        try cg.destroy()
        for dir in cg.created { #expect(!CgroupFS.exists(dir)) }
    }

    @Test("the last of two cgroups sharing a parent removes the parent, whoever made it")
    func sharedParent() throws {
        let parent = Self.uniqueParent()
        var first = try Cgroup.resolve(cgroupsPath: "\(parent)/shared/a", id: "a")
        var second = try Cgroup.resolve(cgroupsPath: "\(parent)/shared/b", id: "b")
        try first.create()
        defer { try? first.destroy() }
        try second.create()
        defer { try? second.destroy() }
        #expect(first.created.count == 3 * first.directories.count)
        #expect(second.created.count == second.directories.count)  // only its leaf
        try first.destroy()
        for dir in first.directories.values {
            #expect(!CgroupFS.exists(dir))
            #expect(CgroupFS.exists(CgroupPath.parent(dir)), "shared level removed while in use")
        }
        try second.destroy()
        for dir in second.directories.values {
            #expect(!CgroupFS.exists(CgroupPath.parent(dir)), "\(CgroupPath.parent(dir)) remains")
            #expect(!CgroupFS.exists(CgroupPath.parent(CgroupPath.parent(dir))))
        }
    }

    @Test(
        "killAndDestroy kills a frozen cgroup with frozen, populated sub-cgroups and removes it all; create refuses a frozen cgroup"
    )
    func killAndDestroyFrozen() throws {
        try checkKillAndDestroyFrozenTree(parent: Self.uniqueParent())
    }

    @Test("a failed create removes what it made")
    func createRollsBack() throws {
        var cg = try Cgroup.resolve(cgroupsPath: "\(Self.uniqueParent())/c3", id: "c3")
        // Sorted last, so every real hierarchy has been created when this one fails.
        cg.directories["zzz"] = "/proc/nonexistent/c3"
        cg.mountPoints["zzz"] = "/proc"
        #expect(throws: CgroupError.self) { try cg.create() }
        #expect(cg.created.isEmpty)
        for (key, dir) in cg.directories where key != "zzz" {
            #expect(!CgroupFS.exists(dir), "\(dir) remains")
            #expect(!CgroupFS.exists(CgroupPath.parent(dir)), "\(CgroupPath.parent(dir)) remains")
        }
    }

    @Test("the default path is safespace/<id> under the caller's cgroup")
    func defaultPath() throws {
        let cg = try Cgroup.resolve(cgroupsPath: nil, id: "abc")
        #expect(cg.path == "safespace/abc")
        #expect(cg.directories.values.allSatisfy { $0.hasSuffix("/safespace/abc") })
        #expect(cg.directories.keys.contains("memory"))
        #expect(cg.directories.keys.contains("name=systemd"))
    }
}
