/// One exec into a running sandbox: a process started in its namespaces and cgroup through
/// Runtime's exec path (`ContainerRuntime.exec`: the sealed helper joins the mount, then the
/// PID namespace), with its own stdio: a socket for stdin, pipes for stdout and stderr, read
/// here until the process exits or its timeout kills it. Blocking: runs on a thread of its own.
/// At the gVisor level the daemon's child is `runsc exec` with those fds as its stdio (it exits
/// with the process's status), and a kill goes through runsc to the process inside the sandbox
/// (`ContainerRuntime.signalExec`, GVisor's `GVisorCapturedExec.swift`).
import CSafeSpace
import Foundation
import Glibc
import OCI
import Runtime

/// How the bytes of `stdin`, `stdout` and `stderr` are carried in JSON strings (the request's
/// `encoding`).
enum ExecEncoding: String, Sendable {
    /// Text: output decoded as UTF-8, an invalid sequence replaced by U+FFFD (lossy for binary
    /// output); `stdin` is the string's UTF-8 bytes. The default.
    case utf8
    /// Exact bytes: `stdin`, `stdout`, `stderr` and each streamed chunk are base64 (RFC 4648
    /// section 4, with padding) of the bytes.
    case base64

    /// The JSON string of `bytes`.
    func string(_ bytes: some Collection<UInt8>) -> String {
        switch self {
        case .utf8: String(decoding: bytes, as: UTF8.self)
        case .base64: Data(bytes).base64EncodedString()
        }
    }
}

/// What the client asked to run.
struct ExecRequest: Sendable {
    var command: [String]
    var stdin: [UInt8] = []
    var env: [String: String] = [:]
    var cwd: String?
    /// Seconds; nil: no limit.
    var timeoutSeconds: Int?
    var encoding = ExecEncoding.utf8
    /// `code` and its `language`: source text for the sandbox's warm interpreter (AgentExec.swift);
    /// `command` is then the interpreter's own (`python3 -c <code>`, `node -e <code>`), run
    /// when no warm interpreter serves it.
    var code: String?
    var language: CodeLanguage?

    /// Parses the JSON body of `POST /v1/sandboxes/{name}/exec`.
    /// - Throws: `APIError` 400 naming the field.
    static func parse(_ bytes: [UInt8]) throws -> ExecRequest {
        let fields = try JSONFields(
            JSON.object(bytes),
            allowed: ["command", "code", "language", "stdin", "env", "cwd", "timeoutSeconds", "encoding"])
        let code = try fields.string("code")
        let languageName = try fields.string("language")
        var language: CodeLanguage?
        if let languageName {
            guard let known = CodeLanguage(rawValue: languageName) else {
                throw APIError.badRequest(
                    "\"\(languageName)\": expected \(CodeLanguage.allCases.map(\.rawValue).joined(separator: " or "))",
                    field: "language")
            }
            guard code != nil else {
                throw APIError.badRequest("names the language of code, which is missing", field: "language")
            }
            language = known
        }
        let command: [String]
        if let code {
            if try fields.stringArray("command") != nil {
                throw APIError.badRequest(
                    "command and code exclude each other: give a command to run, or code for an interpreter",
                    field: "code")
            }
            guard !code.utf8.contains(0) else { throw APIError.badRequest("contains a NUL byte", field: "code") }
            language = language ?? .python
            command = language!.command(code)
        } else {
            guard let given = try fields.stringArray("command") else {
                throw APIError.badRequest(
                    "required: the program and its arguments (or code with its language)", field: "command",
                    code: "missing_field")
            }
            command = given
        }
        guard let program = command.first, !program.isEmpty else {
            throw APIError.badRequest("must name a program: an empty command cannot run", field: "command")
        }
        for (index, arg) in command.enumerated() where arg.utf8.contains(0) {
            throw APIError.badRequest("contains a NUL byte", field: "command[\(index)]")
        }
        var request = ExecRequest(command: command)
        request.code = code
        request.language = language
        if let encoding = try fields.string("encoding") {
            guard let known = ExecEncoding(rawValue: encoding) else {
                throw APIError.badRequest("\"\(encoding)\": expected utf8 or base64", field: "encoding")
            }
            request.encoding = known
        }
        let stdin = try fields.string("stdin") ?? ""
        switch request.encoding {
        case .utf8: request.stdin = Array(stdin.utf8)
        case .base64:
            // Foundation's decoder refuses characters outside the alphabet and bad padding.
            guard let data = Data(base64Encoded: stdin) else {
                throw APIError.badRequest(
                    "not valid base64 (RFC 4648 section 4, padded), as encoding asks", field: "stdin")
            }
            request.stdin = Array(data)
        }
        for (key, value) in try fields.stringMap("env") ?? [:] {
            if key.isEmpty || key.contains("=") || key.utf8.contains(0) || value.utf8.contains(0) {
                throw APIError.badRequest(
                    "an environment variable name must be non-empty without '=' or NUL", field: "env.\(key)")
            }
            request.env[key] = value
        }
        if let cwd = try fields.string("cwd") {
            guard cwd.hasPrefix("/"), !cwd.utf8.contains(0) else {
                throw APIError.badRequest("must be an absolute path inside the sandbox", field: "cwd")
            }
            request.cwd = cwd
        }
        if let timeout = try fields.int("timeoutSeconds") {
            guard timeout > 0 else {
                throw APIError.badRequest("must be a positive number of seconds", field: "timeoutSeconds")
            }
            request.timeoutSeconds = timeout
        }
        return request
    }

