/// The network of sandboxes with egress rules: an address pool of leases, and per sandbox a
/// network namespace file, a veth pair into the host and an nftables table, made and removed
/// as one unit (`attach` / `SandboxNetworkAttachment.detach` / `sweep`).
import Foundation
import Glibc
import LinuxKernel

/// The ports of the node's egress filter (EgressFilter's `boundPorts`) that a sandbox's DNS,
/// HTTP and TLS are redirected to, on the host side's address of its veth.
public struct EgressPorts: Sendable, Equatable, Codable {
    public var dns: UInt16
    public var http: UInt16
    public var tls: UInt16

    public init(dns: UInt16, http: UInt16, tls: UInt16) {
        self.dns = dns
        self.http = http
        self.tls = tls
    }
}

/// A `cidr` egress rule: traffic from the sandbox to `prefix` (on `ports`, or any port) is
/// forwarded by the host, not redirected to the filter.
public struct CIDRRule: Sendable, Equatable, Codable {
    public struct Port: Sendable, Equatable, Codable {
        public var port: UInt16
        /// `tcp` or `udp` (nftables' names).
        public var `protocol`: String
        public init(port: UInt16, protocol: String = "tcp") {
            self.port = port
            self.protocol = `protocol`
        }
    }
    public var prefix: IPv4Prefix
    /// nil or empty: every port and protocol.
    public var ports: [Port]?

    public init(prefix: IPv4Prefix, ports: [Port]? = nil) {
        self.prefix = prefix
        self.ports = ports
    }
}

/// What one sandbox's network is made of, as its lease records it: everything `detach` and
/// the sweep need to remove it, named before any of it is made.
public struct NetworkLeaseRecord: Codable, Sendable, Equatable {
    /// The sandbox name.
    public var sandbox: String
    /// The pool the subnet is of.
    public var pool: IPv4Prefix
    /// The sandbox's /30: host side `.1`, sandbox `.2`.
    public var subnet: IPv4Prefix
    /// The host side of the veth pair (IFNAMSIZ: at most 15 bytes).
    public var veth: String
    /// The network namespace file.
    public var namespacePath: String
    /// nftables table (family inet).
    public var table: String

    public var hostAddress: IPv4Address { IPv4Address(subnet.address.value + 1) }
    public var sandboxAddress: IPv4Address { IPv4Address(subnet.address.value + 2) }
}

/// The node's sandbox networks. Stateless: every network is a lease of `leases` (kind
/// `network`, key the subnet's index in the pool), held by the process that made it.
public struct SandboxNetworks: Sendable {
    /// The kind of the leases in the store: `<store>/network/<index>.json`.
    public static let leaseKind = LeaseStore.Kind<NetworkLeaseRecord>("network")
    /// The default pool: a /16 of the shared address space 100.64.0.0/10 (RFC 6598), 16384
    /// sandboxes of a /30 each.
    public static let defaultPool = "100.64.0.0/16"
    /// Where namespace files are bind-mounted (ip-netns(8) and CNI use /run/netns; SafeSpace's
    /// own directory, beside and not inside the runtime's state root `/run/safespace`, whose
    /// entries are container ids).
    public static let defaultNamespaceDirectory = "/run/safespace-netns"
    /// The interface name of the sandbox's side of the veth.
    public static let sandboxInterface = "eth0"
    /// Prefix of every table SafeSpace makes.
    public static let tablePrefix = "safespace-"

    public var pool: IPv4Prefix
    public var leases: LeaseStore
    public var namespaceDirectory: String

    /// - Throws: `NetworkError` `.invalidValue` naming `field` for a pool that is not a CIDR
    ///   prefix of at least one /30 (length 0-30).
    public init(
        pool: String = SandboxNetworks.defaultPool, leases: LeaseStore,
        namespaceDirectory: String = SandboxNetworks.defaultNamespaceDirectory, field: String = "network.pool"
    ) throws {
        let prefix = try IPv4Prefix(pool, field: field)
        guard prefix.length <= 30 else {
            throw NetworkError(.invalidValue, field: field, "\(pool) is smaller than one /30 subnet")
        }
        self.pool = prefix
        self.leases = leases
        self.namespaceDirectory = namespaceDirectory
    }

    /// The table of sandbox `name`.
    public static func table(_ name: String) -> String { tablePrefix + name }

    /// The host side of the veth of sandbox `name`: `ss-` + its first 6 characters + `-` + 5
    /// hex digits of its FNV-1a hash, at most 15 bytes (IFNAMSIZ-1, netdevice(7)).
    public static func vethName(_ name: String) -> String {
        var hash: UInt32 = 0x811c_9dc5
        for byte in name.utf8 { hash = (hash ^ UInt32(byte)) &* 0x0100_0193 }
        let stem = String(name.utf8.prefix(6).filter { $0 != UInt8(ascii: ".") }.map { Character(Unicode.Scalar($0)) })
        let hex = String(hash & 0xfffff, radix: 16)
        return "ss-" + stem + "-" + String(repeating: "0", count: 5 - hex.count) + hex
    }

