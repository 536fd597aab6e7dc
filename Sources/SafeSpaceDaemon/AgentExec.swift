/// Execs through a sandbox's agent (Sources/SafeSpaceAgent: `safespace-agent`, PID 1 of the
/// daemon's sandboxes on the native backend) and its warm Python interpreter: one unix stream
/// connection per exec to `agent.sock` or `python.sock` in the sandbox's own host directory,
/// the request and the exec's stdio fds (SCM_RIGHTS, unix(7)) sent once, then fixed-size
/// records back (the protocol of Sources/SafeSpaceAgent/include/safespace_agent_protocol.h).
/// A fork and an exec inside the sandbox, instead of a runtime exec (setns helper).
///
/// Everything the agent says is untrusted: the sandbox's code runs as the same user and can
/// kill it, replace its socket or answer in its place. So the daemon reads records of exactly
/// 16 bytes with a deadline, never follows a symlink to the socket, sends no fd but the
/// exec's own stdio, and a broken agent breaks only that sandbox's execs:
/// - before the agent said STARTED (no socket, refused, garbage, silence for 10 s): the exec
///   runs through the runtime exec path instead (`AgentUnavailable`; the trusted path, as
///   before the agent existed);
/// - after it (the connection lost, a malformed record): the process group is killed from the
///   host (by its pid in the sandbox's PID namespace, resolved through /proc) and the exec
///   ends with 502 `agent_unavailable`.
import CDaemon
import CSafeSpace
import Foundation
import Glibc

/// The interpreters `code` may name (`POST /v1/sandboxes/{name}/exec`'s `language`).
enum CodeLanguage: String, CaseIterable, Sendable {
    case python, node

    /// The interpreter's command for `code` when no warm interpreter runs it.
    func command(_ code: String) -> [String] {
        switch self {
        case .python: ["python3", "-c", code]
        case .node: ["node", "-e", code]
        }
    }
}

/// Where a sandbox's agent listens, seen from the host.
struct AgentEndpoint: Sendable {
    /// The sandbox's agent directory (`AgentDirectory`), holding `agent.sock` and `python.sock`.
    var directory: String
    /// Host pid of the sandbox's init (the agent), for the backstop kill.
    var initPid: Int32
}

/// The agent could not take the exec; nothing was started by it.
struct AgentUnavailable: Error, CustomStringConvertible {
    var description: String
}

enum AgentExec {
    static let agentSocket = "agent.sock"
    static let pythonSocket = "python.sock"
    static let requestMagic: UInt32 = 0x5141_5353
    static let recordMagic: UInt32 = 0x5241_5353
    static let maxPayload = 8 << 20
    static let recordSize = 16
    enum Kind: UInt32 {
        case command = 1
        case code = 2
        /// Pool recycling (`AgentControl`).
        case stopPython = 3
        case startPython = 4
    }
    enum RecordType: UInt32 {
        case started = 1, exited, failed, refused, kill, done
    }
    /// Seconds the agent has to take the request and say STARTED (or FAILED).
    static let startSeconds = 10
    /// Seconds an exec that was killed waits for its EXITED record before it ends anyway.
    static let killGraceSeconds = 5