    /// The sandbox's own process settings (user, capabilities, rlimits, env) with this command,
    /// the variables of `env` set (replacing the sandbox's of the same name) and `cwd`.
    func process(base: OCI.Process) -> OCI.Process {
        var process = base
        process.args = command
        process.terminal = false
        process.consoleSize = nil
        var env = (base.env ?? []).filter { entry in
            let name = entry.split(separator: "=", maxSplits: 1).first.map(String.init) ?? entry
            return self.env[name] == nil
        }
        env += self.env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        process.env = env
        if let cwd { process.cwd = cwd }
        return process
    }
}

/// How an exec ended.
struct ExecResult: Sendable {
    var exitCode: Int32
    var stdout: [UInt8] = []
    var stderr: [UInt8] = []
    var durationMs: Int = 0
    var timedOut = false
    var oomKilled = false
    /// Output beyond `maxOutput` was dropped (non-streamed execs only).
    var truncated = false
    /// Killed by the daemon: the sandbox was deleted, the daemon shut down, the client left.
    var killedBy: String?
}

/// Stream of an output chunk.
enum OutputStream: String, Sendable {
    case stdout, stderr
}

/// A running exec that another thread may kill (delete, shutdown, a client gone).
final class ExecHandle: @unchecked Sendable {
    let id: UInt64
    let request: ExecRequest
    private let lock = NSLock()
    private var pid: Int32 = 0
    private var reason: String?
    private var ended = false
    private var _onStart: (@Sendable () -> Void)?
    /// Signals the process where a host signal cannot reach it (gVisor: through runsc).
    private var signaller: (@Sendable (Int32) -> Void)?
    private var signalled = false
    /// Set by an exec that runs through the sandbox's agent (AgentExec.swift): `pid` is then
    /// in the sandbox's PID namespace, and this kills the process group instead.
    private var _killer: (@Sendable () -> Void)?

    /// Called once the process runs (streamed execs answer their headers then).
    var onStart: (@Sendable () -> Void)? {
        get { lock.withLock { _onStart } }
        set { lock.withLock { _onStart = newValue } }
    }

    init(id: UInt64, request: ExecRequest) {
        self.id = id
        self.request = request
    }

    /// Why it was killed, if it was.
    var killReason: String? { lock.withLock { reason } }

    /// The process runs as `pid` (the daemon's child); `signaller`, when set, is how it is
    /// killed instead of a signal to `pid`'s process group.
    func started(pid: Int32, signaller: (@Sendable (Int32) -> Void)? = nil) -> Bool {
        let (alive, callback) = lock.withLock {
            self.pid = pid
            self.signaller = signaller
            return (reason == nil, _onStart)
        }
        callback?()
        return alive
    }

    func finished() { lock.withLock { ended = true } }

    /// Makes `kill` call `killer` (with the lock held) instead of signalling `pid`.
    func setKiller(_ killer: @escaping @Sendable () -> Void) { lock.withLock { _killer = killer } }

