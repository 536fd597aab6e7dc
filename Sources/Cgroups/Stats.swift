import Glibc

extension Cgroup {
    /// Reads the cgroup's usage: CPU time, memory now and peak, pids, I/O bytes.
    ///
    /// Files a kernel lacks (memory.peak before Linux 5.19, swap accounting) leave their fields
    /// out. v2 reads cpu.stat, memory.{current,peak,max,swap.*,stat,events}, pids.*, io.stat;
    /// v1 reads the cpuacct, memory, pids and blkio files of the same meaning.
    /// - Throws: `CgroupError` (`read`) when the cgroup is gone (ENOENT) or unreadable.
    public func stats() throws -> CgroupStats {
        if mode == .unified {
            guard let dir = directories["unified"] else {
                throw CgroupError(.unsupported, operation: "stats", message: "no cgroup v2 directory")
            }
            guard CgroupFS.isDirectory(dir) else { throw CgroupError(operation: "read", path: dir, errno: ENOENT) }
            return StatsParser.v2(read: { try? CgroupFS.read(dir + "/" + $0) })
        }
        var readers: [String: String] = [:]
        for key in ["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "hugetlb"] {
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
            guard let dir = directories["unified"], let text = try? CgroupFS.read(dir + "/" + CgroupV2.memoryEvents)
            else { return nil }
            return StatsParser.flatKeyed(text)["oom_kill"]
        }
        guard let dir = directory(forController: "memory"),
            let text = try? CgroupFS.read(dir + "/" + CgroupV1.oomControl)
        else { return nil }
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
                low: events["low"], high: events["high"], max: events["max"], oom: events["oom"],
                oomKill: events["oom_kill"])
        }
        // v1's swap is memory+swap; runc reports v2's the same way (usage summed, the limit
        // too unless unlimited, no peak: the two peaks need not coincide).
        if let swapUsage = number(read("memory.swap.current")) {
            s.memory.swap.usage = nonZero(swapUsage &+ (s.memory.usage.usage ?? 0))
        }
        if let swapLimit = number(read("memory.swap.max")) {
            let (sum, overflow) = swapLimit.addingReportingOverflow(s.memory.usage.limit)
            s.memory.swap.limit = swapLimit == UInt64.max || overflow ? UInt64.max : sum
        }

        s.pids.current = nonZero(number(read("pids.current")))
        s.pids.limit = number(read("pids.max")).flatMap { $0 == UInt64.max ? nil : nonZero($0) }

        for size in hugePageSizes {
            guard let usage = number(read("hugetlb.\(size).current")) else { continue }
            let events = flatKeyed(read("hugetlb.\(size).events") ?? "")
            s.hugetlb[size] = .init(usage: nonZero(usage), max: nil, failcnt: events["max"] ?? 0)
        }

        let io = ioStat(read("io.stat") ?? "")
        s.blkio.ioServiceBytesRecursive = io.bytes.isEmpty ? nil : io.bytes
        s.blkio.ioServicedRecursive = io.ios.isEmpty ? nil : io.ios
        return s
    }

    /// Stats from v1 files; `read(controller, file)` returns nil for a missing file.
    static func v1(read: (String, String) -> String?) -> CgroupStats {
        var s = CgroupStats()
        s.cpu.usage.total = nonZero(number(read("cpuacct", "cpuacct.usage")))
        let percpu = (read("cpuacct", "cpuacct.usage_percpu") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" })
            .compactMap { UInt64($0) }
        s.cpu.usage.percpu = percpu.isEmpty ? nil : percpu
        // cpuacct.usage_sys/usage_user are in ns (cpuacct.stat is in USER_HZ ticks).
        s.cpu.usage.kernel = number(read("cpuacct", "cpuacct.usage_sys")) ?? 0
        s.cpu.usage.user = number(read("cpuacct", "cpuacct.usage_user")) ?? 0
        // `cpu user system` then one line per CPU, in ns (Linux 4.7+).
        let perCPU = (read("cpuacct", "cpuacct.usage_all") ?? "").split(separator: "\n").dropFirst().map {
            $0.split(separator: " ").compactMap { UInt64($0) }
        }
        if !perCPU.isEmpty && perCPU.allSatisfy({ $0.count == 3 }) {
            s.cpu.usage.percpuUser = perCPU.map { $0[1] }
            s.cpu.usage.percpuKernel = perCPU.map { $0[2] }
        }
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
        s.memory.kernel = memoryEntry("memory.kmem", read)
        s.memory.kernelTCP = memoryEntry("memory.kmem.tcp", read)
        let oom = flatKeyed(read("memory", CgroupV1.oomControl) ?? "")
        if let kills = oom["oom_kill"] { s.memory.eventCount = .init(oomKill: kills) }

        s.pids.current = nonZero(number(read("pids", "pids.current")))
        s.pids.limit = number(read("pids", "pids.max")).flatMap { $0 == UInt64.max ? nil : nonZero($0) }

        s.cpuset = cpusetV1 { read("cpuset", "cpuset." + $0) }
        for size in hugePageSizes {
            guard let usage = number(read("hugetlb", "hugetlb.\(size).usage_in_bytes")) else { continue }
            s.hugetlb[size] = .init(
                usage: nonZero(usage), max: nonZero(number(read("hugetlb", "hugetlb.\(size).max_usage_in_bytes"))),
                failcnt: number(read("hugetlb", "hugetlb.\(size).failcnt")) ?? 0)
        }

        // CFQ/BFQ files when a proportional scheduler runs, else the throttle layer's counters.
        let bytes =
            read("blkio", "blkio.io_service_bytes_recursive") ?? read("blkio", "blkio.bfq.io_service_bytes_recursive")
        let useThrottle = bytes.map { blkioV1($0).isEmpty } ?? true
        let b = blkioV1((useThrottle ? read("blkio", "blkio.throttle.io_service_bytes_recursive") : bytes) ?? "")
        let ios = blkioV1(
            (useThrottle
                ? read("blkio", "blkio.throttle.io_serviced_recursive")
                : read("blkio", "blkio.io_serviced_recursive") ?? read("blkio", "blkio.bfq.io_serviced_recursive"))
                ?? "")
        s.blkio.ioServiceBytesRecursive = b.isEmpty ? nil : b
        s.blkio.ioServicedRecursive = ios.isEmpty ? nil : ios
        return s
    }

    /// A v1 memory entry from `<prefix>.{usage_in_bytes,max_usage_in_bytes,limit_in_bytes,failcnt}`.
    static func memoryEntry(_ prefix: String, _ read: (String, String) -> String?) -> CgroupStats.Memory.Entry {
        var e = CgroupStats.Memory.Entry()
        e.usage = nonZero(number(read("memory", prefix + ".usage_in_bytes")))
        e.max = nonZero(number(read("memory", prefix + ".max_usage_in_bytes")))
        e.limit = number(read("memory", prefix + ".limit_in_bytes")) ?? 0
        e.failcnt = number(read("memory", prefix + ".failcnt")) ?? 0
        return e
    }

    /// The v1 cpuset files (`read("cpus")` reads `cpuset.cpus`), as runc's `CPUSetStats`.
    static func cpusetV1(_ read: (String) -> String?) -> CgroupStats.CPUSet {
        var c = CgroupStats.CPUSet()
        c.cpus = read("cpus").flatMap { listNumbers($0) }
        c.mems = read("mems").flatMap { listNumbers($0) }
        func flag(_ file: String) -> UInt64 { number(read(file)) ?? 0 }
        c.cpuExclusive = flag("cpu_exclusive")
        c.memHardwall = flag("mem_hardwall")
        c.memExclusive = flag("mem_exclusive")
        c.memoryMigrate = flag("memory_migrate")
        c.memorySpreadPage = flag("memory_spread_page")
        c.memorySpreadSlab = flag("memory_spread_slab")
        c.memoryPressure = flag("memory_pressure")
        c.schedLoadBalance = flag("sched_load_balance")
        c.schedRelaxDomainLevel = read("sched_relax_domain_level").flatMap { Int64(CgroupFS.trimmed($0)) } ?? 0
        return c
    }

    /// A cpuset list (`0-3,5`) as its numbers; nil when empty or malformed.
    static func listNumbers(_ text: String) -> [UInt16]? {
        var out: [UInt16] = []
        for part in CgroupFS.trimmed(text).split(separator: ",") {
            let bounds = part.split(separator: "-").compactMap { UInt16($0) }
            if bounds.count == 1 {
                out.append(bounds[0])
            } else if bounds.count == 2, bounds[0] <= bounds[1] {
                out += Array(bounds[0]...bounds[1])
            } else {
                return nil
            }
        }
        return out.isEmpty ? nil : out
    }

    /// The huge page sizes of the host as the hugetlb files name them (`2MB`, `1GB`), from
    /// /sys/kernel/mm/hugepages/hugepages-<N>kB (runc's `HugePageSizes`).
    static var hugePageSizes: [String] {
        guard let dir = opendir("/sys/kernel/mm/hugepages") else { return [] }
        defer { closedir(dir) }
        var sizes: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix("hugepages-"), name.hasSuffix("kB"), let kb = UInt64(name.dropFirst(10).dropLast(2))
            else { continue }
            sizes.append(pageSizeName(kb))
        }
        return sizes.sorted()
    }

    /// 2048 (kB) -> `2MB`, 1048576 -> `1GB`, 64 -> `64KB` (runc's `units.CustomSize("%g%s", …, 1024)`).
    static func pageSizeName(_ kb: UInt64) -> String {
        var value = Double(kb)
        var unit = 1
        let units = ["B", "KB", "MB", "GB", "TB", "PB"]
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let text = value == value.rounded() ? String(Int64(value)) : String(value)
        return text + units[unit]
    }
}
