import Foundation
import LinuxKernel
import OCI
import Runtime
import TestSupport
import Testing

/// `IDAllocator`: host id ranges kept on disk under a lock, freed by release, recovered after a
/// crash. Each test uses its own allocator directory.
struct UserNamespaceAllocatorTests {
    static func allocator(ranges: Int = 16) throws -> (IDAllocator, String) {
        let dir = try Harness.tempDir("idmap")
        return (IDAllocator(directory: dir + "/ranges", firstHostID: 0x5000_0000, ranges: ranges), dir)
    }

    /// A directory standing for a live container: it has a state.json.
    static func liveOwner(_ dir: String, _ name: String) throws -> String {
        let owner = dir + "/" + name
        try FileManager.default.createDirectory(atPath: owner, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: owner + "/state.json", contents: Data("{}".utf8))
        return owner
    }

    @Test("owners get disjoint ranges of 65536 ids; the same owner gets its own range back")
    func disjoint() throws {
        let (a, dir) = try Self.allocator()
        defer { Harness.cleanup(dir) }
        let one = try a.allocate(owner: try Self.liveOwner(dir, "one"))
        let two = try a.allocate(owner: try Self.liveOwner(dir, "two"))
        #expect(one.size == 65536 && two.size == 65536)
        #expect(one.hostID == 0x5000_0000)
        #expect(two.hostID == 0x5000_0000 + 65536)
        #expect(one.mappings == [IDMapping(containerID: 0, hostID: one.hostID, size: 65536)])
        // A `safespace run` reserves the range before create; create adopts it.
        #expect(try a.allocate(owner: dir + "/one") == one)
        #expect(try a.allocations().count == 2)
    }

    @Test("release returns the range; the lowest free range is handed out next")
    func release() throws {
        let (a, dir) = try Self.allocator()
        defer { Harness.cleanup(dir) }
        let one = try a.allocate(owner: try Self.liveOwner(dir, "one"))
        _ = try a.allocate(owner: try Self.liveOwner(dir, "two"))
        try a.release(owner: dir + "/one")
        try a.release(owner: dir + "/one")  // idempotent
        #expect(try a.allocation(owner: dir + "/one") == nil)
        let three = try a.allocate(owner: try Self.liveOwner(dir, "three"))
        #expect(three.hostID == one.hostID)
    }

    @Test("a range whose owner has no state and whose allocating process died is recovered")
    func crashRecovery() throws {
        let (a, dir) = try Self.allocator(ranges: 1)
        defer { Harness.cleanup(dir) }
        // A process that allocated, then crashed before its container's state existed.
        let dead = Foundation.Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let crashed = IDAllocator.Allocation(
            index: 0, hostID: a.firstHostID, size: 65536, owner: dir + "/gone", holderPid: dead.processIdentifier,
            holderStartTime: 1, created: "2026-01-01T00:00:00Z")
        try FileManager.default.createDirectory(atPath: a.directory, withIntermediateDirectories: true)
        try JSONEncoder().encode(crashed).write(to: URL(fileURLWithPath: a.directory + "/0.json"))
        #expect(try a.allocations() == [crashed])
        let fresh = try a.allocate(owner: try Self.liveOwner(dir, "fresh"))
        #expect(fresh.index == 0)
        #expect(fresh.owner == dir + "/fresh")
    }

    @Test("a live owner keeps its range though the process that allocated it is gone")
    func liveOwnerKept() throws {
        let (a, dir) = try Self.allocator(ranges: 1)
        defer { Harness.cleanup(dir) }
        let owner = try Self.liveOwner(dir, "running")
        let kept = IDAllocator.Allocation(
            index: 0, hostID: a.firstHostID, size: 65536, owner: owner, holderPid: 999_999_999, holderStartTime: 1,
            created: "2026-01-01T00:00:00Z")
        try FileManager.default.createDirectory(atPath: a.directory, withIntermediateDirectories: true)
        try JSONEncoder().encode(kept).write(to: URL(fileURLWithPath: a.directory + "/0.json"))
        let error = #expect(throws: (any Error).self) { try a.allocate(owner: try Self.liveOwner(dir, "other")) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("all 1 host id ranges"))
        #expect(try a.allocation(owner: owner) == kept)
    }

