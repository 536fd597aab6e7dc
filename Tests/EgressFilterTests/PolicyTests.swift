import TestSupport
import Testing

@testable import EgressFilter

@Suite struct PolicyTests {
    @Test func domainRulesMatchExactAndWildcardCaseInsensitively() throws {
        let policy = try CompiledPolicy(EgressPolicy(rules: [.domain("PyPI.org."), .domain("*.pythonhosted.org")]))
        #expect(policy.allows(name: "pypi.org"))
        #expect(!policy.allows(name: "www.pypi.org"))
        #expect(!policy.allows(name: "evilpypi.org"))
        #expect(policy.allows(name: "files.pythonhosted.org"))
        #expect(policy.allows(name: "a.b.pythonhosted.org"))
        #expect(!policy.allows(name: "pythonhosted.org"))
        #expect(!policy.allows(name: "xpythonhosted.org"))
        #expect(HostName.normalize("FILES.PythonHosted.ORG.") == "files.pythonhosted.org")
    }

    @Test func badRulesAndLimitsNameTheField() {
        #expect(throws: EgressFilterError.invalidDomain("*", "not a host name (RFC 1123 §2.1) nor \"*.suffix\"")) {
            try CompiledPolicy(EgressPolicy(rules: [.domain("*")]))
        }
        #expect(throws: EgressFilterError.self) { try CompiledPolicy(EgressPolicy(rules: [.domain("a.*.com")])) }
        #expect(throws: EgressFilterError.self) { try CompiledPolicy(EgressPolicy(rules: [.domain("10.0.0.1")])) }
        #expect(throws: EgressFilterError.self) {
            try CompiledPolicy(EgressPolicy(rules: [.cidr("10.0.0.1/8", ports: nil)]))
        }
        #expect(throws: EgressFilterError.self) {
            try CompiledPolicy(EgressPolicy(rules: [.cidr("10.0.0.0/33", ports: nil)]))
        }
        #expect(throws: EgressFilterError.invalidLimit(field: "maxConnections", value: 0)) {
            try CompiledPolicy(EgressPolicy(rules: [], maxConnections: 0))
        }
    }

    @Test func cidrRulesMatchAddressAndPorts() throws {
        let policy = try CompiledPolicy(
            EgressPolicy(rules: [.cidr("198.18.0.0/15", ports: [5432]), .cidr("2001:db8::/32", ports: nil)]))
        #expect(policy.allows(address: IPAddress("198.19.255.1")!, port: 5432))
        #expect(!policy.allows(address: IPAddress("198.19.255.1")!, port: 80))
        #expect(!policy.allows(address: IPAddress("198.20.0.1")!, port: 5432))
        #expect(policy.allows(address: IPAddress("2001:db8::1")!, port: 22))
    }

    @Test func hostHeaderValues() {
        #expect(HostName.fromHostHeader("Example.COM:8080") == "example.com")
        #expect(HostName.fromHostHeader(" example.com ") == "example.com")
        #expect(HostName.fromHostHeader("[::1]:80") == nil)
        #expect(HostName.fromHostHeader("127.0.0.1") == nil)
        #expect(HostName.fromHostHeader("a.com:x") == nil)
        #expect(HostName.fromHostHeader("a b.com") == nil)
        #expect(HostName.fromHostHeader("") == nil)
    }

    @Test func nonGlobalAddressesAreRefusedUnlessAllowed() throws {
        let refused = [
            "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.255",
            "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::", "fd00::1", "fe80::1", "ff02::1",
            "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "3fff::1",
        ]
        for text in refused {
            #expect(AddressPolicy.refusal(for: IPAddress(text)!, allowed: []) != nil, "\(text)")
        }
        for text in ["1.1.1.1", "151.101.0.223", "100.128.0.1", "2a04:4e42::223", "::ffff:1.1.1.1"] {
            #expect(AddressPolicy.refusal(for: IPAddress(text)!, allowed: []) == nil, "\(text)")
        }
        let allowed = [try CIDR("198.18.0.0/15")]
        #expect(AddressPolicy.refusal(for: IPAddress("198.19.1.2")!, allowed: allowed) == nil)
        #expect(AddressPolicy.refusal(for: IPAddress("10.0.0.1")!, allowed: allowed) != nil)
    }

    @Test func upstreamPrecedenceAndParsing() throws {
        #expect(
            try EgressFilterConfiguration.upstreamDNS(
                environment: ["SAFESPACE_UPSTREAM_DNS": "198.18.0.53:5353, 1.1.1.1"], nodeConfig: ["9.9.9.9"]) == [
                    "198.18.0.53:5353", "1.1.1.1",
                ])
        #expect(try EgressFilterConfiguration.upstreamDNS(environment: [:], nodeConfig: ["9.9.9.9"]) == ["9.9.9.9"])
        let servers = try UpstreamResolver.parse(["198.18.0.53:5353", "1.1.1.1", "[2001:db8::1]:53"])
        #expect(servers.map(\.port) == [5353, 53, 53])
        #expect(throws: EgressFilterError.self) { try UpstreamResolver.parse(["1.1.1.1:0"]) }
        #expect(throws: EgressFilterError.self) { try UpstreamResolver.parse(["dns.google"]) }
        #expect(throws: EgressFilterError.self) { try UpstreamResolver.parse([]) }
    }
}

