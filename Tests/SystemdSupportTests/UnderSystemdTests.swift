import Foundation
import Glibc
import Testing

@testable import SystemdSupport

/// `Systemd` against a real service manager: these run only as the main process of a
/// systemd unit that scripts/vm/systemd-boot-check starts in the VM (SAFESPACE_UNDER_SYSTEMD=1),
/// and the unit's result is what checks them there: a Type=notify unit whose process never
/// sends READY=1 fails to start.
@Suite("Systemd under systemd", .enabled(if: ProcessInfo.processInfo.environment["SAFESPACE_UNDER_SYSTEMD"] == "1"))
struct UnderSystemdTests {
    let env = ProcessInfo.processInfo.environment

    @Test("READY=1, STATUS= and WATCHDOG=1 reach PID 1; the watchdog interval is the unit's")
    func notify() throws {
        let expected = try #require(
            env["SAFESPACE_EXPECT_WATCHDOG_USEC"].flatMap(Int64.init), "SAFESPACE_EXPECT_WATCHDOG_USEC")
        #expect(Systemd.watchdogInterval() == .microseconds(expected))
        #expect(Systemd.notifyResult("STATUS=under systemd test") == .sent)
        #expect(Systemd.notify("READY=1"))
        #expect(Systemd.notify("WATCHDOG=1"))
    }

    @Test("the socket of a .socket unit arrives as fd 3")
    func listenFDs() throws {
        let path = try #require(env["SAFESPACE_EXPECT_LISTEN_PATH"], "SAFESPACE_EXPECT_LISTEN_PATH")
        #expect(Systemd.listenFDs() == [3])
        #expect(Systemd.isUnixStreamListener(3, path: path))
        #expect(getenv("LISTEN_FDS") == nil)
    }
}

extension UnderSystemdTests {
    @Test("delegation is seen on a Delegate=yes unit's cgroup only; enterSubgroup moves the process into a leaf")
    func delegation() throws {
        let delegated = try #require(env["SAFESPACE_EXPECT_DELEGATED"], "SAFESPACE_EXPECT_DELEGATED")
        let own = try #require(Systemd.ownCgroup())
        #expect(own.hasPrefix("/system.slice/") && own.hasSuffix(".service"), "\(own)")
        #expect(Systemd.isDelegated(cgroup: own) == (delegated == "1"))
        guard delegated == "1" else { return }
        let leaf = try Systemd.enterSubgroup("supervisor")
        #expect(leaf == own + "/supervisor")
        #expect(Systemd.ownCgroup() == leaf)
        // The unit's cgroup holds no process now: controllers can be enabled for its children.
        let procs = try String(contentsOfFile: "/sys/fs/cgroup" + own + "/cgroup.procs", encoding: .utf8)
        #expect(procs.isEmpty, "\(procs)")
        let control = open("/sys/fs/cgroup" + own + "/cgroup.subtree_control", O_WRONLY | O_CLOEXEC)
        defer { close(control) }
        #expect(write(control, "+pids", 5) == 5, "enable pids: \(String(cString: strerror(errno)))")
        #expect(throws: Systemd.CgroupError.self) { try Systemd.enterSubgroup("../x") }
    }
}
