/// config-linux.md types.
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// config-linux.md: the `linux` object.
///
/// The members are declared in the order of runtime-spec's Go type (specs-go `Linux`), which
/// is the order they are encoded in: `spec` writes config.json as runc does.
public struct Linux: Codable, Sendable, Equatable {
    public var uidMappings: [IDMapping]?
    public var gidMappings: [IDMapping]?
    public var sysctl: [String: String]?
    public var resources: Resources?
    public var cgroupsPath: String?
    public var namespaces: [Namespace]?
    public var devices: [Device]?
    public var seccomp: Seccomp?
    public var rootfsPropagation: String?
    public var maskedPaths: [String]?
    public var readonlyPaths: [String]?
    public var mountLabel: String?
    public var personality: Personality?

    public init(
        namespaces: [Namespace]? = nil, uidMappings: [IDMapping]? = nil, gidMappings: [IDMapping]? = nil,
        devices: [Device]? = nil, cgroupsPath: String? = nil, resources: Resources? = nil,
        rootfsPropagation: String? = nil, seccomp: Seccomp? = nil, sysctl: [String: String]? = nil,
        maskedPaths: [String]? = nil, readonlyPaths: [String]? = nil
    ) {
        self.namespaces = namespaces
        self.uidMappings = uidMappings
        self.gidMappings = gidMappings
        self.devices = devices
        self.cgroupsPath = cgroupsPath
        self.resources = resources
        self.rootfsPropagation = rootfsPropagation
        self.seccomp = seccomp
        self.sysctl = sysctl
        self.maskedPaths = maskedPaths
        self.readonlyPaths = readonlyPaths
    }

    private enum CodingKeys: String, CodingKey {
        case uidMappings, gidMappings, sysctl, resources, cgroupsPath, namespaces, devices, seccomp
        case rootfsPropagation, maskedPaths, readonlyPaths, mountLabel, personality
    }

    /// The members as the synthesized decoder reads them (every one optional, unknown ones
    /// ignored), except that `seccomp` is left nil, unread, when the decoder's `userInfo` has
    /// `Linux.skippingSeccomp` set to true: for a reader that gets the filter compiled (the
    /// container's init, which loads the BPF the runtime compiled from these rules).
    /// - Throws: `DecodingError` for a member of the wrong type.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        uidMappings = try c.decodeIfPresent([IDMapping].self, forKey: .uidMappings)
        gidMappings = try c.decodeIfPresent([IDMapping].self, forKey: .gidMappings)
        sysctl = try c.decodeIfPresent([String: String].self, forKey: .sysctl)
        resources = try c.decodeIfPresent(Resources.self, forKey: .resources)
        cgroupsPath = try c.decodeIfPresent(String.self, forKey: .cgroupsPath)
        namespaces = try c.decodeIfPresent([Namespace].self, forKey: .namespaces)
        devices = try c.decodeIfPresent([Device].self, forKey: .devices)
        seccomp =
            decoder.userInfo[Self.skippingSeccomp] as? Bool == true
            ? nil : try c.decodeIfPresent(Seccomp.self, forKey: .seccomp)
        rootfsPropagation = try c.decodeIfPresent(String.self, forKey: .rootfsPropagation)
        maskedPaths = try c.decodeIfPresent([String].self, forKey: .maskedPaths)
        readonlyPaths = try c.decodeIfPresent([String].self, forKey: .readonlyPaths)
        mountLabel = try c.decodeIfPresent(String.self, forKey: .mountLabel)
        personality = try c.decodeIfPresent(Personality.self, forKey: .personality)
    }

    /// `userInfo` key: true makes `init(from:)` leave `seccomp` nil without decoding it.
    public static let skippingSeccomp = CodingUserInfoKey(rawValue: "dev.llmsafespace.oci.skippingSeccomp")!
}

/// config-linux.md#namespaces. `type` is one of `NamespaceType`'s raw values; `path`, when set,
/// names an existing namespace to join (e.g. `/proc/1234/ns/net`).
public struct Namespace: Codable, Sendable, Equatable {
    public var type: String
    public var path: String?

    public init(type: String, path: String? = nil) {
        self.type = type
        self.path = path
    }
}

/// The namespace types of config-linux.md#namespaces.
public enum NamespaceType: String, CaseIterable, Sendable {
    case pid, network, mount, ipc, uts, user, cgroup, time
}

/// config-linux.md#user-namespace-mappings: `size` ids from `hostID` appear as `containerID`.
public struct IDMapping: Codable, Sendable, Equatable {
    public var containerID: UInt32
    public var hostID: UInt32
    public var size: UInt32

    public init(containerID: UInt32, hostID: UInt32, size: UInt32) {
        self.containerID = containerID
        self.hostID = hostID
        self.size = size
    }
}

/// config-linux.md#devices: `type` is `c`, `b`, `u` or `p`.
public struct Device: Codable, Sendable, Equatable {
    public var type: String
    public var path: String
    public var major: Int64?
    public var minor: Int64?
    public var fileMode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?

    public init(
        type: String, path: String, major: Int64? = nil, minor: Int64? = nil, fileMode: UInt32? = nil,
        uid: UInt32? = nil, gid: UInt32? = nil
    ) {
        self.type = type
        self.path = path
        self.major = major
        self.minor = minor
        self.fileMode = fileMode
        self.uid = uid
        self.gid = gid
    }
}

/// config-linux.md#control-groups and the resource objects below it.
public struct Resources: Codable, Sendable, Equatable {
    public var devices: [DeviceCgroup]?
    public var memory: Memory?
    public var cpu: CPU?
    public var pids: Pids?
    public var blockIO: BlockIO?
    public var hugepageLimits: [HugepageLimit]?
    public var unified: [String: String]?

