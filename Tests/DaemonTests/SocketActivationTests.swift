/// safespaced under socket activation (sd_listen_fds(3)) without systemd: the test makes the
/// listening socket itself, as a `.socket` unit would, and execs the daemon with it as fd 3 and
/// `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES` set (DaemonHarness.spawnActivated). The real
/// unit under systemd as PID 1 is scripts/vm/systemd-boot-test's.
import DaemonClient
import Foundation
import Glibc
import XCTest

final class SocketActivationTests: XCTestCase {
    var harness: DaemonHarness!
    var openFDs: [Int32] = []

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
        openFDs.forEach { close($0) }
        openFDs = []
    }

    /// An AF_UNIX socket of `type` bound to `path` (listening when `listening`), CLOEXEC in
    /// this process.
    func unixSocket(_ path: String, type: __socket_type = SOCK_STREAM, listening: Bool = true) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        openFDs.append(fd)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(bound, 0, "bind \(path): \(String(cString: strerror(errno)))")
        if listening { XCTAssertEqual(listen(fd, 64), 0) }
        return fd
    }

    func inode(_ path: String) -> ino_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_ino : nil
    }

    /// The socket inode behind an fd: `socket:[N]` (proc(5), /proc/PID/fd).
    func socketInode(pid: pid_t, fd: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The daemon serves on the socket it inherited: the path keeps the test's inode (never
    /// unlinked and bound anew), a request queued before the daemon ran is answered, the fd is
    /// close-on-exec in the daemon (no helper or sandbox inherits it), the socket becomes 0660
    /// root:safespace, a sandbox runs python through it, and on SIGTERM the daemon exits 0 and
    /// leaves the socket listening (its unit owns it): a second daemon serves on it again.
    func testServesOnInheritedSocket() throws {
        let h = try DaemonHarness()
        harness = h
        let listener = try unixSocket(h.socket)
        let socketInodeBefore = try XCTUnwrap(inode(h.socket))
        var ourSocket = stat()
        XCTAssertEqual(fstat(listener, &ourSocket), 0)

        // Queued in the backlog before the daemon exists, as a connection that starts the unit.
        let early = DispatchQueue(label: "early")
        let earlyResult = LockedBox<Result<DaemonClient.Response, Error>>()
        early.async { earlyResult.set(Result { try h.client.request("GET", "/v1/healthz") }) }
        usleep(200_000)

        try h.spawnActivated(fds: [listener])
        try h.waitUntilAnswering()
        early.sync {}
        let queued = try XCTUnwrap(earlyResult.value).get()
        XCTAssertEqual(queued.status, 200, queued.text)
        XCTAssertEqual(queued.json?["status"] as? String, "ok")

        XCTAssertEqual(inode(h.socket), socketInodeBefore, "the daemon replaced the inherited socket's path")
        XCTAssertEqual(socketInode(pid: h.pid, fd: 3), "socket:[\(ourSocket.st_ino)]", "fd 3 of the daemon")
        let fdinfo = try String(contentsOfFile: "/proc/\(h.pid)/fdinfo/3", encoding: .utf8)
        let flags = fdinfo.split(separator: "\n").first { $0.hasPrefix("flags:") }.flatMap {
            Int($0.split(separator: "\t").last.map(String.init) ?? "", radix: 8)
        }
        XCTAssertEqual(try XCTUnwrap(flags) & Int(O_CLOEXEC), Int(O_CLOEXEC), "fd 3 without FD_CLOEXEC: \(fdinfo)")
        XCTAssertTrue(h.log.contains("socket activation: serving on the inherited socket"), h.log)
        var st = stat()
        XCTAssertEqual(lstat(h.socket, &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o660)
        XCTAssertEqual(st.st_uid, 0)
        XCTAssertEqual(st.st_gid, try XCTUnwrap(getgrnam("safespace")).pointee.gr_gid)

        let name = h.name("activated")
        try h.create(name, spec: ["runtime": "python:3.11"])
        let run = try h.exec(name, ["python3", "-c", "print(6*7)"])
        XCTAssertEqual(run.status, 200, run.text)
        XCTAssertEqual(run.json?["stdout"] as? String, "42\n")
        XCTAssertEqual(run.json?["exitCode"] as? Int, 0)
        // A streamed exec (ndjson chunks, then the exit object) and concurrent execs: the
        // response body paths of the server on the inherited socket.
        var lines: [[String: Any]] = []
        var pending: [UInt8] = []
        let streamed = try h.client.send(
            "POST", "/v1/sandboxes/\(name)/exec",
            body: Array(#"{"command":["sh","-c","echo one; sleep 0.3; echo two >&2; exit 3"]}"#.utf8),
            headers: ["Accept": "application/x-ndjson", "Content-Type": "application/json"]
        ) { chunk in
            pending += chunk
            while let newline = pending.firstIndex(of: 0x0A) {
                if let object = try? JSONSerialization.jsonObject(with: Data(pending[..<newline])) as? [String: Any] {
                    lines.append(object)
                }
                pending.removeSubrange(...newline)
            }
        }
        XCTAssertEqual(streamed.status, 200)
        XCTAssertEqual(streamed.headers["content-type"], "application/x-ndjson")
        XCTAssertEqual(lines.compactMap { $0["stdout"] as? String }.joined(), "one\n")
        XCTAssertEqual(lines.compactMap { $0["stderr"] as? String }.joined(), "two\n")
        XCTAssertEqual(lines.last?["exitCode"] as? Int, 3)
        let right = LockedCounter()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let response = try? h.exec(name, ["python3", "-c", "print(\(i) * 7)"])
            if response?.status == 200, response?.json?["stdout"] as? String == "\(i * 7)\n" { right.add() }
        }
        XCTAssertEqual(right.value, 8)
        // Nothing of the activation reaches the sandbox: no LISTEN_* variable, and no fd of a
        // process in it is the inherited socket.
        let seen = try h.exec(
            name,
            ["sh", "-c", "env | grep ^LISTEN_ || echo no-listen-vars; for f in /proc/self/fd/*; do readlink $f; done"])
        XCTAssertEqual(seen.status, 200, seen.text)
        let seenOut = try XCTUnwrap(seen.json?["stdout"] as? String)
        XCTAssertTrue(seenOut.hasPrefix("no-listen-vars\n"), seenOut)
        XCTAssertFalse(seenOut.contains("socket:[\(ourSocket.st_ino)]"), seenOut)
        XCTAssertEqual(try h.delete(name).status, 200)

        let status = try XCTUnwrap(h.stop(), "safespaced did not stop on SIGTERM: \(h.log)")
        XCTAssertEqual(status, 0, h.log)
        XCTAssertEqual(inode(h.socket), socketInodeBefore, "the daemon removed the inherited socket on stop")
        XCTAssertEqual(listenState(listener), 1, "the inherited socket no longer listens after the daemon stopped")
        XCTAssertEqual(h.leftovers(), [:], h.log)

        // The unit starts the daemon again on the same socket.
        try h.spawnActivated(fds: [listener])
        try h.waitUntilAnswering()
        XCTAssertEqual(inode(h.socket), socketInodeBefore)
        XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes").status, 200)
        XCTAssertEqual(h.stop(), 0, h.log)
    }

    /// SO_ACCEPTCONN of `fd` (socket(7)).
    func listenState(_ fd: Int32) -> Int32 {
        var value: Int32 = -1
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length)
        return value
    }

    /// An inherited fd the daemon cannot serve HTTP on is refused at start with a message that
    /// says what it is; the daemon exits 1 before it binds, recovers or creates anything: the
    /// socket path stays as it was.
    func testRefusesWrongInheritedFDs() throws {
        let h = try DaemonHarness()
        harness = h
        let file = open(h.dir + "/not-a-socket", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        openFDs.append(file)
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        openFDs.append(tcp)
        var loopback = sockaddr_in()
        loopback.sin_family = sa_family_t(AF_INET)
        loopback.sin_addr.s_addr = inet_addr("127.0.0.1")
        let tcpBound = withUnsafePointer(to: &loopback) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(tcp, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(tcpBound, 0)
        XCTAssertEqual(listen(tcp, 8), 0)
        let datagram = try unixSocket(h.dir + "/dgram.sock", type: SOCK_DGRAM, listening: false)
        let unlistened = try unixSocket(h.dir + "/unlistened.sock", listening: false)
        let elsewhere = try unixSocket(h.dir + "/elsewhere.sock")
        let second = try unixSocket(h.dir + "/second.sock")
        var pipeFDs: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&pipeFDs), 0)
        for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        openFDs += pipeFDs

        let cases: [(String, [Int32], String)] = [
            ("regular file", [file], "fd 3 (safespaced.socket) is a regular file, not a socket"),
            ("pipe", [pipeFDs[0]], "fd 3 (safespaced.socket) is a pipe (FIFO), not a socket"),
            ("TCP listener", [tcp], "fd 3 (safespaced.socket) is an AF_INET socket, not AF_UNIX"),
            (
                "datagram socket", [datagram],
                "fd 3 (safespaced.socket) is an AF_UNIX SOCK_DGRAM socket, not SOCK_STREAM"
            ),
            (
                "socket not listening", [unlistened],
                "fd 3 (safespaced.socket) is an AF_UNIX SOCK_STREAM socket that is not listening"
            ),
            (
                "another path", [elsewhere],
                "fd 3 (safespaced.socket) is bound to \(h.dir)/elsewhere.sock, not to --socket \(h.socket)"
            ),
            ("two fds", [elsewhere, second], "2 fds passed (fd 3 (safespaced.socket), fd 4 (second))"),
        ]
        for (what, fds, message) in cases {
            try? FileManager.default.removeItem(atPath: h.dir + "/daemon.log")
            try h.spawnActivated(fds: fds, names: fds.count == 2 ? "safespaced.socket:second" : "safespaced.socket")
            let status = try XCTUnwrap(h.waitForExit(seconds: 60), "\(what): the daemon did not exit: \(h.log)")
            XCTAssertTrue(status & 0x7f == 0 && (status >> 8) & 0xff == 1, "\(what): wait status \(status): \(h.log)")
            XCTAssertTrue(h.log.contains("safespaced: error: socket activation: \(message)"), "\(what): \(h.log)")
            XCTAssertNil(inode(h.socket), "\(what): the daemon made its socket")
            XCTAssertFalse(
                FileManager.default.fileExists(atPath: h.stateDir), "\(what): the daemon went on to its state")
        }
    }

    /// `LISTEN_PID` naming another process: the fds are not the daemon's (sd_listen_fds(3)). It
    /// falls back to binding `--socket` itself, and refuses to when a socket unit's socket
    /// listens there: a live socket is never replaced.
    func testForeignListenPIDNeverReplacesALiveSocket() throws {
        let h = try DaemonHarness()
        harness = h
        let listener = try unixSocket(h.socket)
        let before = try XCTUnwrap(inode(h.socket))
        try h.spawnActivated(fds: [listener], listenPID: .other(getpid()))
        let status = try XCTUnwrap(h.waitForExit(seconds: 120), "the daemon did not exit: \(h.log)")
        XCTAssertEqual((status >> 8) & 0xff, 1, h.log)
        XCTAssertTrue(h.log.contains("LISTEN_FDS=1 is for pid \(getpid()), not this process"), h.log)
        XCTAssertTrue(h.log.contains("--socket \(h.socket): another process is listening on it"), h.log)
        XCTAssertEqual(inode(h.socket), before, "the daemon replaced a live socket")
        XCTAssertEqual(listenState(listener), 1)
    }
}

/// A value set by one thread, read by another.
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value?
    var value: Value? { lock.withLock { stored } }
    func set(_ value: Value) { lock.withLock { stored = value } }
}
