import Glibc
import OCI

/// One cgroup file to write: the controller that owns it (which v1 hierarchy, or which v2
/// controller to enable first), the file name, the value, and the OCI field it comes from.
struct CgroupWrite: Equatable, Sendable, CustomStringConvertible {
    /// `memory`, `cpu`, `cpuset`, `pids`, ...; empty for core `cgroup.*` files.
    var controller: String
    var file: String
    var value: String
    /// The OCI field named in errors, e.g. `linux.resources.memory.limit`.
    var field: String
    /// For a proportional I/O weight: the value to write when the BFQ file is used instead
    /// (BFQ takes the v1 range as is, where v2's `io.weight` needs it converted).
    var bfqValue: String? = nil

    var description: String { "\(file)=\(value)" }
}

/// Pure conversions from OCI values to cgroup file values, shared by both drivers.
///
/// A value of 0 for `memory.limit`, `memory.reservation`, `memory.swap`, `cpu.shares`,
/// `cpu.quota` and `cpu.period` means "not set", as in runc and crun (Go's zero value, which
/// containerd and Docker leave in place for "no limit"); `pids.limit` 0 is a real limit.
enum Conversions {
    static let memoryField = "linux.resources.memory"
    static let cpuField = "linux.resources.cpu"
    static let pidsField = "linux.resources.pids"
    static let blockIOField = "linux.resources.blockIO"

    /// Validates `blockIO.weight` (cgroup v1 blkio.weight range 10...1000); nil for unset or 0.
    /// - Throws: `CgroupError` naming `linux.resources.blockIO.weight`.
    static func blkioWeight(_ weight: UInt16?) throws -> UInt64? {
        guard let w = weight, w != 0 else { return nil }
        guard (10...1000).contains(w) else {
            throw CgroupError.invalid("\(blockIOField).weight", "\(w) is outside 10...1000")
        }
        return UInt64(w)
    }

    /// `blockIO.weightDevice`: one `(major:minor, weight)` per entry with a nonzero weight, in
    /// order, each validated as `weight` is (runc skips a weight of 0, as here).
    /// - Throws: `CgroupError` naming `linux.resources.blockIO.weightDevice[i].weight`.
    static func weightDevices(_ b: Resources.BlockIO?) throws -> [(device: String, weight: UInt64, field: String)] {
        try (b?.weightDevice ?? []).enumerated().compactMap { i, d in
            let field = "\(blockIOField).weightDevice[\(i)]"
            guard let w = d.weight, w != 0 else { return nil }
            guard (10...1000).contains(w) else {
                throw CgroupError.invalid("\(field).weight", "\(w) is outside 10...1000")
            }
            guard d.major >= 0, d.minor >= 0 else {
                throw CgroupError.invalid(field, "\(d.major):\(d.minor) is not a device number")
            }
            return ("\(d.major):\(d.minor)", UInt64(w), field)
        }
    }

    /// v1 blkio weight (10...1000) to v2 `io.weight` (1...10000), the linear map runc and crun
    /// use: 10 -> 1, 500 -> 4950, 1000 -> 10000.
    static func ioWeight(fromBlkioWeight w: UInt64) -> UInt64 {
        1 + (w - 10) * 9999 / 990
    }

    /// OCI `-1` (or any negative for `pids`) becomes the kernel's `max`.
    static func maxOrNumber(_ value: Int64) -> String {
        value < 0 ? "max" : String(value)
    }

    /// cgroup v1 `cpu.shares` (2...262144, default 1024) to v2 `cpu.weight` (1...10000, default 100).
    ///
    /// The quadratic fit in log2(shares) used by runc >= 1.3.2 (opencontainers/cgroups
    /// `ConvertCPUSharesToCgroupV2Value`) and crun >= 1.23, which maps min, default and max
    /// exactly: 2 -> 1, 1024 -> 100, 262144 -> 10000. 0 means unset and stays 0.
    static func cpuWeight(fromShares shares: UInt64) -> UInt64 {
        if shares == 0 { return 0 }
        if shares <= 2 { return 1 }
        if shares >= 262_144 { return 10_000 }
        let l = log2(Double(shares))
        let exponent = (l * l + 125 * l) / 612.0 - 7.0 / 34.0
        return UInt64(ceil(pow(10, exponent)))
    }

