import Foundation
import LinuxKernel
import Testing

@testable import NodeResources

struct CPUAllocatorTests {
    /// A lease store of its own: `<temp dir>/leases`.
    static func temp() -> String {
        NSTemporaryDirectory() + "safespace-cpus-\(UUID().uuidString.prefix(8))/leases"
    }

    @Test("two pinned sandboxes hold disjoint CPUs; a third when none are free gets a clear error")
    func disjoint() throws {
        let path = Self.temp()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let alloc = CPUAllocator(store: LeaseStore(directory: path), pool: [0, 1, 2, 3])
        let root = "/nonexistent-root"
        let a = try alloc.allocate(sandbox: "a", count: 2, runtimeRoot: root)
        let b = try alloc.allocate(sandbox: "b", count: 2, runtimeRoot: root)
        #expect(a == [0, 1] && b == [2, 3])
        #expect(Set(a).isDisjoint(with: b))
        #expect {
            _ = try alloc.allocate(sandbox: "c", count: 1, runtimeRoot: root)
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("spec.resources.cpu: cpuPinning: 1 whole CPU(s) asked for, 0 free of 4")
                && text.contains("a: 0-1")
        }
        // Idempotent for the same sandbox; release frees.
        #expect(try alloc.allocate(sandbox: "a", count: 2, runtimeRoot: root) == [0, 1])
        try alloc.release(sandbox: "a")
        #expect(try alloc.allocate(sandbox: "c", count: 1, runtimeRoot: root) == [0])
        // Another allocator instance (another process) sees the same file.
        #expect(
            try CPUAllocator(store: LeaseStore(directory: path), pool: [0, 1, 2, 3]).allocations().keys.sorted() == [
                "b", "c",
            ])
    }

    @Test("after a crash: an allocation whose holder died and whose sandbox has no state is released")
    func crashRecovery() throws {
        let path = Self.temp()
        let dir = (path as NSString).deletingLastPathComponent
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = LeaseStore(directory: path)
        let alloc = CPUAllocator(store: store, pool: [0, 1])
        _ = try alloc.allocate(sandbox: "live", count: 1, runtimeRoot: dir + "/root")
        // Forge a record held by a dead process for a sandbox without a state dir, and one whose
        // holder is dead but whose sandbox still exists (created, then its CLI exited).
        try FileManager.default.createDirectory(atPath: dir + "/root/kept", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: dir + "/root/kept/state.json", contents: Data("{}".utf8)))
        let dead = ProcessIdentity(pid: 999999, startTime: 1)
        try store.withLock { leases in
            for (id, cpus) in [("dead", [1]), ("kept", [7])] {
                let record = CPUAllocator.CPURecord(cpus: cpus, runtimeRoot: dir + "/root", lease: nil)
                try leases.write(CPUAllocator.kind, LeaseStore.Lease(key: id, holder: dead, record: record))
            }
        }
        let now = try alloc.allocations()
        #expect(now.keys.sorted() == ["kept", "live"])
        #expect(try alloc.allocate(sandbox: "next", count: 1, runtimeRoot: dir + "/root") == [1])
    }

    /// `temp()`, its directory (made), and the path of an earlier version's file in it.
    static func legacyTemp() throws -> (store: String, dir: String, legacy: String) {
        let path = Self.temp()
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (path, dir, dir + "/cpus.json")
    }

    @Test(
        "an earlier version's allocation file: its allocations move into the store (a dead holder's without a container are dropped) and the file goes"
    )
    func legacyFileMovesIn() throws {
        let (path, dir, legacy) = try Self.legacyTemp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let me = ProcessIdentity.current()
        // /run/safespace-cpus.json as an earlier version wrote it: held by this (live) process,
        // and by a dead one whose container is gone.
        let file = """
            {"allocations":{"old-live":{"cpus":[0],"runtimeRoot":"\(dir)/root","holderPid":\(me.pid),"holderStartTime":\(me.startTime)},\
            "old-dead":{"cpus":[1],"runtimeRoot":"\(dir)/root","holderPid":999999,"holderStartTime":1}}}
            """
        try file.write(toFile: legacy, atomically: true, encoding: .utf8)
        let alloc = CPUAllocator(store: LeaseStore(directory: path), pool: [0, 1, 2], legacyPath: legacy)
        let held = try alloc.allocations()
        #expect(held.keys.sorted() == ["old-live"])
        #expect(held["old-live"]?.cpus == [0] && held["old-live"]?.holder == me)
        #expect(!FileManager.default.fileExists(atPath: legacy))
        // Its CPU stays taken; the dead holder's is free again.
        #expect(try alloc.allocate(sandbox: "new", count: 2, runtimeRoot: dir + "/root") == [1, 2])
        try alloc.release(sandbox: "old-live")
        #expect(try alloc.allocations().keys.sorted() == ["new"])
    }

    @Test("a corrupt allocation file of an earlier version is an error naming it, and stays")
    func corruptLegacyFile() throws {
        let (path, dir, legacy) = try Self.legacyTemp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "{\"allocations\":".write(toFile: legacy, atomically: true, encoding: .utf8)
        let alloc = CPUAllocator(store: LeaseStore(directory: path), pool: [0, 1], legacyPath: legacy)
        #expect {
            _ = try alloc.allocate(sandbox: "a", count: 1, runtimeRoot: dir + "/root")
        } throws: { error in
            "\(error)".hasPrefix("cpuPinning: \(legacy) is corrupt")
        }
        #expect(FileManager.default.fileExists(atPath: legacy))
    }
}
