import CSafeSpace
import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One runsc invocation's outcome.
struct RunscResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs runsc with a container's global flags.
struct Runsc {
    let state: GVisorState
    /// The runsc log (`--log`): errors of the sandbox and gofer land there as JSON objects.
    let logPath: String?
    /// This runtime's log: each runsc call and its duration at debug level.
    var log: RuntimeLog? = nil

    /// Runs `runsc <flags> args…` to completion.
    /// - Parameter inheritStdio: the child gets this process's stdin/stdout/stderr (create and
    ///   exec: they become the workload's); otherwise stdin is /dev/null and output is captured.
    /// - Parameter hidingNetCore: spawn it with /proc/sys/net/core of this network namespace
    ///   hidden (`GVisorState.hideNetCore`).
    func run(_ args: [String], inheritStdio: Bool = false, hidingNetCore: String? = nil) throws -> RunscResult {
        if inheritStdio { appendRegularStdio() }
        let start = monotonicSeconds()
        let result = try spawnAndWait(
            [state.runsc] + state.flags + args, inheritStdio: inheritStdio, hidingNetCore: hidingNetCore)
        log?.log(
            .debug,
            "runsc \(args.first ?? ""): exit \(result.status) after \(Int((monotonicSeconds() - start) * 1000)) ms")
        return result
    }

    /// `run`, throwing on a non-zero status with runsc's own words (its stderr and the error
    /// lines of its log).
    @discardableResult
    func check(_ args: [String], inheritStdio: Bool = false, hidingNetCore: String? = nil) throws -> RunscResult {
        let logStart = logPath.flatMap { Files.exists($0) ? (try? Files.read($0))?.count : 0 } ?? 0
        let result = try run(args, inheritStdio: inheritStdio, hidingNetCore: hidingNetCore)
        guard result.status == 0 else {
            var why = result.stderr.trimmed.split(separator: "\n").last.map(String.init) ?? ""
            let logged = logErrors(since: logStart).filter { !why.contains($0) }
            if !logged.isEmpty {
                why += (why.isEmpty ? "" : " (") + logged.joined(separator: "; ") + (why.isEmpty ? "" : ")")
            }
            throw RuntimeError(
                .runscFailed, "runsc \(args.first ?? ""): \(why.isEmpty ? "exit status \(result.status)" : why)",
                operation: args.first)
        }
        return result
    }

    /// Messages of `"level":"error"` objects written to the runsc log after byte `offset`.
    /// runsc writes its JSON objects back to back, without newlines.
    func logErrors(since offset: Int) -> [String] {
        guard let logPath, let bytes = try? Files.read(logPath), bytes.count > offset else { return [] }
        var out: [String] = []
        for object in splitJSONObjects(Array(bytes[offset...])) {
            guard let entry = try? JSONDecoder().decode([String: String].self, from: Data(object)),
                entry["level"] == "error", let msg = entry["msg"]
            else { continue }
            out.append(msg.trimmed)
        }
        return out
    }
}

/// Top-level `{…}` objects of concatenated JSON (strings and escapes respected).
func splitJSONObjects(_ bytes: [UInt8]) -> [[UInt8]] {
    var out: [[UInt8]] = []
    var depth = 0
    var start = -1
    var inString = false
    var escaped = false
    for (i, b) in bytes.enumerated() {
        if inString {
            if escaped {
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "\"") {
                inString = false
            }
            continue
        }
        switch b {
        case UInt8(ascii: "\""): inString = true
        case UInt8(ascii: "{"):
            if depth == 0 { start = i }
            depth += 1
        case UInt8(ascii: "}"):
            depth -= 1
            if depth == 0, start >= 0 {
                out.append(Array(bytes[start...i]))
                start = -1
            }
            depth = max(depth, 0)
        default: break
        }
    }
    return out
}

