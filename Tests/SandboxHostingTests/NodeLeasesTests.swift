import Foundation
import Glibc
import LinuxKernel
import Testing

@testable import NodeResources
@testable import Runtime
@testable import SandboxHosting

/// The CPU and host id range allocators on one `LeaseStore`: one lock, one directory, one rule
/// for dead holders; and the sweep that reclaims both.
@Suite struct NodeLeasesTests {
    static let childVariable = "SAFESPACE_LEASE_TEST_CHILD"
    static let isChild = ProcessInfo.processInfo.environment[childVariable] != nil

    /// `<temp>/store` (the store), `<temp>/root` (container directories), `<temp>/owners`.
    static func temp() throws -> String {
        let dir = NSTemporaryDirectory() + "safespace-node-leases-\(UUID().uuidString.prefix(8))"
        for sub in ["root", "owners"] {
            try FileManager.default.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        return dir
    }

    static func allocators(_ dir: String, pool: [Int] = Array(0..<64)) -> (CPUAllocator, IDAllocator) {
        let store = LeaseStore(directory: dir + "/store")
        return (CPUAllocator(store: store, pool: pool), IDAllocator(store: store, firstHostID: 0x7000_0000, ranges: 64))
    }

    /// A container state directory with `state.json`: the owner of a range that stays.
    static func liveOwner(_ dir: String, _ name: String) throws -> String {
        let owner = dir + "/owners/" + name
        try FileManager.default.createDirectory(atPath: owner, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: owner + "/state.json", contents: Data("{}".utf8)))
        return owner
    }

    @Test("CPUs and id ranges are leases of one store, under one lock: while it is held, neither allocator proceeds")
    func oneLock() throws {
        let dir = try Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (cpus, ids) = Self.allocators(dir)
        let owner = try Self.liveOwner(dir, "a")
        let done = DispatchSemaphore(value: 0)
        let lock = NSLock()
        nonisolated(unsafe) var finished: [String] = []
        try cpus.store.withLock { _ in
            Thread.detachNewThread {
                let ok = (try? cpus.allocate(sandbox: "a", count: 2, runtimeRoot: dir + "/root")) == [0, 1]
                lock.withLock { finished.append(ok ? "cpus" : "cpus failed") }
                done.signal()
            }
            Thread.detachNewThread {
                let ok = (try? ids.allocate(owner: owner))?.hostID == 0x7000_0000
                lock.withLock { finished.append(ok ? "range" : "range failed") }
                done.signal()
            }
            usleep(300_000)
            #expect(lock.withLock { finished }.isEmpty, "an allocator ran while the store was locked")
        }
        for _ in 0..<2 { #expect(done.wait(timeout: .now() + 30) == .success) }
        #expect(lock.withLock { finished }.sorted() == ["cpus", "range"])
        #expect(FileManager.default.fileExists(atPath: dir + "/store/cpus/a.json"))
        #expect(FileManager.default.fileExists(atPath: dir + "/store/uid-ranges/0.json"))
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: dir + "/store").sorted() == [
                ".lock", "cpus", "uid-ranges",
            ])
    }

    @Test("a dead holder's CPUs and range are reclaimed by the sweep; a live holder's stay")
    func deadHoldersReclaimed() throws {
        let dir = try Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (cpus, ids) = Self.allocators(dir, pool: [0, 1, 2])
        let store = cpus.store
        // This process holds "live" (CPU and range); a dead one held "dead" (CPU 1, no container
        // left) and the range of "gone" (no container state).
        _ = try cpus.allocate(sandbox: "live", count: 1, runtimeRoot: dir + "/root")
        let live = try ids.allocate(owner: try Self.liveOwner(dir, "live"))
        let gone = try ids.allocate(owner: dir + "/owners/gone")
        let dead = ProcessIdentity(pid: 999_999_999, startTime: 1)
        try store.withLock { leases in
            var cpu = try #require(try leases.lease(CPUAllocator.kind, key: "live"))
            cpu.key = "dead"
            cpu.holder = dead
            cpu.record.cpus = [1]
            try leases.write(CPUAllocator.kind, cpu)
            var range = try #require(try leases.lease(IDAllocator.kind, key: String(gone.index)))
            range.holder = dead
            try leases.write(IDAllocator.kind, range)
        }
        #expect(try cpus.deadHolders().keys.sorted() == ["dead"])
        let report = GarbageCollector(
            stateRoot: dir + "/root", bundleRoot: dir + "/bundles", cpuAllocator: cpus, idAllocator: ids,
            ephemeralStorageBase: dir + "/volumes", backends: .native
        ).sweep()
        #expect(report.errors.isEmpty, "\(report.errors)")
        #expect(report.cpuAllocations == ["dead"])
        #expect(report.idRanges == [gone.hostID])
        #expect(try cpus.allocations().keys.sorted() == ["live"])
        #expect(try ids.allocations() == [live])
        // The freed CPU and range are handed out again.
        #expect(try cpus.allocate(sandbox: "next", count: 2, runtimeRoot: dir + "/root") == [1, 2])
        #expect(try ids.allocate(owner: try Self.liveOwner(dir, "next")).index == gone.index)
    }

    /// Runs only in the child processes of `concurrentProcesses`: waits for `<dir>/go`, then
    /// takes 5 CPUs and 5 ranges, one at a time, for sandboxes `<name>-0…4`.
    @Test(.enabled(if: isChild))
    func leaseChildProcess() throws {
        let env = ProcessInfo.processInfo.environment
        let dir = try #require(env[Self.childVariable])
        let name = try #require(env["SAFESPACE_LEASE_TEST_NAME"])
        let (cpus, ids) = Self.allocators(dir)
        while !FileManager.default.fileExists(atPath: dir + "/go") { usleep(1000) }
        for i in 0..<5 {
            let id = "\(name)-\(i)"
            // The container directory keeps the CPUs and the state keeps the range once this
            // process (their holder) has exited.
            try FileManager.default.createDirectory(atPath: dir + "/root/" + id, withIntermediateDirectories: true)
            _ = try cpus.allocate(sandbox: id, count: 1, runtimeRoot: dir + "/root")
            _ = try ids.allocate(owner: try Self.liveOwner(dir, id))
        }
    }

    @Test(
        "processes allocating CPUs and ranges from one store at once never share one",
        .enabled(if: !isChild, "the parent run; its child processes run leaseChildProcess"))
    func concurrentProcesses() throws {
        let dir = try Self.temp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var children: [Process] = []
        for n in 0..<4 {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: exe)
            child.arguments = ["--testing-library", "swift-testing", "--filter", "leaseChildProcess"]
            var env = ProcessInfo.processInfo.environment
            env[Self.childVariable] = dir
            env["SAFESPACE_LEASE_TEST_NAME"] = "p\(n)"
            child.environment = env
            child.standardOutput = FileHandle.nullDevice
            child.standardError = FileHandle.nullDevice
            try child.run()
            children.append(child)
        }
        #expect(FileManager.default.createFile(atPath: dir + "/go", contents: nil))
        for child in children {
            child.waitUntilExit()
            #expect(child.terminationStatus == 0)
        }
        let (cpus, ids) = Self.allocators(dir)
        let held = try cpus.allocations()
        #expect(held.count == 20)
        #expect(Set(held.values.flatMap(\.cpus)).count == 20)
        #expect(Set(held.values.map(\.holderPid)).count == 4)
        let ranges = try ids.allocations()
        #expect(ranges.count == 20)
        #expect(Set(ranges.map(\.hostID)).count == 20)
        #expect(ranges.map(\.index) == Array(0..<20))
    }
}
