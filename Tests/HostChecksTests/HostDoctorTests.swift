import Foundation
import Testing

@testable import HostChecks

/// A host made of files under a temporary directory: mountinfo, cgroup files, /proc files
/// and programs that are shell scripts printing a version.
private struct FakeHost {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory.path + "/host-doctor-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root + "/usr/bin", withIntermediateDirectories: true)
    }

    func file(_ path: String, _ text: String) throws {
        let full = root + path
        try FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: full))
    }

    /// `/usr/bin/<name>`: a script printing `output` and exiting with `status`.
    func program(_ name: String, output: String, status: Int = 0) throws {
        try file("/usr/bin/" + name, "#!/bin/sh\nprintf '%s\\n' '\(output)'\nexit \(status)\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root + "/usr/bin/" + name)
    }

    /// A host where every check passes: cgroup v2 with cpu, memory and pids delegated,
    /// containerd 1.6, user namespaces, CAP_SYS_RESOURCE, no AppArmor, runsc.
    static func healthy() throws -> FakeHost {
        let host = try FakeHost()
        try host.program("containerd", output: "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1")
        try host.program("runsc", output: "runsc version release-20240807.0")
        try host.file("/proc/self/mountinfo", "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
        try host.file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
        try host.file("/sys/fs/cgroup/cgroup.subtree_control", "cpuset cpu io memory pids\n")
        try host.file("/proc/sys/user/max_user_namespaces", "63936\n")
        try host.file("/proc/self/status", "Name:\tsafespace\nCapBnd:\t000001ffffffffff\n")
        try host.file("/sys/module/apparmor/parameters/enabled", "N\n")
        return host
    }

    func doctor(libseccomp: String? = "2.5.4") -> HostReport {
        HostDoctor(environment: HostEnvironment(root: root, searchPath: ["/usr/bin"], libseccompVersion: libseccomp))
            .run()
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

@Suite struct HostDoctorTests {
    @Test func aHealthyHostPassesEveryCheck() throws {
        let host = try FakeHost.healthy()
        defer { host.remove() }
        let report = host.doctor()
        #expect(report.passed)
        #expect(report.checks.allSatisfy { $0.status == .ok }, "\(report.checks)")
        #expect(report.offersHigh)
        #expect(report.check("containerd")?.reason == "containerd 1.6.20")
        #expect(report.check("gvisor")?.reason.hasPrefix("runsc 20240807 (") == true)
        #expect(report.check("cgroup")?.reason.hasPrefix("cgroup v2 (unified)") == true)
        #expect(
            report.checks.map(\.name) == [
                "containerd", "cgroup", "cgroup.cpu", "cgroup.memory", "cgroup.pids", "cgroup.subtree.cpu",
                "cgroup.subtree.memory", "cgroup.subtree.pids", "userns", "libseccomp", "cap_sys_resource", "apparmor",
                "gvisor",
            ])
    }

    /// Missing cgroup controllers, a missing binary, no user namespaces, an old libseccomp,
    /// no CAP_SYS_RESOURCE, AppArmor on: each is reported under its own name.
    @Test func eachFailureIsReportedByName() throws {
        let host = try FakeHost.healthy()
        defer { host.remove() }
        try FileManager.default.removeItem(atPath: host.root + "/usr/bin/containerd")
        try FileManager.default.removeItem(atPath: host.root + "/usr/bin/runsc")
        try host.file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io\n")
        try host.file("/sys/fs/cgroup/cgroup.subtree_control", "cpu\n")
        try host.file("/proc/sys/user/max_user_namespaces", "0\n")
        try host.file("/proc/self/status", "CapBnd:\t000001fffeffffff\n")
        try host.file("/sys/module/apparmor/parameters/enabled", "Y\n")
        let report = host.doctor(libseccomp: "2.4.1")
        let status = Dictionary(uniqueKeysWithValues: report.checks.map { ($0.name, $0.status) })
        #expect(!report.passed)
        #expect(report.failures.map(\.name) == ["containerd", "cgroup.memory", "cgroup.pids", "libseccomp"])
        #expect(status["cgroup.cpu"] == .ok)
        #expect(status["cgroup.subtree.memory"] == .warn)
        #expect(status["userns"] == .warn)
        #expect(status["cap_sys_resource"] == .warn)
        #expect(status["apparmor"] == .warn)
        #expect(status["gvisor"] == .warn)
        #expect(!report.offersHigh)
        #expect(report.check("containerd")?.reason.contains("containerd is not installed") == true)
        #expect(report.check("cgroup.pids")?.reason == "cgroup v2 controller pids is not available at the root")
        #expect(report.check("libseccomp")?.reason == "libseccomp 2.4.1: 2.5.0 or newer is needed")
        #expect(report.check("gvisor")?.reason.contains("safespace-high is not offered") == true)
        #expect(report.check("userns")?.reason.contains("max_user_namespaces=0") == true)
    }

    @Test func noLibseccompAndNoCgroupFileSystemFail() throws {
        let host = try FakeHost.healthy()
        defer { host.remove() }
        try host.file("/proc/self/mountinfo", "22 1 0:21 / /sys rw - sysfs sysfs rw\n")
        let report = host.doctor(libseccomp: nil)
        #expect(report.failures.map(\.name) == ["cgroup", "libseccomp"])
        #expect(report.check("cgroup")?.reason == "no cgroup file system at /sys/fs/cgroup")
        #expect(report.check("libseccomp")?.reason == "libseccomp is not installed (apt-get install libseccomp2)")
    }

    @Test func containerdTwoAndOldContainerdFail() throws {
        let host = try FakeHost.healthy()
        defer { host.remove() }
        try host.program("containerd", output: "containerd github.com/containerd/containerd/v2 v2.0.2 abc")
        #expect(host.doctor().check("containerd")?.reason.hasPrefix("containerd 2.0.2: 2.x is not handled yet") == true)
        try host.program("containerd", output: "containerd containerd.io 1.5.9 1407cab")
        #expect(
            host.doctor().check("containerd")
                == HostCheck("containerd", .fail, "containerd 1.5.9: 1.6 or newer is needed"))
    }

    /// cgroup v1 (hybrid here): the controllers the v1 driver uses must be mounted.
    @Test func cgroupV1ControllersMustBeMounted() throws {
        let host = try FakeHost.healthy()
        defer { host.remove() }
        try host.file(
            "/proc/self/mountinfo",
            """
            25 22 0:22 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
            26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
            28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
            29 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
            30 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
            31 25 0:28 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices

            """)
        let report = host.doctor()
        #expect(report.check("cgroup")?.reason == "cgroup v1 (hybrid)")
        #expect(report.failures.map(\.name) == ["cgroup.freezer", "cgroup.cpuset"])
    }

    @Test func aProgramThatHangsIsKilled() throws {
        let host = try FakeHost.healthy()
        defer { host.remove() }
        try host.file("/usr/bin/containerd", "#!/bin/sh\nexec sleep 30\n")
        var environment = HostEnvironment(root: host.root, searchPath: ["/usr/bin"], libseccompVersion: "2.5.4")
        environment.commandTimeout = 0.5
        let start = Date()
        let check = HostDoctor(environment: environment).containerd()
        #expect(check.status == .fail)
        #expect(Date().timeIntervalSince(start) < 10)
    }

    @Test func linesAreColumns() {
        #expect(HostCheck("userns", .warn, "x y").description == "warn  userns                    x y")
    }

    @Test func versions() {
        #expect(HostDoctor.version("2.5.4", atLeast: "2.5.0"))
        #expect(HostDoctor.version("2.10", atLeast: "2.5.0"))
        #expect(!HostDoctor.version("2.4.9", atLeast: "2.5.0"))
        #expect(HostDoctor.version("1.6", atLeast: "1.6"))
        #expect(HostDoctor.firstDate("runsc version release-20231009.0") == "20231009")
        #expect(HostDoctor.firstDate("runsc version 0.0.0") == nil)
    }
}

/// This host, as root: what it has passes (the integration tests need all of it).
@Suite struct ThisHostTests {
    @Test(.enabled(if: getuid() == 0, "needs root"))
    func thisHostPassesWhatItHas() {
        let report = HostDoctor().run()
        let failures = report.failures
        #expect(
            failures.isEmpty
                || failures.map(\.name) == ["containerd"] && HostEnvironment.current().program("containerd") == nil,
            "\(failures)")
        #expect(report.check("libseccomp")?.status == .ok)
        #expect(report.check("cgroup")?.status == .ok)
        #expect(report.offersHigh == (HostEnvironment.current().program("runsc") != nil))
    }
}
