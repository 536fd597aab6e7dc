import Glibc
import OCI

/// The cgroup v2 driver: one unified hierarchy; controllers are delegated top-down through
/// `cgroup.subtree_control` (kernel Documentation/admin-guide/cgroup-v2.rst).
///
/// | OCI field (`linux.resources.`) | file | value |
/// |---|---|---|
/// | memory.limit | memory.max | bytes, `max` for -1 |
/// | memory.reservation | memory.low | bytes, `max` for -1 |
/// | memory.swap | memory.swap.max | swap - limit (OCI swap is memory+swap), `max` for -1 |
/// | memory.swappiness | — | v2 has no per-cgroup swappiness: only the node's vm.swappiness is accepted |
/// | memory.disableOOMKiller | — | v2 cannot disable the OOM killer: only false is accepted |
/// | memory.kernel, memory.kernelTCP | — | ignored with a warning (as runc 1.1+) |
/// | cpu.shares | cpu.weight | quadratic map, 1024 -> 100 (see `Conversions.cpuWeight`) |
/// | cpu.quota, cpu.period | cpu.max | `"$QUOTA $PERIOD"` µs, `max` for no quota |
/// | cpu.cpus, cpu.mems | cpuset.cpus, cpuset.mems | list (`0-3,5`) |
/// | pids.limit | pids.max | N, `max` for < 0 |
/// | blockIO.weight | io.bfq.weight, else io.weight | as is; else 1 + (w - 10) * 9999 / 990 |
/// | blockIO.weightDevice | io.bfq.weight, else io.weight | `MAJ:MIN W`, the weight as for blockIO.weight |
/// | unified["file"] | file | as given, written last |
enum CgroupV2 {
    static let memoryMax = "memory.max"
    static let memoryLow = "memory.low"
    static let memorySwapMax = "memory.swap.max"
    static let cpuWeight = "cpu.weight"
    static let cpuMax = "cpu.max"
    static let pidsMax = "pids.max"
    static let memoryEvents = "memory.events"
    static let ioWeight = "io.weight"
    static let ioBfqWeight = "io.bfq.weight"
    static let controllersFile = "cgroup.controllers"
    static let subtreeControlFile = "cgroup.subtree_control"

