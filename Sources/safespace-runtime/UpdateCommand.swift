import ArgumentParser
import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runc's `update`: change a running container's resource limits. Only what is given changes.
struct Update: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Update a container's resource limits (runc update).",
        discussion: "--resources takes OCI linux.resources JSON (\"-\" reads stdin); the flags override it.")
    @OptionGroup var globals: GlobalOptions
    @Option(name: [.short, .customLong("resources")], help: "linux.resources JSON file, or - for stdin.")
    var resources: String?
    // `.unconditional`: the next argument is the value even when it looks like an option,
    // so `--memory-swap -1` and `--cpu-quota -1` work as in runc.
    @Option(name: .customLong("blkio-weight"), parsing: .unconditional, help: "Block I/O weight, 10-1000.")
    var blkioWeight: UInt16?
    @Option(name: .customLong("cpu-period"), parsing: .unconditional, help: "CFS period in µs.") var cpuPeriod: UInt64?
    @Option(name: .customLong("cpu-quota"), parsing: .unconditional, help: "CFS quota in µs (-1: none).") var cpuQuota:
        Int64?
    @Option(name: .customLong("cpu-share"), parsing: .unconditional, help: "CPU shares (relative weight).")
    var cpuShare: UInt64?
    @Option(
        name: .customLong("cpu-rt-period"), parsing: .unconditional,
        help: "Realtime period in µs (cgroup v1 cpu.rt_period_us).") var cpuRtPeriod: UInt64?
    @Option(
        name: .customLong("cpu-rt-runtime"), parsing: .unconditional,
        help: "Realtime runtime in µs per period (cpu.rt_runtime_us; -1: no limit).") var cpuRtRuntime: Int64?
    @Option(name: .customLong("cpuset-cpus"), help: "CPUs allowed, e.g. 0-3,5.") var cpusetCpus: String?
    @Option(name: .customLong("cpuset-mems"), help: "Memory nodes allowed.") var cpusetMems: String?
    @Option(name: .customLong("memory"), parsing: .unconditional, help: "Memory limit: bytes or with k/m/g (-1: none).")
    var memory: String?
    @Option(name: .customLong("memory-reservation"), parsing: .unconditional, help: "Memory soft limit.")
    var memoryReservation: String?
    @Option(name: .customLong("memory-swap"), parsing: .unconditional, help: "Memory+swap limit (-1: unlimited swap).")
    var memorySwap: String?
    @Option(name: .customLong("pids-limit"), parsing: .unconditional, help: "Maximum number of tasks (-1: none).")
    var pidsLimit: Int64?
    @Argument var id: String

    func run() throws {
        try perform(globals) { rt in
            var r = try baseResources()
            if blkioWeight != nil || cpuPeriod != nil || cpuQuota != nil || cpuShare != nil || cpusetCpus != nil
                || cpusetMems != nil
                || cpuRtPeriod != nil || cpuRtRuntime != nil || memory != nil || memoryReservation != nil
                || memorySwap != nil || pidsLimit != nil
            {
                try applyFlags(&r)
            }
            try rt.update(id: id, resources: r)
        }
    }

    func baseResources() throws -> Resources {
        guard let source = resources else { return Resources() }
        let fd = source == "-" ? STDIN_FILENO : open(source, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ValidationError("--resources: cannot open \(source): \(String(cString: strerror(errno)))")
        }
        defer { if fd != STDIN_FILENO { close(fd) } }
        let bytes: [UInt8]
        do { bytes = try Files.readAll(fd: fd) } catch { throw ValidationError("--resources: cannot read \(source)") }
        do { return try JSONDecoding.decode(Resources.self, from: Data(bytes)) } catch {
            throw ValidationError(
                "--resources: \(source) is not OCI linux.resources JSON: \(describe(decodingError: error))")
        }
    }

    func applyFlags(_ r: inout Resources) throws {
        if memory != nil || memoryReservation != nil || memorySwap != nil {
            var m = r.memory ?? Resources.Memory()
            if let v = memory { m.limit = try Self.bytes(v, flag: "--memory") }
            if let v = memoryReservation { m.reservation = try Self.bytes(v, flag: "--memory-reservation") }
            if let v = memorySwap { m.swap = try Self.bytes(v, flag: "--memory-swap") }
            r.memory = m
        }
        if cpuPeriod != nil || cpuQuota != nil || cpuShare != nil || cpusetCpus != nil || cpusetMems != nil
            || cpuRtPeriod != nil || cpuRtRuntime != nil
        {
            var c = r.cpu ?? Resources.CPU()
            if let v = cpuRtPeriod { c.realtimePeriod = v }
            if let v = cpuRtRuntime { c.realtimeRuntime = v }
            if let v = cpuPeriod { c.period = v }
            if let v = cpuQuota { c.quota = v }
            if let v = cpuShare { c.shares = v }
            if let v = cpusetCpus { c.cpus = v }
            if let v = cpusetMems { c.mems = v }
            r.cpu = c
        }
        if let v = pidsLimit { r.pids = .init(limit: v) }
        if let v = blkioWeight {
            let json = Data("{\"weight\":\(v)}".utf8)
            r.blockIO = try JSONDecoder().decode(Resources.BlockIO.self, from: json)
        }
    }

    /// `123`, `-1`, or a number with k, m, g, t (powers of 1024, with an optional `b`), as
    /// runc's update flags take them.
    static func bytes(_ text: String, flag: String) throws -> Int64 {
        if text == "-1" { return -1 }
        var t = text.lowercased()
        if t.hasSuffix("b") { t.removeLast() }
        var shift: Int64 = 0
        if let last = t.last, let s = ["k": 10, "m": 20, "g": 30, "t": 40][String(last)] {
            shift = Int64(s)
            t.removeLast()
        }
        guard let n = Int64(t), n >= 0, n <= (Int64.max >> shift) else {
            throw ValidationError("\(flag): \"\(text)\" is not a byte count such as 536870912, 512m or 1g")
        }
        return n << shift
    }
}
