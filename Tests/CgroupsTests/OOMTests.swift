import Foundation
import OCI
import Testing

@testable import Cgroups

/// OOM kills counted from the cgroup's own counter (v2 memory.events, v1 memory.oom_control),
/// against the baseline recorded at create. Real cgroups, either version (root).
@Suite(.enabled(if: getuid() == 0, "needs root to make cgroups"))
struct OOMTests {
    @Test("an OOM kill is counted, and a reused cgroup does not report the earlier kill")
    func oomBaseline() throws {
        let path = "\(uniqueTestParent())/oom"
        var first = try Cgroup.resolve(cgroupsPath: path, id: "oom")
        try first.create()
        defer {
            _ = try? first.killAll(signal: SIGKILL)
            try? first.destroy()
        }
        #expect(first.oomKillBaseline == 0)
        try first.apply(OCIResources(memory: .init(limit: 16 << 20)))
        let child = try BlockedChild("exec dd if=/dev/zero of=/dev/null bs=64M count=1")
        try first.attach(pid: child.pid)
        child.release()
        #expect(child.wait() == 137)
        #expect(first.oomKillsSinceCreate() == 1)
        #expect(try first.stats().memory.eventCount?.oomKill == 1)

        // The same leaf again (it exists, empty): the earlier kill is the baseline.
        var second = try Cgroup.resolve(cgroupsPath: path, id: "oom")
        try second.create()
        #expect(second.oomKillBaseline == 1)
        #expect(second.oomKillsSinceCreate() == 0)
        let clean = try BlockedChild("exec dd if=/dev/zero of=/dev/null bs=1M count=1")
        try second.attach(pid: clean.pid)
        clean.release()
        #expect(clean.wait() == 0)
        #expect(second.oomKillsSinceCreate() == 0)
    }

    @Test("stats of a live cgroup: CPU time, memory usage and peak, pids")
    func liveStats() throws {
        var cg = try Cgroup.resolve(cgroupsPath: "\(uniqueTestParent())/stats", id: "stats")
        try cg.create()
        defer {
            _ = try? cg.killAll(signal: SIGKILL)
            try? cg.destroy()
        }
        try cg.apply(OCIResources(memory: .init(limit: 64 << 20), pids: .init(limit: 10)))
        let child = try BlockedChild("dd if=/dev/zero of=/dev/null bs=1M count=200; exec sleep 60")
        try cg.attach(pid: child.pid)
        child.release()
        var s = try cg.stats()
        for _ in 0..<500 where (s.cpu.usage.total ?? 0) < 1_000_000 {
            usleep(20_000)
            s = try cg.stats()
        }
        #expect((s.cpu.usage.total ?? 0) > 0)
        #expect(s.pids.current == 1 || s.pids.current == 2)
        #expect(s.pids.limit == 10)
        #expect(s.memory.usage.limit == 64 << 20)
        #expect((s.memory.usage.usage ?? 0) > 0)
        try cg.killAll(signal: SIGKILL)
        #expect(child.wait() == 137)
        try cg.destroy()
        #expect(throws: CgroupError.self) { _ = try cg.stats() }
    }
}
