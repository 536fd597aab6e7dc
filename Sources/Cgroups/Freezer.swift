import Glibc

/// Freezing every process of the cgroup (runc's pause/resume): v1 `freezer.state`
/// (cgroup-v1/freezer-subsystem.rst), v2 `cgroup.freeze` and the `frozen` key of
/// `cgroup.events` (cgroup-v2.rst "Core Interface Files").
extension Cgroup {
    static let freezerState = "freezer.state"
    static let cgroupFreeze = "cgroup.freeze"
    static let cgroupEvents = "cgroup.events"

    /// The directory that holds the freezer files, or nil when the host has no freezer.
    var freezerDirectory: (dir: String, v2: Bool)? {
        if mode == .unified, let dir = directories["unified"] ?? directories.values.first { return (dir, true) }
        if let dir = directories["freezer"] { return (dir, false) }
        return nil
    }

    /// Freezes (`true`) or thaws every process and waits (up to 5 s) until the kernel reports
    /// the new state. - Throws: `CgroupError` when there is no freezer or it does not settle.
    public func setFrozen(_ frozen: Bool) throws {
        guard let (dir, v2) = freezerDirectory else {
            throw CgroupError(
                .unsupported, operation: "freeze", message: "no freezer controller is mounted on this host")
        }
        if v2 {
            try CgroupFS.write(dir + "/" + Self.cgroupFreeze, frozen ? "1" : "0")
        } else {
            try CgroupFS.write(dir + "/" + Self.freezerState, frozen ? "FROZEN" : "THAWED")
        }
        for _ in 0..<500 {
            if try isFrozen() == frozen { return }
            usleep(10_000)
        }
        throw CgroupError(
            .timedOut, operation: frozen ? "freeze" : "thaw", path: dir,
            message: "the cgroup did not reach the \(frozen ? "frozen" : "thawed") state in 5 s")
    }

    /// Whether the cgroup is frozen now (v1 `FROZEN`; `FREEZING` is not yet).
    public func isFrozen() throws -> Bool {
        guard let (dir, v2) = freezerDirectory else { return false }
        if v2 {
            let events = try CgroupFS.read(dir + "/" + Self.cgroupEvents)
            return events.split(separator: "\n").contains { $0 == "frozen 1" }
        }
        return CgroupFS.trimmed(try CgroupFS.read(dir + "/" + Self.freezerState)) == "FROZEN"
    }
}
