/// The `Sandbox` resource of `llmsafespace.dev/v1` (reference/security-model.md).
///
/// Decoding is strict: every type rejects keys it does not declare, with the field's path
/// (`spec.filesystm: unknown field`). Optional fields stay `nil` when absent so that
/// validation and policy can tell "not given" from "given as the default".

/// A sandbox: where untrusted code runs, and what it may touch.
public struct Sandbox: Codable, Sendable, Equatable {
    public static let apiVersion = "llmsafespace.dev/v1"
    public static let kind = "Sandbox"

    public var apiVersion: String
    public var kind: String
    public var metadata: ObjectMeta
    public var spec: SandboxSpec

    public init(
        apiVersion: String = Sandbox.apiVersion, kind: String = Sandbox.kind,
        metadata: ObjectMeta = .init(), spec: SandboxSpec = .init()
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.metadata = metadata
        self.spec = spec
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case apiVersion, kind, metadata, spec
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        (apiVersion, kind) = try decoder.decodeResourceHeader(kind: Sandbox.kind)
        self.metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? .init()
        self.spec = try c.decodeIfPresent(SandboxSpec.self, forKey: .spec) ?? .init()
    }
}

/// `metadata`: the subset of Kubernetes ObjectMeta a node-local sandbox uses.
public struct ObjectMeta: Codable, Sendable, Equatable {
    /// DNS-1123 label; also the container id and the hostname.
    public var name: String?
    /// Informational on a node (kept as an annotation of the bundle).
    public var namespace: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?

    public init(
        name: String? = nil, namespace: String? = nil, labels: [String: String]? = nil,
        annotations: [String: String]? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, namespace, labels, annotations
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace)
        labels = try c.decodeIfPresent([String: String].self, forKey: .labels)
        annotations = try c.decodeIfPresent([String: String].self, forKey: .annotations)
    }
}

/// `spec`.
public struct SandboxSpec: Codable, Sendable, Equatable {
    /// Runtime environment, `python:3.11`: names a rootfs of the RootfsStore.
    public var runtime: String?
    /// `standard` (default), `high` (gVisor), `custom`.
    public var securityLevel: String?
    /// Wall-clock limit of the sandbox's workload, in seconds.
    public var timeout: Int?
    public var resources: ResourcesSpec?
    public var networkAccess: NetworkAccessSpec?
    public var filesystem: FilesystemSpec?
    public var storage: StorageSpec?
    public var securityContext: SecurityContextSpec?
    /// A `SandboxProfile` to apply.
    public var profileRef: ProfileRef?

    public init(
        runtime: String? = nil, securityLevel: String? = nil, timeout: Int? = nil,
        resources: ResourcesSpec? = nil, networkAccess: NetworkAccessSpec? = nil,
        filesystem: FilesystemSpec? = nil, storage: StorageSpec? = nil,
        securityContext: SecurityContextSpec? = nil, profileRef: ProfileRef? = nil
    ) {
        self.runtime = runtime
        self.securityLevel = securityLevel
        self.timeout = timeout
        self.resources = resources
        self.networkAccess = networkAccess
        self.filesystem = filesystem
        self.storage = storage
        self.securityContext = securityContext
        self.profileRef = profileRef
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case runtime, securityLevel, timeout, resources, networkAccess, filesystem, storage
        case securityContext, profileRef
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        runtime = try c.decodeIfPresent(String.self, forKey: .runtime)
        securityLevel = try c.decodeIfPresent(String.self, forKey: .securityLevel)
        timeout = try c.decodeIfPresent(Int.self, forKey: .timeout)
        resources = try c.decodeIfPresent(ResourcesSpec.self, forKey: .resources)
        networkAccess = try c.decodeIfPresent(NetworkAccessSpec.self, forKey: .networkAccess)
        filesystem = try c.decodeIfPresent(FilesystemSpec.self, forKey: .filesystem)
        storage = try c.decodeIfPresent(StorageSpec.self, forKey: .storage)
        securityContext = try c.decodeIfPresent(SecurityContextSpec.self, forKey: .securityContext)
        profileRef = try c.decodeIfPresent(ProfileRef.self, forKey: .profileRef)
    }
}

/// `spec.resources`: Kubernetes quantities (`"1"`, `"500m"`, `"1Gi"`), kept as written.
public struct ResourcesSpec: Codable, Sendable, Equatable {
    public var cpu: String?
    public var memory: String?
    public var ephemeralStorage: String?
    public var cpuPinning: Bool?

    public init(cpu: String? = nil, memory: String? = nil, ephemeralStorage: String? = nil, cpuPinning: Bool? = nil) {
        self.cpu = cpu
        self.memory = memory
        self.ephemeralStorage = ephemeralStorage
        self.cpuPinning = cpuPinning
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case cpu, memory, ephemeralStorage, cpuPinning
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cpu = try c.decodeIfPresent(String.self, forKey: .cpu)
        memory = try c.decodeIfPresent(String.self, forKey: .memory)
        ephemeralStorage = try c.decodeIfPresent(String.self, forKey: .ephemeralStorage)
        cpuPinning = try c.decodeIfPresent(Bool.self, forKey: .cpuPinning)
    }
}

/// `spec.networkAccess`: default deny; `egress` lists what may be reached.
public struct NetworkAccessSpec: Codable, Sendable, Equatable {
    public var egress: [EgressRule]?
    public var ingress: Bool?

    public init(egress: [EgressRule]? = nil, ingress: Bool? = nil) {
        self.egress = egress
        self.ingress = ingress
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case egress, ingress
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        egress = try c.decodeIfPresent([EgressRule].self, forKey: .egress)
        ingress = try c.decodeIfPresent(Bool.self, forKey: .ingress)
    }
}

