import Foundation
import Glibc
import Testing

@testable import SystemdSupport

/// sd-daemon(3) through `Systemd`, with the environment systemd would set. The suite changes
/// the process environment, so it runs serialized.
@Suite("Systemd: notify, watchdog, listen fds", .serialized)
struct SystemdTests {
    @Test("notify sends to NOTIFY_SOCKET; false without it; a socket nobody listens on is an error")
    func notify() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/safespace-notify-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/notify"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(bound == 0)

        setenv("NOTIFY_SOCKET", path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        #expect(Systemd.notify("READY=1\nSTATUS=recovered 2 sandboxes"))
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        #expect(n > 0 && String(decoding: buffer[..<n], as: UTF8.self) == "READY=1\nSTATUS=recovered 2 sandboxes")
        #expect(Systemd.notifyResult("WATCHDOG=1") == .sent)
        #expect(recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT)) == 10)

        setenv("NOTIFY_SOCKET", dir + "/nobody", 1)
        if case .failed(let e) = Systemd.notifyResult("READY=1") {
            #expect(e == ENOENT || e == ECONNREFUSED)
        } else {
            Issue.record("sending to a missing socket did not fail")
        }
        #expect(!Systemd.notify("READY=1"))

        unsetenv("NOTIFY_SOCKET")
        #expect(Systemd.notifyResult("READY=1") == .notUnderSystemd)
        #expect(!Systemd.notify("READY=1"))
    }

    @Test("watchdogInterval reads WATCHDOG_USEC for this pid only")
    func watchdog() {
        defer {
            unsetenv("WATCHDOG_USEC")
            unsetenv("WATCHDOG_PID")
        }
        unsetenv("WATCHDOG_USEC")
        unsetenv("WATCHDOG_PID")
        #expect(Systemd.watchdogInterval() == nil)
        setenv("WATCHDOG_USEC", "30000000", 1)
        setenv("WATCHDOG_PID", String(getpid()), 1)
        #expect(Systemd.watchdogInterval() == .seconds(30))
        setenv("WATCHDOG_PID", String(getpid() + 1), 1)
        #expect(Systemd.watchdogInterval() == nil)
        unsetenv("WATCHDOG_PID")
        setenv("WATCHDOG_USEC", "1500000", 1)
        #expect(Systemd.watchdogInterval() == .milliseconds(1500))
        setenv("WATCHDOG_USEC", "soon", 1)
        #expect(Systemd.watchdogInterval() == nil)
    }

    @Test("listenFDs takes LISTEN_FDS for this pid, from fd 3, and unsets the variables")
    func listenFDs() throws {
        // fd 3 is whatever the test process has there (sd_listen_fds only sets FD_CLOEXEC on
        // it); the socket checks run on a socket of our own.
        try #require(fcntl(3, F_GETFD) >= 0, "the test process has no fd 3")
        setenv("LISTEN_PID", String(getpid()), 1)
        setenv("LISTEN_FDS", "1", 1)
        #expect(Systemd.listenFDs() == [3])
        #expect(getenv("LISTEN_FDS") == nil && getenv("LISTEN_PID") == nil)
        #expect(Systemd.listenFDs() == [])

        setenv("LISTEN_PID", String(getpid() + 1), 1)
        setenv("LISTEN_FDS", "1", 1)
        #expect(Systemd.listenFDs() == [])
        #expect(getenv("LISTEN_FDS") == nil)

        let dir = FileManager.default.temporaryDirectory.path + "/safespace-listen-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = dir + "/api.sock"
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(!Systemd.isUnixStreamListener(fd), "bound but not listening")
        #expect(listen(fd, 8) == 0)
        #expect(Systemd.isUnixStreamListener(fd))
        #expect(Systemd.isUnixStreamListener(fd, path: path))
        #expect(!Systemd.isUnixStreamListener(fd, path: dir + "/other.sock"))
        #expect(!Systemd.isUnixStreamListener(0))
    }
}
