/// Port forwards into sandboxes (`POST /v1/sandboxes/{name}/ports/{port}`, issue 13 item 5):
/// a TCP port on the host's loopback (127.0.0.1, ephemeral) whose every connection is relayed
/// to 127.0.0.1:`port` inside the sandbox's network namespace.
///
/// A sandbox without egress rules has only `lo` in a network namespace of its own: no host
/// address reaches it, and none should. The dialling socket is therefore made inside that
/// namespace, by a thread that enters it and never leaves:
///
/// - `open("/proc/<init>/ns/net", O_RDONLY | O_CLOEXEC)` (proc(5) `/proc/pid/ns/`) names the
///   sandbox's network namespace; the init's start time (stat(5) field 22) is checked after
///   the open, so a pid reused since cannot hand another process's namespace over.
/// - The listening socket is made first, on the daemon's own thread and in the host's
///   namespace: `socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC)`, `bind(127.0.0.1:0)` (the kernel
///   picks a free ephemeral port, ip(7)), `listen`. A socket keeps the namespace it was made
///   in (network_namespaces(7)), so accepting on it from any thread gives host connections.
/// - The forward's thread calls `setns(fd, CLONE_NEWNET)` (setns(2)): it moves only the calling
///   thread (a namespace is per task; the daemon's other threads stay in the host's). The
///   thread is the forward's alone and ends with it, so no other work ever runs in the
///   sandbox's namespace; the threads it starts (the relays) inherit the namespace and only
///   read and write fds they are given.
/// - For each accepted connection it calls `socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC)`, made
///   in the sandbox's namespace, and `connect(127.0.0.1:port)` there (with SO_SNDTIMEO, which
///   bounds connect(2), socket(7)): only the sandbox's loopback is ever dialled, never an
///   address the sandbox or the client chose.
/// - Two relay threads per connection copy bytes each way (read(2)/write(2), blocking) and pass
///   an end of stream on with `shutdown(SHUT_WR)`; the connection's fds are closed when both
///   directions are done.
///
/// Closing a forward (`close`: the sandbox's delete, daemon stop) calls `shutdown(SHUT_RDWR)`
/// on the listening socket (a blocked accept(2) returns EINVAL) and on every relayed socket
/// (blocked reads return 0); each thread closes its own fds as it ends, so no fd is closed
/// under a thread still using it. Every fd is close-on-exec: no exec'd process or sandbox
/// inherits one. The host port is reachable by every process of the node (it is on the
/// loopback, as `docker run -p 127.0.0.1::port`); each forward serves at most
/// `maxConnections` connections at a time.
import CSafeSpace
import Foundation
import Glibc
import LinuxKernel
import Logging

final class PortForwards: @unchecked Sendable {
    /// Connections one forward relays at a time; more are closed as they are accepted.
    static let maxConnections = 64
    /// Seconds a connect(2) inside the sandbox may take.
    static let connectTimeoutSeconds = 5

    private let lock = NSLock()
    private var forwards: [String: [UInt16: Forward]] = [:]
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// The open forwards of `sandbox`: sandbox port -> host port.
    func list(_ sandbox: String) -> [UInt16: UInt16] {
        lock.withLock { (forwards[sandbox] ?? [:]).mapValues(\.hostPort) }
    }

    /// Opens a forward to `port` of `sandbox` (whose init is `initPid`, started at
    /// `initStartTime`), or gives the one open already.
    /// - Returns: the host port (on 127.0.0.1) and whether it was opened now.
    /// - Throws: `APIError` 409 when the init is gone, 500 for a failed socket call (named).
    func open(sandbox: String, port: UInt16, initPid: Int32, initStartTime: UInt64) throws -> (
        hostPort: UInt16, opened: Bool
    ) {
        if let existing = lock.withLock({ forwards[sandbox]?[port] }) { return (existing.hostPort, false) }
        let netns = ss_open("/proc/\(initPid)/ns/net", O_RDONLY | O_CLOEXEC, 0)
        guard netns >= 0, ProcStat.read(pid: initPid)?.startTime == initStartTime else {
            if netns >= 0 { Glibc.close(netns) }
            throw APIError(.conflict, "not_running", "sandbox \(sandbox) is not running (its init is gone)")
        }
        let listener: (fd: Int32, port: UInt16)
        do { listener = try Self.listenOnLoopback() } catch {
            Glibc.close(netns)
            throw error
        }
        let forward = Forward(
            sandbox: sandbox, port: port, listenFd: listener.fd, hostPort: listener.port, netns: netns, logger: logger)
        let raced = lock.withLock { () -> Forward? in
            if let other = forwards[sandbox]?[port] { return other }
            forwards[sandbox, default: [:]][port] = forward
            return nil
        }
        if let raced {
            forward.discard()
            return (raced.hostPort, false)
        }
        forward.start()
        return (listener.port, true)
    }

    /// Closes every forward of `sandbox`.
    /// - Returns: (sandbox port, host port) of each forward closed.
    @discardableResult
    func close(sandbox: String) -> [(port: UInt16, hostPort: UInt16)] {
        let closing = lock.withLock { forwards.removeValue(forKey: sandbox) ?? [:] }
        for forward in closing.values { forward.close() }
        return closing.map { ($0.key, $0.value.hostPort) }.sorted { $0.port < $1.port }
    }

    /// The sandboxes with an open forward.
    var sandboxes: [String] { lock.withLock { Array(forwards.keys).sorted() } }

