/// The node's network settings for sandboxes with egress rules (issue 13): the address pool,
/// the egress filter's ports, upstream DNS servers, private ranges it may dial, per-sandbox
/// limits. The `network:` section of safespaced's configuration file; `safespace run` reads
/// the same section of the same file (the node's configuration), so both front ends host
/// sandboxes alike.
///
/// ```yaml
/// network:
///   pool: 100.64.0.0/16             # IPv4 prefix of the sandboxes' /30 subnets
///   dnsPort: 0                      # the filter's ports on 0.0.0.0; 0: the kernel picks
///   httpPort: 0
///   tlsPort: 0
///   upstreamDNS: ["1.1.1.1:53"]     # default: /etc/resolv.conf; $SAFESPACE_UPSTREAM_DNS overrides
///   allowedPrivateRanges: []        # CIDRs the filter may dial although not global
///   maxConnections: 256             # concurrent proxied connections per sandbox
///   dnsQueriesPerSecond: 100        # per sandbox (token bucket, burst of as many)
/// ```
import EgressFilter
import Foundation
import Glibc
import SandboxNetwork
import Yams

public struct NetworkSettings: Sendable, Equatable {
    /// `network.pool`: the address pool (`SandboxNetworks.defaultPool`).
    public var pool = SandboxNetworks.defaultPool
    /// `network.dnsPort`, `httpPort`, `tlsPort`: the filter's listening ports; 0: the kernel's
    /// pick (the sandboxes' DNAT rules name the bound ports; an adopted sandbox's are
    /// rewritten, `SandboxNetworks.retarget`).
    public var dnsPort: UInt16 = 0
    public var httpPort: UInt16 = 0
    public var tlsPort: UInt16 = 0
    /// `network.upstreamDNS`: "ip:port" entries; empty: /etc/resolv.conf's nameservers.
    public var upstreamDNS: [String] = []
    /// `network.allowedPrivateRanges`: CIDRs the proxy may dial although not global.
    public var allowedPrivateRanges: [String] = []
    /// `network.maxConnections`: concurrent proxied connections per sandbox.
    public var maxConnections = 256
    /// `network.dnsQueriesPerSecond`: DNS queries per second per sandbox.
    public var dnsQueriesPerSecond = 100

    public init() {}

    /// The keys of the section.
    public static let keys: Set<String> = [
        "pool", "dnsPort", "httpPort", "tlsPort", "upstreamDNS", "allowedPrivateRanges", "maxConnections",
        "dnsQueriesPerSecond",
    ]

    /// Reads the mapping `node` of section `section` ("network").
    /// - Throws: `NetworkSettingsError` naming the key (`network.pool: ...`): unknown or
    ///   repeated keys, a pool that is not an IPv4 prefix of at least one /30, a port not
    ///   0-65535, an upstream entry that is not "ip", "ip:port" or "[v6]:port", a range that
    ///   is not a CIDR, a limit below 1.
    public static func parse(_ node: Node, section: String = "network") throws(NetworkSettingsError) -> NetworkSettings
    {
        guard let mapping = node.mapping else {
            throw NetworkSettingsError(field: section, "expected a mapping (\(keys.sorted().joined(separator: ", ")))")
        }
        var settings = NetworkSettings()
        var seen = Set<String>()
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { throw NetworkSettingsError(field: section, "keys must be strings") }
            let field = "\(section).\(key)"
            guard keys.contains(key) else {
                throw NetworkSettingsError(
                    field: field, "unknown key (known: \(keys.sorted().joined(separator: ", ")))")
            }
            guard seen.insert(key).inserted else { throw NetworkSettingsError(field: field, "given twice") }
            switch key {
            case "pool":
                guard let text = value.scalar?.string else {
                    throw NetworkSettingsError(field: field, "expected a string")
                }
                let prefix: IPv4Prefix
                do { prefix = try IPv4Prefix(text, field: field) } catch {
                    throw NetworkSettingsError(field: field, (error as? NetworkError)?.message ?? "\(error)")
                }
                guard prefix.length <= 30 else {
                    throw NetworkSettingsError(field: field, "\(text) is smaller than one /30 subnet")
                }
                settings.pool = text
            case "dnsPort", "httpPort", "tlsPort":
                guard let text = value.scalar?.string, let port = UInt16(text) else {
                    throw NetworkSettingsError(field: field, "expected a port number 0-65535 (0: the kernel picks)")
                }
                if key == "dnsPort" {
                    settings.dnsPort = port
                } else if key == "httpPort" {
                    settings.httpPort = port
                } else {
                    settings.tlsPort = port
                }
            case "upstreamDNS", "allowedPrivateRanges":
                guard let list = value.sequence else { throw NetworkSettingsError(field: field, "expected a list") }
                var entries: [String] = []
                for (i, item) in list.enumerated() {
                    guard let text = item.scalar?.string, !text.isEmpty else {
                        throw NetworkSettingsError(field: "\(field)[\(i)]", "expected a string")
                    }
                    do {
                        if key == "upstreamDNS" {
                            try EgressFilterConfiguration.checkUpstreamDNS([text])
                        } else {
                            _ = try CIDR(text)
                        }
                    } catch {
                        throw NetworkSettingsError(field: "\(field)[\(i)]", "\(error)")
                    }
                    entries.append(text)
                }
                if key == "upstreamDNS" {
                    settings.upstreamDNS = entries
                } else {
                    settings.allowedPrivateRanges = entries
                }
            default:  // maxConnections, dnsQueriesPerSecond
                guard let text = value.scalar?.string, let n = Int(text), n >= 1, n <= 1_000_000 else {
                    throw NetworkSettingsError(field: field, "expected a number 1-1000000")
                }
                if key == "maxConnections" { settings.maxConnections = n } else { settings.dnsQueriesPerSecond = n }
            }
        }
        return settings
    }

    /// The `network:` section of the YAML file `path` (the node's configuration,
    /// /etc/safespace/safespaced.yaml); the defaults when the file or the section is missing.
    /// Other sections are not read (they are safespaced's).
    /// - Throws: `NetworkSettingsError` naming the file and the key.
    public static func load(path: String) throws(NetworkSettingsError) -> NetworkSettings {
        guard let data = FileManager.default.contents(atPath: path) else {
            if access(path, F_OK) != 0 && errno == ENOENT { return NetworkSettings() }
            throw NetworkSettingsError(field: path, "cannot read: \(String(cString: strerror(errno)))")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: String(decoding: data, as: UTF8.self)) } catch {
            throw NetworkSettingsError(field: path, "not valid YAML: \(error)")
        }
        guard let network = root?.mapping?["network"] else { return NetworkSettings() }
        do { return try parse(network) } catch {
            throw NetworkSettingsError(field: error.field, "\(error.message) (in \(path))")
        }
    }
}

/// A bad network setting: `field` is the key (`network.pool`).
public struct NetworkSettingsError: Error, CustomStringConvertible, Equatable {
    public var field: String
    public var message: String
    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }
    public var description: String { "\(field): \(message)" }
}
