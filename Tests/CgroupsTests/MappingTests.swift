import OCI
import Testing

@testable import Cgroups

/// Which file gets which value, for both drivers, without a kernel. The v2 driver's writes are
/// exercised for real only on a cgroup v2 kernel (the QEMU job); this host is v1 hybrid.
struct MappingTests {
    static let full = OCIResources(
        memory: .init(limit: 64 << 20, reservation: 32 << 20, swap: 128 << 20),
        cpu: .init(shares: 1024, quota: 50_000, period: 100_000, cpus: "0-1", mems: "0"),
        pids: .init(limit: 32))

    @Test("v2: every OCI field lands in its cgroup v2 file")
    func v2Full() throws {
        var r = Self.full
        r.unified = ["memory.high": "50000000", "cgroup.max.depth": "4"]
        let writes = try CgroupV2.writes(r)
        #expect(
            writes.map(\.description) == [
                "memory.swap.max=67108864", "memory.max=67108864", "memory.low=33554432",
                "cpu.weight=100", "cpu.max=50000 100000", "cpuset.cpus=0-1", "cpuset.mems=0",
                "pids.max=32",
                "cgroup.max.depth=4", "memory.high=50000000",
            ])
        #expect(
            writes.map(\.controller) == [
                "memory", "memory", "memory", "cpu", "cpu", "cpuset", "cpuset", "pids", "", "memory",
            ])
        #expect(writes[0].field == "linux.resources.memory.swap")
    }

    @Test("v2: -1 is max, pids 0 is 0, and unset fields write nothing")
    func v2Limits() throws {
        let unlimited = OCIResources(memory: .init(limit: -1), cpu: .init(quota: -1), pids: .init(limit: -1))
        #expect(
            try CgroupV2.writes(unlimited).map(\.description) == [
                "memory.swap.max=max", "memory.max=max", "cpu.max=max", "pids.max=max",
            ])
        #expect(try CgroupV2.writes(OCIResources(pids: .init(limit: 0))).map(\.description) == ["pids.max=0"])
        #expect(try CgroupV2.writes(OCIResources(memory: .init(), cpu: .init())).isEmpty)
        #expect(
            try CgroupV2.writes(OCIResources(cpu: .init(shares: 2, period: 20_000))).map(\.description) == [
                "cpu.weight=1", "cpu.max=max 20000",
            ])
    }

    @Test("v2: bad unified keys are refused", arguments: ["memory", "../memory.max", "a/b.c", ".x"])
    func v2BadUnified(key: String) {
        var r = OCIResources()
        r.unified = [key: "1"]
        #expect(throws: CgroupError.self) { try CgroupV2.writes(r) }
    }

    @Test("v2: controllers are enabled from the root down to the parent")
    func v2DelegationLevels() {
        #expect(
            CgroupV2.delegationLevels(root: "/sys/fs/cgroup", directory: "/sys/fs/cgroup/a/b/c") == [
                "/sys/fs/cgroup", "/sys/fs/cgroup/a", "/sys/fs/cgroup/a/b",
            ])
        #expect(CgroupV2.delegationLevels(root: "/sys/fs/cgroup/", directory: "/sys/fs/cgroup/c") == ["/sys/fs/cgroup"])
        #expect(CgroupV2.delegationLevels(root: "/sys/fs/cgroup", directory: "/elsewhere/c").isEmpty)
    }

    @Test("v1: every OCI field lands in its cgroup v1 file")
    func v1Full() throws {
        let writes = try CgroupV1.writes(Self.full, currentMemoryLimit: 9_223_372_036_854_771_712, memswAvailable: true)
        #expect(
            writes.map(\.description) == [
                "memory.limit_in_bytes=67108864", "memory.memsw.limit_in_bytes=134217728",
                "memory.soft_limit_in_bytes=33554432",
                "cpu.shares=1024", "cpu.cfs_period_us=100000", "cpu.cfs_quota_us=50000",
                "cpuset.cpus=0-1", "cpuset.mems=0", "pids.max=32",
            ])
    }

    @Test(
        "v1: swappiness lands in memory.swappiness and disableOOMKiller in memory.oom_control; swappiness > 100 names the field"
    )
    func v1SwappinessAndOOMKiller() throws {
        var m = OCIResources.Memory(limit: 64 << 20)
        m.swappiness = 0
        m.disableOOMKiller = true
        #expect(
            try CgroupV1.writes(OCIResources(memory: m), currentMemoryLimit: nil, memswAvailable: true).map(
                \.description) == [
                    "memory.limit_in_bytes=67108864", "memory.swappiness=0", "memory.oom_control=1",
                ])
        m.swappiness = 60
        m.disableOOMKiller = false
        #expect(
            try CgroupV1.writes(OCIResources(memory: m), currentMemoryLimit: nil, memswAvailable: true).map(
                \.description
            ).suffix(2) == [
                "memory.swappiness=60", "memory.oom_control=0",
            ])
        m.swappiness = 101
        #expect {
            try CgroupV1.writes(OCIResources(memory: m), currentMemoryLimit: nil, memswAvailable: true)
        } throws: { "\($0)" == "linux.resources.memory.swappiness: 101 is outside 0...100" }
    }

    @Test("v2: only the node's vm.swappiness and disableOOMKiller false are accepted; other values name the field")
    func v2SwappinessAndOOMKiller() throws {
        var m = OCIResources.Memory(limit: 64 << 20)
        m.swappiness = 60
        m.disableOOMKiller = false
        #expect(
            try CgroupV2.writes(OCIResources(memory: m), vmSwappiness: 60).map(\.description) == ["memory.max=67108864"]
        )
        #expect {
            try CgroupV2.writes(OCIResources(memory: m), vmSwappiness: 30)
        } throws: {
            "\($0)".hasPrefix("linux.resources.memory.swappiness: 60 cannot be honoured on cgroup v2")
                && "\($0)".contains("vm.swappiness (30)")
        }
        m.swappiness = nil
        m.disableOOMKiller = true
        #expect {
            try CgroupV2.writes(OCIResources(memory: m), vmSwappiness: 60)
        } throws: { "\($0)".hasPrefix("linux.resources.memory.disableOOMKiller: true cannot be honoured on cgroup v2") }
    }

    @Test("v1: memsw goes first when it rises above the current memory limit")
    func v1SwapOrder() throws {
        let raise = OCIResources(memory: .init(limit: 256 << 20, swap: 512 << 20))
        #expect(
            try CgroupV1.writes(raise, currentMemoryLimit: 64 << 20, memswAvailable: true).map(\.file) == [
                "memory.memsw.limit_in_bytes", "memory.limit_in_bytes",
            ])
        let unlimited = OCIResources(memory: .init(limit: -1))
        #expect(
            try CgroupV1.writes(unlimited, currentMemoryLimit: 64 << 20, memswAvailable: true).map(\.description) == [
                "memory.memsw.limit_in_bytes=-1", "memory.limit_in_bytes=-1",
            ])
        #expect(
            try CgroupV1.writes(unlimited, currentMemoryLimit: nil, memswAvailable: false).map(\.description) == [
                "memory.limit_in_bytes=-1"
            ])
    }

    @Test("v1: a swap limit without swap accounting is an error, not skipped")
    func v1NoMemsw() throws {
        let r = OCIResources(memory: .init(limit: 64 << 20, swap: 128 << 20))
        #expect {
            _ = try CgroupV1.writes(r, currentMemoryLimit: nil, memswAvailable: false)
        } throws: { error in
            "\(error)".hasPrefix("linux.resources.memory.swap: memory.memsw.limit_in_bytes is missing")
        }
    }

    @Test("v1: no swap (swap == limit) without swap accounting is fine only on a node without swap")
    func v1NoSwapNoMemsw() throws {
        let r = OCIResources(memory: .init(limit: 64 << 20, swap: 64 << 20))
        #expect(
            try CgroupV1.writes(r, currentMemoryLimit: nil, memswAvailable: false, swapActive: false).map(\.description)
                == [
                    "memory.limit_in_bytes=67108864"
                ])
        #expect(throws: CgroupError.self) {
            try CgroupV1.writes(r, currentMemoryLimit: nil, memswAvailable: false, swapActive: true)
        }
    }

    @Test(
        "v1: pids and quota values",
        arguments: [
            (OCIResources(pids: .init(limit: -1)), ["pids.max=max"]),
            (OCIResources(pids: .init(limit: 0)), ["pids.max=0"]),
            (OCIResources(cpu: .init(quota: -1)), ["cpu.cfs_quota_us=-1"]),
            (OCIResources(cpu: .init(shares: 0, quota: 0, period: 0)), []),
        ])
    func v1Values(resources: OCIResources, expected: [String]) throws {
        #expect(
            try CgroupV1.writes(resources, currentMemoryLimit: nil, memswAvailable: true).map(\.description) == expected
        )
    }

    @Test("v1: unified keys need cgroup v2")
    func v1Unified() {
        var r = OCIResources()
        r.unified = ["memory.high": "1"]
        #expect(throws: CgroupError.self) { try CgroupV1.writes(r, currentMemoryLimit: nil, memswAvailable: true) }
    }
}