    /// Validates `memory.limit` and `memory.swap` (OCI: swap is memory+swap combined) and returns
    /// the v2 `memory.swap.max` value in bytes (`-1` = `max`), or nil when nothing is to be written.
    ///
    /// As runc's `ConvertMemorySwapToCgroupV2Value`: limit -1 with swap unset gives swap -1
    /// (unlimited memory means unlimited swap, as on v1).
    /// - Throws: `CgroupError` naming `linux.resources.memory.swap` when swap < -1, swap is set
    ///   without a positive limit, or swap < limit.
    static func swapMax(limit rawLimit: Int64?, swap rawSwap: Int64?) throws -> Int64? {
        let limit = rawLimit ?? 0
        let swap = rawSwap ?? 0
        if limit < -1 {
            throw CgroupError.invalid("\(memoryField).limit", "\(limit) is not a byte count or -1")
        }
        if limit == -1 && swap == 0 { return -1 }
        if swap == 0 { return nil }
        if swap == -1 { return -1 }
        if swap < -1 {
            throw CgroupError.invalid("\(memoryField).swap", "\(swap) is not a byte count or -1")
        }
        if limit <= 0 {
            throw CgroupError.invalid(
                "\(memoryField).swap", "swap (\(swap)) is set without a memory limit (linux.resources.memory.limit)")
        }
        if swap < limit {
            throw CgroupError.invalid(
                "\(memoryField).swap",
                "\(swap) is smaller than \(memoryField).limit (\(limit)); swap counts memory+swap")
        }
        return swap - limit
    }

    /// Validates CFS bandwidth: `quota` and `period` in µs.
    /// - Returns: the quota (nil = unset, -1 = unlimited) and period (nil = unset).
    /// - Throws: `CgroupError` naming `linux.resources.cpu.quota` for a quota in 1...999 or below -1,
    ///   `linux.resources.cpu.period` for a period outside 1000...1000000 (the kernel's bounds).
    static func cpuBandwidth(quota rawQuota: Int64?, period rawPeriod: UInt64?) throws -> (
        quota: Int64?, period: UInt64?
    ) {
        var quota: Int64? = rawQuota == 0 ? nil : rawQuota
        let period: UInt64? = rawPeriod == 0 ? nil : rawPeriod
        if let q = quota {
            if q < -1 {
                throw CgroupError.invalid("\(cpuField).quota", "\(q) is not a duration in µs or -1")
            }
            if q >= 0 && q < 1000 {
                throw CgroupError.invalid("\(cpuField).quota", "\(q) µs is below the kernel's minimum of 1000 µs")
            }
            if q < 0 { quota = -1 }
        }
        if let p = period, p < 1000 || p > 1_000_000 {
            throw CgroupError.invalid("\(cpuField).period", "\(p) µs is outside 1000...1000000 µs")
        }
        return (quota, period)
    }

    /// The v2 `cpu.max` value, `"$QUOTA $PERIOD"`, or nil when neither is set.
    ///
    /// An unset or -1 quota is `max`; an unset period is left out, so the kernel keeps the
    /// current one (100000 µs by default), as runc does.
    static func cpuMax(quota: Int64?, period: UInt64?) throws -> String? {
        let (q, p) = try cpuBandwidth(quota: quota, period: period)
        if q == nil && p == nil { return nil }
        var quotaText = "max"
        if let q, q >= 0 { quotaText = String(q) }
        return p.map { "\(quotaText) \($0)" } ?? quotaText
    }

    /// `cpus`/`mems` → `cpuset.cpus`/`cpuset.mems`: the same files on v1 and v2.
    /// - Throws: `CgroupError` naming `field.cpus` or `field.mems` for bad list syntax.
    static func cpusetWrites(_ c: Resources.CPU, field: String) throws -> [CgroupWrite] {
        var out: [CgroupWrite] = []
        if let cpus = c.cpus, !cpus.isEmpty {
            let value = try cpusetList(cpus, field: "\(field).cpus")
            out.append(CgroupWrite(controller: "cpuset", file: "cpuset.cpus", value: value, field: "\(field).cpus"))
        }
        if let mems = c.mems, !mems.isEmpty {
            let value = try cpusetList(mems, field: "\(field).mems")
            out.append(CgroupWrite(controller: "cpuset", file: "cpuset.mems", value: value, field: "\(field).mems"))
        }
        return out
    }

