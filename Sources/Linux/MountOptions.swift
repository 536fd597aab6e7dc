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
