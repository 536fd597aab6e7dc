import OCI
import Testing

@testable import Cgroups

/// `update`: what is written and what is recorded; fields not given keep their value.
struct ResourceUpdateTests {
    static let current = OCIResources(
        memory: .init(limit: 64 << 20, swap: 64 << 20), cpu: .init(quota: 50_000, period: 250_000, cpus: "0"),
        pids: .init(limit: 64))

    @Test("a quota-only update keeps the period, and other fields keep their values")
    func quotaOnly() throws {
        let (apply, merged) = try ResourceUpdate.merge(OCIResources(cpu: .init(quota: 20_000)), into: Self.current)
        #expect(try CgroupV2.writes(apply).map(\.description) == ["cpu.max=20000"])
        #expect(merged.cpu?.period == 250_000 && merged.cpu?.quota == 20_000 && merged.cpu?.cpus == "0")
        #expect(merged.memory == Self.current.memory && merged.pids == Self.current.pids)
    }

    @Test("a limit-only update of a container without swap keeps it without swap")
    func memoryNoSwap() throws {
        let (apply, merged) = try ResourceUpdate.merge(
            OCIResources(memory: .init(limit: 128 << 20)), into: Self.current)
        #expect(try CgroupV2.writes(apply).map(\.description) == ["memory.swap.max=0", "memory.max=134217728"])
        #expect(merged.memory?.swap == 128 << 20)
    }

    @Test("a fixed memory+swap below the new limit is an error naming the field")
    func memorySwapTooSmall() {
        let cur = OCIResources(memory: .init(limit: 64 << 20, swap: 96 << 20))
        #expect {
            _ = try ResourceUpdate.merge(OCIResources(memory: .init(limit: 128 << 20)), into: cur)
        } throws: { "\($0)".hasPrefix("linux.resources.memory.swap: ") }
    }

    @Test("pids and unified merge; devices cannot change")
    func others() throws {
        var u = OCIResources(pids: .init(limit: -1))
        u.unified = ["memory.high": "1000000"]
        let (_, merged) = try ResourceUpdate.merge(u, into: Self.current)
        #expect(merged.pids?.limit == -1 && merged.unified?["memory.high"] == "1000000")
        #expect(throws: CgroupError.self) {
            _ = try ResourceUpdate.merge(OCIResources(devices: [.init(allow: true, access: "rwm")]), into: Self.current)
        }
    }

    @Test(
        "blockIO.weight: v2 io.weight conversion and range",
        arguments: [(10, 1), (500, 4950), (1000, 10000)] as [(UInt64, UInt64)])
    func ioWeight(blkio: UInt64, io: UInt64) {
        #expect(Conversions.ioWeight(fromBlkioWeight: blkio) == io)
    }
}
