/// The node's egress filter as the topology uses it. The filter itself (module EgressFilter:
/// DNS responder and transparent HTTP/TLS proxy on SwiftNIO, identifying sandboxes by source
/// IPv4; branch s3-net-filter) is built apart; its `EgressFilter` conforms to this protocol
/// through a small adapter in the process that hosts it (`safespace run`, `safespaced`), so
/// SandboxNetwork and SandboxHosting do not link NIO. The filter is started with
/// `listenAddress: "0.0.0.0"`: each sandbox's DNS, 80 and 443 are DNAT'ed to its own veth's
/// host-side address, which the filter checks (`hostAddress`).
///
/// ```swift
/// struct HostedEgressFilter: SandboxEgressFilter {
///     let filter: EgressFilter
///     var egressPorts: EgressPorts {
///         let p = filter.boundPorts
///         return EgressPorts(dns: p.dns, http: p.http, tls: p.tls)
///     }
///     func register(sandbox: String, source: IPv4Address, hostAddress: IPv4Address, rules: [SandboxEgressRule]) throws {
///         let policy = EgressPolicy(rules: rules.map {
///             switch $0 {
///             case .domain(let name): .domain(name)
///             case .cidr(let prefix, let ports): .cidr(prefix.description, ports: ports)
///             }
///         })
///         try filter.register(sandbox: sandbox, source: source.description, policy: policy,
///                             hostAddress: hostAddress.description)
///     }
///     func unregister(sandbox: String) { filter.unregister(sandbox: sandbox) }
/// }
/// ```

/// One rule of `spec.networkAccess.egress` as the filter takes it.
public enum SandboxEgressRule: Sendable, Equatable {
    /// An exact name (`pypi.org`) or a wildcard of its subdomains (`*.pythonhosted.org`),
    /// reached through the filter's DNS and proxy (ports 53, 80, 443).
    case domain(String)
    /// A destination prefix forwarded by the host (`CIDRRule`), for the filter's records.
    case cidr(IPv4Prefix, ports: [UInt16]?)
}

/// The egress filter a sandbox's DNS, HTTP and TLS are redirected to.
public protocol SandboxEgressFilter: Sendable {
    /// The ports it listens on (on every address of the host, or at least on the host side of
    /// each sandbox's veth): the targets of the sandbox's DNAT rules.
    var egressPorts: EgressPorts { get }
    /// From now on, connections and queries from `source` (the sandbox's address) arriving at
    /// `hostAddress` (the host side of its veth, where its traffic is DNAT'ed) are sandbox
    /// `sandbox`'s, judged by `rules`.
    /// - Throws: what the filter refuses (a source or sandbox registered twice, a bad rule).
    func register(sandbox: String, source: IPv4Address, hostAddress: IPv4Address, rules: [SandboxEgressRule]) throws
    /// Forgets `sandbox`: its source is refused from now on.
    func unregister(sandbox: String)
}
