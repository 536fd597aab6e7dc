import Glibc
import OCI

/// `linux.resources.cpu.realtimePeriod` and `realtimeRuntime`: the realtime bandwidth of a
/// cgroup v1 `cpu` hierarchy (kernel Documentation/scheduler/sched-rt-group.rst; files exist
/// only with CONFIG_RT_GROUP_SCHED). cgroup v2 has no realtime bandwidth files.
///
/// | OCI field | file | value |
/// |---|---|---|
/// | cpu.realtimePeriod | cpu.rt_period_us | µs, 0 = not given |
/// | cpu.realtimeRuntime | cpu.rt_runtime_us | µs per period, -1 = no limit, 0 = not given |
enum RealtimeCPU {
    static let periodFile = "cpu.rt_period_us"
    static let runtimeFile = "cpu.rt_runtime_us"
    static var periodField: String { "\(Conversions.cpuField).realtimePeriod" }
    static var runtimeField: String { "\(Conversions.cpuField).realtimeRuntime" }

    /// The given values (0 counts as not given, as in runc).
    /// - Throws: `CgroupError` (`.invalidValue`) for a runtime below -1.
    static func given(_ c: Resources.CPU?) throws -> (period: UInt64?, runtime: Int64?) {
        let period = c?.realtimePeriod.flatMap { $0 == 0 ? nil : $0 }
        let runtime = c?.realtimeRuntime.flatMap { $0 == 0 ? nil : $0 }
        if let runtime, runtime < -1 {
            throw CgroupError.invalid(runtimeField, "\(runtime) is not a number of µs or -1")
        }
        return (period, runtime)
    }

    /// cgroup v2: a realtime field is refused by name.
    /// - Throws: `CgroupError` (`.unsupported`) naming the field.
    static func refuseOnV2(_ r: Resources) throws {
        let (period, runtime) = try given(r.cpu)
        if period == nil && runtime == nil { return }
        throw CgroupError.unsupported(
            runtime != nil ? runtimeField : periodField,
            "cgroup v2 has no realtime CPU bandwidth (cpu.rt_runtime_us, cpu.rt_period_us are cgroup v1 files); remove the field"
        )
    }

    /// Writes the realtime files of the cgroup's v1 `cpu` directory, in runc's order (fs/cpu.go
    /// `SetRtSched`): the period first; if the kernel refuses it (EINVAL: the runtime in force
    /// does not fit the new period) and a runtime is given too, the runtime, then the period.
    /// - Throws: `CgroupError` naming the field: no `cpu` hierarchy or no realtime files
    ///   (`.unsupported`), or the errno of a write the kernel rejected (a runtime the parent
    ///   cgroup's realtime budget cannot cover is EINVAL).
    static func applyV1(_ r: Resources, cpuDirectory: String?) throws {
        let (period, runtime) = try given(r.cpu)
        if period == nil && runtime == nil { return }
        let field = runtime != nil ? runtimeField : periodField
        guard let dir = cpuDirectory else {
            throw CgroupError.unsupported(field, "the cpu cgroup controller is not mounted on this host")
        }
        guard CgroupFS.exists(dir + "/" + runtimeFile) else {
            throw CgroupError.unsupported(
                field, "\(runtimeFile) is missing: the kernel has no realtime group scheduling (CONFIG_RT_GROUP_SCHED)")
        }
        var periodLater = false
        if let period {
            do {
                try CgroupFS.write(dir + "/" + periodFile, String(period), field: periodField)
            } catch let error as CgroupError where error.errno == EINVAL && runtime != nil {
                periodLater = true
            }
        }
        if let runtime {
            try CgroupFS.write(dir + "/" + runtimeFile, String(runtime), field: runtimeField)
            if periodLater, let period {
                try CgroupFS.write(dir + "/" + periodFile, String(period), field: periodField)
            }
        }
    }
}
