import Foundation
import OCI
import Testing

@testable import Cgroups

/// The v2 driver against a real cgroup v2 kernel. This host is cgroup v1 (hybrid), so these
/// run in the VM: `scripts/vm-test -- .build-res/debug/SafeSpacePackageTests.xctest
/// --testing-library swift-testing --filter CgroupsV2`. Inside the VM they never skip.
@Suite(
    .enabled(
        if: inTestVM || (getuid() == 0 && Cgroup.detectMode() == .unified),
        "needs root on a cgroup v2 (unified) host; this one is not: run it with scripts/vm-test"))
struct CgroupsV2Tests {
    func read(_ dir: String, _ file: String) throws -> String {
        CgroupFS.trimmed(try CgroupFS.read(dir + "/" + file))
    }

    /// A fresh cgroup `<unique>/<leaf>`, destroyed by the returned closure.
    func make(_ leaf: String = "c") throws -> (Cgroup, String, () -> Void) {
        #expect(Cgroup.detectMode() == .unified, "the VM must mount cgroup2 at /sys/fs/cgroup")
        var cg = try Cgroup.resolve(cgroupsPath: "\(uniqueTestParent())/\(leaf)", id: leaf)
        try cg.create()
        let dir = try #require(cg.directories["unified"])
        return (
            cg, dir,
            {
                _ = try? cg.killAll(signal: SIGKILL)
                try? cg.destroy()
            }
        )
    }

    @Test("every OCI field lands in its v2 file and reads back")
    func applyAndReadBack() throws {
        let (cg, dir, cleanup) = try make()
        defer { cleanup() }
        var r = OCIResources(
            memory: .init(limit: 64 << 20, reservation: 16 << 20, swap: 96 << 20),
            cpu: .init(shares: 1024, quota: 50_000, period: 100_000, cpus: "0"),
            pids: .init(limit: 32))
        r.unified = ["memory.high": "50331648"]
        try cg.apply(r)
        #expect(try read(dir, "memory.max") == "67108864")
        #expect(try read(dir, "memory.low") == "16777216")
        #expect(try read(dir, "memory.swap.max") == "33554432")
        #expect(try read(dir, "memory.high") == "50331648")
        #expect(try read(dir, "cpu.max") == "50000 100000")
        #expect(try read(dir, "cpu.weight") == "100")
        #expect(try read(dir, "pids.max") == "32")
        #expect(try read(dir, "cpuset.cpus") == "0")
        #expect(try read(dir, "cpuset.cpus.effective") == "0")
        // mems not given: the parent's effective set.
        #expect(try read(dir, "cpuset.mems.effective") == read(CgroupPath.parent(dir), "cpuset.mems.effective"))

        // swap == limit: no swap; -1: max; pids 0 is 0.
        try cg.apply(OCIResources(memory: .init(limit: 32 << 20, swap: 32 << 20), pids: .init(limit: 0)))
        #expect(try read(dir, "memory.swap.max") == "0")
        #expect(try read(dir, "pids.max") == "0")
        try cg.apply(OCIResources(memory: .init(limit: -1), pids: .init(limit: -1)))
        #expect(try read(dir, "memory.max") == "max")
        #expect(try read(dir, "memory.swap.max") == "max")
        #expect(try read(dir, "pids.max") == "max")
    }

