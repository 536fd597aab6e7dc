import Foundation
import TestSupport
import Testing

@testable import EgressFilter

/// The filter against a simulated internet (root: network namespaces, veths, an nftables
/// table of the test's own). One environment for the whole sequence; every part removed at
/// the end, also on failure, and counted.
@Suite(.serialized) struct EgressFilterNetworkTests {
    @Test(.enabled(if: Harness.isRoot && Harness.find("nft") != nil && Harness.find("ip") != nil))
    func simulatedInternet() async throws {
        let net = try SimulatedInternet()
        let log = RecordLog()
        var filter: EgressFilter?
        do {
            try net.up()
            var configuration = EgressFilterConfiguration(
                listenAddress: "0.0.0.0", upstreamDNS: ["\(net.dnsServer):53"],
                allowedPrivateRanges: ["198.18.0.0/15"], record: { log.append($0) })
            configuration.sniffTimeout = 3
            let started = try EgressFilter(configuration: configuration)
            filter = started
            try await started.start()
            let ports = started.boundPorts
            #expect(ports.dns != 0 && ports.http != 0 && ports.tls != 0)
            try net.redirect(dns: ports.dns, http: ports.http, tls: ports.tls)
            try started.register(
                sandbox: "sbx-a", source: net.clientAddress,
                policy: EgressPolicy(
                    rules: [
                        .domain("allowed.test"), .domain("*.wild.test"), .domain("alias.test"),
                        .domain("rebind-lo.test"), .domain("rebind-private.test"), .domain("metadata.test"),
                        .domain("mixed.test"), .domain("big.test"), .cidr("\(net.cidrServer)/32", ports: [80]),
                    ], maxConnections: 64, dnsQueriesPerSecond: 1000), hostAddress: net.hostAddress)
            try started.register(
                sandbox: "sbx-b", source: net.secondAddress,
                policy: EgressPolicy(rules: [.domain("allowed.test")], maxConnections: 2, dnsQueriesPerSecond: 5))
            #expect(throws: EgressFilterError.sourceInUse(source: net.clientAddress, sandbox: "sbx-a")) {
                try started.register(sandbox: "sbx-c", source: net.clientAddress, policy: EgressPolicy(rules: []))
            }
            try await run(started, net, log)
        } catch {
            Issue.record("\(error)")
        }
        try? await filter?.shutdown()
        if let dump = ProcessInfo.processInfo.environment["EGRESS_RECORDS"] {
            try? log.all.map { "\($0)" }.joined(separator: "\n").write(toFile: dump, atomically: true, encoding: .utf8)
        }
        net.close()
        #expect(net.leftovers() == [])
    }

    func run(_ filter: EgressFilter, _ net: SimulatedInternet, _ log: RecordLog) async throws {
        let a = net.clientAddress
        // DNS: an allowed name resolves to its address, over UDP and TCP, via any address
        // (the redirect catches 53 wherever it goes).
        var r = try net.client(["dns", "9.9.9.9", "allowed.test", "1", a])
        #expect(r.stdout.contains("rcode=0 answers=\(net.allowedServer)"), "\(r)")
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", a, "tcp"])
        #expect(r.stdout.contains("rcode=0 answers=\(net.allowedServer)"), "\(r)")
        r = try net.client(["dns", net.hostAddress, "www.wild.test", "1", a])
        #expect(r.stdout.contains("rcode=0 answers=\(net.allowedServer)"), "\(r)")
        // The CNAME chain is followed.
        r = try net.client(["dns", net.hostAddress, "alias.test", "1", a])
        #expect(r.stdout.contains("rcode=0 answers=\(net.allowedServer)"), "\(r)")
        // A denied name: NXDOMAIN, and never asked upstream (nothing to tunnel through).
        r = try net.client(["dns", net.hostAddress, "denied.test", "1", a])
        #expect(r.stdout.contains("rcode=3 answers= "), "\(r)")
        r = try net.client(["dns", net.hostAddress, "denied.test", "16", a])
        #expect(r.stdout.contains("rcode=3"), "\(r)")
        let upstreamLog = (try? String(contentsOfFile: net.dir + "/dns.log", encoding: .utf8)) ?? ""
        #expect(!upstreamLog.contains("denied.test"), "\(upstreamLog)")
        // An answer over 512 bytes: the upstream truncates it over UDP, the filter asks again
        // over TCP (RFC 7766), and truncates its own UDP answer: the client gets all 40
        // addresses over TCP.
        r = try net.client(["dns", net.hostAddress, "big.test", "1", a])
        #expect(r.stdout.contains("rcode=0 answers= tc=1"), "\(r)")
        r = try net.client(["dns", net.hostAddress, "big.test", "1", a, "tcp"])
        #expect(
            r.stdout.contains("answers=198.18.\(net.k).100,") && r.stdout.contains("198.18.\(net.k).139 tc=0"), "\(r)")
        let upstreamTCP = (try? String(contentsOfFile: net.dir + "/dns.log", encoding: .utf8)) ?? ""
        #expect(upstreamTCP.contains("tcp"), "\(upstreamTCP)")
        // Other QTYPEs of an allowed name: NODATA, not forwarded.
        r = try net.client(["dns", net.hostAddress, "allowed.test", "16", a])
        #expect(r.stdout.contains("rcode=0 answers= "), "\(r)")
        // Rebinding at the DNS level: non-global addresses are left out of answers.
        r = try net.client(["dns", net.hostAddress, "rebind-lo.test", "1", a])
        #expect(r.stdout.contains("rcode=0 answers= "), "\(r)")
        r = try net.client(["dns", net.hostAddress, "mixed.test", "1", a])
        #expect(r.stdout.contains("rcode=0 answers=\(net.allowedServer) "), "\(r)")
        let dnsDenied = log.first { $0.event == .denied && $0.networkProtocol == .dns && $0.domain == "denied.test" }
        #expect(dnsDenied?.sandbox == "sbx-a" && dnsDenied?.queryType == "A" && dnsDenied?.reason == "name not allowed")
        let dnsAllowed = log.first { $0.event == .allowed && $0.networkProtocol == .dns && $0.domain == "allowed.test" }
        #expect(dnsAllowed?.destinationAddress == net.allowedServer && dnsAllowed?.source == a)

        // HTTP and HTTPS of an allowed name through the filter's DNS (resolv.conf of the
        // client namespace points at the filter) and the proxy.
        r = try net.inClient(["curl", "-sS", "-m", "20", "http://allowed.test/"])
        #expect(r.stdout.contains("hello from \(net.allowedServer) host=allowed.test"), "\(r)")
        r = try net.inClient(["curl", "-sS", "-k", "-m", "20", "https://allowed.test/"])
        #expect(r.stdout.contains("hello from \(net.allowedServer) host=allowed.test"), "\(r)")
        let tlsAllowed = log.wait { $0.event == .allowed && $0.networkProtocol == .tls && $0.domain == "allowed.test" }
        #expect(tlsAllowed?.destinationAddress == net.allowedServer && tlsAllowed?.destinationPort == 443)
        #expect((tlsAllowed?.bytesOut ?? 0) > 0 && (tlsAllowed?.bytesIn ?? 0) > 0, "\(String(describing: tlsAllowed))")
        #expect(tlsAllowed?.originalDestination == "\(net.allowedServer):443")
        let httpAllowed = log.wait {
            $0.event == .allowed && $0.networkProtocol == .http && $0.domain == "allowed.test"
        }
        #expect(httpAllowed?.reason == "domain rule" && (httpAllowed?.bytesIn ?? 0) > 0)

        // An allowed SNI sent to another address (the decoy): it reaches the resolved
        // address; the decoy sees nothing. Same for a Host header.
        r = try net.inClient([
            "curl", "-sS", "-k", "-m", "20", "--resolve", "allowed.test:443:\(net.decoyServer)",
            "https://allowed.test/",
        ])
        #expect(r.stdout.contains("hello from \(net.allowedServer)"), "\(r)")
        r = try net.inClient([
            "curl", "-sS", "-m", "20", "--resolve", "allowed.test:80:\(net.decoyServer)", "http://allowed.test/",
        ])
        #expect(r.stdout.contains("hello from \(net.allowedServer)"), "\(r)")
        let fronted = log.wait { $0.networkProtocol == .tls && $0.originalDestination == "\(net.decoyServer):443" }
        #expect(fronted?.event == .allowed && fronted?.destinationAddress == net.allowedServer)
        #expect(net.decoyLog == "", "the decoy was reached: \(net.decoyLog)")

        // A denied name on 443 and on 80 (at the decoy's address): refused; 403 on HTTP.
        r = try net.inClient([
            "curl", "-sS", "-k", "-m", "20", "--resolve", "denied.test:443:\(net.decoyServer)", "https://denied.test/",
        ])
        #expect(r.status != 0 && !r.stdout.contains("hello"), "\(r)")
        r = try net.client(["http", net.decoyServer, "80", a, "denied.test"])
        #expect(r.stdout.hasPrefix("HTTP/1.1 403"), "\(r)")
        // Host of a denied name on a connection to the allowed server's address.
        r = try net.client(["http", net.allowedServer, "80", a, "denied.test"])
        #expect(r.stdout.hasPrefix("HTTP/1.1 403"), "\(r)")
        // An IP literal as Host or without SNI: refused (no name), unless a cidr rule allows.
        r = try net.client(["http", net.allowedServer, "80", a, net.allowedServer])
        #expect(r.stdout.hasPrefix("HTTP/1.1 403"), "\(r)")
        r = try net.client(["http", net.cidrServer, "80", a, net.cidrServer])
        #expect(r.stdout.contains("hello from \(net.cidrServer)"), "\(r)")
        #expect(net.decoyLog == "", "the decoy was reached: \(net.decoyLog)")
        let tlsDenied = log.wait { $0.event == .denied && $0.networkProtocol == .tls && $0.domain == "denied.test" }
        #expect(tlsDenied?.originalDestination == "\(net.decoyServer):443" && tlsDenied?.reason == "name not allowed")

        // Keep-alive: a second request on the same connection naming another host is not
        // passed on (the decoy, or any other host of the resolved server, would get it);
        // the same host is.
        r = try net.client(["keepalive", net.decoyServer, "80", a, "allowed.test", "decoy.test"])
        #expect(r.stdout.contains("first: HTTP/1.1 200") && r.stdout.contains("second: closed"), "\(r)")
        let keptAlive = log.wait {
            $0.event == .denied && $0.reason.hasPrefix("a later request on the connection names another Host")
        }
        #expect(keptAlive?.domain == "allowed.test" && keptAlive?.destinationAddress == net.allowedServer)
        r = try net.client(["keepalive", net.decoyServer, "80", a, "allowed.test", "ALLOWED.test:80"])
        #expect(r.stdout.contains("second: HTTP/1.1 200"), "\(r)")
        let served = (try? String(contentsOfFile: net.dir + "/served.log", encoding: .utf8)) ?? ""
        #expect(!served.contains("decoy.test"), "\(served)")

        // TLS to an IP literal (no SNI) and plain text on 443: refused.
        r = try net.inClient(["curl", "-sS", "-k", "-m", "20", "https://\(net.allowedServer)/"])
        #expect(r.status != 0 && !r.stdout.contains("hello"), "\(r)")
        r = try net.client(["http", net.allowedServer, "443", a, "allowed.test"])
        #expect(r.stdout.contains("closed"), "\(r)")
        let noSNI = log.wait { $0.networkProtocol == .tls && $0.reason == "no server name (SNI) in the ClientHello" }
        #expect(noSNI?.event == .denied && noSNI?.originalDestination == "\(net.allowedServer):443")

        // A ClientHello split over many segments (3 bytes, then 40-byte pieces).
        r = try net.client(["split", net.decoyServer, "443", a, "allowed.test", "40"])
        #expect(r.stdout.contains("hello from \(net.allowedServer) host=allowed.test"), "\(r)")
        r = try net.client(["split", net.decoyServer, "443", a, "denied.test", "40"])
        #expect(r.stdout.contains("closed"), "\(r)")

        // A connection that sends nothing: closed after the sniff timeout, denied.
        r = try net.client(["silent", net.allowedServer, "443", a])
        #expect(r.stdout.contains("closed"), "\(r)")
        let silent = log.wait { $0.event == .denied && $0.reason.hasPrefix("no ClientHello within") }
        #expect(silent?.sandbox == "sbx-a")

        // DNS rebinding at the proxy: allowed names resolving to loopback, RFC 1918 and the
        // metadata address are refused, whatever address the client connected to.
        for name in ["rebind-lo.test", "rebind-private.test", "metadata.test"] {
            r = try net.client(["http", net.allowedServer, "80", a, name])
            #expect(r.stdout.hasPrefix("HTTP/1.1 403"), "\(name): \(r)")
            let record = log.wait { $0.event == .denied && $0.domain == name && $0.networkProtocol == .http }
            #expect(record?.reason.contains("is not global") == true, "\(name): \(String(describing: record))")
        }
        // A client that half-closes after its request still gets the whole response, and the
        // connection is recorded when both sides are done.
        r = try net.client(["http", net.decoyServer, "80", a, "www.wild.test", "shut"])
        #expect(r.stdout.contains("hello from \(net.allowedServer) host=www.wild.test"), "\(r)")
        let halfClosed = log.wait {
            $0.event == .allowed && $0.domain == "www.wild.test" && $0.networkProtocol == .http
        }
        #expect((halfClosed?.bytesIn ?? 0) > 0, "\(String(describing: halfClosed))")
        // A name with a private and a global address goes to the global one.
        r = try net.client(["http", net.decoyServer, "80", a, "mixed.test"])
        #expect(r.stdout.contains("hello from \(net.allowedServer)"), "\(r)")

        // Unknown source: DNS REFUSED, connections closed.
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", net.unknownAddress])
        #expect(r.stdout.contains("rcode=5"), "\(r)")
        r = try net.client(["http", net.allowedServer, "80", net.unknownAddress, "allowed.test"])
        #expect(r.stdout.contains("closed"), "\(r)")
        #expect(
            log.wait { $0.sandbox == "" && $0.networkProtocol == .http && $0.reason.hasPrefix("unknown source") } != nil
        )
        // A flood from an unknown source: answered and recorded only up to the global rate
        // for unknown sources (20 a second), the rest dropped unrecorded.
        let unknownBefore = log.all.filter { $0.sandbox == "" }.count
        r = try net.client(["burst", net.hostAddress, "allowed.test", net.unknownAddress, "200"])
        let unknownRecords = log.all.filter { $0.sandbox == "" }.count - unknownBefore
        #expect(r.stdout.hasPrefix("5:") && unknownRecords > 0 && unknownRecords < 200, "\(r) \(unknownRecords)")

        // Limits of sbx-b: 2 concurrent connections (the third is refused), 5 DNS queries
        // per second (a burst of 40 gets REFUSED beyond the bucket).
        let b = net.secondAddress
        let holder = try ClientProcess(
            net.ip,
            [
                "netns", "exec", net.clientNS, net.python, net.dir + "/cli.py", "hold", net.allowedServer, "80", b,
                "allowed.test", "2",
            ],
            stdout: net.dir + "/hold.out", stderr: net.dir + "/hold.err")
        net.background.append(holder)
        #expect(Harness.eventually { filter.counters(sandbox: "sbx-b").activeConnections == 2 })
        r = try net.client(["http", net.allowedServer, "80", b, "allowed.test"])
        #expect(r.stdout.contains("closed"), "\(r)")
        let limited = log.wait { $0.sandbox == "sbx-b" && $0.reason.hasPrefix("connection limit") }
        #expect(limited?.event == .denied)
        // TCP DNS connections take the same slots.
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", b, "tcp"])
        #expect(!r.stdout.contains("rcode=0"), "\(r)")
        holder.stop(grace: 1)
        #expect(Harness.eventually { filter.counters(sandbox: "sbx-b").activeConnections == 0 })
        r = try net.client(["http", net.allowedServer, "80", b, "allowed.test"])
        #expect(r.stdout.contains("hello from \(net.allowedServer)"), "\(r)")
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", b, "tcp"])
        #expect(r.stdout.contains("rcode=0"), "\(r)")
        r = try net.client(["burst", net.hostAddress, "allowed.test", b, "40"])
        let counts = Dictionary(
            uniqueKeysWithValues: r.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap {
                pair -> (Int, Int)? in
                let p = pair.split(separator: ":")
                return p.count == 2 ? (Int(p[0]) ?? -1, Int(p[1]) ?? 0) : nil
            })
        #expect((counts[5] ?? 0) > 0 && (counts[0] ?? 0) >= 1, "\(r)")
        #expect(log.first { $0.sandbox == "sbx-b" && $0.reason.hasPrefix("DNS rate limit") } != nil)

        // Counters add up.
        let countersA = filter.counters(sandbox: "sbx-a")
        #expect(countersA.allowedConnections >= 6 && countersA.deniedConnections >= 6, "\(countersA)")
        #expect(
            countersA.bytesIn > 0 && countersA.bytesOut > 0 && countersA.dnsAnswered > 0 && countersA.dnsRefused > 0)
        // Unregistered: its source is unknown from now on.
        filter.unregister(sandbox: "sbx-b")
        #expect(filter.counters(sandbox: "sbx-b") == EgressCounters())
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", b])
        #expect(r.stdout.contains("rcode=5"), "\(r)")

        // The filter listens on 0.0.0.0: a source registered with another host address (as if
        // its veth were elsewhere) is refused when its traffic arrives at this veth's address.
        try filter.register(
            sandbox: "sbx-c", source: net.unknownAddress, policy: EgressPolicy(rules: [.domain("allowed.test")]),
            hostAddress: "198.18.\(net.k).1")
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", net.unknownAddress])
        #expect(r.stdout.contains("rcode=5"), "\(r)")
        r = try net.client(["dns", net.hostAddress, "allowed.test", "1", net.unknownAddress, "tcp"])
        #expect(!r.stdout.contains("rcode=0"), "\(r)")
        r = try net.client(["http", net.allowedServer, "80", net.unknownAddress, "allowed.test"])
        #expect(r.stdout.contains("closed"), "\(r)")
        #expect(log.wait { $0.networkProtocol == .http && $0.reason.contains("(at \(net.hostAddress))") } != nil)
        #expect(filter.counters(sandbox: "sbx-c") == EgressCounters())
    }
}
