import Foundation
import OCI
import Testing

@testable import Cgroups

typealias OCIResources = Resources

struct ConversionTests {
    // The table of opencontainers/cgroups' TestConvertCPUSharesToCgroupV2Value (runc >= 1.3.2).
    @Test(
        "cpu.shares -> cpu.weight follows runc/crun's quadratic mapping",
        arguments: [
            (0, 0), (1, 1), (2, 1), (3, 2), (1024, 100), (262_143, 10_000), (262_144, 10_000), (262_145, 10_000),
        ] as [(UInt64, UInt64)])
    func sharesToWeight(shares: UInt64, weight: UInt64) {
        #expect(Conversions.cpuWeight(fromShares: shares) == weight)
    }

    @Test("cpu.weight is monotonic and stays in 1...10000")
    func weightIsMonotonic() {
        var previous: UInt64 = 1
        for shares in stride(from: UInt64(2), through: 262_144, by: 97) {
            let w = Conversions.cpuWeight(fromShares: shares)
            #expect(w >= previous && w <= 10_000)
            previous = w
        }
        // Values between the fixed points, as computed by runc's formula.
        #expect(Conversions.cpuWeight(fromShares: 512) < 100)
        #expect(Conversions.cpuWeight(fromShares: 2048) > 100)
    }

    // OCI swap is memory+swap; v2 memory.swap.max is the swap alone (runc's ConvertMemorySwapToCgroupV2Value).
    @Test(
        "memory.swap.max = swap - limit",
        arguments: [
            (nil, nil, nil), (0, 0, nil), (nil, -1, -1), (-1, nil, -1), (-1, -1, -1), (1000, -1, -1),
            (1000, 1000, 0), (200, 500, 300), (1000, nil, nil),
        ] as [(Int64?, Int64?, Int64?)])
    func swapMath(limit: Int64?, swap: Int64?, expected: Int64?) throws {
        #expect(try Conversions.swapMax(limit: limit, swap: swap) == expected)
    }

    @Test(
        "invalid swap combinations name linux.resources.memory.swap",
        arguments: [(400, 300), (nil, 300), (0, 300), (-1, 300), (100, -2)] as [(Int64?, Int64?)])
    func swapErrors(limit: Int64?, swap: Int64?) {
        #expect {
            _ = try Conversions.swapMax(limit: limit, swap: swap)
        } throws: { error in
            "\(error)".hasPrefix("linux.resources.memory.swap: ")
        }
    }

    @Test(
        "cpu.max from quota and period (µs)",
        arguments: [
            (nil, nil, nil), (0, 0, nil), (50_000, 100_000, "50000 100000"), (-1, 100_000, "max 100000"),
            (nil, 250_000, "max 250000"), (50_000, nil, "50000"), (-1, nil, "max"), (1000, 1000, "1000 1000"),
        ] as [(Int64?, UInt64?, String?)])
    func cpuMax(quota: Int64?, period: UInt64?, expected: String?) throws {
        #expect(try Conversions.cpuMax(quota: quota, period: period) == expected)
    }

    @Test(
        "quota below 1000 µs or an out-of-range period is refused",
        arguments: [
            (999, nil, "quota"), (1, 100_000, "quota"), (-5, nil, "quota"), (50_000, 999, "period"),
            (nil, 1_000_001, "period"),
        ]
            as [(Int64?, UInt64?, String)])
    func cpuBandwidthErrors(quota: Int64?, period: UInt64?, field: String) {
        #expect {
            _ = try Conversions.cpuMax(quota: quota, period: period)
        } throws: { error in
            "\(error)".hasPrefix("linux.resources.cpu.\(field): ")
        }
    }

    @Test(
        "-1 and other negatives become max",
        arguments: [(-1, "max"), (-7, "max"), (0, "0"), (42, "42")] as [(Int64, String)])
    func maxOrNumber(value: Int64, text: String) {
        #expect(Conversions.maxOrNumber(value) == text)
    }

    @Test("cpuset lists are checked", arguments: ["0", "0-3", "0-3,5", " 1,2 \n"])
    func cpusetAccepted(list: String) throws {
        #expect(try !Conversions.cpusetList(list, field: "f").isEmpty)
    }

    @Test("bad cpuset lists are refused", arguments: ["a", "0;1", "-1", ",2", "0 1"])
    func cpusetRefused(list: String) {
        #expect(throws: CgroupError.self) { try Conversions.cpusetList(list, field: "linux.resources.cpu.cpus") }
    }

    @Test("fields not enforced yet are refused, not ignored")
    func unsupportedFields() throws {
        let json = """
            {"memory": {"limit": 1048576, "swappiness": 10, "disableOOMKiller": true, "kernel": 1048576, "kernelTCP": 0},
             "cpu": {"realtimeRuntime": 1000},
             "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
             "devices": [{"allow": false, "access": "rwm"}]}
            """
        let r = try JSONDecoder().decode(OCIResources.self, from: Data(json.utf8))
        // Realtime CPU fields are applied on v1 and refused on v2 by name (RealtimeCPU).
        #expect(Conversions.unsupportedFields(r) == ["linux.resources.hugepageLimits"])
        #expect(throws: CgroupError.self) { try Conversions.rejectUnsupported(r) }
        // Device rules are the runtime's concern, not a resource limit.
        #expect(Conversions.unsupportedFields(OCIResources(devices: [.init(allow: false, access: "rwm")])).isEmpty)
    }

    @Test("memory.kernel and memory.kernelTCP are accepted and ignored with a warning naming them (runc 1.1+)")
    func kernelMemoryIgnored() throws {
        let r = try JSONDecoder().decode(
            OCIResources.self, from: Data(#"{"memory": {"limit": 1048576, "kernel": 1048576, "kernelTCP": 0}}"#.utf8))
        #expect(Conversions.unsupportedFields(r).isEmpty)
        let warnings = Conversions.ignoredFieldWarnings(r)
        #expect(warnings.count == 1)
        #expect(
            warnings.first?.hasPrefix("linux.resources.memory.kernel, linux.resources.memory.kernelTCP: ") == true,
            "\(warnings)")
        #expect(Conversions.ignoredFieldWarnings(OCIResources(memory: .init(limit: 1))).isEmpty)
        // The drivers write nothing for them.
        #expect(
            try CgroupV1.writes(r, currentMemoryLimit: nil, memswAvailable: true).map(\.file) == [
                "memory.limit_in_bytes"
            ])
        #expect(try CgroupV2.writes(r).map(\.file) == ["memory.max"])
    }

    @Test("errors name the file, the errno and the OCI field")
    func errorMessages() {
        let write = CgroupError(
            operation: "write", path: "/sys/fs/cgroup/a/memory.max", errno: 22, message: "linux.resources.memory.limit")
        #expect(
            write.description
                == "linux.resources.memory.limit: write memory.max: EINVAL (Invalid argument) [/sys/fs/cgroup/a/memory.max]"
        )
        let bare = CgroupError(operation: "rmdir", path: "/sys/fs/cgroup/pids/x", errno: 16)
        #expect(bare.description.hasPrefix("rmdir x: EBUSY"))
        #expect(
            CgroupError.invalid("linux.resources.pids.limit", "bad").description == "linux.resources.pids.limit: bad")
    }
}
