import CSafeSpace
import Glibc
import LinuxKernel
import OCI

/// Idmapped mounts (mount_setattr(2) `MOUNT_ATTR_IDMAP`, Linux 5.12+): the shared read-only
/// rootfs, owned by host root, seen through a user namespace's mapping, so inside a sandbox
/// whose uid 0 is host uid N its files belong to uid 0 again — without copying or chowning
/// the store's files.
///
/// Where the kernel or the filesystem cannot idmap (kernel < 5.12; overlayfs and most network
/// filesystems on this generation of kernels: EINVAL), the rootfs is used as it is: files owned
/// by host ids outside the sandbox's range show as the overflow id 65534 (nobody) inside and
/// keep their mode bits, so world-readable files stay readable and nothing becomes writable.
public enum IDMappedMount {
    /// errnos that mean "this kernel or filesystem cannot idmap", not "you did it wrong".
    static let unsupported: Set<Int32> = [EINVAL, ENOSYS, EOPNOTSUPP, EPERM]

    /// A detached mount (an fd for move_mount(2)) of `path` and the mounts below it, idmapped
    /// with the user namespace `usernsFd`.
    /// - Throws: `SysError` naming open_tree or mount_setattr and errno.
    static func clone(_ path: String, usernsFd: Int32) throws -> Int32 {
        let tree = ss_open_tree_clone(path, 1)
        guard tree >= 0 else { throw SysError("open_tree", path: path) }
        guard ss_mount_setattr_idmap(tree, "", usernsFd, 1) == 0 else {
            let e = errno
            close(tree)
            throw SysError("mount_setattr(MOUNT_ATTR_IDMAP)", path: path, errno: e)
        }
        return tree
    }

    /// The container's root as a detached tree for its init (in the new user namespace) to
    /// move into place: made by the parent, so the init needs no search permission on the
    /// directories above the root (a bundle directory is 0700 host root's). Idmapped with the
    /// init's user namespace unless the root directory already belongs to an id inside the
    /// mapping (an overlay over an idmapped lower), or the kernel or filesystem cannot idmap it
    /// (then `log` gets a warning saying what the sandbox sees instead).
    static func rootfsTree(_ rootfs: String, initPid: Int32, uidMappings: [IDMapping], log: RuntimeLog) throws -> Int32
    {
        var st = stat()
        let shifted =
            stat(rootfs, &st) == 0
            && uidMappings.contains {
                st.st_uid >= $0.hostID && UInt64(st.st_uid) < UInt64($0.hostID) + UInt64($0.size)
            }
        if !shifted {
            let nsPath = "/proc/\(initPid)/ns/user"
            let ns = try sys("open", path: nsPath) { ss_open(nsPath, O_RDONLY | O_CLOEXEC, 0) }
            defer { close(ns) }
            do {
                return try clone(rootfs, usernsFd: ns)
            } catch let e as SysError where e.errno.map(unsupported.contains) == true {
                log.warn(
                    "root.path: \(rootfs) cannot be idmapped (\(e)); the sandbox sees its files as they are on the host: those owned by ids outside its range show as nobody (65534), world-readable ones stay readable"
                )
            }
        }
        let tree = ss_open_tree_clone(rootfs, 1)
        guard tree >= 0 else { throw SysError("open_tree", path: rootfs, field: "root.path") }
        return tree
    }

    /// A user namespace holding `uidMappings`/`gidMappings`, as an fd, for idmapping before a
    /// container exists (the lower layer of a writable root). A short-lived helper — this
    /// binary re-executed as `init` through the same clone stages as a container — owns it
    /// until the fd is open; the namespace lives as long as the fd (and mounts idmapped with it).
    public static func userNamespace(uidMappings: [IDMapping], gidMappings: [IDMapping]) throws -> Int32 {
        // In no container's PID namespace: seen only where this process itself is seen.
        let helper = try spawnInit(
            join: [], unshare: CLONE_NEWUSER, uidMappings: uidMappings, gidMappings: gidMappings,
            visibleToContainer: false)
        defer {
            // EOF on its init socket makes the helper exit; SIGKILL in case it does not.
            close(helper.channel.fd)
            kill(helper.pid, SIGKILL)
            var st: Int32 = 0
            while waitpid(helper.pid, &st, 0) < 0 && errno == EINTR {}
        }
        let path = "/proc/\(helper.pid)/ns/user"
        return try sys("open", path: path) { ss_open(path, O_RDONLY | O_CLOEXEC, 0) }
    }

    /// Mounts `source` (and the mounts below it) at `target`, idmapped by `mappings` for uids and
    /// gids: on-disk id k appears as host id `hostID + k`.
    /// - Throws: `SysError`; errno in `unsupported` when the kernel or filesystem cannot idmap.
    public static func mount(_ source: String, at target: String, mappings: [IDMapping]) throws {
        let ns = try userNamespace(uidMappings: mappings, gidMappings: mappings)
        defer { close(ns) }
        let tree = try clone(source, usernsFd: ns)
        defer { close(tree) }
        try sys("move_mount", path: target) { ss_move_mount(tree, target) }
    }
}
