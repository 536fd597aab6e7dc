import Glibc

/// getrlimit(2) resources by their OCI names (`RLIMIT_NOFILE`).
public enum Rlimits {
    /// Resource numbers of <sys/resource.h> on Linux (the same on every architecture but
    /// alpha, mips and sparc, which SafeSpace does not build for).
    public static let resources: [String: Int32] = [
        "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
        "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
        "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
        "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
    ]

    /// setrlimit(2). Raising a hard limit above the caller's needs CAP_SYS_RESOURCE: the error says so.
    /// - Throws: `SysError` `.invalidValue` for an unknown `type` or soft above hard,
    ///   `.permissionDenied` without CAP_SYS_RESOURCE, `.syscall` otherwise; each naming `field`.
    public static func set(type: String, soft: UInt64, hard: UInt64, field: String) throws {
        guard let resource = resources[type] else {
            throw SysError(.invalidValue, field: "\(field).type", "unknown rlimit \"\(type)\"")
        }
        guard soft <= hard else {
            throw SysError(.invalidValue, field: field, "soft limit \(soft) is above hard limit \(hard) for \(type)")
        }
        var lim = rlimit(rlim_cur: rlim_t(soft), rlim_max: rlim_t(hard))
        if setrlimit(__rlimit_resource_t(UInt32(resource)), &lim) != 0 {
            let e = errno
            var current = rlimit()
            getrlimit(__rlimit_resource_t(UInt32(resource)), &current)
            if e == EPERM {
                throw SysError(
                    .permissionDenied, field: field,
                    "setrlimit \(type) hard=\(hard): the caller's hard limit is \(current.rlim_max) and raising it needs CAP_SYS_RESOURCE, which this process lacks",
                    operation: "setrlimit", errno: e)
            }
            throw SysError("setrlimit \(type)", errno: e, field: field)
        }
    }
}