/// `spec.networkAccess.egress[]`: exactly one of `domain` (reached through the node's egress
/// filter: DNS, and the proxy on ports 80 and 443) or `cidr` (an IPv4 prefix the host forwards
/// to, on `ports` or every port), with optionally the ports allowed.
public struct EgressRule: Codable, Sendable, Equatable {
    /// An exact name (`pypi.org`) or a wildcard of its subdomains (`*.pythonhosted.org`).
    public var domain: String?
    /// An IPv4 prefix in CIDR notation (RFC 4632), `198.18.0.0/15`.
    public var cidr: String?
    public var ports: [PortRule]?

    public init(domain: String, ports: [PortRule]? = nil) {
        self.domain = domain
        self.ports = ports
    }

    public init(cidr: String, ports: [PortRule]? = nil) {
        self.cidr = cidr
        self.ports = ports
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case domain, cidr, ports
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        domain = try c.decodeIfPresent(String.self, forKey: .domain)
        cidr = try c.decodeIfPresent(String.self, forKey: .cidr)
        if domain == nil && cidr == nil {
            throw SandboxError(
                .missingField, field: fieldPath(decoder.codingPath + [CodingKeys.domain]), "required (or cidr)")
        }
        ports = try c.decodeIfPresent([PortRule].self, forKey: .ports)
    }
}

/// `spec.networkAccess.egress[].ports[]`.
public struct PortRule: Codable, Sendable, Equatable {
    public var port: Int
    /// `TCP` (default) or `UDP`.
    public var `protocol`: String?

    public init(port: Int, protocol: String? = nil) {
        self.port = port
        self.protocol = `protocol`
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case port, `protocol`
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let port = try c.decodeIfPresent(Int.self, forKey: .port) else {
            throw SandboxError(.missingField, field: fieldPath(decoder.codingPath + [CodingKeys.port]), "required")
        }
        self.port = port
        self.protocol = try c.decodeIfPresent(String.self, forKey: .protocol)
    }
}

/// `spec.filesystem`.
public struct FilesystemSpec: Codable, Sendable, Equatable {
    /// Default `true`.
    public var readOnlyRoot: Bool?
    /// Absolute paths that get a private, size-limited tmpfs. Default `[/tmp, /workspace]`;
    /// an explicit `[]` means none.
    public var writablePaths: [String]?

    public init(readOnlyRoot: Bool? = nil, writablePaths: [String]? = nil) {
        self.readOnlyRoot = readOnlyRoot
        self.writablePaths = writablePaths
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case readOnlyRoot, writablePaths
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        readOnlyRoot = try c.decodeIfPresent(Bool.self, forKey: .readOnlyRoot)
        writablePaths = try c.decodeIfPresent([String].self, forKey: .writablePaths)
    }
}

/// `spec.storage`: ephemeral unless `persistent`.
public struct StorageSpec: Codable, Sendable, Equatable {
    public var persistent: Bool?
    /// Kubernetes quantity, `10Gi`.
    public var volumeSize: String?

    public init(persistent: Bool? = nil, volumeSize: String? = nil) {
        self.persistent = persistent
        self.volumeSize = volumeSize
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case persistent, volumeSize
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        persistent = try c.decodeIfPresent(Bool.self, forKey: .persistent)
        volumeSize = try c.decodeIfPresent(String.self, forKey: .volumeSize)
    }
}

/// `spec.securityContext`. Ids are decoded wide so that `-1` or `2^40` is reported as out
/// of range by validation rather than as a type error.
public struct SecurityContextSpec: Codable, Sendable, Equatable {
    /// Default 1000; 0 is refused.
    public var runAsUser: Int64?
    /// Default 1000; 0 is refused.
    public var runAsGroup: Int64?
    public var seccompProfile: SeccompProfileRef?

    public init(runAsUser: Int64? = nil, runAsGroup: Int64? = nil, seccompProfile: SeccompProfileRef? = nil) {
        self.runAsUser = runAsUser
        self.runAsGroup = runAsGroup
        self.seccompProfile = seccompProfile
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case runAsUser, runAsGroup, seccompProfile
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        runAsUser = try c.decodeIfPresent(Int64.self, forKey: .runAsUser)
        runAsGroup = try c.decodeIfPresent(Int64.self, forKey: .runAsGroup)
        seccompProfile = try c.decodeIfPresent(SeccompProfileRef.self, forKey: .seccompProfile)
    }
}

/// `spec.securityContext.seccompProfile`, as in Kubernetes.
public struct SeccompProfileRef: Codable, Sendable, Equatable {
    /// `RuntimeDefault`, `Localhost`, `Unconfined`.
    public var type: String
    public var localhostProfile: String?

    public init(type: String, localhostProfile: String? = nil) {
        self.type = type
        self.localhostProfile = localhostProfile
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case type, localhostProfile
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let type = try c.decodeIfPresent(String.self, forKey: .type) else {
            throw SandboxError(.missingField, field: fieldPath(decoder.codingPath + [CodingKeys.type]), "required")
        }
        self.type = type
        localhostProfile = try c.decodeIfPresent(String.self, forKey: .localhostProfile)
    }
}

/// `spec.profileRef`: names a `SandboxProfile`.
public struct ProfileRef: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String?

    public init(name: String, namespace: String? = nil) {
        self.name = name
        self.namespace = namespace
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, namespace
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let name = try c.decodeIfPresent(String.self, forKey: .name) else {
            throw SandboxError(.missingField, field: fieldPath(decoder.codingPath + [CodingKeys.name]), "required")
        }
        self.name = name
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace)
    }
}