    /// The writes `resources` asks for, in order (pure; no file is touched).
    /// - Parameter vmSwappiness: the node's `/proc/sys/vm/swappiness`, which every v2 cgroup
    ///   uses (the kernel reads a memcg's own swappiness on v1 only); nil if unknown.
    /// - Throws: `CgroupError` naming the OCI field for invalid values or `unified` keys, and
    ///   for `memory.swappiness` / `memory.disableOOMKiller` values v2 cannot honour (runc's
    ///   fs2 driver drops both silently; crun refuses them: here a value v2 gives anyway is
    ///   accepted, any other is refused rather than run weaker than asked).
    static func writes(_ r: Resources, vmSwappiness: UInt64? = nil) throws -> [CgroupWrite] {
        var out: [CgroupWrite] = []
        if let m = r.memory {
            out += try memoryWrites(m)
            if let s = try Conversions.swappiness(m), s != vmSwappiness {
                throw CgroupError.unsupported(
                    "\(Conversions.memoryField).swappiness",
                    "\(s) cannot be honoured on cgroup v2, which has no per-cgroup swappiness: every cgroup uses the node's vm.swappiness (\(vmSwappiness.map(String.init) ?? "unknown")); leave the field out or set it to that value"
                )
            }
            if m.disableOOMKiller == true {
                throw CgroupError.unsupported(
                    "\(Conversions.memoryField).disableOOMKiller",
                    "true cannot be honoured on cgroup v2, which has no memory.oom_control: the OOM killer cannot be turned off for a cgroup (process.oomScoreAdj -1000 keeps one process from being chosen)"
                )
            }
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
                    controller: "io", file: ioWeight, value: String(Conversions.ioWeight(fromBlkioWeight: w)),
                    field: "\(Conversions.blockIOField).weight",
                    bfqValue: String(w)))
        }
        for d in try Conversions.weightDevices(r.blockIO) {
            out.append(
                CgroupWrite(
                    controller: "io", file: ioWeight,
                    value: "\(d.device) \(Conversions.ioWeight(fromBlkioWeight: d.weight))", field: d.field,
                    bfqValue: "\(d.device) \(d.weight)"))
        }
        for (key, value) in (r.unified ?? [:]).sorted(by: { $0.key < $1.key }) {
            let field = "linux.resources.unified[\"\(key)\"]"
            let parts = key.split(separator: ".", maxSplits: 1)
            guard parts.count == 2, !key.contains("/"), !key.hasPrefix(".") else {
                throw CgroupError.invalid(field, "\"\(key)\" is not a cgroup v2 file name such as \"memory.high\"")
            }
            let controller = parts[0] == "cgroup" ? "" : String(parts[0])
            out.append(CgroupWrite(controller: controller, file: key, value: value, field: field))
        }
        return out
    }

    static func memoryWrites(_ m: Resources.Memory) throws -> [CgroupWrite] {
        let field = Conversions.memoryField
        var out: [CgroupWrite] = []
        let limit = m.limit == 0 ? nil : m.limit
        if let swap = try Conversions.swapMax(limit: limit, swap: m.swap) {
            out.append(
                CgroupWrite(
                    controller: "memory", file: memorySwapMax, value: Conversions.maxOrNumber(swap),
                    field: "\(field).swap"))
        }
        if let limit {
            out.append(
                CgroupWrite(
                    controller: "memory", file: memoryMax, value: Conversions.maxOrNumber(limit),
                    field: "\(field).limit"))
        }
        if let reservation = m.reservation, reservation != 0 {
            if reservation < -1 {
                throw CgroupError.invalid("\(field).reservation", "\(reservation) is not a byte count or -1")
            }
            out.append(
                CgroupWrite(
                    controller: "memory", file: memoryLow, value: Conversions.maxOrNumber(reservation),
                    field: "\(field).reservation"))
        }
        return out
    }

    static func cpuWrites(_ c: Resources.CPU) throws -> [CgroupWrite] {
        let field = Conversions.cpuField
        var out: [CgroupWrite] = []
        if let shares = c.shares, shares != 0 {
            let weight = Conversions.cpuWeight(fromShares: shares)
            out.append(CgroupWrite(controller: "cpu", file: cpuWeight, value: String(weight), field: "\(field).shares"))
        }
        if let value = try Conversions.cpuMax(quota: c.quota, period: c.period) {
            let which = c.quota.map { $0 != 0 } == true ? "quota" : "period"
            out.append(CgroupWrite(controller: "cpu", file: cpuMax, value: value, field: "\(field).\(which)"))
        }
        out += try Conversions.cpusetWrites(c, field: field)
        return out
    }

    /// The directories whose `cgroup.subtree_control` must enable a controller for `directory`
    /// to have it: the hierarchy root down to the parent of `directory` (pure).
    static func delegationLevels(root: String, directory: String) -> [String] {
        let levels = CgroupPath.levels(from: root, to: directory)
        guard !levels.isEmpty else { return [] }
        return [CgroupPath.join(root)] + levels.dropLast()
    }

    /// Controllers `Cgroup.create` enables on every v2 sandbox cgroup, when offered.
    static let accountingControllers = ["cpu", "io", "memory", "pids"]

    /// Best effort: enables those of `controllers` that every level from `root` to the parent of
    /// `directory` offers. A level that refuses (it holds processes: "no internal processes")
    /// leaves the rest as they are; `apply` reports that when a limit needs the controller.
    static func enableAvailable(_ controllers: [String], root: String, directory: String) {
        for level in delegationLevels(root: root, directory: directory) {
            // A non-root level with processes cannot take domain controllers, and enabling a
            // threaded one there would turn it into a threaded domain: leave it alone.
            if level != CgroupPath.join(root), let procs = try? CgroupFS.procs(in: level), !procs.isEmpty { return }
            guard let available = try? words(CgroupFS.read(level + "/" + controllersFile)),
                let enabled = try? words(CgroupFS.read(level + "/" + subtreeControlFile))
            else { return }
            for c in controllers where available.contains(c) && !enabled.contains(c) {
                try? CgroupFS.write(level + "/" + subtreeControlFile, "+" + c)
            }
        }
    }

    static func words(_ text: String) -> Set<String> {
        Set(text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
    }

    /// Enables each controller in `cgroup.subtree_control` from `root` down to the parent of
    /// `directory`, skipping levels where it is already on.
    /// - Parameter fields: controller -> the OCI field that needs it, for error messages.
    /// - Throws: `CgroupError` naming the OCI field when a level lacks the controller in
    ///   `cgroup.controllers`, or the errno of the write (EBUSY: the level holds processes).
    static func enableControllers(_ fields: [String: String], root: String, directory: String) throws {
        for level in delegationLevels(root: root, directory: directory) {
            let available = Set(
                try CgroupFS.read(level + "/" + controllersFile).split(whereSeparator: { $0 == " " || $0 == "\n" }).map(
                    String.init))
            let enabled = Set(
                try CgroupFS.read(level + "/" + subtreeControlFile).split(whereSeparator: { $0 == " " || $0 == "\n" })
                    .map(String.init))
            for (controller, field) in fields.sorted(by: { $0.key < $1.key }) where !enabled.contains(controller) {
                guard available.contains(controller) else {
                    throw CgroupError(
                        .unsupported, operation: "apply", path: level + "/" + controllersFile, field: field,
                        message:
                            "the \(controller) controller is not available (\(controllersFile): \(available.sorted().joined(separator: " ")))"
                    )
                }
                do {
                    try CgroupFS.write(level + "/" + subtreeControlFile, "+" + controller, field: field)
                } catch let e as CgroupError where e.errno == EBUSY || e.errno == EOPNOTSUPP {
                    // EOPNOTSUPP: the level became a threaded domain (threaded controllers were
                    // enabled while it held processes); same cause, same advice.
                    throw CgroupError(
                        .inUse, operation: "write", path: e.path, errno: e.errno, field: field,
                        message:
                            "cannot enable the \(controller) controller below \(level): it holds processes, and cgroup v2 allows no processes in a cgroup that delegates controllers (\"no internal processes\"); use a linux.cgroupsPath whose parent holds none"
                    )
                }
            }
        }
    }

    /// Applies `resources` to the cgroup's unified directory, enabling controllers first.
    /// - Throws: `CgroupError` naming the OCI field.
    static func apply(_ r: Resources, to cgroup: Cgroup) throws {
        guard let dir = cgroup.directories["unified"] else {
            throw CgroupError(
                .unsupported, operation: "apply", field: "linux.resources", message: "no cgroup v2 directory resolved")
        }
        let root = cgroup.mountPoints["unified"] ?? "/sys/fs/cgroup"
        let vmSwappiness = (try? CgroupFS.read("/proc/sys/vm/swappiness")).flatMap { UInt64(CgroupFS.trimmed($0)) }
        let writes = try writes(r, vmSwappiness: vmSwappiness)
        var fields: [String: String] = [:]
        for w in writes where !w.controller.isEmpty && fields[w.controller] == nil { fields[w.controller] = w.field }
        try enableControllers(fields, root: root, directory: dir)
        for var w in writes {
            // BFQ takes the v1 weight range unconverted, as runc writes it (io.bfq.weight: 1...1000).
            if w.file == ioWeight, let raw = w.bfqValue, CgroupFS.exists(dir + "/" + ioBfqWeight) {
                w.file = ioBfqWeight
                w.value = raw
            }
            if w.file == ioWeight, w.bfqValue != nil, !CgroupFS.exists(dir + "/" + ioWeight) {
                throw CgroupError.unsupported(
                    w.field,
                    "neither io.bfq.weight nor io.weight exists: no proportional I/O control (BFQ or blk-iocost) is available for this cgroup"
                )
            }
            try Conversions.writeWeight(dir + "/" + w.file, w)
        }
    }
}
