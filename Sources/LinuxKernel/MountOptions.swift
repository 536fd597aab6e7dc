import CSafeSpace
import Glibc

/// mount(8) options of an OCI `mounts[].options` list, split into mount(2) flags, the
/// propagation flags applied afterwards, and the data string (runc's parseMountOptions).
public struct MountOptions: Sendable, Equatable {
    public var flags: UInt = 0
    /// MS_SHARED, MS_PRIVATE, MS_SLAVE, MS_UNBINDABLE (with MS_REC): applied by a second mount(2).
    public var propagation: [UInt] = []
    public var data: [String] = []
    /// Flags to clear on bind remounts (`rw`, `suid`, `dev`, `exec`, …).
    public var cleared: UInt = 0
    /// Recursive attributes (`rro`, `rnosuid`, …): `MOUNT_ATTR_*` bits that mount_setattr(2)
    /// with `AT_RECURSIVE` sets on the mount and every mount below it, after the mount.
    public var recursiveSet: UInt64 = 0
    /// `MOUNT_ATTR_*` bits mount_setattr(2) clears recursively (`rrw`, `rsuid`, …; and
    /// `MOUNT_ATTR__ATIME` when an atime mode is set, as mount_setattr(2) requires).
    public var recursiveClear: UInt64 = 0
    /// The recursive options given, in order (for errors naming them).
    public var recursiveNames: [String] = []

    public var isBind: Bool { flags & UInt(MS_BIND) != 0 }
    public var isRecursive: Bool { flags & UInt(MS_REC) != 0 }

    static let setting: [String: UInt] = [
        "ro": UInt(MS_RDONLY), "nosuid": UInt(MS_NOSUID), "nodev": UInt(MS_NODEV),
        "noexec": UInt(MS_NOEXEC), "sync": UInt(MS_SYNCHRONOUS), "dirsync": UInt(MS_DIRSYNC),
        "remount": UInt(MS_REMOUNT), "mand": UInt(MS_MANDLOCK), "noatime": UInt(MS_NOATIME),
        "nodiratime": UInt(MS_NODIRATIME), "bind": UInt(MS_BIND), "rbind": UInt(MS_BIND | MS_REC),
        "relatime": UInt(MS_RELATIME), "strictatime": UInt(MS_STRICTATIME),
        "silent": UInt(MS_SILENT),
    ]
    static let clearing: [String: UInt] = [
        "rw": UInt(MS_RDONLY), "suid": UInt(MS_NOSUID), "dev": UInt(MS_NODEV),
        "exec": UInt(MS_NOEXEC), "async": UInt(MS_SYNCHRONOUS), "atime": UInt(MS_NOATIME),
        "diratime": UInt(MS_NODIRATIME), "norelatime": UInt(MS_RELATIME),
        "nostrictatime": UInt(MS_STRICTATIME), "nomand": UInt(MS_MANDLOCK), "loud": UInt(MS_SILENT),
        "defaults": 0,
    ]
    static let propagations: [String: UInt] = [
        "private": UInt(MS_PRIVATE), "rprivate": UInt(MS_PRIVATE | MS_REC),
        "shared": UInt(MS_SHARED), "rshared": UInt(MS_SHARED | MS_REC),
        "slave": UInt(MS_SLAVE), "rslave": UInt(MS_SLAVE | MS_REC),
        "unbindable": UInt(MS_UNBINDABLE), "runbindable": UInt(MS_UNBINDABLE | MS_REC),
    ]

    /// The recursive options of runtime-spec config.md#mounts (added in runtime-spec 1.1, as
    /// runc implements them): each sets (false) or clears (true) one `MOUNT_ATTR_*` of
    /// mount_setattr(2) on the whole mount tree, so a submount of a bind source is covered too.
    /// `rnosymfollow`/`rsymfollow` need Linux 5.14, the rest 5.12.
    public static let recursive: [String: (clear: Bool, attr: UInt64)] = [
        "rro": (false, UInt64(MOUNT_ATTR_RDONLY)), "rrw": (true, UInt64(MOUNT_ATTR_RDONLY)),
        "rnosuid": (false, UInt64(MOUNT_ATTR_NOSUID)), "rsuid": (true, UInt64(MOUNT_ATTR_NOSUID)),
        "rnodev": (false, UInt64(MOUNT_ATTR_NODEV)), "rdev": (true, UInt64(MOUNT_ATTR_NODEV)),
        "rnoexec": (false, UInt64(MOUNT_ATTR_NOEXEC)), "rexec": (true, UInt64(MOUNT_ATTR_NOEXEC)),
        "rnodiratime": (false, UInt64(MOUNT_ATTR_NODIRATIME)), "rdiratime": (true, UInt64(MOUNT_ATTR_NODIRATIME)),
        "rrelatime": (false, UInt64(MOUNT_ATTR_RELATIME)), "rnorelatime": (true, UInt64(MOUNT_ATTR_RELATIME)),
        "rnoatime": (false, UInt64(MOUNT_ATTR_NOATIME)), "ratime": (true, UInt64(MOUNT_ATTR_NOATIME)),
        "rstrictatime": (false, UInt64(MOUNT_ATTR_STRICTATIME)),
        "rnostrictatime": (true, UInt64(MOUNT_ATTR_STRICTATIME)),
        "rnosymfollow": (false, UInt64(MOUNT_ATTR_NOSYMFOLLOW)), "rsymfollow": (true, UInt64(MOUNT_ATTR_NOSYMFOLLOW)),
    ]

