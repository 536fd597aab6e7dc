/// safespaced under socket activation (`safespaced.socket`, sd_listen_fds(3)): which inherited
/// fd it serves on, or why it refuses to start.
import Foundation
import Glibc
import Logging
import SystemdSupport

enum SocketActivation {
    /// Takes the listening socket systemd passed, if any. Call it before the daemon starts any
    /// child (groupadd, recovery): it sets `FD_CLOEXEC` on the passed fds and unsets
    /// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, so that no helper or sandbox inherits
    /// the socket or the variables.
    ///
    /// - `LISTEN_FDS` unset: not activated (nil); the daemon binds `socketPath` itself.
    /// - `LISTEN_PID` missing or naming another process: the variables are not for this
    ///   process (sd_listen_fds(3)); a warning, and nil. The daemon then binds the path itself,
    ///   which `Daemon.prepareSocket` refuses when something listens there (a socket unit's
    ///   live socket is never replaced).
    /// - Exactly one fd, a listening `AF_UNIX` `SOCK_STREAM` socket bound to `socketPath`: that
    ///   fd. Its name (`LISTEN_FDNAMES`, the unit's `FileDescriptorName=`) is logged.
    /// - Returns: the fd to serve on, or nil when not socket-activated.
    /// - Throws: `ConfigError` for malformed variables, more than one fd, an fd of another kind
    ///   (not a socket, another family or type, not listening, no path), or a socket bound to
    ///   another path than `--socket` (the message names the fd, its name and what it is).
    static func inheritedListener(socketPath: String, logger: Logger) throws -> Int32? {
        let env = ProcessInfo.processInfo.environment
        guard let count = env["LISTEN_FDS"] else { return nil }
        let pid = String(getpid())
        guard env["LISTEN_PID"] == pid else {
            _ = try? Systemd.listenedFDs()  // unsets the variables only
            logger.warning(
                "socket activation: LISTEN_FDS=\(count) is for pid \(env["LISTEN_PID"] ?? "(no LISTEN_PID)"), not this process (\(pid)); the fds are not taken, the daemon binds \(socketPath) itself"
            )
            return nil
        }
        let passed: [Systemd.ListenedFD]
        do { passed = try Systemd.listenedFDs() } catch { throw ConfigError("socket activation: \(error)") }
        if passed.isEmpty { return nil }
        func named(_ f: Systemd.ListenedFD) -> String { "fd \(f.fd) (\(f.name))" }
        guard passed.count == 1, let listened = passed.first else {
            throw ConfigError(
                "socket activation: \(passed.count) fds passed (\(passed.map(named).joined(separator: ", "))); safespaced serves one socket: a single ListenStream=\(socketPath) in safespaced.socket"
            )
        }
        let path: String
        do { path = try Systemd.unixStreamListenerPath(listened.fd) } catch let error as Systemd.ActivationError {
            throw ConfigError(
                "socket activation: \(error.description(fdName: listened.name)); safespaced serves its API on a listening AF_UNIX SOCK_STREAM socket (ListenStream=\(socketPath) in safespaced.socket)"
            )
        }
        guard path == socketPath else {
            throw ConfigError(
                "socket activation: \(named(listened)) is bound to \(path), not to --socket \(socketPath); make ListenStream= and --socket name the same path"
            )
        }
        logger.info(
            "socket activation: serving on the inherited socket",
            metadata: ["fd": "\(listened.fd)", "name": "\(listened.name)", "socket": "\(path)"])
        return listened.fd
    }
}
