import Glibc

/// Facts about a live process read from /proc/PID/stat (proc(5)): the one parser of that file.
public struct ProcStat: Sendable, Equatable {
    /// Field 3: R, S, D, Z, T, …
    public var state: Character
    /// Field 4: the parent's pid.
    public var parentPid: Int32
    /// Field 22: start time in clock ticks after boot; with the pid it names one process.
    public var startTime: UInt64

    /// nil when the process does not exist.
    public static func read(pid: Int32) -> ProcStat? {
        guard pid > 0, let s = try? Files.readString("/proc/\(pid)/stat") else { return nil }
        // comm (field 2) may hold spaces and parentheses: split after the last ')'.
        guard let close = s.lastIndex(of: ")") else { return nil }
        let rest = s[s.index(after: close)...].split(separator: " ")
        guard rest.count > 19, let state = rest[0].first, let parent = Int32(rest[1]), let start = UInt64(rest[19])
        else {
            return nil
        }
        return ProcStat(state: state, parentPid: parent, startTime: start)
    }
}

/// One process across time: its pid and its start time (/proc/PID/stat field 22, proc(5)).
/// A pid alone is not an identity: after the process dies the kernel hands the number to the
/// next process that asks, so a lease records both and is the holder's only while both match.
public struct ProcessIdentity: Codable, Sendable, Equatable, CustomStringConvertible {
    public var pid: Int32
    /// Clock ticks after boot (field 22 of /proc/PID/stat).
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// The calling process.
    public static func current() -> ProcessIdentity {
        let me = getpid()
        return ProcessIdentity(pid: me, startTime: ProcStat.read(pid: me)?.startTime ?? 0)
    }

    /// `pid` exists, started at `startTime` (else the pid was reused) and is neither a zombie
    /// nor dead (`Z`, `X`): a zombie holds no resource, only its exit status.
    public var isAlive: Bool {
        guard let stat = ProcStat.read(pid: pid), stat.startTime == startTime else { return false }
        return stat.state != "Z" && stat.state != "X"
    }

    public var description: String { "pid \(pid)" }
}

/// RFC 3339 with up to nanoseconds in UTC, as runc prints `created` (Go's `RFC3339Nano`).
public func rfc3339Now() -> String {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    var t = time_t(ts.tv_sec)
    var tmv = tm()
    gmtime_r(&t, &tmv)
    func pad(_ v: Int32, _ n: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, n - s.count)) + s
    }
    // Go's time.RFC3339Nano, as runc writes `created`: trailing zeros of the fraction dropped
    // (and the dot with them when nothing is left).
    var fraction = String(String(repeating: "0", count: 9 - String(ts.tv_nsec).count) + String(ts.tv_nsec))
    while fraction.hasSuffix("0") { fraction.removeLast() }
    return
        "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2))\(fraction.isEmpty ? "" : "." + fraction)Z"
}
