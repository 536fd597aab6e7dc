import Foundation

/// A child process made with posix_spawn: stdio from files, every other descriptor closed, a
/// clean signal mask, reaped with waitpid on its own pid.
///
/// Not Foundation.Process: on Linux it learns that a child ended when a socket the child
/// inherits reaches EOF, so a daemon the child leaves behind (podman's conmon, containerd's
/// shims) keeps `isRunning` true and `waitUntilExit` blocked for as long as the daemon lives.
/// Closing descriptors above 2 also keeps such daemons from holding pipes of other tests.
package final class ClientProcess {
    package let pid: pid_t
    /// Shell-style exit status (128+N for signal N) once reaped.
    package private(set) var status: Int32?

    /// `inherit`: fds of this process duplicated onto the given numbers in the child; every
    /// other fd above 2 is closed.
    package init(
        _ path: String, _ args: [String], stdout: String, stderr: String, stdin: String? = nil,
        env: [String: String]? = nil, inherit: [(fd: Int32, as: Int32)] = []
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        for (fd, target) in inherit {
            posix_spawn_file_actions_adddup2(&actions, fd, target)
        }
        Self.closeFrom(max(3, (inherit.map(\.as).max() ?? 2) + 1), &actions)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envStrings = env.map { $0.map { "\($0.key)=\($0.value)" } }
        let envp: [UnsafeMutablePointer<CChar>?]? = envStrings.map { $0.map { strdup($0) } + [nil] }
        defer { envp?.forEach { free($0) } }
        var child: pid_t = 0
        let rc: Int32
        if let envp {
            rc = posix_spawn(&child, path, &actions, &attr, argv, envp)
        } else {
            rc = posix_spawn(&child, path, &actions, &attr, argv, environ)
        }
        guard rc == 0 else { throw ClientError("posix_spawn \(path): \(String(cString: strerror(rc)))") }
        pid = child
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+; not visible to Swift's Glibc).
    private static let addCloseFrom: AddCloseFrom? = {
        guard let sym = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(sym, to: AddCloseFrom.self)
    }()

    /// Closes every descriptor from `first` on in the child: closefrom, or each fd open now.
    private static func closeFrom(_ first: Int32, _ actions: inout posix_spawn_file_actions_t) {
        if let addCloseFrom, addCloseFrom(&actions, first) == 0 { return }
        let fds = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap {
            Int32($0)
        }
        for fd in fds where fd >= first { posix_spawn_file_actions_addclose(&actions, fd) }
    }

    /// Reaps the child if it has ended; true while it runs.
    package var isRunning: Bool {
        reap(WNOHANG)
        return status == nil
    }

    private func reap(_ flags: Int32) {
        guard status == nil else { return }
        var st: Int32 = 0
        let r = waitpid(pid, &st, flags)
        if r == pid {
            status = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
        } else if r < 0 && errno != EINTR {
            status = -1
        }
    }

    /// Waits until the child ends; false when it still runs after `timeout` seconds.
    package func wait(timeout: Double) -> Bool {
        Harness.eventually(timeout: timeout, every: 0.01) { !isRunning }
    }

    /// Waits until the child ends (blocking in waitpid); its status.
    package func wait() -> Int32 {
        while status == nil { reap(0) }
        return status!
    }

    /// SIGKILL and reap.
    package func kill() {
        guard isRunning else { return }
        Glibc.kill(pid, SIGKILL)
        _ = wait(timeout: 30)
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    package func stop(grace: Double = 10) {
        guard isRunning else { return }
        Glibc.kill(pid, SIGTERM)
        if !wait(timeout: grace) { kill() }
    }
}

package struct ClientError: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}
