#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One entry of a sandbox's `spec.networkAccess.egress`.
public enum EgressRule: Sendable, Equatable {
    /// A host name ("pypi.org") or a wildcard "*.suffix", which matches every name strictly
    /// under the suffix ("a.suffix", "a.b.suffix") but not the suffix itself. ASCII only
    /// (internationalized names as A-labels, RFC 5890); case-insensitive (RFC 4343); a final
    /// dot is ignored.
    case domain(String)
    /// An address range ("198.18.0.0/15"), optionally limited to TCP ports. Connections the
    /// proxy sees (80 and 443) to an address in it are spliced to that address, without a
    /// name; other ports are the topology's (nftables) to allow.
    case cidr(String, ports: [UInt16]?)
}

/// What one sandbox may reach.
public struct EgressPolicy: Sendable, Equatable {
    public var rules: [EgressRule]
    /// Concurrent proxied connections (accepted and not yet closed) at most; the next is refused.
    public var maxConnections: Int
    /// DNS queries per second (a token bucket with a burst of this many); over it, REFUSED.
    public var dnsQueriesPerSecond: Int

    public init(rules: [EgressRule], maxConnections: Int = 256, dnsQueriesPerSecond: Int = 100) {
        self.rules = rules
        self.maxConnections = maxConnections
        self.dnsQueriesPerSecond = dnsQueriesPerSecond
    }
}

/// The errors of the filter's API, each naming the field or address at fault.
public enum EgressFilterError: Error, Equatable, CustomStringConvertible {
    case invalidDomain(String, String)
    case invalidCIDR(String, String)
    case invalidAddress(field: String, value: String)
    case invalidLimit(field: String, value: Int)
    case sourceInUse(source: String, sandbox: String)
    case sandboxInUse(String)
    case noUpstreamDNS(String)
    case bind(address: String, port: UInt16, what: String, reason: String)
    case notStarted

    public var description: String {
        switch self {
        case .invalidDomain(let d, let why): "egress domain \"\(d)\": \(why)"
        case .invalidCIDR(let c, let why): "egress cidr \"\(c)\": \(why)"
        case .invalidAddress(let field, let value): "\(field): \"\(value)\" is not a valid address"
        case .invalidLimit(let field, let value): "\(field): \(value) must be at least 1"
        case .sourceInUse(let source, let sandbox): "source \(source) is already registered for sandbox \(sandbox)"
        case .sandboxInUse(let s): "sandbox \(s) is already registered"
        case .noUpstreamDNS(let why): "no upstream DNS server: \(why)"
        case .bind(let address, let port, let what, let reason):
            "egress filter \(what) cannot bind \(address):\(port): \(reason)"
        case .notStarted: "egress filter not started"
        }
    }
}

/// A compiled allowlist: names normalized, prefixes parsed.
struct CompiledPolicy: Sendable {
    var exact: Set<String> = []
    var suffixes: [String] = []
    var cidrs: [(CIDR, Set<UInt16>?)] = []
    var policy: EgressPolicy

    init(_ policy: EgressPolicy) throws(EgressFilterError) {
        self.policy = policy
        guard policy.maxConnections >= 1 else {
            throw .invalidLimit(field: "maxConnections", value: policy.maxConnections)
        }
        guard policy.dnsQueriesPerSecond >= 1 else {
            throw .invalidLimit(field: "dnsQueriesPerSecond", value: policy.dnsQueriesPerSecond)
        }
        for rule in policy.rules {
            switch rule {
            case .domain(let text):
                var name = text.lowercased()
                if name.hasSuffix(".") { name.removeLast() }
                if name.hasPrefix("*.") {
                    let suffix = String(name.dropFirst(2))
                    guard let checked = HostName.normalize(suffix) else {
                        throw .invalidDomain(text, "the part after \"*.\" is not a host name (RFC 1123 §2.1)")
                    }
                    suffixes.append(checked)
                } else {
                    guard let checked = HostName.normalize(name) else {
                        throw .invalidDomain(text, "not a host name (RFC 1123 §2.1) nor \"*.suffix\"")
                    }
                    exact.insert(checked)
                }
            case .cidr(let text, let ports):
                let prefix = try CIDR(text)
                if let ports, ports.contains(0) { throw .invalidCIDR(text, "port 0") }
                cidrs.append((prefix, ports.map(Set.init)))
            }
        }
    }

    /// Whether `name` (normalized) is allowed by a domain rule.
    func allows(name: String) -> Bool {
        if exact.contains(name) { return true }
        return suffixes.contains { name.hasSuffix("." + $0) }
    }

    /// Whether a cidr rule allows TCP to `address`:`port`.
    func allows(address: IPAddress, port: UInt16) -> Bool {
        cidrs.contains { $0.0.contains(address) && ($0.1?.contains(port) ?? true) }
    }
}