    /// The forwarding sysctl `cidr` rules need (ip-sysctl.txt): `net.ipv4.ip_forward`.
    public static let forwardingSysctl = "/proc/sys/net/ipv4/ip_forward"

    /// Makes the network of sandbox `sandbox` (a DNS-1123 label): lease, namespace file with
    /// `lo` up, veth pair (`eth0` inside with the subnet's `.2`, a default route via `.1`; the
    /// host side with `.1`), and its nftables table (one transaction). On a throw nothing of it
    /// is left: every step taken is undone.
    /// - Parameters:
    ///   - ports: the egress filter's ports that DNS, 80 and 443 are redirected to.
    ///   - cidrRules: forwarded destinations; need `net.ipv4.ip_forward = 1`.
    ///   - ingress: false: no new connection into the sandbox (host or forwarded).
    ///   - cidrField: the field to name when `cidrRules` cannot be enforced.
    /// - Throws: `NetworkError`: `.unsupported` (forwarding off, naming `cidrField`),
    ///   `.inUse` (a live process holds a network of that name), `.poolExhausted`, `.failed`.
    public func attach(
        sandbox: String, ports: EgressPorts, cidrRules: [CIDRRule] = [], ingress: Bool = false,
        cidrField: String = "spec.networkAccess.egress"
    ) throws -> SandboxNetworkAttachment {
        guard !sandbox.isEmpty, sandbox.utf8.count <= 63,
            sandbox.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 45 })
        else { throw NetworkError(.invalidValue, field: "metadata.name", "\"\(sandbox)\" is not a DNS-1123 label") }
        if !cidrRules.isEmpty {
            let forwarding = (try? Files.readString(Self.forwardingSysctl))?.trimmingCharacters(
                in: .whitespacesAndNewlines)
            guard forwarding == "1" else {
                throw NetworkError(
                    .unsupported, field: cidrField,
                    "cidr rules are forwarded by the host, and forwarding is off on this node (net.ipv4.ip_forward = \(forwarding ?? "unreadable")); SafeSpace does not turn it on: set it (sysctl -w net.ipv4.ip_forward=1) or remove the cidr rules"
                )
            }
        }
        let record = try lease(sandbox)
        let attachment = SandboxNetworkAttachment(record: record, networks: self)
        // What this call made, undone in reverse on a throw: never an object of the same name
        // that someone else made (the create steps are exclusive and fail on those).
        var undo: [() throws -> Void] = [{ try attachment.releaseLease() }]
        do {
            try Kernel.createNamespace(at: record.namespacePath)
            undo.append { try Kernel.removeNamespace(at: record.namespacePath) }
            let inside = try RouteSocket(namespace: record.namespacePath)
            try inside.up("lo")
            let host = try RouteSocket()
            try host.createVeth(host: record.veth, peer: Self.sandboxInterface, peerNamespace: record.namespacePath)
            undo.append { try RouteSocket().deleteLink(record.veth) }
            try host.addAddress(record.hostAddress, prefix: 30, to: record.veth)
            try inside.addAddress(record.sandboxAddress, prefix: 30, to: Self.sandboxInterface)
            // The rules before the links are up: no packet passes unfiltered.
            try Nftables().run(
                SandboxRules(
                    table: record.table, veth: record.veth, hostAddress: record.hostAddress,
                    sandboxAddress: record.sandboxAddress, ports: ports, cidrRules: cidrRules, ingress: ingress
                ).commands)
            undo.append { try Nftables().deleteTable(record.table) }
            try host.up(record.veth)
            try inside.up(Self.sandboxInterface)
            try inside.addDefaultRoute(via: record.hostAddress, dev: Self.sandboxInterface)
        } catch {
            for step in undo.reversed() { try? step() }
            throw error
        }
        return attachment
    }

    /// Takes a subnet for `sandbox`, after reclaiming the networks of dead holders.
    func lease(_ sandbox: String) throws -> NetworkLeaseRecord {
        try leases.withLock { tx in
            // Under the lock: two first attaches must not both bind the directory on itself.
            try Kernel.prepareNamespaceDirectory(namespaceDirectory)
            _ = try reclaimLocked(tx)
            let current = try tx.leases(Self.leaseKind)
            if let held = current.first(where: { $0.record.sandbox == sandbox }) {
                throw NetworkError(
                    .inUse, field: "metadata.name",
                    "a network of sandbox \(sandbox) exists already (\(held.record.veth), held by \(held.holder))")
            }
            let used = Set(current.compactMap { Int($0.key) })
            let count = Int(min(pool.size / 4, 1 << 20))
            guard let index = (0..<count).first(where: { !used.contains($0) }) else {
                throw NetworkError(.poolExhausted, "every /30 of the pool \(pool) is leased (\(count) sandboxes)")
            }
            let record = NetworkLeaseRecord(
                sandbox: sandbox, pool: pool,
                subnet: IPv4Prefix(address: IPv4Address(pool.address.value + UInt32(index) * 4), length: 30),
                veth: Self.vethName(sandbox), namespacePath: namespaceDirectory + "/" + sandbox,
                table: Self.table(sandbox))
            try tx.write(Self.leaseKind, LeaseStore.Lease(key: String(index), record: record))
            return record
        }
    }

    /// Removes everything `record` names: the table, the veth (its peer and the routes over it
    /// go with it), the conntrack entries of the sandbox's address, the namespace file. Each
    /// step does nothing when its object is gone.
    static func remove(_ record: NetworkLeaseRecord) throws {
        var failures: [String] = []
        do { try Nftables().deleteTable(record.table) } catch { failures.append("table \(record.table): \(error)") }
        do { try RouteSocket().deleteLink(record.veth) } catch { failures.append("veth \(record.veth): \(error)") }
        // With the link gone no new entry can appear for the address.
        do { try Conntrack.entries(of: record.sandboxAddress, delete: true) } catch {
            failures.append("conntrack of \(record.sandboxAddress): \(error)")
        }
        do { try Kernel.removeNamespace(at: record.namespacePath) } catch {
            failures.append("namespace \(record.namespacePath): \(error)")
        }
        if !failures.isEmpty {
            throw NetworkError(.failed, "network of \(record.sandbox): " + failures.joined(separator: "; "))
        }
    }

    private func reclaimLocked(_ tx: LeaseStore.Transaction) throws -> [String] {
        var reclaimed: [String] = []
        for lease in try tx.leases(Self.leaseKind) where !lease.holder.isAlive {
            try Self.remove(lease.record)
            try tx.remove(Self.leaseKind, key: lease.key)
            reclaimed.append(lease.record.sandbox)
        }
        return reclaimed
    }

    /// `safespace gc`: removes the network (table, veth, routes, namespace file, lease) of every
    /// lease whose holder is dead.
    /// - Returns: the sandboxes whose network was removed, and errors (those leases stay).
    public func sweep() -> (reclaimed: [String], errors: [String]) {
        do {
            return try leases.withLockIfExists { tx in
                var reclaimed: [String] = []
                var errors: [String] = []
                for lease in try tx.leases(Self.leaseKind) where !lease.holder.isAlive {
                    do {
                        try Self.remove(lease.record)
                        try tx.remove(Self.leaseKind, key: lease.key)
                        reclaimed.append(lease.record.sandbox)
                    } catch { errors.append("\(error)") }
                }
                return (reclaimed, errors)
            } ?? ([], [])
        } catch {
            return ([], ["network leases of \(leases.directory): \(error)"])
        }
    }

    /// Makes `owner` the holder of sandbox `sandbox`'s network (the daemon hands a running
    /// sandbox to its init: the network then lives as long as the sandbox, and the sweep takes
    /// it once the init is dead). Nothing when the sandbox has no network.
    /// - Throws: `SysError` from the store.
    public func transfer(sandbox: String, to owner: ProcessIdentity) throws {
        try leases.withLockIfExists { tx in
            for var lease in try tx.leases(Self.leaseKind) where lease.record.sandbox == sandbox {
                lease.holder = owner
                try tx.write(Self.leaseKind, lease)
            }
        }
    }

    /// The named counters (packets) of sandbox `sandbox`'s table: `spoof_dropped`,
    /// `egress_dropped`, `ingress_dropped`.
    /// - Throws: `NetworkError` when the table cannot be listed (there is none).
    public static func counters(sandbox: String) throws -> [String: UInt64] {
        try Nftables().counters(table: table(sandbox))
    }
}

