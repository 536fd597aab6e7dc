import Foundation

/// The nftables ruleset of one sandbox: table `inet safespace-<sandbox>` (one table per
/// sandbox, so that adding and removing a sandbox is one transaction that touches no other
/// sandbox's rules and the host's own tables stay untouched). Expressions as
/// libnftables-json(5) writes them.
///
/// ```
/// table inet safespace-<name> {
///   counter spoof_dropped; counter egress_dropped; counter ingress_dropped
///   chain guard       { type filter hook prerouting priority raw (-300)
///     iifname V ip saddr != S drop (spoof_dropped)      -- from the veth only the sandbox's address
///     iifname V meta nfproto ipv6 drop (egress_dropped) -- no IPv6 path exists
///     iifname != V ip saddr S drop (spoof_dropped) }    -- nobody else uses the sandbox's address
///   chain dnat        { type nat hook prerouting priority dstnat (-100)
///     iifname V ip daddr <cidr> [ports] accept          -- cidr rules: not redirected
///     iifname V udp/tcp dport 53 dnat to H:<dns>; tcp dport 80 dnat to H:<http>; 443 to H:<tls> }
///   chain egress      { type filter hook prerouting priority filter (0), after dstnat
///     iifname V ct direction reply ip daddr H accept    -- replies to the host's connections
///     iifname V ip daddr H udp dport <dns> accept; tcp dport {<dns>,<http>,<tls>} accept
///     iifname V ip daddr <cidr> [ports] accept
///     iifname V drop (egress_dropped) }                 -- in prerouting: counted whether or
///                                                          not the host forwards
///   chain forward     { type filter hook forward priority filter (0)
///     oifname V ct state new drop (ingress_dropped) }
///   chain output      { type filter hook output priority filter (0)
///     oifname V ct state new drop (ingress_dropped) }    -- ingress: false only
///   chain postrouting { type nat hook postrouting priority srcnat (100)
///     ip saddr S oifname != V masquerade }               -- cidr rules only
/// }
/// ```
/// (V: the host side of the veth, S: the sandbox's address, H: the host side's address.)
struct SandboxRules {
    var table: String
    var veth: String
    var hostAddress: IPv4Address
    var sandboxAddress: IPv4Address
    var ports: EgressPorts
    var cidrRules: [CIDRRule]
    var ingress: Bool

    static let counters = ["spoof_dropped", "egress_dropped", "ingress_dropped"]

    private var family: [String: Any] { ["family": "inet", "table": table] }

    private func chain(_ name: String, type: String, hook: String, prio: Int) -> [String: Any] {
        [
            "add": [
                "chain": family.merging(["name": name, "type": type, "hook": hook, "prio": prio, "policy": "accept"]) {
                    a, _ in a
                }
            ]
        ]
    }

    private func rule(_ chain: String, _ expr: [[String: Any]]) -> [String: Any] {
        ["add": ["rule": family.merging(["chain": chain, "expr": expr]) { a, _ in a }]]
    }

    private static func match(_ left: [String: Any], _ right: Any, op: String = "==") -> [String: Any] {
        ["match": ["op": op, "left": left, "right": right]]
    }

    private static func meta(_ key: String) -> [String: Any] { ["meta": ["key": key]] }
    private static func payload(_ proto: String, _ field: String) -> [String: Any] {
        ["payload": ["protocol": proto, "field": field]]
    }

    private var fromVeth: [String: Any] { Self.match(Self.meta("iifname"), veth) }
    private var toVeth: [String: Any] { Self.match(Self.meta("oifname"), veth) }
    private static var drop: [String: Any] { ["drop": NSNull()] }
    private static var accept: [String: Any] { ["accept": NSNull()] }
    private static func count(_ name: String) -> [String: Any] { ["counter": name] }
    private static var newConnection: [String: Any] { match(["ct": ["key": "state"]], "new", op: "in") }

    /// The match of one cidr rule's destination: address prefix, then protocol and ports.
    private func cidrMatches(_ rule: CIDRRule) -> [[[String: Any]]] {
        let destination = Self.match(
            Self.payload("ip", "daddr"),
            ["prefix": ["addr": rule.prefix.address.description, "len": rule.prefix.length]])
        guard let ports = rule.ports, !ports.isEmpty else { return [[destination]] }
        return ["tcp", "udp"].compactMap { proto in
            let list = ports.filter { $0.protocol == proto }.map { Int($0.port) }
            guard !list.isEmpty else { return nil }
            return [destination, Self.match(Self.payload(proto, "dport"), ["set": list])]
        }
    }

