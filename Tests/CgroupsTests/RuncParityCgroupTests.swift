import Foundation
import OCI
import Testing

@testable import Cgroups
@testable import LinuxKernel

/// runc 1.1 parity of the cgroup drivers (issue 16, items 4 and 5): per-device block I/O
/// weights, a CFS period updated alone, runc's stats fields, and a reused cgroup that holds
/// processes (a warning, not a refusal; the processes are not the container's).
struct RuncParityCgroupTests {
    static func blockIO(_ json: String) throws -> OCIResources {
        var r = OCIResources()
        r.blockIO = try JSONDecoder().decode(OCIResources.BlockIO.self, from: Data(json.utf8))
        return r
    }

    @Test("weightDevice: v1 writes blkio.weight_device (BFQ's file chosen at apply), one `MAJ:MIN W` per device")
    func weightDeviceV1() throws {
        let r = try Self.blockIO(
            #"{"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}, {"major": 7, "minor": 4, "weight": 0}, {"major": 7, "minor": 5, "weight": 1000}]}"#
        )
        let writes = try CgroupV1.writes(r, currentMemoryLimit: nil, memswAvailable: true)
        #expect(
            writes.map(\.description) == [
                "blkio.weight=500", "blkio.weight_device=8:0 300", "blkio.weight_device=7:5 1000",
            ])
        #expect(
            writes.map(\.field) == [
                "linux.resources.blockIO.weight", "linux.resources.blockIO.weightDevice[0]",
                "linux.resources.blockIO.weightDevice[2]",
            ])
    }

    @Test("weightDevice: v2 writes io.weight converted, or the raw weight to io.bfq.weight")
    func weightDeviceV2() throws {
        let r = try Self.blockIO(#"{"weightDevice": [{"major": 8, "minor": 16, "weight": 500}]}"#)
        let writes = try CgroupV2.writes(r)
        #expect(writes.map(\.description) == ["io.weight=8:16 4950"])
        #expect(writes.first?.bfqValue == "8:16 500")
        #expect(writes.first?.field == "linux.resources.blockIO.weightDevice[0]")
    }

    @Test("weightDevice: a weight outside 10...1000 and a leafWeight are refused naming the entry")
    func weightDeviceRefused() throws {
        #expect {
            _ = try CgroupV1.writes(
                try Self.blockIO(#"{"weightDevice": [{"major": 8, "minor": 0, "weight": 5}]}"#),
                currentMemoryLimit: nil, memswAvailable: true)
        } throws: { "\($0)" == "linux.resources.blockIO.weightDevice[0].weight: 5 is outside 10...1000" }
        let leaf = try Self.blockIO(
            #"{"weightDevice": [{"major": 8, "minor": 0, "weight": 100}, {"major": 8, "minor": 1, "leafWeight": 100}]}"#
        )
        #expect(Conversions.unsupportedFields(leaf) == ["linux.resources.blockIO.weightDevice[1].leafWeight"])
    }

    @Test(
        "update: a period alone is applied with the container's quota (cpu.max keeps it); weightDevice merges per device"
    )
    func periodAlone() throws {
        var current = OCIResources(cpu: .init(quota: 20_000, period: 100_000))
        current.blockIO = try Self.blockIO(
            #"{"weightDevice": [{"major": 8, "minor": 0, "weight": 300}, {"major": 8, "minor": 1, "weight": 200}]}"#
        ).blockIO
        let (apply, merged) = try ResourceUpdate.merge(OCIResources(cpu: .init(period: 50_000)), into: current)
        #expect(apply.cpu?.quota == 20_000 && apply.cpu?.period == 50_000)
        #expect(try CgroupV2.writes(apply).map(\.description) == ["cpu.max=20000 50000"])
        #expect(
            try CgroupV1.writes(apply, currentMemoryLimit: nil, memswAvailable: true).map(\.description) == [
                "cpu.cfs_period_us=50000", "cpu.cfs_quota_us=20000",
            ])
        #expect(merged.cpu?.quota == 20_000 && merged.cpu?.period == 50_000)
        // Without a quota there is none to carry: the period goes alone.
        let (alone, _) = try ResourceUpdate.merge(OCIResources(cpu: .init(period: 50_000)), into: OCIResources())
        #expect(alone.cpu?.quota == nil)
        let (_, devices) = try ResourceUpdate.merge(
            try Self.blockIO(#"{"weightDevice": [{"major": 8, "minor": 1, "weight": 900}]}"#), into: current)
        #expect(
            devices.blockIO?.weightDevice?.map { "\($0.major):\($0.minor) \($0.weight ?? 0)" } == [
                "8:0 300", "8:1 900",
            ])
    }

    @Test("v1 stats: runc's per-CPU kernel/user times, cpuset, kernel memory and hugetlb fields")
    func statsV1() throws {
        let files: [String: String] = [
            "cpuacct/cpuacct.usage_all": "cpu user system\n0 100 200\n1 300 400\n",
            "cpuset/cpuset.cpus": "0-2,5\n", "cpuset/cpuset.mems": "0\n", "cpuset/cpuset.sched_load_balance": "1\n",
            "cpuset/cpuset.sched_relax_domain_level": "-1\n",
            "memory/memory.kmem.usage_in_bytes": "4096\n", "memory/memory.kmem.limit_in_bytes": "9223372036854771712\n",
            "memory/memory.kmem.tcp.failcnt": "2\n",
        ]
        let s = StatsParser.v1 { files["\($0)/\($1)"] }
        #expect(s.cpu.usage.percpuUser == [100, 300] && s.cpu.usage.percpuKernel == [200, 400])
        #expect(
            s.cpuset.cpus == [0, 1, 2, 5] && s.cpuset.mems == [0] && s.cpuset.schedLoadBalance == 1
                && s.cpuset.schedRelaxDomainLevel == -1)
        #expect(s.memory.kernel.usage == 4096 && s.memory.kernel.limit == UInt64.max && s.memory.kernelTCP.failcnt == 2)
        #expect(
            StatsParser.pageSizeName(2048) == "2MB" && StatsParser.pageSizeName(1_048_576) == "1GB"
                && StatsParser.pageSizeName(64) == "64KB")
    }

    @Test("v2 stats: swap is reported as memory+swap, as runc does for v1 compatibility")
    func statsV2Swap() {
        let files = [
            "memory.current": "1000\n", "memory.max": "4096\n", "memory.swap.current": "24\n",
            "memory.swap.max": "1024\n",
        ]
        let s = StatsParser.v2 { files[$0] }
        #expect(s.memory.swap.usage == 1024 && s.memory.swap.limit == 5120)
        let unlimited = StatsParser.v2 {
            [
                "memory.current": "1000\n", "memory.max": "max\n", "memory.swap.current": "0\n",
                "memory.swap.max": "max\n",
            ][$0]
        }
        #expect(unlimited.memory.swap.limit == UInt64.max && unlimited.memory.swap.usage == 1000)
    }

    @Test(
        "the stats JSON has runc's members in runc's order, network_interfaces null, empty hugetlb and intel_rdt objects"
    )
    func statsJSON() throws {
        let data = try JSONEncoder().encode(CgroupStats())
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(
            Set(obj.keys) == ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"])
        #expect(obj["network_interfaces"] is NSNull)
        #expect(
            (obj["hugetlb"] as? [String: Any])?.isEmpty == true && (obj["intel_rdt"] as? [String: Any])?.isEmpty == true
        )
        let memory = try #require(obj["memory"] as? [String: Any])
        #expect((memory["kernelTCP"] as? [String: Any])?.keys.sorted() == ["failcnt", "limit"])
        let cpuset = try #require(obj["cpuset"] as? [String: Any])
        #expect(cpuset.count == 9 && cpuset["sched_relax_domain_level"] as? Int == 0)
        // And it decodes back, older JSON without the new members too.
        #expect(try JSONDecoder().decode(CgroupStats.self, from: data) == CgroupStats())
        #expect(
            try JSONDecoder().decode(
                CgroupStats.self, from: Data(#"{"cpu":{"usage":{"kernel":1,"user":2},"throttling":{}}}"#.utf8)
            ).cpu.usage.user == 2)
    }
}