    /// SIGKILL to the process and its process group (it is a session leader's group: the
    /// helper's `setsid`). Before the process exists, it is killed as soon as it starts.
    /// With a `signaller` (gVisor), that runs once on a thread of its own (it starts runsc);
    /// if `pid` (runsc exec) has not ended `signallerGrace` later, `pid` gets SIGKILL.
    func kill(reason: String) {
        let hook = lock.withLock { () -> (@Sendable (Int32) -> Void)? in
            if self.reason == nil { self.reason = reason }
            guard pid > 0, !ended else { return nil }
            if let killer = _killer {
                killer()
                return nil
            }
            if let signaller {
                if signalled { return nil }
                signalled = true
                return signaller
            }
            let group = getpgid(pid)
            if group > 1 { Glibc.kill(-group, SIGKILL) }
            Glibc.kill(pid, SIGKILL)
            return nil
        }
        guard let hook else { return }
        Thread.detachNewThread { [self] in
            hook(SIGKILL)
            let clock = ContinuousClock()
            let until = clock.now + Self.signallerGrace
            while clock.now < until, !lock.withLock({ ended }) { usleep(20_000) }
            lock.withLock {
                if !ended { Glibc.kill(pid, SIGKILL) }
            }
        }
    }

    /// How long a process killed through its `signaller` has to end before its host process
    /// (runsc exec) is killed.
    static let signallerGrace: Duration = .seconds(10)
}

/// The output side of an exec: reads its stdout and stderr pipes (non-blocking) and either
/// hands each chunk to `emit` (a streamed exec) or keeps up to `maxOutput` bytes of both
/// together in the `ExecResult`, marking it `truncated` past that.
struct ExecOutputReader {
    let maxOutput: Int
    let emit: ((OutputStream, [UInt8]) -> Void)?
    private var kept = 0
    private var buffer = [UInt8](repeating: 0, count: 65536)

    init(maxOutput: Int, emit: ((OutputStream, [UInt8]) -> Void)?) {
        self.maxOutput = maxOutput
        self.emit = emit
    }

    /// Reads what `fd` (the pipe of `stream`) has now into `result`; false at EOF or on an
    /// error other than EAGAIN (read(2)).
    mutating func drain(_ fd: Int32, _ stream: OutputStream, into result: inout ExecResult) -> Bool {
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                take(stream, buffer[..<n], into: &result)
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
        }
    }

    private mutating func take(_ stream: OutputStream, _ bytes: ArraySlice<UInt8>, into result: inout ExecResult) {
        if let emit {
            emit(stream, Array(bytes))
            return
        }
        let room = max(0, maxOutput - kept)
        if bytes.count > room { result.truncated = true }
        let part = bytes.prefix(room)
        kept += part.count
        if stream == .stdout { result.stdout += part } else { result.stderr += part }
    }
}

enum ExecRunner {
    /// Runs `handle.request` in container `id` and collects its output.
    /// - Parameters:
    ///   - maxOutput: bytes of stdout + stderr kept when `emit` is nil; the rest is dropped.
    ///   - emit: when set, each chunk goes there as it is read and nothing is kept.
    /// - Throws: `APIError` 400 `exec_failed` when the process cannot be started (no such
    ///   program or cwd), 409 when the sandbox is not running; other errors as they come.
    static func run(
        runtime: ContainerRuntime, id: String, handle: ExecHandle, maxOutput: Int,
        emit: ((OutputStream, [UInt8]) -> Void)?
    ) throws -> ExecResult {
        let request = handle.request
        let base: OCI.Process
        do { base = try runtime.defaultExecProcess(id: id) } catch {
            throw APIError(.conflict, "not_running", "sandbox \(id) is not running: \(error)")
        }
        // stdin: a socket, written with MSG_NOSIGNAL (a pipe's EPIPE would be a SIGPIPE, and
        // an ignored SIGPIPE would be inherited by every process the daemon starts).
        var stdinPair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &stdinPair) == 0 else {
            throw APIError(.internalServerError, "internal", "socketpair: \(String(cString: strerror(errno)))")
        }
        var out: [Int32] = [-1, -1]
        var err: [Int32] = [-1, -1]
        guard ss_pipe2_cloexec(&out) == 0 else {
            stdinPair.forEach { close($0) }
            throw APIError(.internalServerError, "internal", "pipe2: \(String(cString: strerror(errno)))")
        }
        guard ss_pipe2_cloexec(&err) == 0 else {
            (stdinPair + out).forEach { close($0) }
            throw APIError(.internalServerError, "internal", "pipe2: \(String(cString: strerror(errno)))")
        }
        let stdinW = stdinPair[0]
        let stdoutR = out[0]
        let stderrR = err[0]
        var childEnds = [stdinPair[1], out[1], err[1]]
        defer {
            for fd in [stdinW, stdoutR, stderrR] + childEnds where fd >= 0 { close(fd) }
        }
        // The process is the daemon's own child (the helper forks it CLONE_PARENT).
        var options = ExecOptions(process: request.process(base: base), detach: true)
        options.stdio = childEnds
        // gVisor: the process lives in the sentry; runsc exec (our child) names its pid there.
        let gvisor = (try? runtime.store.load(id))?.gvisor != nil
        if gvisor {
            options.internalPidFile = runtime.store.directory(id) + "/exec-\(getpid())-\(handle.id).pid"
        }
        defer { if let path = options.internalPidFile { unlink(path) } }
        let oomBefore = (try? runtime.oomKills(id: id)) ?? nil
        let clock = ContinuousClock()
        let started = clock.now
        let pid: Int32
        do { pid = try runtime.exec(id: id, options: options) } catch {
            let text = "\(error)"
            if text.contains("not running") { throw APIError(.conflict, "not_running", "sandbox \(id) is not running") }
            let field = text.contains("cwd") || text.contains("chdir") ? "cwd" : "command"
            throw APIError(.badRequest, "exec_failed", "cannot start \(request.command[0]): \(text)", field: field)
        }
        for fd in childEnds { close(fd) }
        childEnds = []
        var signaller: (@Sendable (Int32) -> Void)?
        if let path = options.internalPidFile {
            let internalPid = (try? String(contentsOfFile: path, encoding: .utf8))
                .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            signaller = { signal in
                try? runtime.signalExec(id: id, hostPid: pid, internalPid: internalPid, signal: signal)
            }
        }
        if !handle.started(pid: pid, signaller: signaller) { handle.kill(reason: handle.killReason ?? "killed") }
        defer { handle.finished() }