    /// The request: header and payload (argv, env entries, cwd, rlimits).
    static func encode(kind: Kind, argv: [String], env: [String: String], cwd: String?) -> [UInt8] {
        var payload: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { payload += $0 } }
        func string(_ s: String) {
            u32(UInt32(s.utf8.count))
            payload += s.utf8
        }
        u32(UInt32(argv.count))
        argv.forEach(string)
        let entries = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        u32(UInt32(entries.count))
        entries.forEach(string)
        string(cwd ?? "")
        u32(0)  // rlimits: the sandbox's own
        var out: [UInt8] = []
        for v in [requestMagic, kind.rawValue, UInt32(payload.count)] {
            withUnsafeBytes(of: v.littleEndian) { out += $0 }
        }
        return out + payload
    }

    /// Connects to `name` in `directory` without following a symlink the sandbox may have put
    /// there: the socket file is opened O_PATH|O_NOFOLLOW, checked to be a socket, and
    /// connected to through its /proc/self/fd magic link.
    static func connect(directory: String, name: String) throws(AgentUnavailable) -> Int32 {
        let dir = open(directory, oPath | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dir >= 0 else { throw AgentUnavailable(description: "\(directory): \(lastErrno())") }
        defer { close(dir) }
        let file = openat(dir, name, oPath | O_NOFOLLOW | O_CLOEXEC)
        guard file >= 0 else { throw AgentUnavailable(description: "\(name): \(lastErrno())") }
        defer { close(file) }
        var st = stat()
        guard fstat(file, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK else {
            throw AgentUnavailable(description: "\(name) is not a socket")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentUnavailable(description: "socket: \(lastErrno())") }
        // connect(2) of a unix stream socket waits while the listener's backlog is full (a
        // fake agent that never accepts): SO_SNDTIMEO bounds that wait (unix(7)).
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array("/proc/self/fd/\(file)".utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let text = lastErrno()
            close(fd)
            throw AgentUnavailable(description: "connect \(name): \(text)")
        }
        return fd
    }

    /// Runs `handle.request` through the agent of `endpoint` (`socket`: `agentSocket` for a
    /// command, `pythonSocket` for code of the warm interpreter).
    /// - Parameters: as `ExecRunner.run`; `oomKills` reads the sandbox's OOM kill count.
    /// - Throws: `AgentUnavailable` when nothing was started (the caller runs it another way);
    ///   `APIError` 400 `exec_failed` (field `cwd` or `command`) when the program or the
    ///   directory cannot be used; 502 `agent_unavailable` when the agent went away while
    ///   the process ran (the process group is killed).
    static func run(
        endpoint: AgentEndpoint, socket name: String, handle: ExecHandle, maxOutput: Int,
        oomKills: @escaping () -> UInt64?, emit: ((OutputStream, [UInt8]) -> Void)?
    ) throws -> ExecResult {
        let request = handle.request
        let kind: Kind = name == pythonSocket ? .code : .command
        let argv = kind == .code ? [request.code ?? ""] : request.command
        let message = encode(kind: kind, argv: argv, env: request.env, cwd: request.cwd)
        guard message.count - 12 <= maxPayload else {
            throw AgentUnavailable(description: "the request is larger than the agent takes")
        }
        let connection = try connect(directory: endpoint.directory, name: name)
        var stdinPair: [Int32] = [-1, -1]
        var out: [Int32] = [-1, -1]
        var err: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &stdinPair) == 0,
            ss_pipe2_cloexec(&out) == 0, ss_pipe2_cloexec(&err) == 0
        else {
            let text = lastErrno()
            for fd in stdinPair + out + err + [connection] where fd >= 0 { close(fd) }
            throw APIError(.internalServerError, "internal", "pipes: \(text)")
        }
        let stdinW = stdinPair[0]
        let stdoutR = out[0]
        let stderrR = err[0]
        var childEnds = [stdinPair[1], out[1], err[1]]
        defer {
            for fd in [stdinW, stdoutR, stderrR, connection] + childEnds where fd >= 0 { close(fd) }
        }
        let clock = ContinuousClock()
        let started = clock.now
        try send(message, fds: childEnds, on: connection, deadline: started + .seconds(startSeconds))
        for fd in childEnds { close(fd) }
        childEnds = []

        // STARTED, or why not.
        var reader = RecordReader()
        let first: (RecordType, Int32, Int32)
        do { first = try reader.next(connection, deadline: started + .seconds(startSeconds)) } catch {
            throw AgentUnavailable(description: "\(error)")
        }
        switch first.0 {
        case .started: break
        case .failed:
            let stage = first.2
            let field = stage == 1 ? "cwd" : "command"
            let what =
                stage == 1
                ? "cannot change to \(request.cwd ?? "the working directory")" : "cannot start \(request.command[0])"
            throw APIError(
                .badRequest, "exec_failed", "\(what): \(String(cString: strerror(first.1)))", field: field)
        default:
            throw AgentUnavailable(description: "the agent answered \(first.0) instead of started")
        }
        let namespacePid = first.1
        guard namespacePid > 0 else { throw AgentUnavailable(description: "the agent reported pid \(namespacePid)") }
        let oomBefore = oomKills()
        handle.setKiller {
            var record = [UInt8](repeating: 0, count: recordSize)
            withUnsafeBytes(of: recordMagic.littleEndian) { record.replaceSubrange(0..<4, with: $0) }
            withUnsafeBytes(of: RecordType.kill.rawValue.littleEndian) { record.replaceSubrange(4..<8, with: $0) }
            _ = record.withUnsafeBytes {
                Glibc.send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            killFromHost(namespacePid: namespacePid, initPid: endpoint.initPid)
        }
        if !handle.started(pid: namespacePid) { handle.kill(reason: handle.killReason ?? "killed") }
        defer { handle.finished() }

        for fd in [stdinW, stdoutR, stderrR, connection] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        var result = ExecResult(exitCode: -1)
        var stdinRemaining = request.stdin[...]
        var stdinOpen = true
        if stdinRemaining.isEmpty {
            shutdown(stdinW, Int32(SHUT_WR))
            stdinOpen = false
        }
        let deadline = request.timeoutSeconds.map { started + .seconds($0) }
        var killedAt: ContinuousClock.Instant?
        var output = ExecOutputReader(maxOutput: maxOutput, emit: emit)
        var open: [Int32: OutputStream] = [stdoutR: .stdout, stderrR: .stderr]
        var status: Int32?
        var lost: String?

        /// Reads what `fd` has now; false at EOF or error.
        func drain(_ fd: Int32) -> Bool { output.drain(fd, open[fd]!, into: &result) }

        while status == nil && lost == nil {
            if killedAt == nil, handle.killReason != nil { killedAt = clock.now }
            if let killedAt, clock.now - killedAt > .seconds(killGraceSeconds) { break }
            var fds: [pollfd] = open.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if stdinOpen { fds.append(pollfd(fd: stdinW, events: Int16(POLLOUT), revents: 0)) }
            fds.append(pollfd(fd: connection, events: Int16(POLLIN), revents: 0))
            var wait: Int32 = 1000
            if let deadline, !result.timedOut {
                let left = deadline - clock.now
                if left <= .zero {
                    result.timedOut = true
                    handle.kill(reason: "timeout")
                    continue
                }
                wait = Int32(min(Int64(wait), milliseconds(left) + 1))
            }
            let ready = poll(&fds, nfds_t(fds.count), wait)
            if ready < 0 && errno != EINTR { break }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdinW {
                    let n = stdinRemaining.withUnsafeBytes {
                        Glibc.send(stdinW, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                    }
                    if n > 0 { stdinRemaining = stdinRemaining.dropFirst(n) }
                    if (n < 0 && errno != EAGAIN && errno != EINTR) || stdinRemaining.isEmpty {
                        shutdown(stdinW, Int32(SHUT_WR))
                        stdinOpen = false
                    }
                } else if entry.fd == connection {
                    do {
                        if let record = try reader.poll(connection) {
                            if record.0 == .exited { status = record.1 } else { lost = "the agent sent \(record.0)" }
                        }
                    } catch { lost = "\(error)" }
                } else if open[entry.fd] != nil {
                    if !drain(entry.fd) { open[entry.fd] = nil }
                }
            }
        }
        // What the process wrote before it ended is in the pipes; a child it left behind may
        // hold them open, so read what is there now, not up to EOF.
        for fd in Array(open.keys) where !drain(fd) { open[fd] = nil }
        result.durationMs = Int((clock.now - started) / .milliseconds(1))
        // Killed by the daemon (a delete ends the agent too): not the agent's failure.
        if killedAt == nil, handle.killReason != nil { killedAt = clock.now }
        if let status {
            result.exitCode = ss_exit_status(status)
        } else if killedAt != nil {
            // Killed, and the agent did not say so in time: the process group was killed from
            // the host as well.
            result.exitCode = 128 + SIGKILL
        } else {
            killFromHost(namespacePid: namespacePid, initPid: endpoint.initPid)
            throw APIError(
                .badGateway, "agent_unavailable",
                "the sandbox's agent went away while the exec ran (\(lost ?? "no answer")); its processes were killed")
        }
        if result.exitCode == 128 + SIGKILL, let before = oomBefore, let after = oomKills(), after > before {
            result.oomKilled = true
        }
        if let reason = handle.killReason, reason != "timeout" { result.killedBy = reason }
        return result
    }

    /// Sends `message` with `fds` (SCM_RIGHTS) on its first byte.
    static func send(
        _ message: [UInt8], fds: [Int32], on fd: Int32, deadline: ContinuousClock.Instant
    ) throws(AgentUnavailable) {
        var sent = 0
        while sent < message.count {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw AgentUnavailable(description: "the agent takes no request") }
            _ = Glibc.poll(&pfd, 1, Int32(milliseconds(left) + 1))
            let n: Int = message[sent...].withUnsafeBytes { bytes in
                let flags = Int32(MSG_NOSIGNAL | MSG_DONTWAIT)
                if sent > 0 { return Glibc.send(fd, bytes.baseAddress, bytes.count, flags) }
                return sd_send_fds(fd, bytes.baseAddress, bytes.count, fds, Int32(fds.count), flags)
            }
            if n > 0 {
                sent += n
            } else if n < 0 && (errno == EAGAIN || errno == EINTR) {
                continue
            } else {
                throw AgentUnavailable(description: "send: \(lastErrno())")
            }
        }
    }

    /// SIGKILL from the host to the process group of `namespacePid` (a pid in the PID
    /// namespace of the init `initPid`): the process whose NSpid (proc(5), /proc/pid/status)
    /// ends in it, in that namespace, is found by a walk of /proc. Nothing outside that
    /// namespace is ever signalled.
    static func killFromHost(namespacePid: Int32, initPid: Int32) {
        // Never the daemon's own namespace (an init that died and whose pid was reused), never
        // pid 1 of the namespace (the agent itself), never kill(-1).
        guard namespacePid > 1, initPid > 1,
            let namespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(initPid)/ns/pid"),
            namespace != (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid")),
            let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc")
        else { return }
        for entry in entries {
            guard let hostPid = Int32(entry), hostPid > 1, hostPid != initPid,
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/ns/pid")) == namespace,
                let status = try? String(contentsOfFile: "/proc/\(entry)/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("NSpid:") }),
                line.split(whereSeparator: { $0 == "\t" || $0 == " " }).last.flatMap({ Int32($0) }) == namespacePid
            else { continue }
            // setsid made it its group's leader: the group's id is its host pid.
            Glibc.kill(-hostPid, SIGKILL)
            Glibc.kill(hostPid, SIGKILL)
            return
        }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}

/// Records of exactly `AgentExec.recordSize` bytes off a stream, never more at a time.
struct RecordReader {
    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }
    private var pending: [UInt8] = []

    /// The next record, waiting until `deadline`.
    mutating func next(_ fd: Int32, deadline: ContinuousClock.Instant) throws -> (AgentExec.RecordType, Int32, Int32) {
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw Malformed(description: "no answer from the agent in time") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = Glibc.poll(&pfd, 1, Int32(AgentExec.milliseconds(left) + 1))
            if pfd.revents == 0 { continue }
            if let record = try poll(fd) { return record }
        }
    }

    /// Reads what completes a record now; nil when it is not complete yet.
    /// - Throws: `Malformed` at EOF, on a read error, for a bad magic or an unknown type.
    mutating func poll(_ fd: Int32) throws -> (AgentExec.RecordType, Int32, Int32)? {
        var chunk = [UInt8](repeating: 0, count: AgentExec.recordSize - pending.count)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n < 0 && (errno == EAGAIN || errno == EINTR) { return nil }
        guard n > 0 else { throw Malformed(description: n == 0 ? "the agent closed the connection" : lastErrno()) }
        pending += chunk[..<n]
        guard pending.count == AgentExec.recordSize else { return nil }
        defer { pending = [] }
        func field(_ at: Int) -> UInt32 {
            UInt32(pending[at]) | UInt32(pending[at + 1]) << 8 | UInt32(pending[at + 2]) << 16
                | UInt32(pending[at + 3]) << 24
        }
        guard field(0) == AgentExec.recordMagic, let type = AgentExec.RecordType(rawValue: field(4)) else {
            throw Malformed(description: "a malformed record from the agent")
        }
        return (type, Int32(bitPattern: field(8)), Int32(bitPattern: field(12)))
    }
}

/// O_PATH (open(2)), hidden by Glibc's module without _GNU_SOURCE.
private let oPath: Int32 = 0o10_000_000

private func lastErrno() -> String { String(cString: strerror(errno)) }
