import Foundation
import Glibc
import Testing

@testable import SystemdSupport

/// Socket activation's names (sd_listen_fds_with_names) and the check of a passed fd. In the
/// serialized suite of SystemdTests: they change the process environment.
extension SystemdTests {
    @Test("listenedFDs: names from LISTEN_FDNAMES, \"unknown\" without it; a count mismatch is malformed")
    func listenedFDs() throws {
        try #require(fcntl(3, F_GETFD) >= 0, "the test process has no fd 3")
        try #require(fcntl(4, F_GETFD) >= 0, "the test process has no fd 4")
        defer {
            for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) }
        }
        let pid = String(getpid())
        setenv("LISTEN_PID", pid, 1)
        setenv("LISTEN_FDS", "2", 1)
        setenv("LISTEN_FDNAMES", "safespaced.socket:api", 1)
        #expect(
            try Systemd.listenedFDs() == [
                .init(fd: 3, name: "safespaced.socket"), .init(fd: 4, name: "api"),
            ])
        #expect(getenv("LISTEN_FDS") == nil && getenv("LISTEN_PID") == nil && getenv("LISTEN_FDNAMES") == nil)
        #expect(try Systemd.listenedFDs() == [])

        setenv("LISTEN_PID", pid, 1)
        setenv("LISTEN_FDS", "1", 1)
        #expect(try Systemd.listenedFDs() == [.init(fd: 3, name: "unknown")])

        setenv("LISTEN_PID", pid, 1)
        setenv("LISTEN_FDS", "1", 1)
        setenv("LISTEN_FDNAMES", "a:b", 1)
        #expect(throws: Systemd.ActivationError.malformed(errno: EINVAL)) { try Systemd.listenedFDs() }

        setenv("LISTEN_PID", String(getpid() + 1), 1)
        setenv("LISTEN_FDS", "1", 1)
        #expect(try Systemd.listenedFDs() == [])
    }
}

@Suite("Systemd.unixStreamListenerPath: what a passed fd is")
struct UnixStreamListenerPathTests {
    func unixSocket(_ path: String?, type: __socket_type, listening: Bool) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var length = socklen_t(MemoryLayout<sa_family_t>.size)
        if let path {
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            length += socklen_t(path.utf8.count + (path.hasPrefix("\0") ? 0 : 1))
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        try #require(bound == 0, "bind: \(String(cString: strerror(errno)))")
        if listening { try #require(listen(fd, 4) == 0) }
        return fd
    }

    @Test("a listening AF_UNIX stream socket gives its path; anything else says what it is")
    func kinds() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/safespace-activation-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let good = try unixSocket(dir + "/api.sock", type: SOCK_STREAM, listening: true)
        defer { close(good) }
        #expect(try Systemd.unixStreamListenerPath(good) == dir + "/api.sock")

        let unlistened = try unixSocket(dir + "/idle.sock", type: SOCK_STREAM, listening: false)
        defer { close(unlistened) }
        #expect(throws: Systemd.ActivationError.notListening(fd: unlistened)) {
            try Systemd.unixStreamListenerPath(unlistened)
        }
        let datagram = try unixSocket(dir + "/dgram.sock", type: SOCK_DGRAM, listening: false)
        defer { close(datagram) }
        #expect(throws: Systemd.ActivationError.wrongType(fd: datagram, type: "SOCK_DGRAM")) {
            try Systemd.unixStreamListenerPath(datagram)
        }
        let seqpacket = try unixSocket(dir + "/seq.sock", type: SOCK_SEQPACKET, listening: true)
        defer { close(seqpacket) }
        #expect(throws: Systemd.ActivationError.wrongType(fd: seqpacket, type: "SOCK_SEQPACKET")) {
            try Systemd.unixStreamListenerPath(seqpacket)
        }
        let abstract = try unixSocket("\0safespace-test-\(getpid())", type: SOCK_STREAM, listening: true)
        defer { close(abstract) }
        #expect(throws: Systemd.ActivationError.noPath(fd: abstract, address: "abstract @safespace-test-\(getpid())")) {
            try Systemd.unixStreamListenerPath(abstract)
        }
        // Autobind (bind with only the family: an abstract name of 5 hex digits, unix(7)).
        let unnamed = try unixSocket(nil, type: SOCK_STREAM, listening: true)
        defer { close(unnamed) }
        #expect {
            try Systemd.unixStreamListenerPath(unnamed)
        } throws: { error in
            guard case .noPath(_, let address) = error as? Systemd.ActivationError else { return false }
            return address.hasPrefix("abstract @")
        }

        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(tcp) }
        #expect(listen(tcp, 1) == 0)
        #expect(throws: Systemd.ActivationError.wrongFamily(fd: tcp, family: "AF_INET")) {
            try Systemd.unixStreamListenerPath(tcp)
        }

        let file = open(dir + "/file", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        defer { close(file) }
        #expect(throws: Systemd.ActivationError.notASocket(fd: file, kind: "regular file")) {
            try Systemd.unixStreamListenerPath(file)
        }
        let directory = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(directory) }
        #expect(throws: Systemd.ActivationError.notASocket(fd: directory, kind: "directory")) {
            try Systemd.unixStreamListenerPath(directory)
        }
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer { fds.forEach { close($0) } }
        #expect(throws: Systemd.ActivationError.notASocket(fd: fds[0], kind: "pipe (FIFO)")) {
            try Systemd.unixStreamListenerPath(fds[0])
        }
        // No fd there: EBADF (a number far above any this process opens).
        #expect(throws: Systemd.ActivationError.unusable(fd: 999_999, errno: EBADF)) {
            try Systemd.unixStreamListenerPath(999_999)
        }
        let message = Systemd.ActivationError.wrongType(fd: 3, type: "SOCK_DGRAM").description
        #expect(message == "fd 3 is an AF_UNIX SOCK_DGRAM socket, not SOCK_STREAM")
    }
}
