/// A running sandbox's network handed to a new egress filter: the daemon that made it died
/// (kill -9, crash), its sandboxes live on with their networks (leases held by their inits,
/// `transfer`), and the next daemon adopts them with a filter whose ports may differ.
import LinuxKernel

extension SandboxNetworks {
    /// The lease record of sandbox `sandbox`'s network, or nil when it has none.
    /// - Throws: `SysError` from the store.
    public func record(sandbox: String) throws -> NetworkLeaseRecord? {
        try leases.withLockIfExists { tx -> NetworkLeaseRecord? in
            try tx.leases(Self.leaseKind).first { $0.record.sandbox == sandbox }?.record
        } ?? nil
    }

    /// Points sandbox `sandbox`'s DNS, HTTP and TLS at `ports` (the new filter's): its table
    /// is replaced by one made for `ports` in one nftables transaction (delete + create: no
    /// packet passes between the two; the named counters restart at 0). The veth, addresses,
    /// routes and lease stay as they are.
    /// - Parameters: `cidrRules`, `ingress`: the sandbox's, as `attach` took them.
    /// - Returns: the sandbox's network record, nil when it has none (nothing is done).
    /// - Throws: `NetworkError` `.failed` from nftables; `SysError` from the store.
    public func retarget(
        sandbox: String, ports: EgressPorts, cidrRules: [CIDRRule] = [], ingress: Bool = false
    ) throws -> NetworkLeaseRecord? {
        guard let record = try record(sandbox: sandbox) else { return nil }
        let rules = SandboxRules(
            table: record.table, veth: record.veth, hostAddress: record.hostAddress,
            sandboxAddress: record.sandboxAddress, ports: ports, cidrRules: cidrRules, ingress: ingress)
        let family: [String: Any] = ["family": "inet", "name": record.table]
        try Nftables().run([["add": ["table": family]], ["delete": ["table": family]]] + rules.commands)
        return record
    }
}
