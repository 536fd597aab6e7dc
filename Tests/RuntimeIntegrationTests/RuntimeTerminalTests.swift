import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// `process.terminal` with `--console-socket`: the runtime sends the pty master over SCM_RIGHTS
/// (as runc does); the test receives it with recvmsg(2) and reads the workload's output from it.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeTerminalTests {
    /// A listening AF_UNIX stream socket at `path`.
    static func listenUnix(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        try #require(bytes.count < MemoryLayout.size(ofValue: addr.sun_path))
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(rc == 0, "bind \(path): \(String(cString: strerror(errno)))")
        try #require(listen(fd, 4) == 0)
        return fd
    }

    /// Waits (bounded) for a connection on `listener` and receives one fd sent with SCM_RIGHTS.
    static func receiveFd(_ listener: Int32) throws -> (fd: Int32, payload: String) {
        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        try #require(poll(&pfd, 1, 30_000) == 1, "nobody connected to the console socket")
        let conn = accept(listener, nil, nil)
        try #require(conn >= 0)
        defer { close(conn) }
        var data = [UInt8](repeating: 0, count: 256)
        // struct cmsghdr { size_t len; int level; int type; } + one int, CMSG_SPACE-aligned.
        let headerSize = MemoryLayout<Int>.size + 2 * MemoryLayout<Int32>.size
        var control = [UInt8](repeating: 0, count: headerSize + 8)
        let received: Int = data.withUnsafeMutableBytes { dataRaw in
            control.withUnsafeMutableBytes { controlRaw in
                var iov = iovec(iov_base: dataRaw.baseAddress, iov_len: dataRaw.count)
                return withUnsafeMutablePointer(to: &iov) { iovPtr in
                    var msg = msghdr()
                    msg.msg_iov = iovPtr
                    msg.msg_iovlen = 1
                    msg.msg_control = controlRaw.baseAddress
                    msg.msg_controllen = controlRaw.count
                    var n: Int
                    repeat { n = recvmsg(conn, &msg, Int32(MSG_CMSG_CLOEXEC)) } while n < 0 && errno == EINTR
                    return n
                }
            }
        }
        try #require(received > 0, "recvmsg: \(String(cString: strerror(errno)))")
        let (len, level, type, fd): (Int, Int32, Int32, Int32) = control.withUnsafeBytes { raw in
            (
                raw.load(fromByteOffset: 0, as: Int.self),
                raw.load(fromByteOffset: MemoryLayout<Int>.size, as: Int32.self),
                raw.load(fromByteOffset: MemoryLayout<Int>.size + 4, as: Int32.self),
                raw.load(fromByteOffset: headerSize, as: Int32.self)
            )
        }
        try #require(
            level == SOL_SOCKET && type == 1 /* SCM_RIGHTS */ && len == headerSize + 4, "no SCM_RIGHTS in the message")
        return (fd, String(decoding: data[0..<received], as: UTF8.self))
    }

    /// Reads `fd` until EOF or EIO (the pty's other side closed), polling so a stuck workload
    /// cannot hang the test.
    static func readAll(_ fd: Int32) -> String {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 30_000) <= 0 { break }
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("--console-socket: the pty master arrives over SCM_RIGHTS and carries the workload's output")
    func consoleSocket() throws {
        let c = try TestContainer(
            "tty",
            bundle: try Harness.busyboxBundle(["sh", "-c", "tty; stty size; [ -t 0 ] && [ -t 1 ] && echo tty-ok"]) {
                spec in
                spec.process?.terminal = true
            })
        defer { c.destroy() }
        // ConsoleSize has no public initializer: set it in the JSON.
        try Harness.patchConfig(bundle: c.bundle) { obj in
            var p = obj["process"] as! [String: Any]
            p["consoleSize"] = ["height": 30, "width": 100]
            obj["process"] = p
        }
        let sockPath = c.root + ".sock"
        let listener = try Self.listenUnix(sockPath)
        defer {
            close(listener)
            unlink(sockPath)
        }
        let cr = try c.create(["--console-socket", sockPath])
        try #require(cr.status == 0, "\(cr.stderr)")
        let (master, payload) = try Self.receiveFd(listener)
        defer { close(master) }
        #expect(isatty(master) == 1, "the received fd is not a terminal")
        #expect(!payload.isEmpty)
        let st = try c.start()
        try #require(st.status == 0, "\(st.stderr)")
        let output = Self.readAll(master)
        #expect(output.contains("/dev/pts/0"), "\(output)")
        #expect(output.contains("tty-ok"), "\(output)")
        #expect(output.contains("30 100"), "consoleSize not applied: \(output)")
        #expect(c.waitFor(status: "stopped"))
        #expect(try c.delete().status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("process.terminal without --console-socket is refused naming process.terminal; nothing remains")
    func terminalNeedsSocket() throws {
        let c = try TestContainer(
            "ttyno", bundle: try Harness.busyboxBundle(["tty"]) { spec in spec.process?.terminal = true })
        defer { c.destroy() }
        let r = try c.create()
        #expect(r.status != 0)
        #expect(r.stderr.contains("process.terminal") || r.stderr.contains("console-socket"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("a --console-socket nobody listens on fails create naming --console-socket; nothing remains")
    func deadConsoleSocket() throws {
        let c = try TestContainer(
            "ttydead", bundle: try Harness.busyboxBundle(["tty"]) { spec in spec.process?.terminal = true })
        defer { c.destroy() }
        let r = try c.create(["--console-socket", c.root + "/no-such.sock"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("console-socket"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