@Suite struct RecordTests {
    func record(_ event: EgressRecord.Event, _ domain: String?, sandbox: String = "s", original: String? = nil)
        -> EgressRecord
    {
        EgressRecord(
            event: event, sandbox: sandbox, domain: domain, destinationAddress: "1.2.3.4", destinationPort: 443,
            originalDestination: original, networkProtocol: .tls, queryType: nil, bytesOut: 10, bytesIn: 20,
            durationMs: 3,
            reason: "r", source: "100.64.0.2")
    }

    @Test func auditFieldsNameEveryField() {
        let fields = record(.allowed, "pypi.org", original: "9.9.9.9:443").auditFields
        #expect(
            fields == [
                "event": "network.allowed", "sandbox": "s", "source": "100.64.0.2", "protocol": "tls",
                "domain": "pypi.org",
                "destination": "1.2.3.4", "port": "443", "original_destination": "9.9.9.9:443", "bytes_out": "10",
                "bytes_in": "20", "duration_ms": "3", "reason": "r",
            ])
        #expect(record(.denied, nil).auditFields["domain"] == nil)
    }

    @Test func denialSummaryCountsThisSandboxesDenials() {
        let summary = EgressDenialSummary(sandbox: "s")
        #expect(summary.line() == nil)
        summary.add(record(.denied, "evil.example"))
        summary.add(record(.denied, "evil.example"))
        summary.add(record(.denied, nil, original: "10.0.0.1:443"))
        summary.add(record(.allowed, "pypi.org"))
        summary.add(record(.denied, "other.example", sandbox: "t"))
        #expect(summary.line() == "egress denied: 2 x evil.example, 1 x 10.0.0.1:443")
        #expect(summary.line(limit: 1) == "egress denied: 2 x evil.example, and 1 more")
    }
}

@Suite struct StartTests {
    @Test func bindFailuresNameTheAddressPortAndListener() async throws {
        let first = try EgressFilter(
            configuration: EgressFilterConfiguration(listenAddress: "127.0.0.1", upstreamDNS: ["127.0.0.1:53"]))
        try await first.start()
        let ports = first.boundPorts
        #expect(ports.dns != 0 && ports.http != 0 && ports.tls != 0)
        // The same DNS port (UDP): refused, not shared.
        let second = try EgressFilter(
            configuration: EgressFilterConfiguration(
                listenAddress: "127.0.0.1", dnsPort: ports.dns, upstreamDNS: ["127.0.0.1"]))
        await #expect(throws: EgressFilterError.self) { try await second.start() }
        do {
            try await second.start()
        } catch let EgressFilterError.bind(address, port, what, _) {
            #expect(address == "127.0.0.1" && port == ports.dns && what == "DNS (udp)")
        }
        try await second.shutdown()
        // The same TLS port: the listeners bound before it are closed again.
        let third = try EgressFilter(
            configuration: EgressFilterConfiguration(
                listenAddress: "127.0.0.1", tlsPort: ports.tls, upstreamDNS: ["127.0.0.1"]))
        do {
            try await third.start()
            Issue.record("bound a port in use")
        } catch let EgressFilterError.bind(_, port, what, _) {
            #expect(port == ports.tls && what == "TLS proxy")
        }
        #expect(third.boundPorts == (0, 0, 0))
        try await third.shutdown()
        try await first.shutdown()
        #expect(throws: EgressFilterError.invalidAddress(field: "listenAddress", value: "::1")) {
            try EgressFilter(configuration: EgressFilterConfiguration(listenAddress: "::1", upstreamDNS: ["127.0.0.1"]))
        }
    }
}

@Suite struct ResolvConfTests {
    @Test func nameserverLinesOfResolvConf() throws {
        let dir = try Harness.tempDir("resolv")
        defer { Harness.cleanup(dir) }
        try
            "# comment\nsearch example\nnameserver 10.255.255.53\nnameserver\tfd00::53\nnameserver bogus\noptions ndots:1\n"
            .write(toFile: dir + "/resolv.conf", atomically: true, encoding: .utf8)
        #expect(
            try EgressFilterConfiguration.upstreamDNS(environment: [:], resolvConf: dir + "/resolv.conf") == [
                "10.255.255.53", "fd00::53",
            ])
        try "search example\n".write(toFile: dir + "/empty.conf", atomically: true, encoding: .utf8)
        #expect(throws: EgressFilterError.self) {
            try EgressFilterConfiguration.upstreamDNS(environment: [:], resolvConf: dir + "/empty.conf")
        }
        #expect(throws: EgressFilterError.self) {
            try EgressFilterConfiguration.upstreamDNS(environment: [:], resolvConf: dir + "/missing.conf")
        }
    }
}
