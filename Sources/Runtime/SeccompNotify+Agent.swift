import CSafeSpace
import Glibc
import LinuxKernel
import SeccompFilters
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A seccomp agent for syscall events: it listens on a unix socket (the profile's
/// `listenerPath`), takes the listener fd each container process state brings, answers every
/// notification with the errno of the state's `metadata` (`SeccompEvents`) and counts the
/// syscalls by name. The workload sees the denial the profile asks for; the operator sees
/// what was denied (`safespace run` prints the summary when the sandbox ends).
///
/// `serve()` runs on the caller's thread until `stop()`; the socket file is removed by `close()`.
public final class SeccompEventAgent: Sendable {
    public let path: String
    private let listenFd: Int32
    private let state = Mutex(AgentState())

    private struct AgentState {
        var stopped = false
        var counts: [String: Int] = [:]
        var errors: [String] = []
        var processStates: [String] = []
    }

    /// Binds and listens on `path` (mode 0600; an existing file there is an error).
    /// - Throws: `SysError` naming the socket path.
    public init(path: String) throws {
        self.path = path
        let fd = try sys("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Glibc.close(fd)
            throw RuntimeError(.invalidSpec, "seccomp agent socket path too long: \(path)", operation: "bind")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        // Not umask(2): it is the whole process's, and in a multithreaded caller (the daemon)
        // another thread's mkdir(2) would get 0700 meanwhile. The socket is made 0600 between
        // bind(2) and listen(2): before listen nobody can connect (ECONNREFUSED), so the mode
        // is in place before the first connection is possible.
        var rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc == 0 { rc = chmod(path, 0o600) }
        if rc != 0 || listen(fd, 16) != 0 {
            let e = errno
            Glibc.close(fd)
            throw SysError("bind the seccomp agent socket", path: path, errno: e)
        }
        listenFd = fd
    }

    /// Denied syscalls so far, by name.
    public var counts: [String: Int] { state.withLock { $0.counts } }

    /// The container process states received (JSON), one per filter handed over: which
    /// container and process the events belong to.
    public var processStates: [String] { state.withLock { $0.processStates } }

    /// Failures of the agent itself (a malformed state, a failed ioctl), for the caller to report.
    public var errors: [String] { state.withLock { $0.errors } }

    /// One line for the operator, nil when nothing was denied:
    /// `seccomp denied 3 syscalls: mount (2), ptrace (1)`.
    public var summary: String? {
        let counts = self.counts
        let total = counts.values.reduce(0, +)
        guard total > 0 else { return nil }
        let list = counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) (\($0.value))" }
        return "seccomp denied \(total) syscall\(total == 1 ? "" : "s"): \(list.joined(separator: ", "))"
    }

    public func stop() { state.withLock { $0.stopped = true } }

    /// Closes the socket and removes its file.
    public func close() {
        Glibc.close(listenFd)
        unlink(path)
    }

    /// Accepts container process states and answers notifications until `stop()` (checked
    /// every 100 ms). Blocking; run it on a thread of its own.
    public func serve() {
        var connections: [Int32] = []
        var listeners: [(fd: Int32, errno: Int32)] = []
        defer {
            connections.forEach { Glibc.close($0) }
            listeners.forEach { Glibc.close($0.fd) }
        }
        while !state.withLock({ $0.stopped }) {
            var pfds = [pollfd(fd: listenFd, events: Int16(POLLIN), revents: 0)]
            pfds += connections.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            pfds += listeners.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            guard poll(&pfds, nfds_t(pfds.count), 100) > 0 else { continue }
            let (polledConnections, polledListeners) = (connections, listeners)
            connections = []
            listeners = []
            for (i, l) in polledListeners.enumerated() {
                let revents = pfds[1 + polledConnections.count + i].revents
                if revents & Int16(POLLIN) != 0 {
                    answer(l.fd, errno: l.errno)
                } else if revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 {
                    // Every process under the filter has exited.
                    Glibc.close(l.fd)
                    continue
                }
                listeners.append(l)
            }
            for (i, c) in polledConnections.enumerated() {
                guard pfds[1 + i].revents != 0 else {
                    connections.append(c)
                    continue
                }
                if let listener = receiveState(c) { listeners.append(listener) }
                Glibc.close(c)
            }
            if pfds[0].revents & Int16(POLLIN) != 0 {
                let c = accept(listenFd, nil, nil)
                if c >= 0 {
                    _ = ss_set_cloexec(c, 1)
                    connections.append(c)
                }
            }
        }
    }

    /// Reads one container process state (to EOF) and its seccomp fd.
    private struct Received: Decodable {
        var fds: [String]?
        var metadata: String?
    }

    private func receiveState(_ c: Int32) -> (fd: Int32, errno: Int32)? {
        var data: [UInt8] = []
        var received: [Int32] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while data.count < 1 << 20 {
            var fds = [Int32](repeating: -1, count: 4)
            var nfds: Int32 = 0
            let n = buf.withUnsafeMutableBytes { ss_recv_fds(c, $0.baseAddress, $0.count, &fds, 4, &nfds) }
            received += fds.prefix(Int(nfds))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data += buf[0..<n]
            // A whole state is enough: the sender may keep its end open a while.
            if (try? JSONDecoder().decode(Received.self, from: Data(data))) != nil { break }
        }
        guard let listener = received.first, let parsed = try? JSONDecoder().decode(Received.self, from: Data(data)),
            parsed.fds?.first == "seccompFd"
        else {
            received.forEach { Glibc.close($0) }
            state.withLock { $0.errors.append("a container process state without a seccomp fd (\(data.count) bytes)") }
            return nil
        }
        received.dropFirst().forEach { Glibc.close($0) }
        state.withLock { $0.processStates.append(String(decoding: data, as: UTF8.self)) }
        return (listener, SeccompEvents.answer(forMetadata: parsed.metadata))
    }

    private func answer(_ fd: Int32, errno: Int32) {
        do {
            guard let n = try SeccompNotification.receive(fd: fd) else { return }
            let name = n.syscallName
            try n.deny(fd: fd, errno: errno)
            state.withLock { $0.counts[name, default: 0] += 1 }
        } catch {
            state.withLock { $0.errors.append("\(error)") }
        }
    }
}