    /// socket(2) + bind(2) to 127.0.0.1:0 + listen(2); the port the kernel chose
    /// (getsockname(2)).
    /// - Throws: `APIError` 500 naming the failed call.
    static func listenOnLoopback() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket") }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { return try closing(fd, failure("bind 127.0.0.1:0")) }
        guard listen(fd, 128) == 0 else { return try closing(fd, failure("listen")) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return try closing(fd, failure("getsockname")) }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    /// 127.0.0.1:`port` (ip(7) sockaddr_in, network byte order).
    static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    private static func failure(_ call: String) -> APIError {
        APIError(.internalServerError, "internal", "port forward: \(call): \(String(cString: strerror(errno)))")
    }

    private static func closing(_ fd: Int32, _ error: APIError) throws -> (fd: Int32, port: UInt16) {
        Glibc.close(fd)
        throw error
    }
}

/// One forward: its listening socket, the thread in the sandbox's namespace that accepts and
/// dials, and the connections it relays.
final class Forward: @unchecked Sendable {
    let sandbox: String
    let port: UInt16
    let hostPort: UInt16
    private let listenFd: Int32
    private let netns: Int32
    private let logger: Logger
    private let lock = NSLock()
    private var closed = false
    /// Open relayed sockets (both ends of each connection).
    private var sockets: Set<Int32> = []
    private var connections = 0

    init(sandbox: String, port: UInt16, listenFd: Int32, hostPort: UInt16, netns: Int32, logger: Logger) {
        self.sandbox = sandbox
        self.port = port
        self.listenFd = listenFd
        self.hostPort = hostPort
        self.netns = netns
        self.logger = logger
    }

    /// Starts the accepting thread (it owns `listenFd` and `netns` from here on).
    func start() {
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "port \(sandbox):\(port)"
        thread.start()
    }

    /// Closes the fds of a forward that was never started.
    func discard() {
        Glibc.close(listenFd)
        Glibc.close(netns)
    }

    /// Stops accepting and ends every relayed connection (see the file's comment).
    func close() {
        lock.withLock {
            closed = true
            shutdown(listenFd, Int32(SHUT_RDWR))
            for fd in sockets { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// CLONE_NEWNET of <sched.h> (setns(2)'s nstype for a network namespace).
    static let cloneNewNet: Int32 = 0x4000_0000

    private func acceptLoop() {
        defer { Glibc.close(listenFd) }
        // This thread only, for the rest of its life (setns(2)).
        let entered = ss_setns(netns, Self.cloneNewNet)
        let setnsErrno = errno
        Glibc.close(netns)
        guard entered == 0 else {
            logger.error(
                "port forward: setns(CLONE_NEWNET) failed: \(String(cString: strerror(setnsErrno)))",
                metadata: ["sandbox": "\(sandbox)", "port": "\(port)"])
            return
        }
        while true {
            let client = ss_accept_cloexec(listenFd)
            if lock.withLock({ closed }) {
                if client >= 0 { Glibc.close(client) }
                return
            }
            if client < 0 {
                if errno == ECONNABORTED { continue }
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    usleep(100_000)
                    continue
                }
                return
            }
            guard let upstream = dial() else {
                Glibc.close(client)
                continue
            }
            let admitted = lock.withLock { () -> Bool in
                guard !closed, connections < PortForwards.maxConnections else { return false }
                connections += 1
                sockets.insert(client)
                sockets.insert(upstream)
                return true
            }
            guard admitted else {
                Glibc.close(client)
                Glibc.close(upstream)
                continue
            }
            relay(client, upstream)
        }
    }

    /// A socket of the sandbox's namespace (this thread is in it) connected to its
    /// 127.0.0.1:`port`; nil when nothing listens there (ECONNREFUSED) or the connect times out.
    private func dial() -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var timeout = timeval(tv_sec: PortForwards.connectTimeoutSeconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = PortForwards.loopback(port: port)
        var rc: Int32
        repeat {
            rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        } while rc != 0 && errno == EINTR
        guard rc == 0 else {
            Glibc.close(fd)
            return nil
        }
        // Relayed writes block as long as the peer does not read: no send timeout from here.
        var none = timeval(tv_sec: 0, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Copies `a` -> `b` and `b` -> `a` on two threads; the last one done closes both.
    private func relay(_ a: Int32, _ b: Int32) {
        let remaining = RelayCount()
        for (from, to) in [(a, b), (b, a)] {
            Thread.detachNewThread { [self] in
                Self.copy(from: from, to: to)
                if remaining.done() {
                    lock.withLock {
                        sockets.remove(a)
                        sockets.remove(b)
                        connections -= 1
                    }
                    Glibc.close(a)
                    Glibc.close(b)
                }
            }
        }
    }

    /// read(2) from `from`, write(2) all of it to `to`, until end of stream or an error; then
    /// shutdown(SHUT_WR) of `to` (its peer reads the end) and shutdown(SHUT_RD) of `from`.
    private static func copy(from: Int32, to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        outer: while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(from, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var offset = 0
            while offset < n {
                let w = buffer[offset..<n].withUnsafeBytes { send(to, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { break outer }
                offset += w
            }
        }
        shutdown(to, Int32(SHUT_WR))
        shutdown(from, Int32(SHUT_RD))
    }
}

/// The two directions of one relayed connection: `done` is true for the second to finish.
private final class RelayCount: @unchecked Sendable {
    private let lock = NSLock()
    private var left = 2
    func done() -> Bool {
        lock.withLock {
            left -= 1
            return left == 0
        }
    }
}