    @Test("cpu.max: period only is `max PERIOD`; a later quota-only update keeps the period")
    func cpuMax() throws {
        let (cg, dir, cleanup) = try make()
        defer { cleanup() }
        try cg.apply(OCIResources(cpu: .init(period: 250_000)))
        #expect(try read(dir, "cpu.max") == "max 250000")
        let (apply, _) = try ResourceUpdate.merge(
            OCIResources(cpu: .init(quota: 50_000)), into: OCIResources(cpu: .init(period: 250_000)))
        try cg.apply(apply)
        #expect(try read(dir, "cpu.max") == "50000 250000")
        #expect {
            try cg.apply(OCIResources(cpu: .init(quota: 500)))
        } throws: { "\($0)".hasPrefix("linux.resources.cpu.quota: ") }
    }

    @Test("blockIO.weight goes to io.bfq.weight or io.weight")
    func ioWeight() throws {
        let (cg, dir, cleanup) = try make()
        defer { cleanup() }
        var r = OCIResources()
        r.blockIO = try JSONDecoder().decode(OCIResources.BlockIO.self, from: Data(#"{"weight": 500}"#.utf8))
        try cg.apply(r)
        if CgroupFS.exists(dir + "/io.bfq.weight") {
            #expect(try read(dir, "io.bfq.weight").hasSuffix("500"))
        } else {
            #expect(try read(dir, "io.weight") == "default 4950")
        }
    }

    @Test("controllers are enabled down the tree; +cpuset only when a cpuset is asked for")
    func subtreeControl() throws {
        let (cg, dir, cleanup) = try make()
        defer { cleanup() }
        let parent = CgroupPath.parent(dir)
        let enabled = Set(try read(parent, "cgroup.subtree_control").split(separator: " ").map(String.init))
        #expect(enabled.isSuperset(of: ["cpu", "io", "memory", "pids"]), "\(enabled)")
        #expect(!enabled.contains("cpuset"))
        #expect(CgroupFS.exists(dir + "/memory.events"))
        #expect(!CgroupFS.exists(dir + "/cpuset.cpus"))
        try cg.apply(OCIResources(cpu: .init(cpus: "1")))
        #expect(try read(parent, "cgroup.subtree_control").split(separator: " ").contains("cpuset"))
        #expect(try read(dir, "cpuset.cpus.effective") == "1")
    }

    @Test("no internal processes: a parent holding a process cannot delegate, and the error says so")
    func noInternalProcesses() throws {
        let base = uniqueTestParent()
        var parent = try Cgroup.resolve(cgroupsPath: "\(base)/p", id: "p")
        try parent.create()
        defer {
            _ = try? parent.killAll(signal: SIGKILL)
            try? parent.destroy()
        }
        let child = try BlockedChild("exec sleep 60")
        try parent.attach(pid: child.pid)
        var leaf = try Cgroup.resolve(cgroupsPath: "\(base)/p/c", id: "c")
        try leaf.create()  // accounting controllers are best effort
        defer { try? leaf.destroy() }
        #expect {
            // memory is a domain controller (pids, being threaded, would be allowed).
            try leaf.apply(OCIResources(memory: .init(limit: 64 << 20)))
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix("linux.resources.memory.limit: ") && text.contains("no internal processes")
                && (error as? CgroupError)?.errno == EBUSY
        }
        // create left the busy parent as it was (not turned into a threaded domain).
        #expect(try read(try #require(parent.directories["unified"]), "cgroup.type") == "domain")
        try parent.killAll(signal: SIGKILL)
        #expect(child.wait() == 137)
    }

    @Test("a controller the hierarchy does not offer is a clear error, not a silent skip")
    func missingController() throws {
        let (cg, _, cleanup) = try make()
        defer { cleanup() }
        var r = OCIResources()
        r.unified = ["nosuch.max": "1"]
        #expect {
            try cg.apply(r)
        } throws: { "\($0)".contains("the nosuch controller is not available") }
        #expect {
            try cg.apply(OCIResources(cpu: .init(cpus: "63")))
        } throws: { "\($0)".hasPrefix("linux.resources.cpu.cpus: write cpuset.cpus: ") }
    }

    @Test("the eBPF device program is attached, and replaced (not stacked) by a new one")
    func deviceProgram() throws {
        let (cg, dir, cleanup) = try make()
        defer { cleanup() }
        #expect(DeviceFilter.attachedCount(dir) == 0)
        try cg.apply(nil, devices: [])
        #expect(DeviceFilter.attachedCount(dir) == 1)
        try cg.apply(
            OCIResources(devices: [
                .init(allow: false, access: "rwm"), .init(allow: true, type: "c", major: 10, minor: 200, access: "rw"),
            ]))
        #expect(DeviceFilter.attachedCount(dir) == 1)
    }

    @Test(
        "killAndDestroy kills a frozen cgroup with frozen, populated sub-cgroups and removes it all; create refuses a frozen cgroup"
    )
    func killAndDestroyFrozen() throws {
        try checkKillAndDestroyFrozenTree(parent: uniqueTestParent())
    }

    @Test("killAll uses cgroup.kill and catches every fork; destroy leaves nothing")
    func killAllAndDestroy() throws {
        let (cg, dir, cleanup) = try make()
        defer { cleanup() }
        let child = try BlockedChild("for i in 1 2 3 4 5; do sleep 60 & done; exec sleep 60")
        try cg.attach(pid: child.pid)
        child.release()
        #expect(eventually { (try? cg.processes().count) == 6 })
        try cg.killAll(signal: SIGKILL)
        #expect(child.wait() == 137)
        #expect(eventually { (try? cg.processes().isEmpty) == true })
        try cg.destroy()
        #expect(!CgroupFS.exists(dir))
        #expect(!CgroupFS.exists(CgroupPath.parent(dir)))
    }
}

/// Polls `condition` every 20 ms, at most `tries` times: a bound, not a timing assertion.
func eventually(tries: Int = 1500, _ condition: () -> Bool) -> Bool {
    for _ in 0..<tries {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}
