import OCI

/// `spec.resources` of a Sandbox as numbers, and the `linux.resources` they become.
///
/// | Sandbox field | OCI (`linux.resources`) | cgroup v2 / v1 |
/// |---|---|---|
/// | cpu `"500m"`, `"2"` | cpu.quota = millicores × 100 µs, cpu.period 100000 µs | cpu.max `50000 100000` / cfs_quota_us |
/// | memory `"1Gi"` | memory.limit = swap = bytes (no swap) | memory.max, memory.swap.max 0 / limit_in_bytes, memsw |
/// | cpuPinning + cpu `"2"` | cpu.cpus from `CPUAllocator` | cpuset.cpus |
/// | (always) | pids.limit `defaultPidsLimit` | pids.max |
/// | ephemeralStorage `"5Gi"` | (none: a volume, see `EphemeralStorage`) | |
public struct SandboxLimits: Sendable, Equatable {
    /// CPU in thousandths of a CPU (`"500m"` = 500, `"2"` = 2000); nil for no limit.
    public var cpuMillis: Int64?
    public var memoryBytes: Int64?
    public var ephemeralStorageBytes: Int64?
    public var cpuPinning: Bool

    /// pids.max of a sandbox on a node without `sandboxDefaults.pids`: a fork bomb stays
    /// inside, a build with parallel jobs fits (threads count too).
    public static let defaultPidsLimit: Int64 = 512
    /// CFS period (µs) used for `cpu`; the quota is cpu × period.
    public static let cpuPeriod: UInt64 = 100_000
    /// The smallest cpu: a quota of 1000 µs (the kernel's minimum) per 100000 µs period.
    public static let minimumCPUMillis: Int64 = 10
    /// The smallest memory limit a sandbox's init and a shell can live in (Docker's minimum).
    public static let minimumMemory: Int64 = 6 << 20
    public static let minimumEphemeralStorage: Int64 = 1 << 20

    public init(
        cpuMillis: Int64? = nil, memoryBytes: Int64? = nil, ephemeralStorageBytes: Int64? = nil,
        cpuPinning: Bool = false
    ) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.ephemeralStorageBytes = ephemeralStorageBytes
        self.cpuPinning = cpuPinning
    }

    /// Parses and checks `spec.resources` (the strings as written in the Sandbox).
    /// - Parameter field: the prefix of field names in errors.
    /// - Throws: `ResourceError` naming `spec.resources.cpu` / `.memory` / `.ephemeralStorage`
    ///   / `.cpuPinning`: not a quantity (`"lots"`), negative (`"-1"`), below the minimum, or
    ///   pinning without a whole number of CPUs.
    public static func parse(
        cpu: String?, memory: String?, ephemeralStorage: String?, cpuPinning: Bool?, field: String = "spec.resources"
    ) throws(ResourceError) -> SandboxLimits {
        var limits = SandboxLimits(cpuPinning: cpuPinning ?? false)
        if let cpu {
            let millis = try Quantity.milli(cpu, field: "\(field).cpu")
            if millis < minimumCPUMillis {
                throw ResourceError(
                    .invalidValue, field: "\(field).cpu", "\"\(cpu)\" is below the minimum of \"\(minimumCPUMillis)m\"")
            }
            limits.cpuMillis = millis
        }
        if let memory {
            let bytes = try Quantity.bytes(memory, field: "\(field).memory")
            if bytes < minimumMemory {
                throw ResourceError(
                    .invalidValue, field: "\(field).memory", "\"\(memory)\" is below the minimum of \"6Mi\"")
            }
            limits.memoryBytes = bytes
        }
        if let ephemeralStorage {
            let bytes = try Quantity.bytes(ephemeralStorage, field: "\(field).ephemeralStorage")
            if bytes < minimumEphemeralStorage {
                throw ResourceError(
                    .invalidValue, field: "\(field).ephemeralStorage",
                    "\"\(ephemeralStorage)\" is below the minimum of \"1Mi\"")
            }
            limits.ephemeralStorageBytes = bytes
        }
        if limits.cpuPinning {
            guard let millis = limits.cpuMillis, millis % 1000 == 0 else {
                throw ResourceError(
                    .invalidValue, field: "\(field).cpuPinning",
                    "pinning gives whole CPUs: set \(field).cpu to a whole number such as \"2\"\(cpu.map { " (it is \"\($0)\")" } ?? "")"
                )
            }
        }
        return limits
    }

    /// The CPUs to ask `CPUAllocator` for, when pinning.
    public var pinnedCPUCount: Int? {
        guard cpuPinning, let millis = cpuMillis else { return nil }
        return Int(millis / 1000)
    }

    /// `linux.resources` for these limits: cpu.max from `cpu`, memory without swap, the pinned
    /// CPUs as cpuset, the default pids limit, and `devices` passed through.
    /// - Parameters:
    ///   - pinnedCPUs: what `CPUAllocator.allocate` returned (required when pinning).
    ///   - devices: the device rules the policy already sets (kept as they are).
    public func ociResources(
        pinnedCPUs: [Int]? = nil, pidsLimit: Int64 = defaultPidsLimit, devices: [Resources.DeviceCgroup]? = nil
    ) -> Resources {
        var r = Resources(devices: devices)
        if let millis = cpuMillis {
            r.cpu = .init(quota: millis * Int64(Self.cpuPeriod) / 1000, period: Self.cpuPeriod)
        }
        if let cpus = pinnedCPUs, !cpus.isEmpty {
            if r.cpu == nil { r.cpu = .init() }
            r.cpu?.cpus = CPUList.format(cpus)
        }
        if let bytes = memoryBytes {
            // OCI swap is memory+swap: equal to the limit means no swap at all.
            r.memory = .init(limit: bytes, swap: bytes)
        }
        r.pids = .init(limit: pidsLimit)
        return r
    }
}

/// cpuset list syntax (`0-3,5`), as in cpuset.cpus and /sys/devices/system/cpu/online.
public enum CPUList {
    /// Parses `0-3,5`; nil for malformed text.
    public static func parse(_ text: String) -> [Int]? {
        var out: [Int] = []
        for part in text.split(whereSeparator: { $0 == "," || $0 == "\n" || $0 == " " }) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            if bounds.count == 1, let v = Int(bounds[0]) {
                out.append(v)
            } else if bounds.count == 2, let a = Int(bounds[0]), let b = Int(bounds[1]), a <= b {
                out += Array(a...b)
            } else {
                return nil
            }
        }
        return Array(Set(out)).sorted()
    }

    /// Formats CPUs as ranges: [0, 1, 2, 5] -> `0-2,5`.
    public static func format(_ cpus: [Int]) -> String {
        var parts: [String] = []
        var sorted = Array(Set(cpus)).sorted()[...]
        while let first = sorted.first {
            var last = first
            sorted = sorted.dropFirst()
            while let next = sorted.first, next == last + 1 {
                last = next
                sorted = sorted.dropFirst()
            }
            parts.append(first == last ? "\(first)" : "\(first)-\(last)")
        }
        return parts.joined(separator: ",")
    }
}