    public init(devices: [DeviceCgroup]? = nil, memory: Memory? = nil, cpu: CPU? = nil, pids: Pids? = nil) {
        self.devices = devices
        self.memory = memory
        self.cpu = cpu
        self.pids = pids
    }

    public struct DeviceCgroup: Codable, Sendable, Equatable {
        public var allow: Bool
        public var type: String?
        public var major: Int64?
        public var minor: Int64?
        public var access: String?

        public init(allow: Bool, type: String? = nil, major: Int64? = nil, minor: Int64? = nil, access: String? = nil) {
            self.allow = allow
            self.type = type
            self.major = major
            self.minor = minor
            self.access = access
        }
    }

    /// Bytes; -1 means unlimited.
    public struct Memory: Codable, Sendable, Equatable {
        public var limit: Int64?
        public var reservation: Int64?
        public var swap: Int64?
        public var kernel: Int64?
        public var kernelTCP: Int64?
        public var swappiness: UInt64?
        public var disableOOMKiller: Bool?
        public var useHierarchy: Bool?
        public var checkBeforeUpdate: Bool?

        public init(limit: Int64? = nil, reservation: Int64? = nil, swap: Int64? = nil) {
            self.limit = limit
            self.reservation = reservation
            self.swap = swap
        }
    }

    /// `quota` and `period` in µs; `cpus`/`mems` in cpuset list syntax (`0-3,5`).
    public struct CPU: Codable, Sendable, Equatable {
        public var shares: UInt64?
        public var quota: Int64?
        public var burst: UInt64?
        public var period: UInt64?
        public var realtimeRuntime: Int64?
        public var realtimePeriod: UInt64?
        public var cpus: String?
        public var mems: String?
        public var idle: Int64?

        public init(
            shares: UInt64? = nil, quota: Int64? = nil, period: UInt64? = nil, cpus: String? = nil, mems: String? = nil
        ) {
            self.shares = shares
            self.quota = quota
            self.period = period
            self.cpus = cpus
            self.mems = mems
        }
    }

    public struct Pids: Codable, Sendable, Equatable {
        public var limit: Int64

        public init(limit: Int64) { self.limit = limit }
    }

    /// config-linux.md#block-io: weights 10...1000 (`weight`, `leafWeight`) and per-device
    /// weights (`weightDevice`).
    public struct BlockIO: Codable, Sendable, Equatable {
        public var weight: UInt16?
        public var leafWeight: UInt16?
        public var weightDevice: [WeightDevice]?

        public init(weight: UInt16? = nil, leafWeight: UInt16? = nil, weightDevice: [WeightDevice]? = nil) {
            self.weight = weight
            self.leafWeight = leafWeight
            self.weightDevice = weightDevice
        }

        /// One block device's weight: `major`:`minor`, `weight` and `leafWeight` 10...1000.
        public struct WeightDevice: Codable, Sendable, Equatable {
            public var major: Int64
            public var minor: Int64
            public var weight: UInt16?
            public var leafWeight: UInt16?

            public init(major: Int64, minor: Int64, weight: UInt16? = nil, leafWeight: UInt16? = nil) {
                self.major = major
                self.minor = minor
                self.weight = weight
                self.leafWeight = leafWeight
            }
        }
    }

    public struct HugepageLimit: Codable, Sendable, Equatable {
        public var pageSize: String
        public var limit: UInt64

        public init(pageSize: String, limit: UInt64) {
            self.pageSize = pageSize
            self.limit = limit
        }
    }
}

/// config-linux.md#seccomp
public struct Seccomp: Codable, Sendable, Equatable {
    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var architectures: [String]?
    public var flags: [String]?
    public var listenerPath: String?
    public var listenerMetadata: String?
    public var syscalls: [Syscall]?

    public init(
        defaultAction: String, defaultErrnoRet: UInt32? = nil, architectures: [String]? = nil, flags: [String]? = nil,
        syscalls: [Syscall]? = nil
    ) {
        self.defaultAction = defaultAction
        self.defaultErrnoRet = defaultErrnoRet
        self.architectures = architectures
        self.flags = flags
        self.syscalls = syscalls
    }

    public struct Syscall: Codable, Sendable, Equatable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [Arg]?

        public init(names: [String], action: String, errnoRet: UInt32? = nil, args: [Arg]? = nil) {
            self.names = names
            self.action = action
            self.errnoRet = errnoRet
            self.args = args
        }
    }

    /// One argument condition; for `SCMP_CMP_MASKED_EQ`, `value` is the mask, `valueTwo` the datum.
    public struct Arg: Codable, Sendable, Equatable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String

        public init(index: UInt32, value: UInt64, valueTwo: UInt64? = nil, op: String) {
            self.index = index
            self.value = value
            self.valueTwo = valueTwo
            self.op = op
        }
    }
}

/// config-linux.md#personality: the execution domain personality(2) sets before the workload.
public struct Personality: Codable, Sendable, Equatable {
    /// `LINUX` or `LINUX32`.
    public var domain: String
    /// No values are defined by runtime-spec yet.
    public var flags: [String]?

    public init(domain: String, flags: [String]? = nil) {
        self.domain = domain
        self.flags = flags
    }

    /// The domains of config-linux.md#personality and their PER_* values (sys/personality.h).
    public static let domains: [String: UInt] = ["LINUX": 0x0000, "LINUX32": 0x0008]
}
