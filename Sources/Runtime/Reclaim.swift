import Cgroups
import Glibc
import LinuxKernel

// Crash recovery: a process that holds node state can be killed at any moment (SIGKILL, OOM,
// a reboot of the daemon), and nothing it would have released on its way out gets released.
// One rule makes every such resource recoverable: each is recorded, before it is taken, with
// its owner (`ProcessIdentity`: pid + start time, so a reused pid is not the owner); a resource
// whose owner is dead is reclaimed by the next operation that needs it, and SandboxHosting's
// `GarbageCollector` (`safespace gc`, and the daemon at start) sweeps the rest.
//
// What the runtime itself records:
//
// | resource | record | owner | reclaimed by |
// |---|---|---|---|
// | half-made container | `<root>/<id>/creating.json` | the `create` process | `create` of the id, `delete`, gc |
// | host id range | lease `uid-ranges/<n>` of the `LeaseStore` (`/run/safespace-leases`) | holder pid, then the container (`state.json`) | `allocate`, gc |
//
// The node's other records (sandbox leases, CPU leases, volumes) are SandboxHosting's
// (SandboxLeases.swift).

extension Cgroup {
    /// This cgroup with `created` set to the levels (parents first) that do not exist yet: the
    /// record written before `create()`, so a process killed during its mkdirs leaves nothing
    /// `destroy` would not remove. A level made by someone else meanwhile is a shared one;
    /// `destroy` removes only what is empty.
    func planned() -> Cgroup {
        var copy = self
        var levels: [String] = []
        for (key, dir) in directories.sorted(by: { $0.key < $1.key }) {
            let top = mountPoints[key] ?? ""
            var missing: [String] = []
            var level = dir
            while level.count > top.count, level.hasPrefix(top), !Files.exists(level) {
                missing.append(level)
                guard let slash = level.lastIndex(of: "/"), slash > level.startIndex else { break }
                level = String(level[..<slash])
            }
            levels += missing.reversed().filter { !levels.contains($0) }
        }
        copy.created = levels
        return copy
    }
}
