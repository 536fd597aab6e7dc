import Foundation
import Testing

@testable import NodeResources

struct CPUAllocatorTests {
    static func temp() -> String {
        NSTemporaryDirectory() + "safespace-cpus-\(UUID().uuidString.prefix(8))/cpus.json"
    }

    @Test("two pinned sandboxes hold disjoint CPUs; a third when none are free gets a clear error")
    func disjoint() throws {
        let path = Self.temp()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let alloc = CPUAllocator(path: path, pool: [0, 1, 2, 3])
        let root = "/nonexistent-root"
        let a = try alloc.allocate(sandbox: "a", count: 2, runtimeRoot: root)
        let b = try alloc.allocate(sandbox: "b", count: 2, runtimeRoot: root)
        #expect(a == [0, 1] && b == [2, 3])
        #expect(Set(a).isDisjoint(with: b))
        #expect {
            _ = try alloc.allocate(sandbox: "c", count: 1, runtimeRoot: root)
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("spec.resources.cpu: cpuPinning: 1 whole CPU(s) asked for, 0 free of 4") && text.contains("a: 0-1")
        }
        // Idempotent for the same sandbox; release frees.
        #expect(try alloc.allocate(sandbox: "a", count: 2, runtimeRoot: root) == [0, 1])
        try alloc.release(sandbox: "a")
        #expect(try alloc.allocate(sandbox: "c", count: 1, runtimeRoot: root) == [0])
        // Another allocator instance (another process) sees the same file.
        #expect(try CPUAllocator(path: path, pool: [0, 1, 2, 3]).allocations().keys.sorted() == ["b", "c"])
    }

    @Test("after a crash: an allocation whose holder died and whose sandbox has no state is released")
    func crashRecovery() throws {
        let path = Self.temp()
        let dir = (path as NSString).deletingLastPathComponent
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let alloc = CPUAllocator(path: path, pool: [0, 1])
        _ = try alloc.allocate(sandbox: "live", count: 1, runtimeRoot: dir + "/root")
        // Forge a record held by a dead process for a sandbox without a state dir, and one whose
        // holder is dead but whose sandbox still exists (created, then its CLI exited).
        try FileManager.default.createDirectory(atPath: dir + "/root/kept", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: dir + "/root/kept/state.json", contents: Data("{}".utf8)))
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"allocations\":{", with: "\"allocations\":{\"dead\":{\"cpus\":[1],\"runtimeRoot\":\"\(dir)/root\",\"holderPid\":999999,\"holderStartTime\":1},\"kept\":{\"cpus\":[7],\"runtimeRoot\":\"\(dir)/root\",\"holderPid\":999999,\"holderStartTime\":1},")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let now = try alloc.allocations()
        #expect(now.keys.sorted() == ["kept", "live"])
        #expect(try alloc.allocate(sandbox: "next", count: 1, runtimeRoot: dir + "/root") == [1])
    }
}