    /// Checks cpuset list syntax (`0-3,5`): digits, `,` and `-` only.
    /// - Throws: `CgroupError` naming `field`.
    static func cpusetList(_ value: String, field: String) throws -> String {
        let v = CgroupFS.trimmed(value)
        let ok = v.allSatisfy { ($0 >= "0" && $0 <= "9") || $0 == "," || $0 == "-" }
        if !ok || v.first == "-" || v.first == "," {
            throw CgroupError.invalid(field, "\"\(value)\" is not a cpuset list such as \"0-3,5\"")
        }
        return v
    }

    /// Fields of `linux.resources` this module does not enforce yet. `apply` refuses a spec that
    /// sets one, rather than run a container without a limit it asked for. `devices` is not
    /// listed: device access is the runtime's device cgroup / eBPF step, not a resource limit.
    static func unsupportedFields(_ r: Resources) -> [String] {
        var fields: [String] = []
        if let c = r.cpu {
            if let b = c.burst, b != 0 { fields.append("\(cpuField).burst") }
            if let v = c.idle, v != 0 { fields.append("\(cpuField).idle") }
        }
        if let b = r.blockIO, let w = b.leafWeight, w != 0 { fields.append("\(blockIOField).leafWeight") }
        // Leaf weights were CFQ's, gone with it in Linux 5.0.
        for (i, d) in (r.blockIO?.weightDevice ?? []).enumerated() where (d.leafWeight ?? 0) != 0 {
            fields.append("\(blockIOField).weightDevice[\(i)].leafWeight")
        }
        if let h = r.hugepageLimits, !h.isEmpty { fields.append("linux.resources.hugepageLimits") }
        return fields
    }

    /// Warnings for fields that are accepted and ignored: `memory.kernel` and `memory.kernelTCP`
    /// (kernel memory limits; deprecated in the runtime-spec, gone from cgroup v2 and from v1
    /// since Linux 6.1 — runc 1.1+ ignores them with a warning, so does this).
    static func ignoredFieldWarnings(_ r: Resources) -> [String] {
        guard let m = r.memory else { return [] }
        var fields: [String] = []
        if m.kernel != nil { fields.append("\(memoryField).kernel") }
        if m.kernelTCP != nil { fields.append("\(memoryField).kernelTCP") }
        if fields.isEmpty { return [] }
        return [
            "\(fields.joined(separator: ", ")): kernel memory limits are deprecated and ignored (as by runc 1.1+); memory.limit counts kernel memory"
        ]
    }

    /// `memory.swappiness`: 0...100 (runtime-spec config-linux.md, vm.swappiness's range).
    /// - Throws: `CgroupError` naming `linux.resources.memory.swappiness`.
    static func swappiness(_ m: Resources.Memory) throws -> UInt64? {
        guard let v = m.swappiness else { return nil }
        guard v <= 100 else { throw CgroupError.invalid("\(memoryField).swappiness", "\(v) is outside 0...100") }
        return v
    }

    /// - Throws: `CgroupError` listing the fields `unsupportedFields` found.
    static func rejectUnsupported(_ r: Resources) throws {
        let fields = unsupportedFields(r)
        if !fields.isEmpty {
            throw CgroupError(
                .unsupported, operation: "apply", field: fields.joined(separator: ", "),
                message: "not supported by SafeSpace's cgroup drivers yet; remove the field(s)")
        }
    }
}

extension Conversions {
    /// Writes an I/O weight; a per-device one the kernel refuses because the device's I/O
    /// scheduler keeps no weights (EOPNOTSUPP, EINVAL) or the device does not exist (ENODEV)
    /// is an error saying so, naming the field.
    /// - Throws: `CgroupError` naming `w.field`.
    static func writeWeight(_ path: String, _ w: CgroupWrite) throws {
        do { try CgroupFS.write(path, w.value, field: w.field) } catch var e as CgroupError where w.value.contains(":")
        {
            let device = String(w.value.prefix { $0 != " " })
            switch e.errno {
            case EOPNOTSUPP, EINVAL:
                e.message =
                    "device \(device) refuses a weight: its I/O scheduler is not BFQ (or CFQ) (/sys/dev/block/\(device)/queue/scheduler)"
            case ENODEV, ENOENT:
                e.message = "no block device \(device)"
            default:
                break
            }
            throw e
        }
    }
}