/// posix_spawn(3) of `argv` (absolute path first) with default signal dispositions and an
/// empty signal mask (the caller may block signals it reads from a signalfd; runsc's sandbox
/// and gofer must not inherit that), waited for with EINTR retried. With `hidingNetCore` (a
/// network namespace path) the child is forked by `ss_spawn_hiding_net_core` instead, which
/// hides that namespace's /proc/sys/net/core from it in a private mount namespace.
/// - Throws: `SysError` when the spawn fails (naming the failed step for the fork path).
func spawnAndWait(_ argv: [String], inheritStdio: Bool, hidingNetCore: String? = nil) throws -> RunscResult {
    var outPipe: [Int32] = [-1, -1]
    var errPipe: [Int32] = [-1, -1]
    if !inheritStdio {
        try sys("pipe2") { ss_pipe2_cloexec(&outPipe) }
        do { try sys("pipe2") { ss_pipe2_cloexec(&errPipe) } } catch {
            outPipe.forEach { close($0) }
            throw error
        }
    }
    var pid: pid_t = 0
    var rc: Int32
    if let netns = hidingNetCore {
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let nsFd = open(netns, O_RDONLY | O_CLOEXEC)
        if nsFd < 0 {
            rc = errno
        } else {
            var step: Int32 = -1
            let null = inheritStdio ? -1 : open("/dev/null", O_RDONLY | O_CLOEXEC)
            pid = ss_spawn_hiding_net_core(
                argv[0], &cArgs, environ, null, inheritStdio ? -1 : outPipe[1], inheritStdio ? -1 : errPipe[1], nsFd,
                &step)
            rc = pid < 0 ? errno : 0
            if null >= 0 { close(null) }
            close(nsFd)
            if pid < 0, step >= 0, step < NetCoreStep.names.count {
                if !inheritStdio {
                    close(outPipe[1])
                    close(errPipe[1])
                    close(outPipe[0])
                    close(errPipe[0])
                }
                throw SysError(NetCoreStep.names[Int(step)], path: netns, errno: rc)
            }
        }
    } else {
        // runsc gets stdio only (as runc's init does): a leaked fd of the caller would be held
        // by the sandbox and gofer for the container's lifetime (a pipe a client waits on).
        (pid, rc) = spawnWithDefaultSignals(argv[0], argv, keepFds: 3) { actions in
            guard !inheritStdio else { return }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        }
    }
    if !inheritStdio {
        close(outPipe[1])
        close(errPipe[1])
    }
    guard rc == 0 else {
        if !inheritStdio {
            close(outPipe[0])
            close(errPipe[0])
        }
        throw SysError("posix_spawn", path: argv[0], errno: rc)
    }
    var out: [UInt8] = []
    var err: [UInt8] = []
    if !inheritStdio {
        (out, err) = readBoth(outPipe[0], errPipe[0])
        close(outPipe[0])
        close(errPipe[0])
    }
    let status = try waitChild(pid)
    return RunscResult(
        status: status, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
}

/// posix_spawn(3) of `path` with `argv`, default signal dispositions and an empty signal mask
/// (the caller may block signals it reads from a signalfd; its children must not inherit
/// that), after the file actions `configure` adds (stdio), closing every fd from `keepFds` up;
/// with `newSession`, in a session of its own (setsid(2)).
/// - Returns: the child's pid and posix_spawn's result (0, or an errno).
func spawnWithDefaultSignals(
    _ path: String, _ argv: [String], keepFds: Int32, newSession: Bool = false,
    _ configure: (inout posix_spawn_file_actions_t) -> Void
) -> (pid_t, Int32) {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    configure(&actions)
    // After the dup2s: file actions run in order.
    _ = ss_spawn_add_closefrom(&actions, keepFds)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t()
    var all = sigset_t()
    sigemptyset(&empty)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &all)
    // POSIX_SPAWN_SETSID (0x80, glibc 2.26 <spawn.h>, a GNU extension Swift's Glibc does not
    // import): the child leads a session and process group of its own.
    let setsid: Int32 = newSession ? 0x80 : 0
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | setsid))
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attr, &cArgs, environ)
    return (pid, rc)
}

/// Puts this process's stdout and stderr in append mode (fcntl(2) F_SETFL O_APPEND) where they
/// are regular files: runsc imports a host file with an offset of its own, from 0, so a
/// workload's output would overwrite what the file held (`cmd > log` after earlier lines);
/// appended, it lands at the end as it would from a host process. Pipes, ttys and sockets
/// are left alone.
func appendRegularStdio() {
    for fd: Int32 in [1, 2] {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0, flags & O_APPEND == 0 { _ = fcntl(fd, F_SETFL, flags | O_APPEND) }
    }
}

/// The steps of `ss_spawn_hiding_net_core`, for its errors.
enum NetCoreStep {
    static let names = [
        "sigprocmask", "dup2", "unshare(CLONE_NEWNS)", "mount(MS_PRIVATE) /", "open /proc/self/ns/net",
        "setns(CLONE_NEWNET)", "mount tmpfs on /proc/sys/net/core", "setns(CLONE_NEWNET) back", "execve",
    ]
}

/// Reads two pipes to EOF together, so neither fills while the other is read.
private func readBoth(_ a: Int32, _ b: Int32) -> ([UInt8], [UInt8]) {
    var bufs: [[UInt8]] = [[], []]
    var open = [true, true]
    var chunk = [UInt8](repeating: 0, count: 16384)
    while open[0] || open[1] {
        var fds = [
            pollfd(fd: open[0] ? a : -1, events: Int16(POLLIN), revents: 0),
            pollfd(fd: open[1] ? b : -1, events: Int16(POLLIN), revents: 0),
        ]
        if poll(&fds, 2, -1) < 0 {
            if errno == EINTR { continue }
            break
        }
        for i in 0..<2 where open[i] && fds[i].revents != 0 {
            let n = read(fds[i].fd, &chunk, chunk.count)
            if n > 0 { bufs[i] += chunk[0..<n] } else if n == 0 || errno != EINTR { open[i] = false }
        }
    }
    return (bufs[0], bufs[1])
}

