import CLibcap
import CSafeSpace
import Glibc

// prctl(2) options glibc's module does not export (linux/prctl.h).
let PR_CAPBSET_DROP: Int32 = 24
let PR_CAP_AMBIENT: Int32 = 47
let PR_CAP_AMBIENT_RAISE: Int32 = 2
let PR_CAP_AMBIENT_CLEAR_ALL: Int32 = 4

/// Linux capabilities by name (capabilities(7)), applied with libcap.
public enum Capability {
    /// Parses `CAP_NET_RAW` (case-insensitive, `CAP_` optional) to its number; nil when
    /// neither libcap nor the running kernel knows it.
    public static func value(named name: String) -> cap_value_t? {
        var v: cap_value_t = 0
        let lower = name.lowercased()
        let full = lower.hasPrefix("cap_") ? lower : "cap_" + lower
        return cap_from_name(full, &v) == 0 ? v : nil
    }

    /// The highest capability number the running kernel supports.
    public static var lastCap: cap_value_t {
        if let s = try? Files.readString("/proc/sys/kernel/cap_last_cap"),
            let n = Int32(s.trimmed)
        {
            return n
        }
        return cap_value_t(CAP_LAST_CAP)
    }

    /// Resolves names; unknown names throw naming `field`.
    public static func values(_ names: [String]?, field: String) throws -> [cap_value_t] {
        try (names ?? []).map { name in
            guard let v = value(named: name) else {
                throw SysError(.invalidValue, field: field, "unknown capability \"\(name)\"")
            }
            return v
        }
    }

    /// Drops every capability not in `keep` from the bounding set (PR_CAPBSET_DROP).
    public static func limitBoundingSet(to keep: [cap_value_t]) throws {
        let last = lastCap
        for cap in 0...last where !keep.contains(cap) {
            if ss_prctl(PR_CAPBSET_DROP, UInt(cap), 0, 0, 0) != 0 && errno != EINVAL {
                throw SysError(
                    "prctl(PR_CAPBSET_DROP)", path: String(cString: cap_to_name(cap)),
                    field: "process.capabilities.bounding")
            }
        }
    }

    /// Sets effective, permitted and inheritable sets of the calling thread (capset(2)).
    public static func setProcessSets(effective: [cap_value_t], permitted: [cap_value_t], inheritable: [cap_value_t])
        throws
    {
        guard let caps = cap_init() else { throw SysError("cap_init") }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        func set(_ flag: cap_flag_t, _ values: [cap_value_t]) {
            guard !values.isEmpty else { return }
            var v = values
            _ = cap_set_flag(caps, flag, Int32(v.count), &v, CAP_SET)
        }
        set(CAP_EFFECTIVE, effective)
        set(CAP_PERMITTED, permitted)
        set(CAP_INHERITABLE, inheritable)
        if cap_set_proc(caps) != 0 {
            throw SysError("capset", field: "process.capabilities")
        }
    }

    /// Raises each ambient capability (PR_CAP_AMBIENT_RAISE) after clearing the set. The
    /// kernel allows only capabilities that are both permitted and inheritable
    /// (capabilities(7)); others are returned, not raised, as runc warns and goes on.
    /// - Returns: the capabilities that could not be raised.
    public static func setAmbient(_ values: [cap_value_t]) -> [String] {
        _ = ss_prctl(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
        var skipped: [String] = []
        for cap in values where ss_prctl(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_RAISE), UInt(cap), 0, 0) != 0 {
            skipped.append(cap_name(cap) ?? "\(cap)")
        }
        return skipped
    }
}

/// `CAP_NET_RAW` for a capability number; nil when libcap does not know it.
public func cap_name(_ value: cap_value_t) -> String? {
    guard let p = cap_to_name(value) else { return nil }
    defer { cap_free(p) }
    let s = String(cString: p).uppercased()
    return s.hasPrefix("CAP_") ? s : nil
}