    /// The commands that make the table: `add` everything (one transaction).
    var commands: [[String: Any]] {
        var out: [[String: Any]] = [["create": ["table": ["family": "inet", "name": table]]]]
        for name in Self.counters { out.append(["add": ["counter": family.merging(["name": name]) { a, _ in a }]]) }
        let h = hostAddress.description
        let s = sandboxAddress.description

        out.append(chain("guard", type: "filter", hook: "prerouting", prio: -300))
        out.append(
            rule(
                "guard",
                [
                    fromVeth, Self.match(Self.payload("ip", "saddr"), s, op: "!="), Self.count("spoof_dropped"),
                    Self.drop,
                ]))
        out.append(
            rule(
                "guard", [fromVeth, Self.match(Self.meta("nfproto"), "ipv6"), Self.count("egress_dropped"), Self.drop]))
        out.append(
            rule(
                "guard",
                [
                    Self.match(Self.meta("iifname"), veth, op: "!="), Self.match(Self.payload("ip", "saddr"), s),
                    Self.count("spoof_dropped"), Self.drop,
                ]))

        out.append(chain("dnat", type: "nat", hook: "prerouting", prio: -100))
        for rule in cidrRules {
            for matches in cidrMatches(rule) { out.append(self.rule("dnat", [fromVeth] + matches + [Self.accept])) }
        }
        for (proto, port, target) in [
            ("udp", 53, ports.dns), ("tcp", 53, ports.dns), ("tcp", 80, ports.http), ("tcp", 443, ports.tls),
        ] {
            out.append(
                rule(
                    "dnat",
                    [
                        fromVeth, Self.match(Self.payload(proto, "dport"), port),
                        ["dnat": ["family": "ip", "addr": h, "port": Int(target)]],
                    ]))
        }

        // After dstnat: the destinations are the filter's, or the cidr rules' (not redirected).
        out.append(chain("egress", type: "filter", hook: "prerouting", prio: 0))
        let toHost = Self.match(Self.payload("ip", "daddr"), h)
        // Replies to the host's own connections into the sandbox (ingress: true). Never a plain
        // `ct state established` accept: conntrack entries outlive a sandbox, and the next
        // sandbox given the same address would inherit its forwarded connections. Every other
        // packet, not only a connection's first, is judged by the rules below.
        out.append(rule("egress", [fromVeth, Self.match(["ct": ["key": "direction"]], "reply"), toHost, Self.accept]))
        out.append(
            rule("egress", [fromVeth, toHost, Self.match(Self.payload("udp", "dport"), Int(ports.dns)), Self.accept]))
        out.append(
            rule(
                "egress",
                [
                    fromVeth, toHost,
                    Self.match(
                        Self.payload("tcp", "dport"),
                        ["set": Array(Set([ports.dns, ports.http, ports.tls])).sorted().map { Int($0) }]), Self.accept,
                ]))
        for rule in cidrRules {
            for matches in cidrMatches(rule) { out.append(self.rule("egress", [fromVeth] + matches + [Self.accept])) }
        }
        out.append(rule("egress", [fromVeth, Self.count("egress_dropped"), Self.drop]))

        out.append(chain("forward", type: "filter", hook: "forward", prio: 0))
        out.append(rule("forward", [toVeth, Self.newConnection, Self.count("ingress_dropped"), Self.drop]))

        if !ingress {
            out.append(chain("output", type: "filter", hook: "output", prio: 0))
            out.append(rule("output", [toVeth, Self.newConnection, Self.count("ingress_dropped"), Self.drop]))
        }
        if !cidrRules.isEmpty {
            out.append(chain("postrouting", type: "nat", hook: "postrouting", prio: 100))
            out.append(
                rule(
                    "postrouting",
                    [
                        Self.match(Self.payload("ip", "saddr"), s), Self.match(Self.meta("oifname"), veth, op: "!="),
                        ["masquerade": NSNull()],
                    ]))
        }
        return out
    }
}
