import Foundation
import Glibc
import LinuxKernel
import Testing

/// `LeaseStore` (LinuxKernel): the records, the lock and the reclaim of dead holders that the
/// CPU and id range allocators share. (The allocators on one store: SandboxHostingTests.)
struct LeaseStoreTests {
    struct Thing: Codable, Sendable, Equatable {
        var size: Int
    }

    static let things = LeaseStore.Kind<Thing>("things")

    static func temp() -> (LeaseStore, String) {
        let dir = NSTemporaryDirectory() + "safespace-leases-\(UUID().uuidString.prefix(8))"
        return (LeaseStore(directory: dir + "/store"), dir)
    }

    /// A process that has exited: its identity is dead.
    static func deadProcess() throws -> ProcessIdentity {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return ProcessIdentity(pid: p.processIdentifier, startTime: 1)
    }

    @Test("leases are written as <kind>/<key>.json with their holder, read back by key, and removed")
    func records() throws {
        let (store, dir) = Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try store.withLockIfExists { try $0.leases(Self.things) } == nil)
        let lease = LeaseStore.Lease(key: "b", record: Thing(size: 2))
        try store.withLock { leases in
            try leases.write(Self.things, lease)
            try leases.write(Self.things, LeaseStore.Lease(key: "a", record: Thing(size: 1)))
        }
        #expect(lease.holder == .current())
        #expect(FileManager.default.fileExists(atPath: store.directory + "/things/b.json"))
        #expect(FileManager.default.fileExists(atPath: store.directory + "/.lock"))
        let all = try store.withLock { try $0.leases(Self.things) }
        #expect(all.map(\.key) == ["a", "b"])
        #expect(all.last == lease)
        #expect(try store.withLock { try $0.lease(Self.things, key: "b") } == lease)
        try store.withLock { try $0.remove(Self.things, key: "b") }
        try store.withLock { try $0.remove(Self.things, key: "b") }  // idempotent
        #expect(try store.withLock { try $0.lease(Self.things, key: "b") } == nil)
        #expect(try store.withLock { try $0.leases(LeaseStore.Kind<Thing>("other")) }.isEmpty)
    }

    @Test("a key that cannot be a file name is refused; a file that is not a lease is an error naming it")
    func badInput() throws {
        let (store, dir) = Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for key in ["", "../x", ".lock", "a/b"] {
            #expect(throws: SysError.self) {
                try store.withLock { try $0.write(Self.things, LeaseStore.Lease(key: key, record: Thing(size: 0))) }
            }
        }
        try store.withLock { try $0.write(Self.things, LeaseStore.Lease(key: "ok", record: Thing(size: 0))) }
        try "{".write(toFile: store.directory + "/things/junk.json", atomically: true, encoding: .utf8)
        #expect {
            try store.withLock { try $0.leases(Self.things) }
        } throws: { error in
            "\(error)"
                == "\(store.directory)/things/junk.json is not a things lease; remove it once no sandbox uses what it held"
        }
        // Left in place: it may stand for something in use.
        #expect(FileManager.default.fileExists(atPath: store.directory + "/things/junk.json"))
    }

    @Test(
        "reclaim removes the leases of dead holders that nothing uses; a write killed before its rename leaves nothing")
    func reclaim() throws {
        let (store, dir) = Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dead = try Self.deadProcess()
        let reused = ProcessIdentity(pid: getpid(), startTime: ProcessIdentity.current().startTime + 1)
        try store.withLock { leases in
            try leases.write(Self.things, LeaseStore.Lease(key: "live", record: Thing(size: 1)))
            try leases.write(Self.things, LeaseStore.Lease(key: "dead", holder: dead, record: Thing(size: 2)))
            try leases.write(Self.things, LeaseStore.Lease(key: "reused", holder: reused, record: Thing(size: 3)))
            try leases.write(Self.things, LeaseStore.Lease(key: "used", holder: dead, record: Thing(size: 4)))
        }
        try "partial".write(toFile: store.directory + "/things/torn.json.tmp", atomically: false, encoding: .utf8)
        let reclaimed = try store.withLock { try $0.reclaim(Self.things) { $0.key == "used" } }
        #expect(reclaimed.map(\.key) == ["dead", "reused"])
        #expect(try store.withLock { try $0.leases(Self.things) }.map(\.key) == ["live", "used"])
        #expect(!FileManager.default.fileExists(atPath: store.directory + "/things/torn.json.tmp"))
    }

    @Test("the lock excludes other threads for the whole transaction")
    func lock() throws {
        let (store, dir) = Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Each thread reads a counter lease and writes it back one higher: lost updates show.
        try store.withLock { try $0.write(Self.things, LeaseStore.Lease(key: "counter", record: Thing(size: 0))) }
        DispatchQueue.concurrentPerform(iterations: 40) { _ in
            try? store.withLock { leases in
                guard var lease = try leases.lease(Self.things, key: "counter") else { return }
                lease.record.size += 1
                try leases.write(Self.things, lease)
            }
        }
        #expect(try store.withLock { try $0.lease(Self.things, key: "counter") }?.record.size == 40)
    }
}