/// Host names as the filter compares them.
enum HostName {
    /// Lower-case, no final dot, LDH labels of 1-63 (RFC 1123 §2.1; "_" allowed as DNS does
    /// in practice), at most 253 characters, at least one label, not an IPv4 literal. Nil
    /// when not a name.
    static func normalize(_ text: String) -> String? {
        var name = text.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        guard !name.isEmpty, name.utf8.count <= 253 else { return nil }
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63, !label.hasPrefix("-"), !label.hasSuffix("-"),
                label.utf8.allSatisfy({
                    ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F
                })
            else { return nil }
        }
        if IPAddress(name) != nil { return nil }
        return name
    }

    /// The host of an HTTP Host header value (RFC 9110 §7.2: uri-host [":" port]).
    /// - Returns: the normalized name, or nil for an IP literal or a malformed value.
    static func fromHostHeader(_ value: String) -> String? {
        var host = Substring(value.trimmingASCIISpaces())
        if host.hasPrefix("[") { return nil }  // IPv6 literal
        if let colon = host.lastIndex(of: ":") {
            let port = host[host.index(after: colon)...]
            guard port.allSatisfy(\.isASCIIDigit) else { return nil }
            host = host[..<colon]
        }
        return normalize(String(host))
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    func trimmingASCIISpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

/// The decision records of the filter (issue 13, deliverable 4): one per DNS query and per
/// proxied connection. Allowed connections are recorded when they close, with their bytes
/// and duration; denials when decided.
public struct EgressRecord: Sendable, Equatable {
    public enum Event: String, Sendable {
        case allowed = "network.allowed"
        case denied = "network.denied"
    }
    public enum NetworkProtocol: String, Sendable {
        /// A DNS query (UDP or TCP), `domain` the question's name, `queryType` its QTYPE.
        case dns
        /// Port 80: `domain` from the Host header.
        case http
        /// Port 443: `domain` from the ClientHello SNI.
        case tls
    }
    public var event: Event
    public var sandbox: String
    /// The name asked for (DNS question, Host, SNI); nil when none was given.
    public var domain: String?
    /// The address the filter dialled (or would have: the refused one), "ip".
    public var destinationAddress: String?
    public var destinationPort: UInt16?
    /// The destination the sandbox asked for (SO_ORIGINAL_DST of a redirected connection,
    /// "ip:port"); nil when the connection reached the filter's address directly.
    public var originalDestination: String?
    public var networkProtocol: NetworkProtocol
    /// The DNS QTYPE mnemonic or number ("A", "AAAA", "65"), DNS records only.
    public var queryType: String?
    /// Bytes from the sandbox to the destination / back, allowed connections.
    public var bytesOut: UInt64
    public var bytesIn: UInt64
    /// Milliseconds from accept to close (allowed) or to the decision (denied).
    public var durationMs: UInt64
    /// Why: the matching rule for allowed, the refusal for denied.
    public var reason: String
    /// The sandbox's source address, "ip".
    public var source: String
}

/// Per-sandbox totals since registration.
public struct EgressCounters: Sendable, Equatable {
    public var allowedConnections: UInt64 = 0
    public var deniedConnections: UInt64 = 0
    /// Connections open now.
    public var activeConnections: Int = 0
    public var bytesOut: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var dnsAnswered: UInt64 = 0
    /// DNS queries answered NXDOMAIN/REFUSED/NOTIMP by policy or limit.
    public var dnsRefused: UInt64 = 0
    public init() {}
}

/// How the filter is set up on a node.
public struct EgressFilterConfiguration: Sendable {
    /// The IPv4 address the filter binds.
    public var listenAddress: String
    /// 0: the kernel picks; `EgressFilter.boundPorts` tells after `start()`.
    public var dnsPort: UInt16
    public var httpPort: UInt16
    public var tlsPort: UInt16
    /// "ip:port" (or "ip", port 53; "[v6]:port"); see `upstreamDNSFromEnvironment`.
    public var upstreamDNS: [String]
    /// CIDRs the node allows to be dialled although not global (e.g. "198.18.0.0/15").
    public var allowedPrivateRanges: [String]
    /// Called for every decision, on a NIO event loop thread: must not block.
    public var record: @Sendable (EgressRecord) -> Void
    /// Seconds a connection may take to send its Host/ClientHello (slow or silent ones are
    /// denied, "no request within"), and DNS upstream query timeout.
    public var sniffTimeout: Double = 10
    public var upstreamTimeout: Double = 5
    /// Seconds to connect to the resolved destination.
    public var connectTimeout: Double = 10
    /// The largest HTTP request head read for its Host header, bytes.
    public var maxRequestHead: Int = 16384

    public init(
        listenAddress: String, dnsPort: UInt16 = 0, httpPort: UInt16 = 0, tlsPort: UInt16 = 0, upstreamDNS: [String],
        allowedPrivateRanges: [String] = [], record: @escaping @Sendable (EgressRecord) -> Void = { _ in }
    ) {
        self.listenAddress = listenAddress
        self.dnsPort = dnsPort
        self.httpPort = httpPort
        self.tlsPort = tlsPort
        self.upstreamDNS = upstreamDNS
        self.allowedPrivateRanges = allowedPrivateRanges
        self.record = record
    }

    /// The upstream servers by precedence (issue 13): `SAFESPACE_UPSTREAM_DNS=ip:port[,ip:port]`
    /// when set, else `nodeConfig` when not empty, else the `nameserver` lines of
    /// /etc/resolv.conf (resolv.conf(5)), port 53. Loopback nameservers (a local stub such as
    /// systemd-resolved's 127.0.0.53) are kept: the filter runs in the host's namespace.
    /// - Throws: `EgressFilterError.noUpstreamDNS` when none is found.
    public static func upstreamDNS(
        environment: [String: String], nodeConfig: [String] = [], resolvConf: String = "/etc/resolv.conf"
    ) throws(EgressFilterError) -> [String] {
        if let value = environment["SAFESPACE_UPSTREAM_DNS"], !value.isEmpty {
            return value.split(separator: ",").map { String($0).trimmingASCIISpaces() }
        }
        if !nodeConfig.isEmpty { return nodeConfig }
        guard let file = fopen(resolvConf, "r") else { throw .noUpstreamDNS("cannot read \(resolvConf)") }
        defer { fclose(file) }
        var servers: [String] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            if fields.count >= 2, fields[0] == "nameserver", IPAddress(String(fields[1])) != nil {
                servers.append(String(fields[1]))
            }
        }
        guard !servers.isEmpty else { throw .noUpstreamDNS("no nameserver line in \(resolvConf)") }
        return servers
    }
}
