import CSafeSpace
import Glibc
import LinuxKernel
import OCI

/// Builds the container's file system view inside its new mount namespace, in runc's order
/// (libcontainer/rootfs_linux.go): propagation, bind the root, mounts, /dev, then pivot_root.
struct RootfsSetup {
    let config: InitConfig
    var spec: Spec { config.spec }
    var rootfs: String { config.rootfs }
    var inUserNamespace: Bool { config.newNamespaces.contains("user") }
    /// An idmapped tree of the rootfs made by the parent (IDMappedMount.swift), or nil.
    var rootfsTreeFd: Int32? = nil

    /// runtime-spec config-linux.md#default-devices
    static let defaultDevices: [(name: String, major: UInt32, minor: UInt32)] = [
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    ]

    /// Everything up to (not including) pivot_root.
    func prepare() throws {
        // The host must not see our mounts: make every mount a slave (or what rootfsPropagation
        // says) before the first mount.
        try mount(source: nil, target: "/", type: nil, flags: UInt(MS_SLAVE | MS_REC))
        // pivot_root(2) needs the new root to be a mount point.
        if let tree = rootfsTreeFd {
            // User namespace: the idmapped tree replaces the self bind (its files keep their
            // owners as seen from inside: host root's are root's).
            try sys("move_mount", path: rootfs) { ss_move_mount(tree, rootfs) }
            close(tree)
            // The tree was cloned (open_tree) in the host's namespace, before the MS_SLAVE above:
            // a clone of a shared mount joins its peer group, and on a systemd host every mount
            // is shared. Left so, every mount below (proc, /dev, the writable paths) would
            // propagate to the host and to other sandboxes on the same rootfs, and pivot_root
            // would refuse the shared root (EINVAL).
            try mount(source: nil, target: rootfs, type: nil, flags: UInt(MS_SLAVE | MS_REC))
        } else {
            try mount(source: rootfs, target: rootfs, type: nil, flags: UInt(MS_BIND | MS_REC))
        }
        for (i, m) in (spec.mounts ?? []).enumerated() {
            try mountEntry(m, field: "mounts[\(i)]")
        }
        try createDevices()
    }

    private func mountEntry(_ m: Mount, field: String) throws {
        let opts = MountOptions(m.options ?? [])
        let type = m.type ?? (opts.isBind ? "bind" : "none")
        let dest = try securePath(root: rootfs, cleanPath(m.destination))
        let isBind = type == "bind" || opts.isBind
        var source = m.source ?? type
        if isBind && !source.hasPrefix("/") { source = config.bundle + "/" + source }
        try makeTarget(dest, likeSource: isBind ? source : nil, field: field)
        do {
            if isBind {
                try mount(source: source, target: dest, type: nil, flags: UInt(MS_BIND) | (opts.flags & UInt(MS_REC)))
                let extra = opts.flags & ~UInt(MS_BIND | MS_REC | MS_REMOUNT)
                if extra != 0 { try remount(dest, adding: extra) }
            } else if type == "cgroup" || type == "cgroup2" {
                try mountCgroups(at: dest, flags: opts.flags)
            } else {
                let data = opts.data.isEmpty ? nil : opts.data.joined(separator: ",")
                try mount(source: source, target: dest, type: type, flags: opts.flags, data: data)
            }
            for p in opts.propagation {
                try mount(source: nil, target: dest, type: nil, flags: p)
            }
            if opts.hasRecursiveAttributes {
                // `rro` and friends: the whole tree below dest, submounts of a bind source
                // included (mount(2) flags only reach the top mount).
                try mountSetattrRecursive(
                    dest, set: opts.recursiveSet, clear: opts.recursiveClear, field: field + ".options",
                    options: opts.recursiveNames)
            }
        } catch var e as SysError where e.code == .syscall {
            // A kernel without the recursive attributes (`.unsupported`) keeps `<field>.options`.
            e.field = field
            throw e
        }
    }

    /// Bind remount adding `flags`, keeping the flags the kernel locks (in a user namespace
    /// MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY of the source cannot be cleared).
    func remount(_ path: String, adding flags: UInt) throws {
        var vfs = statvfs()
        let locked = statvfs(path, &vfs) == 0 ? lockedFlags(vfs.f_flag) : 0
        try mount(source: nil, target: path, type: nil, flags: UInt(MS_BIND | MS_REMOUNT) | flags | locked)
    }

