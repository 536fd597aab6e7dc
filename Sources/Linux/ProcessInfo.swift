import Glibc

/// Facts about a live process read from /proc/PID/stat (proc(5)).
public struct ProcStat: Sendable, Equatable {
    /// Field 3: R, S, D, Z, T, …
    public var state: Character
    /// Field 22: start time in clock ticks after boot; with the pid it names one process.
    public var startTime: UInt64

    /// nil when the process does not exist.
    public static func read(pid: Int32) -> ProcStat? {
        guard pid > 0, let s = try? Files.readString("/proc/\(pid)/stat") else { return nil }
        // comm (field 2) may hold spaces and parentheses: split after the last ')'.
        guard let close = s.lastIndex(of: ")") else { return nil }
        let rest = s[s.index(after: close)...].split(separator: " ")
        guard rest.count > 19, let state = rest[0].first, let start = UInt64(rest[19]) else { return nil }
        return ProcStat(state: state, startTime: start)
    }
}