/// A reused cgroup that holds processes, on this host's real cgroups (v1/hybrid here; the same
/// code path on v2).
@Suite(.enabled(if: getuid() == 0, "needs root"))
struct RuncParityReusedCgroupTests {
    @Test("create in a cgroup holding a process warns as runc does; teardown leaves that process and the cgroup alone")
    func nonEmptyCgroup() throws {
        let parent = uniqueTestParent()
        var existing = try Cgroup.resolve(cgroupsPath: "\(parent)/reused", id: "reused")
        try existing.create()
        let child = try BlockedChild("sleep 60")
        defer {
            kill(child.pid, SIGKILL)
            _ = child.wait()
            try? existing.destroy()
        }
        try existing.attach(pid: child.pid)

        var cg = try Cgroup.resolve(cgroupsPath: "\(parent)/reused", id: "reused")
        let warnings = try cg.create()
        #expect(warnings == ["container's cgroup is not empty: 1 process(es) found"])
        #expect(cg.foreignProcesses?.map(\.pid) == [child.pid])
        #expect(cg.created.isEmpty)
        #expect(cg.ownProcesses().isEmpty)
        try cg.killAndDestroy(timeout: 5)
        #expect(kill(child.pid, 0) == 0, "the process that was there before was killed")
        for dir in cg.directories.values { #expect(CgroupFS.exists(dir), "\(dir) was removed") }
        // Survives the Codable round trip the runtime's state makes.
        let again = try JSONDecoder().decode(Cgroup.self, from: JSONEncoder().encode(cg))
        #expect(again.foreignProcesses == cg.foreignProcesses)
    }
}