    /// Every option name this parser knows (features.md `mountOptions`); anything else is data.
    public static var knownNames: [String] {
        (Array(setting.keys) + Array(clearing.keys) + Array(propagations.keys) + Array(recursive.keys)).sorted()
    }

    /// Whether any recursive attribute was asked for.
    public var hasRecursiveAttributes: Bool { !recursiveNames.isEmpty }

    /// Parses `options`; anything not a known flag is passed to the file system as data
    /// (`size=64m`, `mode=1777`, `newinstance`).
    public init(_ options: [String]) {
        for option in options {
            if let f = Self.setting[option] {
                flags |= f
            } else if let f = Self.clearing[option] {
                flags &= ~f
                cleared |= f
            } else if let p = Self.propagations[option] {
                propagation.append(p)
            } else if let r = Self.recursive[option] {
                recursiveNames.append(option)
                let atime = UInt64(MOUNT_ATTR__ATIME)
                if r.clear {
                    // An atime mode is one value of the MOUNT_ATTR__ATIME field: `ratime` and
                    // `rnostrictatime` go back to the kernel default (relatime); `rnorelatime`
                    // clears nothing, as `norelatime` alone does for mount(2).
                    if r.attr & atime == r.attr {
                        guard r.attr != 0 else { continue }
                        recursiveSet &= ~atime
                        recursiveClear |= atime
                    } else {
                        recursiveSet &= ~r.attr
                        recursiveClear |= r.attr
                    }
                } else if r.attr & atime == r.attr {
                    // mount_setattr(2): an atime mode in attr_set needs MOUNT_ATTR__ATIME in attr_clr.
                    recursiveSet = (recursiveSet & ~atime) | r.attr
                    recursiveClear |= atime
                } else {
                    recursiveSet |= r.attr
                    recursiveClear &= ~r.attr
                }
            } else {
                data.append(option)
            }
        }
    }

    /// Parses a propagation name (`rootfsPropagation`): nil when unknown.
    public static func propagation(named name: String) -> UInt? { propagations[name] }
}

/// mount(2) with an errno-carrying error naming source, target and type.
public func mount(source: String?, target: String, type: String?, flags: UInt, data: String? = nil) throws {
    let r: Int32 = Glibc.mount(source, target, type, flags, data)
    if r != 0 {
        throw SysError("mount \(type ?? source ?? "none") on", path: target)
    }
}

/// mount_setattr(2) with `AT_RECURSIVE` on the mount at `path`: sets `set` and clears `clear`
/// (`MOUNT_ATTR_*`) on it and every mount below it (runtime-spec config.md#mounts, the `r…`
/// options such as `rro`).
/// - Throws: `SysError` `.unsupported` naming `field` and the options when the kernel has no
///   mount_setattr(2) (ENOSYS, before Linux 5.12) or does not know an attribute (EINVAL:
///   `rnosymfollow` before 5.14); `.syscall` otherwise (EPERM: an attribute locked by a user
///   namespace cannot be cleared).
public func mountSetattrRecursive(_ path: String, set: UInt64, clear: UInt64, field: String, options: [String]) throws {
    guard ss_mount_setattr_recursive(path, set, clear) != 0 else { return }
    let e = errno
    let names = options.joined(separator: ", ")
    if e == ENOSYS {
        throw SysError(
            .unsupported, field: field,
            "\(names) needs mount_setattr(2) (Linux 5.12 or later), which this kernel does not have; refusing to mount without the recursive attributes",
            operation: "mount_setattr", path: path, errno: e)
    }
    if e == EINVAL {
        throw SysError(
            .unsupported, field: field,
            "\(names): this kernel's mount_setattr(2) does not support these attributes (rnosymfollow/rsymfollow need Linux 5.14); refusing to mount without them",
            operation: "mount_setattr", path: path, errno: e)
    }
    throw SysError("mount_setattr(AT_RECURSIVE) \(names) on", path: path, errno: e, field: field)
}
