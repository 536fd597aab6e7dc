/// OCI runtime-spec 1.x `config.json` types (runtime-spec config.md, config-linux.md).
///
/// Field names are the spec's JSON names. Unknown fields are ignored on decode, as the spec
/// requires of runtimes ("MUST ignore unknown properties", config.md#extensibility);
/// `Spec.validate()` enforces the rules SafeSpace relies on.
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

public struct Spec: Codable, Sendable, Equatable {
    public var ociVersion: String
    public var process: Process?
    public var root: Root?
    public var hostname: String?
    public var domainname: String?
    public var mounts: [Mount]?
    public var hooks: Hooks?
    public var annotations: [String: String]?
    public var linux: Linux?

    public init(
        ociVersion: String = Spec.version, process: Process? = nil, root: Root? = nil,
        hostname: String? = nil, domainname: String? = nil, mounts: [Mount]? = nil,
        hooks: Hooks? = nil, annotations: [String: String]? = nil, linux: Linux? = nil
    ) {
        self.ociVersion = ociVersion
        self.process = process
        self.root = root
        self.hostname = hostname
        self.domainname = domainname
        self.mounts = mounts
        self.hooks = hooks
        self.annotations = annotations
        self.linux = linux
    }

    /// The runtime-spec version this build implements.
    public static let version = "1.2.0"
}

/// config.md#process
public struct Process: Codable, Sendable, Equatable {
    public var terminal: Bool?
    public var consoleSize: ConsoleSize?
    public var user: User
    public var args: [String]?
    public var commandLine: String?
    public var env: [String]?
    public var cwd: String
    public var capabilities: Capabilities?
    public var rlimits: [Rlimit]?
    public var noNewPrivileges: Bool?
    public var apparmorProfile: String?
    public var oomScoreAdj: Int?
    public var selinuxLabel: String?
    public var ioPriority: IOPriority?
    public var scheduler: Scheduler?

    public init(
        terminal: Bool? = nil, user: User = User(uid: 0, gid: 0), args: [String]? = nil,
        env: [String]? = nil, cwd: String = "/", capabilities: Capabilities? = nil,
        rlimits: [Rlimit]? = nil, noNewPrivileges: Bool? = nil, oomScoreAdj: Int? = nil
    ) {
        self.terminal = terminal
        self.user = user
        self.args = args
        self.env = env
        self.cwd = cwd
        self.capabilities = capabilities
        self.rlimits = rlimits
        self.noNewPrivileges = noNewPrivileges
        self.oomScoreAdj = oomScoreAdj
    }
}

public struct ConsoleSize: Codable, Sendable, Equatable {
    public var height: UInt
    public var width: UInt

    public init(height: UInt, width: UInt) {
        self.height = height
        self.width = width
    }
}

/// config.md#posix-platform-user
public struct User: Codable, Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var umask: UInt32?
    public var additionalGids: [UInt32]?
    public var username: String?

    public init(uid: UInt32, gid: UInt32, umask: UInt32? = nil, additionalGids: [UInt32]? = nil) {
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.additionalGids = additionalGids
    }
}

/// config.md#linux-process: the five capability sets, names like `CAP_NET_RAW`.
public struct Capabilities: Codable, Sendable, Equatable {
    public var bounding: [String]?
    public var effective: [String]?
    public var inheritable: [String]?
    public var permitted: [String]?
    public var ambient: [String]?

    public init(
        bounding: [String]? = nil, effective: [String]? = nil, inheritable: [String]? = nil,
        permitted: [String]? = nil, ambient: [String]? = nil
    ) {
        self.bounding = bounding
        self.effective = effective
        self.inheritable = inheritable
        self.permitted = permitted
        self.ambient = ambient
    }
}

/// config.md#posix-process: `type` is a `getrlimit(2)` resource name such as `RLIMIT_NOFILE`.
public struct Rlimit: Codable, Sendable, Equatable {
    public var type: String
    public var hard: UInt64
    public var soft: UInt64

    public init(type: String, hard: UInt64, soft: UInt64) {
        self.type = type
        self.hard = hard
        self.soft = soft
    }
}

public struct IOPriority: Codable, Sendable, Equatable {
    public var `class`: String
    public var priority: Int
}

public struct Scheduler: Codable, Sendable, Equatable {
    public var policy: String
    public var nice: Int?
    public var priority: Int?
}

/// config.md#root
public struct Root: Codable, Sendable, Equatable {
    public var path: String
    public var readonly: Bool?

    public init(path: String, readonly: Bool? = nil) {
        self.path = path
        self.readonly = readonly
    }
}

/// config.md#mounts
public struct Mount: Codable, Sendable, Equatable {
    public var destination: String
    public var type: String?
    public var source: String?
    public var options: [String]?
    public var uidMappings: [IDMapping]?
    public var gidMappings: [IDMapping]?

    public init(destination: String, type: String? = nil, source: String? = nil, options: [String]? = nil) {
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options
    }
}

/// config.md#posix-platform-hooks
public struct Hook: Codable, Sendable, Equatable {
    public var path: String
    public var args: [String]?
    public var env: [String]?
    /// Seconds.
    public var timeout: Int?

    public init(path: String, args: [String]? = nil, env: [String]? = nil, timeout: Int? = nil) {
        self.path = path
        self.args = args
        self.env = env
        self.timeout = timeout
    }
}

public struct Hooks: Codable, Sendable, Equatable {
    public var prestart: [Hook]?
    public var createRuntime: [Hook]?
    public var createContainer: [Hook]?
    public var startContainer: [Hook]?
    public var poststart: [Hook]?
    public var poststop: [Hook]?

    public init(
        prestart: [Hook]? = nil, createRuntime: [Hook]? = nil, createContainer: [Hook]? = nil,
        startContainer: [Hook]? = nil, poststart: [Hook]? = nil, poststop: [Hook]? = nil
    ) {
        self.prestart = prestart
        self.createRuntime = createRuntime
        self.createContainer = createContainer
        self.startContainer = startContainer
        self.poststart = poststart
        self.poststop = poststop
    }
}
