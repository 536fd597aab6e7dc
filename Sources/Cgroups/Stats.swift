import Glibc

/// A container's resource usage in the JSON shape of runc's `events` (`types.Stats` in
/// runc's types/events.go), so tools that parse `runc events --stats` read it unchanged.
/// Fields runc tags `omitempty` are optional here and left out when zero or unknown.
public struct CgroupStats: Codable, Sendable, Equatable {
    public var cpu = CPU()
    public var memory = Memory()
    public var pids = Pids()
    public var blkio = Blkio()

    public init() {}

    public struct CPU: Codable, Sendable, Equatable {
        public var usage = Usage()
        public var throttling = Throttling()

        /// CPU time in nanoseconds since the cgroup was created.
        public struct Usage: Codable, Sendable, Equatable {
            public var total: UInt64?
            public var percpu: [UInt64]?
            public var kernel: UInt64 = 0
            public var user: UInt64 = 0
        }

        /// CFS bandwidth throttling; `throttledTime` in nanoseconds.
        public struct Throttling: Codable, Sendable, Equatable {
            public var periods: UInt64?
            public var throttledPeriods: UInt64?
            public var throttledTime: UInt64?
        }
    }

    public struct Memory: Codable, Sendable, Equatable {
        public var cache: UInt64?
        /// Memory: `usage` now, `max` the peak, `limit` (bytes; `UInt64.max` = none), `failcnt`
        /// the times the limit was hit.
        public var usage = Entry()
        public var swap = Entry()
        /// memory.stat, as runc's `raw`.
        public var raw: [String: UInt64]?
        /// memory.events (v2) or memory.oom_control (v1) counters.
        public var eventCount: EventCount?

        public struct Entry: Codable, Sendable, Equatable {
            public var limit: UInt64 = 0
            public var usage: UInt64?
            public var max: UInt64?
            public var failcnt: UInt64 = 0
        }

        public struct EventCount: Codable, Sendable, Equatable {
            public var low: UInt64?
            public var high: UInt64?
            public var max: UInt64?
            public var oom: UInt64?
            public var oomKill: UInt64?

            enum CodingKeys: String, CodingKey {
                case low, high, max, oom
                case oomKill = "oom_kill"
            }
        }

        enum CodingKeys: String, CodingKey {
            case cache, usage, swap, raw
            case eventCount = "event_count"
        }
    }

    public struct Pids: Codable, Sendable, Equatable {
        public var current: UInt64?
        /// pids.max; absent for `max`.
        public var limit: UInt64?
    }

    public struct Blkio: Codable, Sendable, Equatable {
        /// Bytes read and written per device (`op` `Read` / `Write`).
        public var ioServiceBytesRecursive: [Entry]?
        /// I/O operations per device.
        public var ioServicedRecursive: [Entry]?

        public struct Entry: Codable, Sendable, Equatable {
            public var major: UInt64?
            public var minor: UInt64?
            public var op: String?
            public var value: UInt64?

            public init(major: UInt64, minor: UInt64, op: String, value: UInt64) {
                self.major = major == 0 ? nil : major
                self.minor = minor == 0 ? nil : minor
                self.op = op
                self.value = value == 0 ? nil : value
            }
        }
    }
}

extension Cgroup {
    /// Reads the cgroup's usage: CPU time, memory now and peak, pids, I/O bytes.
    ///
    /// Files a kernel lacks (memory.peak before Linux 5.19, swap accounting) leave their fields
    /// out. v2 reads cpu.stat, memory.{current,peak,max,swap.*,stat,events}, pids.*, io.stat;
    /// v1 reads the cpuacct, memory, pids and blkio files of the same meaning.
    /// - Throws: `CgroupError` (`read`) when the cgroup is gone (ENOENT) or unreadable.
    public func stats() throws -> CgroupStats {
        if mode == .unified {
            guard let dir = directories["unified"] else { throw CgroupError(.unsupported, operation: "stats", message: "no cgroup v2 directory") }
            guard CgroupFS.isDirectory(dir) else { throw CgroupError(operation: "read", path: dir, errno: ENOENT) }
            return StatsParser.v2(read: { try? CgroupFS.read(dir + "/" + $0) })
        }
        var readers: [String: String] = [:]
        for key in ["cpu", "cpuacct", "memory", "pids", "blkio"] {
            if let dir = directory(forController: key) { readers[key] = dir }
        }
        guard let tracking = trackingDirectory, CgroupFS.isDirectory(tracking) else {
            throw CgroupError(operation: "read", path: trackingDirectory ?? path, errno: ENOENT)
        }
        return StatsParser.v1 { controller, file in
            guard let dir = readers[controller] else { return nil }
            return try? CgroupFS.read(dir + "/" + file)
        }
    }

