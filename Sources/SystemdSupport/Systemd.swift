import CSystemd
import Glibc

/// The service-manager side of a daemon started by systemd: readiness and status
/// notifications, the watchdog, socket activation (sd-daemon(3)). Every call is a no-op that
/// says so when the process was not started by systemd (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
/// `LISTEN_FDS` absent).
public enum Systemd {
    /// Sends `state` to the service manager: `sd_notify(0, state)` (sd_notify(3)), e.g.
    /// `"READY=1"`, `"STATUS=recovering 3 sandboxes"`, `"WATCHDOG=1"`, `"STOPPING=1"`;
    /// several assignments may be joined with `"\n"`.
    /// - Returns: true when the message was sent; false when `NOTIFY_SOCKET` is not set (not
    ///   under systemd, or a unit without `Type=notify`/`NotifyAccess=`) or sending failed.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// Like `notify`, but reports a failure to send: the negative errno of sd_notify(3).
    /// - Returns: `.sent`, `.notUnderSystemd` (`NOTIFY_SOCKET` unset), or `.failed(errno)`.
    public static func notifyResult(_ state: String) -> NotifyResult {
        let r = sd_notify(0, state)
        if r > 0 { return .sent }
        if r == 0 { return .notUnderSystemd }
        return .failed(errno: -r)
    }

    /// What `notifyResult` saw.
    public enum NotifyResult: Sendable, Equatable {
        case sent
        case notUnderSystemd
        case failed(errno: Int32)
    }

    /// The unit's `WatchdogSec=`, from `WATCHDOG_USEC` (and `WATCHDOG_PID` naming this
    /// process): `sd_watchdog_enabled(0, &usec)` (sd_watchdog_enabled(3)). Send `"WATCHDOG=1"`
    /// at least every half of it, as the man page recommends.
    /// - Returns: the interval, or nil when the watchdog is not enabled for this process (or
    ///   the variables are malformed).
    public static func watchdogInterval() -> Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(clamping: usec))
    }

    /// The first fd passed by socket activation (`SD_LISTEN_FDS_START`, 3).
    public static let listenFDsStart: Int32 = 3

    /// The sockets passed by socket activation (a `.socket` unit's `ListenStream=`):
    /// `sd_listen_fds(1)` (sd_listen_fds(3)), which checks `LISTEN_PID` is this process, sets
    /// `FD_CLOEXEC` on each fd and unsets `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` so
    /// that no child inherits them.
    /// - Returns: fds from 3 (`SD_LISTEN_FDS_START`) up, in the unit's order; empty when none
    ///   were passed or the variables do not name this process.
    public static func listenFDs() -> [Int32] {
        let n = sd_listen_fds(1)
        guard n > 0 else { return [] }
        return (0..<n).map { listenFDsStart + $0 }
    }

    /// True when `fd` is a listening `AF_UNIX` stream socket bound to `path` (or to any path
    /// when nil): `sd_is_socket_unix(3)`. Use it to check an activated fd before serving on it.
    public static func isUnixStreamListener(_ fd: Int32, path: String? = nil) -> Bool {
        if let path {
            return path.withCString { sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, $0, 0) } > 0
        }
        return sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0
    }
}