/// One sandbox's network, held by this process until `detach`.
public final class SandboxNetworkAttachment: @unchecked Sendable {
    public let record: NetworkLeaseRecord
    let networks: SandboxNetworks
    private let lock = NSLock()
    private var detached = false

    init(record: NetworkLeaseRecord, networks: SandboxNetworks) {
        self.record = record
        self.networks = networks
    }

    /// The namespace file: `linux.namespaces[type=network].path` of the sandbox's spec.
    public var namespacePath: String { record.namespacePath }
    /// Where the sandbox reaches the egress filter (its DNS server, its gateway).
    public var hostAddress: IPv4Address { record.hostAddress }
    public var sandboxAddress: IPv4Address { record.sandboxAddress }

    /// Removes the table, veth, routes and namespace file, then the lease. Idempotent; a
    /// failed step keeps the lease (for the next call or the sweep).
    /// - Throws: `NetworkError` `.failed` naming the steps that failed.
    public func detach() throws {
        try lock.withLock {
            if detached { return }
            try SandboxNetworks.remove(record)
            try releaseLease()
            detached = true
        }
    }

    func releaseLease() throws {
        try networks.leases.withLock { tx in
            for lease in try tx.leases(SandboxNetworks.leaseKind) where lease.record == record {
                try tx.remove(SandboxNetworks.leaseKind, key: lease.key)
            }
        }
    }
}
