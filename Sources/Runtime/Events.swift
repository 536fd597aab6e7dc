import Cgroups
import Glibc
import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One line of `events`: runc's `{"type":"stats"|"oom","id":…,"data":…}`.
public struct RuntimeEvent: Codable, Sendable, Equatable {
    public var type: String
    public var id: String
    public var data: CgroupStats?

    public init(type: String, id: String, data: CgroupStats? = nil) {
        self.type = type
        self.id = id
        self.data = data
    }
}

extension ContainerRuntime {
    /// The container's resource usage from its cgroup (runc's `events --stats` data).
    /// - Throws: `RuntimeError` for an unknown container, `CgroupError` when its cgroup is gone.
    /// `memory.event_count.oom_kill` counts the container's own kills (since create).
    public func stats(id: String) throws -> CgroupStats {
        try Self.ownStats(store.load(id).cgroup)
    }

    static func ownStats(_ cgroup: Cgroup) throws -> CgroupStats {
        var s = try cgroup.stats()
        if s.memory.eventCount?.oomKill != nil { s.memory.eventCount?.oomKill = cgroup.oomKillsSinceCreate() }
        return s
    }

    /// OOM kills in the container's cgroup since it was created (the change of memory.events
    /// `oom_kill` on v2, memory.oom_control `oom_kill` on v1, against the count at create);
    /// nil when the kernel gives no counter. Read it before `delete`, which removes the cgroup.
    public func oomKills(id: String) throws -> UInt64? {
        try store.load(id).cgroup.oomKillsSinceCreate()
    }

    /// Whether the OOM killer killed a process of the container (see `oomKills`).
    public func oomKilled(id: String) throws -> Bool {
        (try oomKills(id: id) ?? 0) > 0
    }

    /// runc's `events`: `emit` gets a `stats` event every `interval` seconds and an `oom` event
    /// each time the OOM-kill counter rises (checked every 100 ms), until the container stops
    /// or is deleted. With `statsOnce`, one `stats` event and return.
    /// - Throws: `RuntimeError` for an unknown container, `CgroupError` from the first read.
    public func events(id: String, interval: Double, statsOnce: Bool, emit: (RuntimeEvent) throws -> Void) throws {
        let state = try store.load(id)
        if statsOnce {
            try emit(RuntimeEvent(type: "stats", id: id, data: try Self.ownStats(state.cgroup)))
            return
        }
        var lastOOM = state.cgroup.oomKillCount() ?? 0
        var nextStats = monotonicSeconds()
        while true {
            let alive = Files.exists(store.statePath(id)) && store.status(of: state) != .stopped
            if let count = state.cgroup.oomKillCount(), count > lastOOM {
                for _ in lastOOM..<count { try emit(RuntimeEvent(type: "oom", id: id)) }
                lastOOM = count
            }
            guard alive else { return }
            if monotonicSeconds() >= nextStats {
                if let stats = try? Self.ownStats(state.cgroup) {
                    try emit(RuntimeEvent(type: "stats", id: id, data: stats))
                }
                nextStats += max(interval, 0.1)
            }
            usleep(100_000)
        }
    }
}
