import Foundation
import LinuxKernel
import Testing

@testable import Cgroups

struct PathTests {
    // This development host: v1 controllers, cgroup2 at /sys/fs/cgroup/unified, caller in a
    // memory cgroup of its own.
    static let hybridProc = """
        9:name=systemd:/
        8:pids:/
        5:devices:/
        4:memory:/process_api/abc
        3:cpuset:/
        2:cpu,cpuacct:/user.slice
        0::/
        """
    static let hybridMounts = """
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
        34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """
    static let unifiedProc = "0::/user.slice/user-0.slice/session-1.scope\n"
    static let unifiedMounts = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"

    func resolveHybrid(_ path: String?) throws -> Cgroup {
        try CgroupPath.resolve(
            cgroupsPath: path, id: "c1", root: "/sys/fs/cgroup", mode: .hybrid,
            procSelfCgroup: Self.hybridProc, mountinfo: Self.hybridMounts)
    }

    @Test("relative paths nest under the caller's cgroup in each v1 hierarchy")
    func relativeHybrid() throws {
        let cg = try resolveHybrid("a/b")
        #expect(cg.path == "a/b")
        #expect(
            cg.directories == [
                "name=systemd": "/sys/fs/cgroup/systemd/a/b",
                "pids": "/sys/fs/cgroup/pids/a/b",
                "devices": "/sys/fs/cgroup/devices/a/b",
                "memory": "/sys/fs/cgroup/memory/process_api/abc/a/b",
                "cpuset": "/sys/fs/cgroup/cpuset/a/b",
                "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/user.slice/a/b",
                "unified": "/sys/fs/cgroup/unified/a/b",
            ])
        #expect(cg.mountPoints["memory"] == "/sys/fs/cgroup/memory")
        #expect(cg.directory(forController: "cpu") == "/sys/fs/cgroup/cpu,cpuacct/user.slice/a/b")
        #expect(cg.trackingDirectory == "/sys/fs/cgroup/pids/a/b")
    }

    @Test("absolute paths go under each hierarchy's root; nil is safespace/<id>")
    func absoluteAndDefault() throws {
        let abs = try resolveHybrid("/x//./y/")
        #expect(abs.path == "/x/y")
        #expect(abs.directories["memory"] == "/sys/fs/cgroup/memory/x/y")
        let def = try resolveHybrid(nil)
        #expect(def.path == "safespace/c1")
        #expect(def.directories["memory"] == "/sys/fs/cgroup/memory/process_api/abc/safespace/c1")
        #expect(try resolveHybrid("").path == "safespace/c1")
    }

    @Test("on a v2-only host a relative path nests under the caller's parent cgroup (runc fs2)")
    func unified() throws {
        let cg = try CgroupPath.resolve(
            cgroupsPath: "safespace/c1", id: "c1", root: "/sys/fs/cgroup", mode: .unified,
            procSelfCgroup: Self.unifiedProc, mountinfo: Self.unifiedMounts)
        #expect(cg.directories == ["unified": "/sys/fs/cgroup/user.slice/user-0.slice/safespace/c1"])
        #expect(cg.mountPoints == ["unified": "/sys/fs/cgroup"])
        let abs = try CgroupPath.resolve(
            cgroupsPath: "/k8s/c1", id: "c1", root: "/sys/fs/cgroup", mode: .unified,
            procSelfCgroup: Self.unifiedProc, mountinfo: Self.unifiedMounts)
        #expect(abs.directories == ["unified": "/sys/fs/cgroup/k8s/c1"])
    }

    @Test("a mount whose root is not / (cgroup namespace, bind mount) is accounted for")
    func mountRoot() throws {
        let cg = try CgroupPath.resolve(
            cgroupsPath: "c", id: "c", root: "/sys/fs/cgroup", mode: .legacy,
            procSelfCgroup: "4:memory:/outer/inner\n",
            mountinfo: "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
        #expect(cg.directories == ["memory": "/sys/fs/cgroup/memory/inner/c"])
    }

    @Test(
        "bad paths are refused with the field named",
        arguments: ["a/../b", "..", "/a/..", "system.slice:safespace:c1", "/", "//."])
    func badPaths(path: String) {
        #expect {
            _ = try resolveHybrid(path)
        } throws: { error in
            "\(error)".hasPrefix("linux.cgroupsPath: ")
        }
    }

    @Test("no hierarchy under the root is an error")
    func noHierarchy() {
        #expect(throws: CgroupError.self) {
            try CgroupPath.resolve(
                cgroupsPath: nil, id: "c", root: "/elsewhere", mode: .hybrid, procSelfCgroup: Self.hybridProc,
                mountinfo: Self.hybridMounts)
        }
    }

    @Test("mountinfo escapes and path helpers")
    func helpers() {
        #expect(MountInfo.unescape("/a\\040b") == "/a b")
        #expect(MountInfo.unescape("/plain\\") == "/plain\\")
        #expect(CgroupPath.join("/a/", "/b", "c/") == "/a/b/c")
        #expect(CgroupPath.levels(from: "/r", to: "/r/a/b") == ["/r/a", "/r/a/b"])
        #expect(CgroupPath.parent("/a/b") == "/a")
        #expect(CgroupPath.parent("/a") == "/")
    }

    @Test("Cgroup round-trips through JSON for the state directory")
    func codable() throws {
        var cg = try resolveHybrid("a/b")
        cg.created = ["/sys/fs/cgroup/pids/a", "/sys/fs/cgroup/pids/a/b"]
        let data = try JSONEncoder().encode(cg)
        #expect(try JSONDecoder().decode(Cgroup.self, from: data) == cg)
    }

    @Test("mode detection looks for cgroup.controllers at the root and at root/unified")
    func detectModeOnTrees() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("cgmode-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: base + "/legacy/memory", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: base + "/hybrid/unified", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: base + "/unified", withIntermediateDirectories: true)
        _ = fm.createFile(atPath: base + "/hybrid/unified/cgroup.controllers", contents: Data())
        _ = fm.createFile(atPath: base + "/unified/cgroup.controllers", contents: Data("memory pids\n".utf8))
        #expect(Cgroup.detectMode(root: base + "/legacy") == .legacy)
        #expect(Cgroup.detectMode(root: base + "/hybrid") == .hybrid)
        #expect(Cgroup.detectMode(root: base + "/unified") == .unified)
    }

    @Test("mode detection on this host agrees with mountinfo")
    func detectModeHost() throws {
        let mounts = CgroupPath.parseMountinfo(try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8))
        let expected: CgroupMode =
            mounts.contains { $0.isV2 && $0.mountPoint == "/sys/fs/cgroup" }
            ? .unified
            : mounts.contains { $0.isV2 && $0.mountPoint == "/sys/fs/cgroup/unified" } ? .hybrid : .legacy
        #expect(Cgroup.detectMode() == expected)
    }
}
