import Foundation
import OCI
import Testing

@testable import Cgroups

/// Stats parsing from sample cgroup files, and the JSON shape runc's `events` prints.
struct StatsTests {
    static let v2Files: [String: String] = [
        "cpu.stat":
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 30\n",
        "memory.current": "1048576\n", "memory.peak": "4194304\n", "memory.max": "33554432\n",
        "memory.swap.current": "0\n", "memory.swap.max": "max\n",
        "memory.stat": "anon 4096\nfile 8192\n",
        "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
        "pids.current": "3\n", "pids.max": "32\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    ]

    @Test("v2 files map to runc's stats fields (ns for CPU time)")
    func v2() {
        let s = StatsParser.v2 { Self.v2Files[$0] }
        #expect(s.cpu.usage.total == 1_500_000)
        #expect(s.cpu.usage.user == 1_000_000 && s.cpu.usage.kernel == 500_000)
        #expect(s.cpu.throttling.throttledPeriods == 2 && s.cpu.throttling.throttledTime == 30_000)
        #expect(
            s.memory.usage.usage == 1_048_576 && s.memory.usage.max == 4_194_304 && s.memory.usage.limit == 33_554_432)
        #expect(s.memory.usage.failcnt == 7)
        #expect(s.memory.swap.limit == UInt64.max)
        #expect(s.memory.cache == 8192)
        #expect(s.memory.eventCount?.oomKill == 2)
        #expect(s.pids.current == 3 && s.pids.limit == 32)
        #expect(
            s.blkio.ioServiceBytesRecursive == [
                .init(major: 8, minor: 0, op: "Read", value: 4096), .init(major: 8, minor: 0, op: "Write", value: 8192),
            ])
    }

    @Test("v1 files map to the same fields")
    func v1() {
        let files: [String: String] = [
            "cpuacct/cpuacct.usage": "2000\n", "cpuacct/cpuacct.usage_percpu": "1500 500 \n",
            "cpuacct/cpuacct.usage_user": "1200\n", "cpuacct/cpuacct.usage_sys": "800\n",
            "memory/memory.usage_in_bytes": "1048576\n", "memory/memory.max_usage_in_bytes": "2097152\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.failcnt": "4\n",
            "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            "pids/pids.current": "2\n", "pids/pids.max": "max\n",
            "blkio/blkio.throttle.io_service_bytes_recursive": "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n",
        ]
        let s = StatsParser.v1 { files["\($0)/\($1)"] }
        #expect(s.cpu.usage.total == 2000 && s.cpu.usage.percpu == [1500, 500])
        #expect(s.cpu.usage.user == 1200 && s.cpu.usage.kernel == 800)
        #expect(s.memory.usage.usage == 1_048_576 && s.memory.usage.max == 2_097_152)
        #expect(s.memory.usage.limit == UInt64.max && s.memory.usage.failcnt == 4)
        #expect(s.memory.eventCount?.oomKill == 1)
        #expect(s.pids.current == 2 && s.pids.limit == nil)
        #expect(s.blkio.ioServiceBytesRecursive?.count == 2)
    }

    @Test("the event JSON has runc's keys")
    func json() throws {
        let s = StatsParser.v2 { Self.v2Files[$0] }
        let data = try JSONEncoder().encode(s)
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let cpu = try #require(obj["cpu"] as? [String: Any])
        #expect((cpu["usage"] as? [String: Any])?["total"] as? Int == 1_500_000)
        let memory = try #require(obj["memory"] as? [String: Any])
        #expect((memory["usage"] as? [String: Any])?["max"] as? Int == 4_194_304)
        #expect((memory["event_count"] as? [String: Any])?["oom_kill"] as? Int == 2)
        #expect((obj["pids"] as? [String: Any])?["current"] as? Int == 3)
        let blkio = try #require(obj["blkio"] as? [String: Any])
        #expect((blkio["ioServiceBytesRecursive"] as? [[String: Any]])?.first?["op"] as? String == "Read")
        // omitempty: zero throttling fields are left out.
        #expect((StatsParser.v2 { _ in nil }).cpu.throttling == .init())
    }
}