        let pidfd = ss_pidfd_open(pid)
        defer { if pidfd >= 0 { close(pidfd) } }
        for fd in [stdinW, stdoutR, stderrR] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }

        var result = ExecResult(exitCode: -1)
        var stdinRemaining = request.stdin[...]
        var stdinOpen = true
        if stdinRemaining.isEmpty {
            shutdown(stdinW, Int32(SHUT_WR))
            stdinOpen = false
        }
        let deadline = request.timeoutSeconds.map { started + .seconds($0) }
        var output = ExecOutputReader(maxOutput: maxOutput, emit: emit)
        var open: [Int32: OutputStream] = [stdoutR: .stdout, stderrR: .stderr]
        var exited = false

        /// Reads what `fd` has now; false at EOF or error.
        func drain(_ fd: Int32) -> Bool { output.drain(fd, open[fd]!, into: &result) }

        while !exited {
            var fds: [pollfd] = open.keys.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if stdinOpen { fds.append(pollfd(fd: stdinW, events: Int16(POLLOUT), revents: 0)) }
            if pidfd >= 0 { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
            var wait: Int32 = pidfd >= 0 ? 1000 : 50
            if let deadline, !result.timedOut {
                let left = deadline - clock.now
                if left <= .zero {
                    result.timedOut = true
                    handle.kill(reason: "timeout")
                } else {
                    let ms = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1
                    wait = Int32(min(Int64(wait), ms))
                }
            }
            let ready = poll(&fds, nfds_t(fds.count), wait)
            if ready < 0 && errno != EINTR { break }
            for entry in fds where entry.revents != 0 {
                if entry.fd == stdinW {
                    let n = stdinRemaining.withUnsafeBytes {
                        send(stdinW, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                    }
                    if n > 0 { stdinRemaining = stdinRemaining.dropFirst(n) }
                    if (n < 0 && errno != EAGAIN && errno != EINTR) || stdinRemaining.isEmpty {
                        shutdown(stdinW, Int32(SHUT_WR))
                        stdinOpen = false
                    }
                } else if entry.fd == pidfd {
                    exited = true
                } else if let _ = open[entry.fd] {
                    if !drain(entry.fd) { open[entry.fd] = nil }
                }
            }
            if pidfd < 0 {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    result.exitCode = ss_exit_status(status)
                    exited = true
                    for fd in Array(open.keys) where !drain(fd) { open[fd] = nil }
                    break
                }
            }
        }
        if pidfd >= 0 {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            result.exitCode = ss_exit_status(status)
            // What the process wrote before it ended is in the pipes; a child it left behind
            // may hold them open, so read what is there now, not up to EOF.
            for fd in Array(open.keys) where !drain(fd) { open[fd] = nil }
        }
        result.durationMs = Int((clock.now - started) / .milliseconds(1))
        if result.exitCode == 128 + SIGKILL, let before = oomBefore, let after = (try? runtime.oomKills(id: id)) ?? nil,
            after > before
        {
            result.oomKilled = true
        }
        if let reason = handle.killReason, reason != "timeout" { result.killedBy = reason }
        return result
    }
}