    /// The OOM kills counted for this cgroup and its descendants since it was made: v2
    /// `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill` (Linux 4.13+).
    /// - Returns: nil when the memory controller is not enabled for it (or the kernel has no
    ///   such counter); the raw counter, not the change since `oomKillBaseline`.
    public func oomKillCount() -> UInt64? {
        if mode == .unified {
            guard let dir = directories["unified"], let text = try? CgroupFS.read(dir + "/" + CgroupV2.memoryEvents) else { return nil }
            return StatsParser.flatKeyed(text)["oom_kill"]
        }
        guard let dir = directory(forController: "memory"), let text = try? CgroupFS.read(dir + "/" + CgroupV1.oomControl) else { return nil }
        return StatsParser.flatKeyed(text)["oom_kill"]
    }

    /// OOM kills since `create` (the counter minus `oomKillBaseline`), so a reused cgroup does
    /// not report an earlier container's kills; nil when unknown.
    public func oomKillsSinceCreate() -> UInt64? {
        guard let now = oomKillCount() else { return nil }
        let base = oomKillBaseline ?? 0
        return now >= base ? now - base : now
    }
}

/// Pure parsers of cgroup stat files, shared by both drivers (tests feed them sample text).
enum StatsParser {
    /// `key value` per line (cpu.stat, memory.stat, memory.events, memory.oom_control).
    static func flatKeyed(_ text: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let v = UInt64(parts[1]) { out[String(parts[0])] = v }
        }
        return out
    }

    /// A single number, or `max` / a v1 "unlimited" (>= 2^63 - page) as `UInt64.max`.
    static func number(_ text: String?) -> UInt64? {
        guard let text else { return nil }
        let t = CgroupFS.trimmed(text)
        if t == "max" { return UInt64.max }
        if let v = UInt64(t) { return v >= 0x7FFF_FFFF_FFFF_F000 ? UInt64.max : v }
        if let v = Int64(t), v < 0 { return UInt64.max }  // v1 writes -1 back as a huge number; be lenient
        return nil
    }

    /// v2 io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per device.
    static func ioStat(_ text: String) -> (bytes: [CgroupStats.Blkio.Entry], ios: [CgroupStats.Blkio.Entry]) {
        var bytes: [CgroupStats.Blkio.Entry] = []
        var ios: [CgroupStats.Blkio.Entry] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard let dev = fields.first, let (major, minor) = device(dev) else { continue }
            var kv: [String: UInt64] = [:]
            for f in fields.dropFirst() {
                let p = f.split(separator: "=", maxSplits: 1)
                if p.count == 2, let v = UInt64(p[1]) { kv[String(p[0])] = v }
            }
            bytes.append(.init(major: major, minor: minor, op: "Read", value: kv["rbytes"] ?? 0))
            bytes.append(.init(major: major, minor: minor, op: "Write", value: kv["wbytes"] ?? 0))
            ios.append(.init(major: major, minor: minor, op: "Read", value: kv["rios"] ?? 0))
            ios.append(.init(major: major, minor: minor, op: "Write", value: kv["wios"] ?? 0))
        }
        return (bytes, ios)
    }

    /// v1 blkio `*_recursive`: `MAJ:MIN Op N` per line and a final `Total N`.
    static func blkioV1(_ text: String) -> [CgroupStats.Blkio.Entry] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 3, let (major, minor) = device(f[0]), let v = UInt64(f[2]) else { return nil }
            return .init(major: major, minor: minor, op: String(f[1]), value: v)
        }
    }

    static func device(_ s: Substring) -> (UInt64, UInt64)? {
        let p = s.split(separator: ":")
        guard p.count == 2, let a = UInt64(p[0]), let b = UInt64(p[1]) else { return nil }
        return (a, b)
    }

    static func nonZero(_ v: UInt64?) -> UInt64? { v == 0 ? nil : v }

    /// Stats from v2 files; `read(file)` returns nil for a file that is missing.
    static func v2(read: (String) -> String?) -> CgroupStats {
        var s = CgroupStats()
        let cpu = flatKeyed(read("cpu.stat") ?? "")
        s.cpu.usage.total = nonZero(cpu["usage_usec"].map { $0 * 1000 })
        s.cpu.usage.kernel = (cpu["system_usec"] ?? 0) * 1000
        s.cpu.usage.user = (cpu["user_usec"] ?? 0) * 1000
        s.cpu.throttling.periods = nonZero(cpu["nr_periods"])
        s.cpu.throttling.throttledPeriods = nonZero(cpu["nr_throttled"])
        s.cpu.throttling.throttledTime = nonZero(cpu["throttled_usec"].map { $0 * 1000 })

        let mstat = flatKeyed(read("memory.stat") ?? "")
        s.memory.raw = mstat.isEmpty ? nil : mstat
        s.memory.cache = nonZero(mstat["file"])
        s.memory.usage.usage = nonZero(number(read("memory.current")))
        s.memory.usage.max = nonZero(number(read("memory.peak")))
        s.memory.usage.limit = number(read("memory.max")) ?? 0
        let events = flatKeyed(read(CgroupV2.memoryEvents) ?? "")
        s.memory.usage.failcnt = events["max"] ?? 0
        if !events.isEmpty {
            s.memory.eventCount = .init(
                low: events["low"], high: events["high"], max: events["max"], oom: events["oom"], oomKill: events["oom_kill"])
        }
        s.memory.swap.usage = nonZero(number(read("memory.swap.current")))
        s.memory.swap.max = nonZero(number(read("memory.swap.peak")))
        s.memory.swap.limit = number(read("memory.swap.max")) ?? 0

        s.pids.current = nonZero(number(read("pids.current")))
        s.pids.limit = number(read("pids.max")).flatMap { $0 == UInt64.max ? nil : nonZero($0) }

        let io = ioStat(read("io.stat") ?? "")
        s.blkio.ioServiceBytesRecursive = io.bytes.isEmpty ? nil : io.bytes
        s.blkio.ioServicedRecursive = io.ios.isEmpty ? nil : io.ios
        return s
    }

    /// Stats from v1 files; `read(controller, file)` returns nil for a missing file.
    static func v1(read: (String, String) -> String?) -> CgroupStats {
        var s = CgroupStats()
        s.cpu.usage.total = nonZero(number(read("cpuacct", "cpuacct.usage")))
        let percpu = (read("cpuacct", "cpuacct.usage_percpu") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { UInt64($0) }
        s.cpu.usage.percpu = percpu.isEmpty ? nil : percpu
        // cpuacct.usage_sys/usage_user are in ns (cpuacct.stat is in USER_HZ ticks).
        s.cpu.usage.kernel = number(read("cpuacct", "cpuacct.usage_sys")) ?? 0
        s.cpu.usage.user = number(read("cpuacct", "cpuacct.usage_user")) ?? 0
        let cpu = flatKeyed(read("cpu", "cpu.stat") ?? "")
        s.cpu.throttling.periods = nonZero(cpu["nr_periods"])
        s.cpu.throttling.throttledPeriods = nonZero(cpu["nr_throttled"])
        s.cpu.throttling.throttledTime = nonZero(cpu["throttled_time"])

        let mstat = flatKeyed(read("memory", "memory.stat") ?? "")
        s.memory.raw = mstat.isEmpty ? nil : mstat
        s.memory.cache = nonZero(mstat["total_cache"] ?? mstat["cache"])
        s.memory.usage.usage = nonZero(number(read("memory", "memory.usage_in_bytes")))
        s.memory.usage.max = nonZero(number(read("memory", "memory.max_usage_in_bytes")))
        s.memory.usage.limit = number(read("memory", CgroupV1.memoryLimit)) ?? 0
        s.memory.usage.failcnt = number(read("memory", "memory.failcnt")) ?? 0
        s.memory.swap.usage = nonZero(number(read("memory", "memory.memsw.usage_in_bytes")))
        s.memory.swap.max = nonZero(number(read("memory", "memory.memsw.max_usage_in_bytes")))
        s.memory.swap.limit = number(read("memory", CgroupV1.memswLimit)) ?? 0
        s.memory.swap.failcnt = number(read("memory", "memory.memsw.failcnt")) ?? 0
        let oom = flatKeyed(read("memory", CgroupV1.oomControl) ?? "")
        if let kills = oom["oom_kill"] { s.memory.eventCount = .init(oomKill: kills) }

        s.pids.current = nonZero(number(read("pids", "pids.current")))
        s.pids.limit = number(read("pids", "pids.max")).flatMap { $0 == UInt64.max ? nil : nonZero($0) }

        // CFQ/BFQ files when a proportional scheduler runs, else the throttle layer's counters.
        let bytes = read("blkio", "blkio.io_service_bytes_recursive") ?? read("blkio", "blkio.bfq.io_service_bytes_recursive")
        let useThrottle = bytes.map { blkioV1($0).isEmpty } ?? true
        let b = blkioV1((useThrottle ? read("blkio", "blkio.throttle.io_service_bytes_recursive") : bytes) ?? "")
        let ios = blkioV1(
            (useThrottle
                ? read("blkio", "blkio.throttle.io_serviced_recursive")
                : read("blkio", "blkio.io_serviced_recursive") ?? read("blkio", "blkio.bfq.io_serviced_recursive")) ?? "")
        s.blkio.ioServiceBytesRecursive = b.isEmpty ? nil : b
        s.blkio.ioServicedRecursive = ios.isEmpty ? nil : ios
        return s
    }
}