    private func makeTarget(_ dest: String, likeSource source: String?, field: String) throws {
        if Files.exists(dest) { return }
        var isDir = true
        if let source {
            var st = stat()
            if stat(source, &st) == 0 && (st.st_mode & S_IFMT) != S_IFDIR { isDir = false }
        }
        let parent = String(dest[..<(dest.lastIndex(of: "/") ?? dest.endIndex)])
        do {
            try Files.makeDirectories(parent)
            if isDir {
                try sys("mkdir", path: dest) { mkdir(dest, 0o755) }
            } else {
                let fd = try sys("create", path: dest) { ss_open(dest, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644) }
                close(fd)
            }
        } catch var e as SysError {
            e.field = field + ".destination"
            throw e
        }
    }

    /// A `cgroup`/`cgroup2` entry of `mounts` (`CgroupMountPlan`): fresh cgroup mounts with a
    /// cgroup namespace of the container's own, else bind mounts of the container's own cgroup
    /// directories, so a container never sees the host's tree and a user namespace without a
    /// cgroup namespace (where the kernel refuses a fresh mount) gets its cgroups all the same.
    /// `ro` and the other flags of the entry hold for each hierarchy.
    private func mountCgroups(at dest: String, flags: UInt) throws {
        let mountFlags = flags | UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC)
        let plan = CgroupMountPlan.make(
            procSelfCgroup: (try? Files.readString("/proc/self/cgroup")) ?? "", mounts: (try? MountInfo.read()) ?? [])
        let fresh = config.newNamespaces.contains("cgroup")
        func mountHierarchy(_ h: CgroupMountPlan.Hierarchy, at target: String) throws {
            if fresh {
                try mount(
                    source: h.fstype == "cgroup2" ? "cgroup2" : "cgroup", target: target, type: h.fstype,
                    flags: mountFlags, data: h.data)
            } else {
                guard let directory = h.directory else {
                    throw RuntimeError(
                        .unsupported, field: "mounts[\(dest)]",
                        "the container's \(h.name.isEmpty ? "cgroup" : h.name) cgroup is not visible in the runtime's mount table; add a cgroup namespace (linux.namespaces)"
                    )
                }
                try mount(source: directory, target: target, type: nil, flags: UInt(MS_BIND | MS_REC))
                try remount(target, adding: mountFlags)
            }
        }
        if plan.unified {
            if let h = plan.hierarchies.first { try mountHierarchy(h, at: dest) }
            return
        }
        try mount(
            source: "tmpfs", target: dest, type: "tmpfs", flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC),
            data: "mode=755")
        for h in plan.hierarchies {
            let dir = dest + "/" + h.name
            try Files.makeDirectories(dir)
            try mountHierarchy(h, at: dir)
        }
        for (name, target) in plan.links where !Files.exists(dest + "/" + name) {
            try sys("symlink", path: dest + "/" + name) { symlink(target, dest + "/" + name) }
        }
        if flags & UInt(MS_RDONLY) != 0 {
            try remount(dest, adding: UInt(MS_RDONLY))
        }
    }

    /// config-linux.md#default-devices and linux.devices; bind mounts of the host's nodes in
    /// a user namespace, where mknod(2) is not allowed.
    private func createDevices() throws {
        let dev = try securePath(root: rootfs, "/dev")
        try Files.makeDirectories(dev)
        var devices: [(Device, String)] = Self.defaultDevices.map {
            (
                Device(
                    type: "c", path: "/dev/" + $0.name, major: Int64($0.major), minor: Int64($0.minor), fileMode: 0o666,
                    uid: 0, gid: 0), "default device"
            )
        }
        if spec.process?.terminal == true {
            // /dev/console is bound to the pty later.
        }
        for (i, d) in (spec.linux?.devices ?? []).enumerated() { devices.append((d, "linux.devices[\(i)]")) }
        for (d, field) in devices {
            let target = try securePath(root: rootfs, d.path)
            let parent = String(target[..<(target.lastIndex(of: "/") ?? target.endIndex)])
            try Files.makeDirectories(parent)
            if Files.exists(target) { _ = unlink(target) }
            do {
                if inUserNamespace {
                    let fd = try sys("create", path: target) { ss_open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644) }
                    close(fd)
                    try mount(source: d.path, target: target, type: nil, flags: UInt(MS_BIND))
                } else {
                    let kind: mode_t = d.type == "b" ? S_IFBLK : (d.type == "p" ? S_IFIFO : S_IFCHR)
                    let mode = kind | mode_t(d.fileMode ?? 0o666) & 0o7777
                    let devno = ss_makedev(UInt32(d.major ?? 0), UInt32(d.minor ?? 0))
                    try sys("mknod", path: d.path) { mknod(target, mode, devno) }
                    try sys("chmod", path: d.path) { chmod(target, mode_t(d.fileMode ?? 0o666) & 0o7777) }
                    try sys("chown", path: d.path) { chown(target, d.uid ?? 0, d.gid ?? 0) }
                }
            } catch var e as SysError {
                e.field = field
                throw e
            }
        }
        let links = [
            ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ]
        for (target, name) in links where !Files.exists(dev + "/" + name) {
            try sys("symlink", path: "/dev/" + name) { symlink(target, dev + "/" + name) }
        }
        if Files.exists(dev + "/pts/ptmx") && !Files.exists(dev + "/ptmx") {
            try sys("symlink", path: "/dev/ptmx") { symlink("pts/ptmx", dev + "/ptmx") }
        }
    }

    /// pivot_root(".", ".") then detach the old root (runc's pivotRoot): no path to the host's
    /// root remains. With `--no-pivot`, MS_MOVE and chroot(2) instead, only when asked.
    func pivotRoot() throws {
        if config.noPivot {
            try sys("chdir", path: rootfs) { chdir(rootfs) }
            try mount(source: rootfs, target: "/", type: nil, flags: UInt(MS_MOVE))
            try sys("chroot", path: ".") { chroot(".") }
            try sys("chdir", path: "/") { chdir("/") }
            return
        }
        let oldRoot = try sys("open", path: "/") { ss_open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC, 0) }
        defer { close(oldRoot) }
        let newRoot = try sys("open", path: rootfs) { ss_open(rootfs, O_DIRECTORY | O_RDONLY | O_CLOEXEC, 0) }
        defer { close(newRoot) }
        try sys("fchdir", path: rootfs) { fchdir(newRoot) }
        try sys("pivot_root", path: rootfs) { ss_pivot_root(".", ".") }
        try sys("fchdir", path: "old root") { fchdir(oldRoot) }
        try mount(source: nil, target: ".", type: nil, flags: UInt(MS_SLAVE | MS_REC))
        try sys("umount2", path: "old root") { umount2(".", Int32(MNT_DETACH)) }
        try sys("chdir", path: "/") { chdir("/") }
    }

    /// After pivot_root: propagation, read-only root, masked and read-only paths.
    func finish() throws {
        if let prop = spec.linux?.rootfsPropagation, let flags = MountOptions.propagation(named: prop) {
            do { try mount(source: nil, target: "/", type: nil, flags: flags) } catch var e as SysError {
                e.field = "linux.rootfsPropagation"
                throw e
            }
        }
        for path in spec.linux?.readonlyPaths ?? [] {
            try readonlyPath(path)
        }
        for path in spec.linux?.maskedPaths ?? [] {
            try maskPath(path)
        }
        if spec.root?.readonly == true {
            do { try remount("/", adding: UInt(MS_RDONLY)) } catch var e as SysError {
                e.field = "root.readonly"
                throw e
            }
        }
    }

    /// config-linux.md#readonly-paths
    private func readonlyPath(_ path: String) throws {
        guard Files.exists(path) else { return }
        do {
            try mount(source: path, target: path, type: nil, flags: UInt(MS_BIND | MS_REC))
            try remount(path, adding: UInt(MS_RDONLY | MS_REC))
        } catch var e as SysError {
            e.field = "linux.readonlyPaths"
            throw e
        }
    }

    /// config-linux.md#masked-paths: /dev/null over files, an empty read-only tmpfs over directories.
    private func maskPath(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { return }
        do {
            if (st.st_mode & S_IFMT) == S_IFDIR {
                try mount(source: "tmpfs", target: path, type: "tmpfs", flags: UInt(MS_RDONLY), data: "size=0k")
            } else {
                try mount(source: "/dev/null", target: path, type: nil, flags: UInt(MS_BIND))
            }
        } catch var e as SysError {
            e.field = "linux.maskedPaths"
            throw e
        }
    }
}

/// The mount flags a bind remount must keep (statvfs f_flag → MS_*).
func lockedFlags(_ f: UInt) -> UInt {
    var out: UInt = 0
    if f & UInt(Glibc.ST_RDONLY) != 0 { out |= UInt(MS_RDONLY) }
    if f & UInt(Glibc.ST_NOSUID) != 0 { out |= UInt(MS_NOSUID) }
    if f & UInt(ST_NODEV) != 0 { out |= UInt(MS_NODEV) }
    if f & UInt(ST_NOEXEC) != 0 { out |= UInt(MS_NOEXEC) }
    if f & UInt(ST_NOATIME) != 0 { out |= UInt(MS_NOATIME) }
    if f & UInt(ST_NODIRATIME) != 0 { out |= UInt(MS_NODIRATIME) }
    if f & UInt(ST_RELATIME) != 0 { out |= UInt(MS_RELATIME) }
    return out
}
