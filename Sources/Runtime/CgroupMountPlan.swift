import LinuxKernel

/// What a `cgroup` (or `cgroup2`) entry of `mounts` puts under its destination, as runc's
/// rootfs_linux.go `mountCgroupV1`/`mountCgroupV2` do it: on a v1 or hybrid host a tmpfs with
/// one directory per hierarchy (named after the host's mount point, `cpu,cpuacct` with the
/// symbolic links `cpu` and `cpuacct` to it), on a v2 host the one hierarchy itself.
///
/// With a cgroup namespace of its own the container gets fresh cgroup mounts, whose root is
/// the namespace's (its own cgroup). Without one a fresh mount would show the host's whole
/// tree (and in a user namespace the kernel refuses it), so each hierarchy is the bind mount
/// of the container's own cgroup directory instead: runc's way on v1, and here on v2 too
/// (runc mounts v2 afresh there, the host's tree; see README).
struct CgroupMountPlan: Equatable {
    struct Hierarchy: Equatable {
        /// The directory under the destination (`memory`, `cpu,cpuacct`, `systemd`, `unified`);
        /// empty on a v2 host, where the hierarchy is the destination itself.
        var name: String
        /// `cgroup` or `cgroup2`.
        var fstype: String
        /// The mount data of a fresh v1 mount: its controllers (`cpu,cpuacct`, `none,name=systemd`).
        var data: String?
        /// The container's cgroup directory in the host's (the init's) mount table; nil when
        /// the mount table shows the hierarchy from a root outside the process's cgroup (as
        /// inside a cgroup namespace, `/..`): then only a fresh mount can show it.
        var directory: String?
    }

    var hierarchies: [Hierarchy]
    /// Links to make under the destination for a co-mounted hierarchy: name -> target.
    var links: [(String, String)]
    /// Whether the host is v2 only: no tmpfs, the hierarchy at the destination.
    var unified: Bool

    static func == (a: Self, b: Self) -> Bool {
        a.hierarchies == b.hierarchies && a.unified == b.unified
            && a.links.map { [$0.0, $0.1] } == b.links.map { [$0.0, $0.1] }
    }

    /// The plan for a process whose cgroups `/proc/self/cgroup` lists, given its mount table.
    /// Hierarchies the mount table does not show are left out (runc's `getCgroupMounts`).
    static func make(procSelfCgroup: String, mounts: [MountInfo]) -> CgroupMountPlan {
        // In the mount table's order, as runc walks it.
        var hierarchies: [(index: Int, hierarchy: Hierarchy)] = []
        var links: [(String, String)] = []
        let lines = procSelfCgroup.split(separator: "\n").compactMap { line -> (controllers: String, path: String)? in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            return parts.count == 3 ? (String(parts[1]), String(parts[2])) : nil
        }
        let unifiedHost =
            lines.count == 1 && lines[0].controllers.isEmpty
            && mounts.contains { $0.fstype == "cgroup2" && $0.mountPoint == "/sys/fs/cgroup" }
        for (controllers, path) in lines {
            let wanted = controllers.split(separator: ",").map(String.init)
            let candidates = mounts.filter { m in
                if controllers.isEmpty { return m.fstype == "cgroup2" }
                return m.fstype == "cgroup" && wanted.allSatisfy { m.superOptions.contains($0) }
            }
            // The host's own mount (under /sys/fs/cgroup) when there are several.
            guard
                let mount = candidates.first(where: {
                    $0.mountPoint.hasPrefix("/sys/fs/cgroup") && contains($0.root, path)
                })
                    ?? candidates.first(where: { contains($0.root, path) }) ?? candidates.first
            else { continue }
            var directory: String?
            if contains(mount.root, path) {
                let relative = mount.root == "/" ? path : String(path.dropFirst(mount.root.count))
                directory = cleanPath(mount.mountPoint + "/" + relative)
            }
            let index = mounts.firstIndex(of: mount) ?? 0
            if unifiedHost {
                hierarchies.append((index, Hierarchy(name: "", fstype: "cgroup2", data: nil, directory: directory)))
                continue
            }
            let base = mount.mountPoint.split(separator: "/").last.map(String.init) ?? controllers
            let name = controllers.isEmpty ? "unified" : base
            let data =
                controllers.isEmpty ? nil : (controllers.hasPrefix("name=") ? "none,\(controllers)" : controllers)
            hierarchies.append(
                (
                    index,
                    Hierarchy(
                        name: name, fstype: controllers.isEmpty ? "cgroup2" : "cgroup", data: data, directory: directory
                    )
                ))
        }
        let ordered = hierarchies.sorted { $0.index < $1.index }.map(\.hierarchy)
        for name in ordered.map(\.name) where name.contains(",") {
            for c in name.split(separator: ",") { links.append((String(c), name)) }
        }
        return CgroupMountPlan(hierarchies: ordered, links: links, unified: unifiedHost)
    }

    /// Whether cgroup `path` lies at or below a mount's `root`.
    static func contains(_ root: String, _ path: String) -> Bool {
        root == "/" || path == root || path.hasPrefix(root + "/")
    }
}
