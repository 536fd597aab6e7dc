import Glibc
import OCI

/// The cgroup v1 driver: one hierarchy per controller (or controller list).
///
/// | OCI field (`linux.resources.`) | file | value |
/// |---|---|---|
/// | memory.limit | memory.limit_in_bytes | bytes, -1 |
/// | memory.reservation | memory.soft_limit_in_bytes | bytes, -1 |
/// | memory.swap | memory.memsw.limit_in_bytes | bytes of memory+swap, -1 |
/// | memory.swappiness | memory.swappiness | 0...100 |
/// | memory.disableOOMKiller | memory.oom_control | 1 for true, 0 for false |
/// | memory.kernel, memory.kernelTCP | — | ignored with a warning (as runc 1.1+) |
/// | cpu.shares | cpu.shares | 2...262144 |
/// | cpu.period, cpu.quota | cpu.cfs_period_us, cpu.cfs_quota_us | µs, quota -1 |
/// | cpu.cpus, cpu.mems | cpuset.cpus, cpuset.mems | list (`0-3,5`) |
/// | pids.limit | pids.max | N, `max` for < 0 |
/// | blockIO.weight | blkio.weight, else blkio.bfq.weight | 10...1000 |
/// | blockIO.weightDevice | blkio.weight_device, else blkio.bfq.weight_device | `MAJ:MIN W`, one write each |
enum CgroupV1 {
    static let memoryLimit = "memory.limit_in_bytes"
    static let memorySoftLimit = "memory.soft_limit_in_bytes"
    static let memswLimit = "memory.memsw.limit_in_bytes"
    static let cpuShares = "cpu.shares"
    static let cfsPeriod = "cpu.cfs_period_us"
    static let cfsQuota = "cpu.cfs_quota_us"
    static let cpusetCpus = "cpuset.cpus"
    static let cpusetMems = "cpuset.mems"
    static let pidsMax = "pids.max"
    static let oomControl = "memory.oom_control"
    static let memorySwappiness = "memory.swappiness"
    static let blkioWeight = "blkio.weight"
    static let blkioBfqWeight = "blkio.bfq.weight"
    static let blkioWeightDevice = "blkio.weight_device"
    static let blkioBfqWeightDevice = "blkio.bfq.weight_device"

    /// The writes `resources` asks for, in order (pure; no file is touched).
    /// - Parameters:
    ///   - currentMemoryLimit: the cgroup's `memory.limit_in_bytes` now (bytes, `Int64.max` for
    ///     unlimited), which decides whether the memsw limit must be written before or after the
    ///     memory limit (the kernel keeps memsw >= memory at every step); nil if unknown.
    ///   - memswAvailable: whether `memory.memsw.limit_in_bytes` exists (swap accounting on).
    ///   - swapActive: whether the node has any swap (/proc/swaps). Without swap accounting a
    ///     "no swap" request (swap == limit) is still honoured when there is no swap at all.
    /// - Throws: `CgroupError` naming the OCI field for invalid values, a swap limit without
    ///   swap accounting, or `unified` (v2 only).
    static func writes(_ r: Resources, currentMemoryLimit: Int64?, memswAvailable: Bool, swapActive: Bool = true) throws
        -> [CgroupWrite]
    {
        var out: [CgroupWrite] = []
        if let m = r.memory {
            out += try memoryWrites(
                m, currentMemoryLimit: currentMemoryLimit, memswAvailable: memswAvailable, swapActive: swapActive)
        }
        if let c = r.cpu { out += try cpuWrites(c) }
        if let p = r.pids {
            out.append(
                CgroupWrite(
                    controller: "pids", file: pidsMax, value: Conversions.maxOrNumber(p.limit),
                    field: "\(Conversions.pidsField).limit"))
        }
        if let w = try Conversions.blkioWeight(r.blockIO?.weight) {
            out.append(
                CgroupWrite(
                    controller: "blkio", file: blkioWeight, value: String(w),
                    field: "\(Conversions.blockIOField).weight"))
        }
        for d in try Conversions.weightDevices(r.blockIO) {
            out.append(
                CgroupWrite(
                    controller: "blkio", file: blkioWeightDevice, value: "\(d.device) \(d.weight)", field: d.field))
        }
        if let u = r.unified, !u.isEmpty {
            throw CgroupError.unsupported(
                "linux.resources.unified", "needs a cgroup v2 (unified) host; this one uses cgroup v1 controllers")
        }
        return out
    }

