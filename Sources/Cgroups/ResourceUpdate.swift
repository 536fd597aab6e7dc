import OCI

/// `update`: a partial `linux.resources` laid over the container's current one (runc's
/// `update --resources`). A field counts as given when it is present and, for the fields
/// where 0 means unset (see `Conversions`), nonzero; everything else keeps its value.
public enum ResourceUpdate {
    /// What to write to the cgroup and the container's new `linux.resources`.
    ///
    /// Memory: when only `limit` is given, the swap allowance stays what it was. A container
    /// without swap (OCI swap == limit) keeps none (swap follows the limit); an unlimited
    /// swap stays unlimited; a fixed memory+swap total below the new limit is an error.
    /// `devices` cannot be changed by update (they are fixed at create, as in runc).
    /// - Returns: `apply`, the partial resources to write (with the swap it implies), and
    ///   `merged`, the full resources to record.
    /// - Throws: `CgroupError` naming the OCI field.
    public static func merge(_ update: Resources, into current: Resources?) throws -> (
        apply: Resources, merged: Resources
    ) {
        var apply = update
        var merged = current ?? Resources()
        if let d = update.devices, d != (current?.devices ?? []) {
            throw CgroupError.unsupported(
                "linux.resources.devices", "device rules cannot be changed by update; recreate the container")
        }
        apply.devices = nil

        if var m = update.memory {
            var old = merged.memory ?? Resources.Memory()
            let newLimit = given(m.limit)
            let oldLimit = given(old.limit)
            if let limit = newLimit, given(m.swap) == nil, let oldSwap = given(old.swap) {
                if oldSwap == -1 {
                    m.swap = -1
                } else if oldSwap == oldLimit || limit == -1 {
                    m.swap = limit  // no swap before: none after
                } else if oldSwap < limit {
                    throw CgroupError.invalid(
                        "\(Conversions.memoryField).swap",
                        "the container's memory+swap limit (\(oldSwap)) is below the new memory limit (\(limit)); give a new swap too"
                    )
                } else {
                    m.swap = oldSwap
                }
            }
            old.limit = newLimit ?? old.limit
            old.swap = given(m.swap) ?? old.swap
            old.reservation = given(m.reservation) ?? old.reservation
            old.swappiness = m.swappiness ?? old.swappiness
            old.disableOOMKiller = m.disableOOMKiller ?? old.disableOOMKiller
            merged.memory = old
            apply.memory = m
        }
        if var c = update.cpu {
            var old = merged.cpu ?? Resources.CPU()
            // A period alone is written with the container's quota, as runc's update re-applies
            // both: v2's cpu.max holds the pair ("$QUOTA $PERIOD"; a lone period would lift the
            // quota), and v1 may refuse the period until the quota follows.
            if c.period.map({ $0 != 0 }) == true, given(c.quota) == nil, let quota = given(old.quota) {
                c.quota = quota
                apply.cpu = c
            }
            old.shares = c.shares.flatMap { $0 == 0 ? nil : $0 } ?? old.shares
            old.quota = given(c.quota) ?? old.quota
            old.period = c.period.flatMap { $0 == 0 ? nil : $0 } ?? old.period
            old.cpus = c.cpus.flatMap { $0.isEmpty ? nil : $0 } ?? old.cpus
            old.mems = c.mems.flatMap { $0.isEmpty ? nil : $0 } ?? old.mems
            old.realtimePeriod = c.realtimePeriod.flatMap { $0 == 0 ? nil : $0 } ?? old.realtimePeriod
            old.realtimeRuntime = given(c.realtimeRuntime) ?? old.realtimeRuntime
            merged.cpu = old
        }
        if let p = update.pids { merged.pids = p }
        if let given = update.blockIO, let w = given.weight, w != 0 {
            var b = merged.blockIO ?? given
            b.weight = w
            merged.blockIO = b
        }
        if let devices = update.blockIO?.weightDevice, !devices.isEmpty {
            // Per device: a new weight replaces that device's, others stay.
            var b = merged.blockIO ?? Resources.BlockIO()
            var all = b.weightDevice ?? []
            for d in devices {
                all.removeAll { $0.major == d.major && $0.minor == d.minor }
                all.append(d)
            }
            b.weightDevice = all
            merged.blockIO = b
        }
        if let u = update.unified, !u.isEmpty {
            merged.unified = (merged.unified ?? [:]).merging(u) { $1 }
        }
        return (apply, merged)
    }

    static func given(_ v: Int64?) -> Int64? { v == 0 ? nil : v }
}