    @Test("concurrent allocations from many threads never share a range")
    func concurrent() throws {
        let (a, dir) = try Self.allocator(ranges: 64)
        defer { Harness.cleanup(dir) }
        let owners = try (0..<32).map { try Self.liveOwner(dir, "c\($0)") }
        nonisolated(unsafe) var got = [UInt32?](repeating: nil, count: owners.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: owners.count) { i in
            let id = try? a.allocate(owner: owners[i]).hostID
            lock.withLock { got[i] = id }
        }
        let ids = got.compactMap { $0 }
        #expect(ids.count == owners.count)
        #expect(Set(ids).count == owners.count)
    }

    @Test(
        "ranges of an earlier version (<index>.json in its own directory) stay taken until released or stale, then their files go"
    )
    func legacyDirectory() throws {
        let dir = try Harness.tempDir("idmap-legacy")
        defer { Harness.cleanup(dir) }
        let legacy = dir + "/idmap"
        try FileManager.default.createDirectory(atPath: legacy, withIntermediateDirectories: true)
        let a = IDAllocator(
            store: LeaseStore(directory: dir + "/leases"), firstHostID: 0x5000_0000, ranges: 4,
            legacyDirectories: [legacy])
        // As /run/safespace-idmap held them: a running container's range, a crashed create's, and
        // a write killed before its rename.
        let running = IDAllocator.Allocation(
            index: 0, hostID: 0x5000_0000, size: 65536, owner: try Self.liveOwner(dir, "running"),
            holderPid: 999_999_999,
            holderStartTime: 1, created: "2026-01-01T00:00:00Z")
        let crashed = IDAllocator.Allocation(
            index: 1, hostID: 0x5000_0000 + 65536, size: 65536, owner: dir + "/crashed", holderPid: 999_999_999,
            holderStartTime: 1, created: "2026-01-01T00:00:00Z")
        for old in [running, crashed] {
            try JSONEncoder().encode(old).write(to: URL(fileURLWithPath: "\(legacy)/\(old.index).json"))
        }
        #expect(FileManager.default.createFile(atPath: legacy + "/2.json.tmp", contents: Data("{".utf8)))
        #expect(try a.allocations() == [running, crashed])
        // The crashed one is recovered; the running one's range is not handed out.
        let fresh = try a.allocate(owner: try Self.liveOwner(dir, "fresh"))
        #expect(fresh.index == 1)
        #expect(try a.allocations().map(\.index) == [0, 1])
        #expect(FileManager.default.fileExists(atPath: dir + "/leases/uid-ranges/1.json"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: legacy).sorted() == [".lock", "0.json"])
        // Its container's delete gives it back (from the earlier version's file).
        try a.release(owner: running.owner)
        #expect(try FileManager.default.contentsOfDirectory(atPath: legacy) == [".lock"])
        #expect(try a.allocate(owner: try Self.liveOwner(dir, "next")).index == 0)
        // A container of the earlier version records the old directory: its delete opens it as a
        // store, whose own old-format files count.
        let old = IDAllocator.Allocation(
            index: 3, hostID: 0x5000_0000 + 3 * 65536, size: 65536, owner: try Self.liveOwner(dir, "old"),
            holderPid: 999_999_999,
            holderStartTime: 1, created: "2026-01-01T00:00:00Z")
        try JSONEncoder().encode(old).write(to: URL(fileURLWithPath: "\(legacy)/3.json"))
        #expect(try IDAllocator(directory: legacy).allocation(owner: old.owner) == old)
        try IDAllocator(directory: legacy).release(owner: old.owner)
        #expect(!FileManager.default.fileExists(atPath: legacy + "/3.json"))
    }
}