extension GVisorFeatures {
    /// The features of `runsc`: platforms from `runsc help platforms`, whether it misreads pod
    /// network namespaces (its release date from `runsc --version` against
    /// `netnsFixRelease`, and whether a new network namespace shows
    /// /proc/sys/net/core/rmem_default on this kernel), all cached in `cacheDir` per binary
    /// identity (path, size, mtime) and kernel release; errnoRet support from the configuration.
    /// - Throws: `RuntimeError` when runsc is missing or `runsc help platforms` fails.
    static func detect(runsc: String, configuration: RuntimeConfiguration.GVisorConfiguration?, cacheDir: String) throws
        -> GVisorFeatures
    {
        var st = stat()
        guard stat(runsc, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(runsc, X_OK) == 0 else {
            throw RuntimeError(
                .unsupported,
                "gVisor level: runsc not found or not executable at \(runsc) (apt-get install runsc, or set gvisor.runsc in \(RuntimeConfiguration.defaultPath))"
            )
        }
        var u = utsname()
        uname(&u)
        let kernel = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        // Cached per binary (path, size, mtime) and kernel: "v2 <identity>", "release <date>",
        // "netcore <0|1>", then one platform per line.
        let identity = "v2 \(runsc) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(kernel)"
        let cache = cacheDir + "/.runsc-platforms"
        var platforms: [String]?
        var release = 0
        var netCoreShown = false
        if let text = try? Files.readString(cache) {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.first == identity, lines.count > 3, lines[1].hasPrefix("release "), lines[2].hasPrefix("netcore ")
            {
                release = Int(lines[1].dropFirst(8)) ?? 0
                netCoreShown = lines[2] == "netcore 1"
                platforms = lines.dropFirst(3).filter { !$0.isEmpty }
            }
        }
        if platforms == nil {
            let result = try spawnAndWait([runsc, "help", "platforms"], inheritStdio: false)
            let found = result.stdout.split(separator: "\n").map { String($0).trimmed }.filter {
                !$0.isEmpty && !$0.contains(" ")
            }
            guard result.status == 0, !found.isEmpty else {
                throw RuntimeError(
                    .runscFailed, "gVisor level: \(runsc) help platforms failed: \(result.stderr.trimmed)",
                    operation: "help platforms")
            }
            platforms = found
            release = Self.releaseDate(
                versionOutput: (try? spawnAndWait([runsc, "--version"], inheritStdio: false).stdout) ?? "")
            netCoreShown = ss_new_netns_shows("/proc/sys/net/core/rmem_default") == 1
            try? Files.makeDirectories(cacheDir, mode: 0o700)
            let lines = [identity, "release \(release)", "netcore \(netCoreShown ? 1 : 0)"] + found
            try? Files.writeAtomically(cache, Array(lines.joined(separator: "\n").utf8), mode: 0o600)
        }
        return GVisorFeatures(
            platforms: platforms ?? [], seccompErrnoRet: configuration?.seccompErrnoRet ?? false,
            misreadsPodNetns: netCoreShown && release < Self.netnsFixRelease)
    }

    /// The first runsc release that tells a network namespace from the host's by comparing
    /// namespaces rather than by /proc/sys/net/core/rmem_default (gVisor issue 10704).
    static let netnsFixRelease = 20240801

    /// The release date in `runsc --version` output: "runsc version release-20240807.0"
    /// upstream, "runsc version 0.0~20221219.0" in Debian; 0 when there is none.
    static func releaseDate(versionOutput: String) -> Int {
        let first = versionOutput.split(separator: "\n").first ?? ""
        return first.split(whereSeparator: { !$0.isNumber }).first { $0.count == 8 }.flatMap { Int($0) } ?? 0
    }

    /// The configured platform (checked against the binary), else systrap where available,
    /// else ptrace.
    /// - Throws: `RuntimeError` for a configured platform the binary does not have.
    func platform(configured: String?) throws -> String {
        if let configured {
            guard platforms.contains(configured) else {
                throw RuntimeError(
                    .invalidConfiguration, field: "gvisor.platform",
                    "\"\(configured)\" is not a platform of the installed runsc (it has \(platforms.joined(separator: ", ")))"
                )
            }
            return configured
        }
        if platforms.contains("systrap") { return "systrap" }
        if platforms.contains("ptrace") { return "ptrace" }
        guard let first = platforms.first else {
            throw RuntimeError(
                .runscFailed, "gVisor level: the installed runsc lists no platform", operation: "help platforms")
        }
        return first
    }
}