    static func memoryWrites(
        _ m: Resources.Memory, currentMemoryLimit: Int64?, memswAvailable: Bool, swapActive: Bool = true
    ) throws -> [CgroupWrite] {
        let field = Conversions.memoryField
        let limit = m.limit == 0 ? nil : m.limit
        var swap = m.swap == 0 ? nil : m.swap
        // Same validation as v2 (swap >= limit, no swap without a limit, -1 or bytes).
        _ = try Conversions.swapMax(limit: limit, swap: swap)
        if limit == -1 && swap == nil && memswAvailable { swap = -1 }  // unlimited memory: unlimited memsw, as runc
        if let s = swap, !memswAvailable {
            guard s == -1 || (s == limit && !swapActive) else {
                throw CgroupError.unsupported(
                    "\(field).swap",
                    "\(memswLimit) is missing: the kernel has no swap accounting (boot with swapaccount=1)")
            }
            swap = nil  // -1 asks for no limit, which is what there is; swap == limit, no swap, ditto
        }
        var out: [CgroupWrite] = []
        let limitWrite = limit.map {
            CgroupWrite(controller: "memory", file: memoryLimit, value: String($0), field: "\(field).limit")
        }
        let swapWrite = swap.map {
            CgroupWrite(controller: "memory", file: memswLimit, value: String($0), field: "\(field).swap")
        }
        if let limitWrite, let swapWrite, let s = swap {
            // Raising: memsw first; lowering: memory first (kernel: memory <= memsw always).
            let newMemsw = s < 0 ? Int64.max : s
            out += newMemsw >= (currentMemoryLimit ?? Int64.max) ? [swapWrite, limitWrite] : [limitWrite, swapWrite]
        } else {
            out += [limitWrite, swapWrite].compactMap { $0 }
        }
        if let reservation = m.reservation, reservation != 0 {
            if reservation < -1 {
                throw CgroupError.invalid("\(field).reservation", "\(reservation) is not a byte count or -1")
            }
            out.append(
                CgroupWrite(
                    controller: "memory", file: memorySoftLimit, value: String(reservation),
                    field: "\(field).reservation"))
        }
        if let swappiness = try Conversions.swappiness(m) {
            out.append(
                CgroupWrite(
                    controller: "memory", file: memorySwappiness, value: String(swappiness),
                    field: "\(field).swappiness"))
        }
        // Written both ways, so an update can turn the OOM killer back on.
        if let disable = m.disableOOMKiller {
            out.append(
                CgroupWrite(
                    controller: "memory", file: oomControl, value: disable ? "1" : "0",
                    field: "\(field).disableOOMKiller"))
        }
        return out
    }

    static func cpuWrites(_ c: Resources.CPU) throws -> [CgroupWrite] {
        let field = Conversions.cpuField
        var out: [CgroupWrite] = []
        if let shares = c.shares, shares != 0 {
            out.append(CgroupWrite(controller: "cpu", file: cpuShares, value: String(shares), field: "\(field).shares"))
        }
        let (quota, period) = try Conversions.cpuBandwidth(quota: c.quota, period: c.period)
        if let period {
            out.append(CgroupWrite(controller: "cpu", file: cfsPeriod, value: String(period), field: "\(field).period"))
        }
        if let quota {
            out.append(CgroupWrite(controller: "cpu", file: cfsQuota, value: String(quota), field: "\(field).quota"))
        }
        out += try Conversions.cpusetWrites(c, field: field)
        return out
    }

    /// Applies `resources` to the cgroup's v1 hierarchies.
    /// - Throws: `CgroupError` naming the OCI field; a controller that is not mounted is an error.
    static func apply(_ r: Resources, to cgroup: Cgroup) throws {
        let memoryDir = cgroup.directory(forController: "memory")
        var currentLimit: Int64?
        var memswAvailable = false
        if let memoryDir, r.memory != nil {
            memswAvailable = CgroupFS.exists(memoryDir + "/" + memswLimit)
            let text = CgroupFS.trimmed(try CgroupFS.read(memoryDir + "/" + memoryLimit))
            currentLimit = Int64(text) ?? (UInt64(text) != nil ? Int64.max : nil)
        }
        let swapActive = ((try? CgroupFS.read("/proc/swaps")) ?? "").split(separator: "\n").count > 1
        let all = try writes(
            r, currentMemoryLimit: currentLimit, memswAvailable: memswAvailable, swapActive: swapActive)
        // runc fs/cpu.go: a shorter period the kernel refuses (EINVAL: the old quota over the new
        // period exceeds what the parent allows) is written again after the quota.
        var retryPeriod: (String, CgroupWrite)?
        for var w in all {
            if let (dir, period) = retryPeriod, w.file != cfsQuota {
                try CgroupFS.write(dir + "/" + period.file, period.value, field: period.field)
                retryPeriod = nil
            }
            guard let dir = cgroup.directory(forController: w.controller) else {
                throw CgroupError.unsupported(
                    w.field, "the \(w.controller) cgroup controller is not mounted on this host")
            }
            // runc's choice (fs/blkio.go): the CFQ files where blkio.weight exists, else BFQ's.
            let bfqFiles = [blkioWeight: blkioBfqWeight, blkioWeightDevice: blkioBfqWeightDevice]
            if let bfq = bfqFiles[w.file], !CgroupFS.exists(dir + "/" + blkioWeight) {
                guard CgroupFS.exists(dir + "/" + blkioBfqWeight) else {
                    throw CgroupError.unsupported(
                        w.field,
                        "neither \(w.file) nor \(bfq) exists: no proportional I/O scheduler (CFQ/BFQ) is available for this cgroup"
                    )
                }
                w.file = bfq
            }
            if w.file == cfsPeriod, all.contains(where: { $0.file == cfsQuota }) {
                do { try CgroupFS.write(dir + "/" + w.file, w.value, field: w.field) } catch let e as CgroupError
                    where e.errno == EINVAL
                {
                    retryPeriod = (dir, w)
                }
                continue
            }
            try Conversions.writeWeight(dir + "/" + w.file, w)
        }
        if let (dir, period) = retryPeriod {
            try CgroupFS.write(dir + "/" + period.file, period.value, field: period.field)
        }
    }

    /// Copies `cpuset.cpus` and `cpuset.mems` from the parent into a new cpuset cgroup when
    /// they are empty: a v1 cpuset with no CPUs or memory nodes refuses tasks (ENOSPC).
    static func inheritCpuset(_ dir: String) throws {
        let parent = CgroupPath.parent(dir)
        for file in [cpusetCpus, cpusetMems] {
            let own = CgroupFS.trimmed(try CgroupFS.read(dir + "/" + file))
            guard own.isEmpty else { continue }
            let inherited = CgroupFS.trimmed(try CgroupFS.read(parent + "/" + file))
            try CgroupFS.write(dir + "/" + file, inherited)
        }
    }
}
