import Glibc
import LinuxKernel

/// Resolution of `linux.cgroupsPath` to one directory per hierarchy, from the text of
/// `/proc/self/cgroup` and `/proc/self/mountinfo` (pure, so tests feed it sample text).
enum CgroupPath {
    static let field = "linux.cgroupsPath"

    /// A cgroup or cgroup2 mount, from one line of mountinfo (proc(5)).
    struct Mount: Equatable {
        var root: String
        var mountPoint: String
        var isV2: Bool
        var superOptions: Set<String>
    }

    /// Splits `cgroupsPath` (nil or empty -> `safespace/<id>`) into components.
    ///
    /// `.` and empty components are dropped; `..` is rejected rather than resolved, so a path
    /// can never climb out of the hierarchy or the caller's cgroup.
    /// - Throws: `CgroupError` naming `linux.cgroupsPath` for `..`, the systemd
    ///   `slice:prefix:name` form (no systemd driver yet), a path naming no cgroup, or a bad `id`.
    static func normalize(_ cgroupsPath: String?, id: String) throws -> (absolute: Bool, components: [String]) {
        guard let path = cgroupsPath, !path.isEmpty else {
            if id.isEmpty || id.contains("/") || id == "." || id == ".." {
                throw CgroupError.invalid("container id", "\"\(id)\" cannot name a cgroup")
            }
            return (false, ["safespace", id])
        }
        if !path.hasPrefix("/") && path.split(separator: ":", omittingEmptySubsequences: false).count == 3 {
            throw CgroupError.invalid(
                field,
                "\"\(path)\" is the systemd slice:prefix:name form; SafeSpace has no systemd cgroup driver yet, use a path like \"/safespace/<id>\""
            )
        }
        let components = path.split(separator: "/").map(String.init).filter { $0 != "." }
        if components.contains("..") {
            throw CgroupError.invalid(field, "\"\(path)\" has a \"..\" component")
        }
        if components.isEmpty {
            throw CgroupError.invalid(field, "\"\(path)\" names no cgroup")
        }
        return (path.hasPrefix("/"), components)
    }

    /// Parses `/proc/self/cgroup` into (hierarchy key, path) pairs; the v2 line `0::/x` has key `unified`.
    static func parseProcCgroup(_ text: String) -> [(key: String, path: String)] {
        text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { return nil }
            let key = parts[1].isEmpty ? (parts[0] == "0" ? "unified" : "") : String(parts[1])
            return key.isEmpty ? nil : (key, String(parts[2]))
        }
    }

    /// The cgroup and cgroup2 mounts listed in mountinfo.
    static func parseMountinfo(_ text: String) -> [Mount] {
        MountInfo.parse(text).compactMap { m in
            guard m.fstype == "cgroup" || m.fstype == "cgroup2" else { return nil }
            return Mount(
                root: m.root, mountPoint: m.mountPoint, isV2: m.fstype == "cgroup2", superOptions: m.superOptions)
        }
    }

    /// Joins absolute path pieces with single slashes: `join("/a/", "/b", "c")` is `/a/b/c`.
    static func join(_ pieces: String...) -> String {
        // One piece already in that form (every path a Cgroup records) comes back as it is.
        if pieces.count == 1, let only = pieces.first, isJoined(only) { return only }
        return "/" + pieces.flatMap { $0.split(separator: "/") }.joined(separator: "/")
    }

    /// `path` starts with a slash, and has no empty component and no trailing slash (`/` alone
    /// does not count: `join` returns it too, but through the general path).
    private static func isJoined(_ path: String) -> Bool {
        var previous: UInt8 = 0
        for byte in path.utf8 {
            if byte == UInt8(ascii: "/") && previous == UInt8(ascii: "/") { return false }
            previous = byte
        }
        return path.utf8.first == UInt8(ascii: "/") && previous != UInt8(ascii: "/")
    }

    /// The directories below `mountPoint` down to and including `directory`, parents first.
    static func levels(from mountPoint: String, to directory: String) -> [String] {
        let base = join(mountPoint)
        let dir = join(directory)
        guard dir.hasPrefix(base + "/") else { return [] }
        var current = base
        return dir.dropFirst(base.count + 1).split(separator: "/").map { component in
            current += "/" + component
            return current
        }
    }

    /// The parent directory of an absolute path (`/` for `/`).
    static func parent(_ path: String) -> String {
        var parts = path.split(separator: "/")
        guard !parts.isEmpty else { return "/" }
        parts.removeLast()
        return "/" + parts.joined(separator: "/")
    }

    /// Maps each hierarchy of the caller (from `/proc/self/cgroup`) to its mount under `root`
    /// and the directory the container's cgroup takes in it.
    ///
    /// Absolute paths go under each hierarchy's mount point. Relative paths nest under the
    /// caller's own cgroup on v1 (runc's fs driver); on a unified (v2-only) host they nest under
    /// the caller's *parent* cgroup, as runc's fs2 driver does, because the caller's own cgroup
    /// holds the caller and so cannot delegate controllers (cgroup v2 "no internal processes").
    /// - Throws: `CgroupError` from `normalize`, or when no hierarchy is mounted under `root`.
    static func resolve(
        cgroupsPath: String?, id: String, root: String, mode: CgroupMode, procSelfCgroup: String, mountinfo: String
    ) throws -> Cgroup {
        let (absolute, components) = try normalize(cgroupsPath, id: id)
        let rootDir = join(root)
        let mounts = parseMountinfo(mountinfo).filter {
            $0.mountPoint == rootDir || $0.mountPoint.hasPrefix(rootDir + "/")
        }
        var directories: [String: String] = [:]
        var mountPoints: [String: String] = [:]
        for (key, callerPath) in parseProcCgroup(procSelfCgroup) {
            let mount: Mount?
            if key == "unified" {
                guard mode != .legacy else { continue }
                mount = mounts.first { $0.isV2 && (mode == .hybrid || $0.mountPoint == rootDir) }
            } else {
                guard mode != .unified else { continue }
                let wanted = Set(key.split(separator: ",").map(String.init))
                mount = mounts.first { !$0.isV2 && wanted.isSubset(of: $0.superOptions) }
            }
            guard let mount else { continue }
            var base = mount.mountPoint
            if !absolute {
                var own = callerPath
                if mount.root != "/" && (own == mount.root || own.hasPrefix(mount.root + "/")) {
                    own = String(own.dropFirst(mount.root.count))
                }
                if mode == .unified { own = parent(join(own)) }
                base = join(mount.mountPoint, own)
            }
            directories[key] = join(base, components.joined(separator: "/"))
            mountPoints[key] = mount.mountPoint
        }
        if directories.isEmpty {
            throw CgroupError(
                .unsupported, operation: "resolve", path: rootDir,
                message: "no cgroup hierarchy of this process is mounted under \(rootDir)")
        }
        let path = (absolute ? "/" : "") + components.joined(separator: "/")
        return Cgroup(mode: mode, path: path, directories: directories, mountPoints: mountPoints)
    }
}
