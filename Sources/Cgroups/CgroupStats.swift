/// A container's resource usage in the JSON shape of runc's `events` (`types.Stats` in
/// runc's types/events.go), so tools that parse `runc events --stats` read it unchanged.
/// Members are declared in runc's order; fields runc tags `omitempty` are optional here and
/// left out when zero or unknown, the others are always written (`network_interfaces` as
/// `null`: this runtime configures no interfaces of its own, as runc with an OCI config).
public struct CgroupStats: Codable, Sendable, Equatable {
    public var cpu = CPU()
    public var cpuset = CPUSet()
    public var memory = Memory()
    public var pids = Pids()
    public var blkio = Blkio()
    /// Page size (`2MB`, `1GB`) -> usage of that huge page size.
    public var hugetlb: [String: Hugetlb] = [:]
    public var intelRdt = IntelRdt()
    public var networkInterfaces: [NetworkInterface]?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case cpu, cpuset, memory, pids, blkio, hugetlb
        case intelRdt = "intel_rdt"
        case networkInterfaces = "network_interfaces"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cpu = try c.decodeIfPresent(CPU.self, forKey: .cpu) ?? CPU()
        cpuset = try c.decodeIfPresent(CPUSet.self, forKey: .cpuset) ?? CPUSet()
        memory = try c.decodeIfPresent(Memory.self, forKey: .memory) ?? Memory()
        pids = try c.decodeIfPresent(Pids.self, forKey: .pids) ?? Pids()
        blkio = try c.decodeIfPresent(Blkio.self, forKey: .blkio) ?? Blkio()
        hugetlb = try c.decodeIfPresent([String: Hugetlb].self, forKey: .hugetlb) ?? [:]
        intelRdt = try c.decodeIfPresent(IntelRdt.self, forKey: .intelRdt) ?? IntelRdt()
        networkInterfaces = try c.decodeIfPresent([NetworkInterface].self, forKey: .networkInterfaces)
    }

    /// runc's order; `network_interfaces` is `null` when there are none (a nil Go slice).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(cpu, forKey: .cpu)
        try c.encode(cpuset, forKey: .cpuset)
        try c.encode(memory, forKey: .memory)
        try c.encode(pids, forKey: .pids)
        try c.encode(blkio, forKey: .blkio)
        try c.encode(hugetlb, forKey: .hugetlb)
        try c.encode(intelRdt, forKey: .intelRdt)
        if let networkInterfaces {
            try c.encode(networkInterfaces, forKey: .networkInterfaces)
        } else {
            try c.encodeNil(forKey: .networkInterfaces)
        }
    }

    public struct CPU: Codable, Sendable, Equatable {
        public var usage = Usage()
        public var throttling = Throttling()

        /// CPU time in nanoseconds since the cgroup was created; per CPU where the kernel
        /// tells (v1 `cpuacct.usage_percpu`, `cpuacct.usage_all`).
        public struct Usage: Codable, Sendable, Equatable {
            public var total: UInt64?
            public var percpu: [UInt64]?
            public var percpuKernel: [UInt64]?
            public var percpuUser: [UInt64]?
            public var kernel: UInt64 = 0
            public var user: UInt64 = 0

            enum CodingKeys: String, CodingKey {
                case total, percpu
                case percpuKernel = "percpu_kernel"
                case percpuUser = "percpu_user"
                case kernel, user
            }
        }

        /// CFS bandwidth throttling; `throttledTime` in nanoseconds.
        public struct Throttling: Codable, Sendable, Equatable {
            public var periods: UInt64?
            public var throttledPeriods: UInt64?
            public var throttledTime: UInt64?
        }
    }

    /// The v1 cpuset controller's files (v2: only `cpus` and `mems`, the effective sets).
    public struct CPUSet: Codable, Sendable, Equatable {
        public var cpus: [UInt16]?
        public var cpuExclusive: UInt64 = 0
        public var mems: [UInt16]?
        public var memHardwall: UInt64 = 0
        public var memExclusive: UInt64 = 0
        public var memoryMigrate: UInt64 = 0
        public var memorySpreadPage: UInt64 = 0
        public var memorySpreadSlab: UInt64 = 0
        public var memoryPressure: UInt64 = 0
        public var schedLoadBalance: UInt64 = 0
        public var schedRelaxDomainLevel: Int64 = 0

        enum CodingKeys: String, CodingKey {
            case cpus
            case cpuExclusive = "cpu_exclusive"
            case mems
            case memHardwall = "mem_hardwall"
            case memExclusive = "mem_exclusive"
            case memoryMigrate = "memory_migrate"
            case memorySpreadPage = "memory_spread_page"
            case memorySpreadSlab = "memory_spread_slab"
            case memoryPressure = "memory_pressure"
            case schedLoadBalance = "sched_load_balance"
            case schedRelaxDomainLevel = "sched_relax_domain_level"
        }
    }

    public struct Memory: Codable, Sendable, Equatable {
        public var cache: UInt64?
        /// Memory: `usage` now, `max` the peak, `limit` (bytes; `UInt64.max` = none), `failcnt`
        /// the times the limit was hit.
        public var usage = Entry()
        /// Memory+swap, as on v1 (on v2 the sum of memory.* and memory.swap.*, as runc reports it).
        public var swap = Entry()
        /// v1 kernel memory (`memory.kmem.*`); zero on v2.
        public var kernel = Entry()
        /// v1 kernel TCP buffers (`memory.kmem.tcp.*`); zero on v2.
        public var kernelTCP = Entry()
        /// memory.stat, as runc's `raw`.
        public var raw: [String: UInt64]?
        /// memory.events (v2) or memory.oom_control (v1) counters (runc 1.2's `event_count`).
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
            case cache, usage, swap, kernel, kernelTCP, raw
            case eventCount = "event_count"
        }

        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            cache = try c.decodeIfPresent(UInt64.self, forKey: .cache)
            usage = try c.decodeIfPresent(Entry.self, forKey: .usage) ?? Entry()
            swap = try c.decodeIfPresent(Entry.self, forKey: .swap) ?? Entry()
            kernel = try c.decodeIfPresent(Entry.self, forKey: .kernel) ?? Entry()
            kernelTCP = try c.decodeIfPresent(Entry.self, forKey: .kernelTCP) ?? Entry()
            raw = try c.decodeIfPresent([String: UInt64].self, forKey: .raw)
            eventCount = try c.decodeIfPresent(EventCount.self, forKey: .eventCount)
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

    /// One huge page size: bytes in use, the peak, and allocations that failed.
    public struct Hugetlb: Codable, Sendable, Equatable {
        public var usage: UInt64?
        public var max: UInt64?
        public var failcnt: UInt64 = 0
    }

    /// Intel RDT (resctrl) statistics: this runtime sets up no RDT group, so always empty (`{}`).
    public struct IntelRdt: Codable, Sendable, Equatable {}

    /// runc's per-interface counters (`types.NetworkInterface`); unused here.
    public struct NetworkInterface: Codable, Sendable, Equatable {
        public var name: String
        public var rxBytes: UInt64, rxPackets: UInt64, rxErrors: UInt64, rxDropped: UInt64
        public var txBytes: UInt64, txPackets: UInt64, txErrors: UInt64, txDropped: UInt64

        enum CodingKeys: String, CodingKey {
            case name = "Name"
            case rxBytes = "RxBytes", rxPackets = "RxPackets", rxErrors = "RxErrors", rxDropped = "RxDropped"
            case txBytes = "TxBytes", txPackets = "TxPackets", txErrors = "TxErrors", txDropped = "TxDropped"
        }
    }
}
