/// safespaced with egress rules (issue 13) against a simulated internet (`TestInternet`): the
/// daemon's egress filter forwards to the test's DNS server (`network.upstreamDNS`) and may
/// dial its range (`network.allowedPrivateRanges`). Root only.
import DaemonClient
import Foundation
import Glibc
import SandboxNetwork
import TestSupport
import XCTest

final class DaemonEgressTests: XCTestCase {
    var harness: DaemonHarness!
    var internet: TestInternet!

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
        try XCTSkipUnless(Harness.hasPythonRootfs, "needs the python rootfs (scripts/setup)")
        try XCTSkipUnless(Harness.find("openssl") != nil, "needs openssl (scripts/setup)")
        internet = try TestInternet()
        do { try internet.up() } catch {
            internet.close()
            internet = nil
            throw error
        }
        harness = try DaemonHarness(
            extraConfig: """
                network:
                  upstreamDNS: ["\(internet.upstreamDNS)"]
                  allowedPrivateRanges: ["\(TestInternet.range)"]
                """)
        try harness.start()
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
        internet?.close()
        XCTAssertEqual(internet?.leftovers() ?? [], [])
        internet = nil
    }

    nonisolated(unsafe) static let egress: [String: Any] = [
        "networkAccess": ["egress": [["domain": "pypi.org"], ["domain": "files.pythonhosted.org"]]],
        "resources": ["cpu": "500m", "memory": "512Mi", "ephemeralStorage": "256Mi"],
    ]

    func objects(_ name: String) -> [String] {
        SandboxNetworkObjects.find(
            veth: SandboxNetworks.vethName(name), table: SandboxNetworks.table(name),
            namespaceFile: SandboxNetworks.defaultNamespaceDirectory + "/" + name, sandbox: name)
    }

    func assertPip(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let run = try harness.exec(
            name, ["/bin/sh", "-c", internet.pipScript(certificateFromStdin: true)], stdin: internet.certificatePEM,
            extra: ["timeoutSeconds": 240])
        XCTAssertEqual(run.status, 200, run.text, file: file, line: line)
        let out = lines(run.json?["stdout"] as? String ?? "")
        XCTAssertEqual(run.json?["exitCode"] as? Int, 0, run.text, file: file, line: line)
        XCTAssertTrue(out.contains("tinypkg 42"), run.text, file: file, line: line)
        XCTAssertTrue(out.contains("lookup nxdomain"), run.text, file: file, line: line)
        XCTAssertTrue(out.contains("tls443 refused") || out.contains("tls443 closed"), run.text, file: file, line: line)
        XCTAssertTrue(out.contains("tcp8443 dropped"), run.text, file: file, line: line)
        XCTAssertEqual(internet.deniedLog, "", file: file, line: line)
    }

    /// pip through the daemon's filter; every decision is an audit record and a counter.
    func testPipThroughTheDaemonsFilterIsRecorded() throws {
        let h = try XCTUnwrap(harness)
        let name = h.name("pip")
        XCTAssertEqual(objects(name), [])
        try h.create(name, spec: Self.egress)
        try assertPip(name)

        let records = h.auditRecords()
        let wheel = records.first {
            $0["type"] as? String == "network.allowed" && $0["sandbox"] as? String == name
                && $0["domain"] as? String == "files.pythonhosted.org" && $0["protocol"] as? String == "tls"
        }
        XCTAssertNotNil(wheel, "\(records.filter { ($0["type"] as? String ?? "").hasPrefix("network.") })")
        XCTAssertEqual(wheel?["destination"] as? String, internet.filesAddress)
        XCTAssertEqual(wheel?["port"] as? Int, 443)
        XCTAssertGreaterThan(wheel?["bytesIn"] as? Int ?? 0, 1000)
        XCTAssertGreaterThan(wheel?["bytesOut"] as? Int ?? 0, 100)
        XCTAssertNotNil(wheel?["durationMs"] as? Int)
        XCTAssertEqual(wheel?["outcome"] as? String, "ok")
        let lookup = records.first {
            $0["type"] as? String == "network.denied" && $0["sandbox"] as? String == name
                && $0["domain"] as? String == "denied.test" && $0["protocol"] as? String == "dns"
        }
        XCTAssertEqual(lookup?["outcome"] as? String, "denied")
        let tls = records.first {
            $0["type"] as? String == "network.denied" && $0["sandbox"] as? String == name
                && $0["domain"] as? String == "denied.test" && $0["protocol"] as? String == "tls"
        }
        XCTAssertEqual(tls?["originalDestination"] as? String, "\(internet.deniedAddress):443")
        // The sandbox's view has what was denied (what `safespace run` prints on exit).
        let view = try h.client.request("GET", "/v1/sandboxes/\(name)")
        let denied =
            ((view.json?["status"] as? [String: Any])?["egress"] as? [String: Any])?["denied"] as? [[String: Any]]
        let deniedTest = denied?.first { $0["destination"] as? String == "denied.test" }
        XCTAssertGreaterThanOrEqual(deniedTest?["count"] as? Int ?? 0, 2, view.text)

        let metrics = try h.client.request("GET", "/metrics").text
        XCTAssertTrue(
            metrics.contains("safespaced_egress_connections_total{sandbox=\"\(name)\",decision=\"allowed\"}")
                || metrics.contains("safespaced_egress_connections_total{decision=\"allowed\",sandbox=\"\(name)\"}"),
            metrics)
        XCTAssertTrue(metrics.contains("safespaced_egress_dns_queries_total{"), metrics)
        XCTAssertTrue(metrics.contains("safespaced_egress_bytes_total{"), metrics)

        XCTAssertEqual(try h.delete(name).status, 200)
        XCTAssertEqual(objects(name), [])
        XCTAssertFalse(try h.client.request("GET", "/metrics").text.contains("sandbox=\"\(name)\""))
        XCTAssertEqual(h.leftovers(), [:], h.log)
    }

    /// kill -9 of the daemon while a sandbox's connection is open: the sandbox lives on with
    /// its network; the next daemon adopts it, points its table at its own filter, and egress
    /// works again; the delete then leaves nothing (veth, routes, table, netns file, lease).
    func testKill9MidConnectionThenRestartAdoptsThenDeleteLeavesNothing() throws {
        let h = try XCTUnwrap(harness)
        let name = h.name("kill")
        XCTAssertEqual(objects(name), [])
        try h.create(name, spec: Self.egress)
        // A download that sends 1 byte a second, in the background of the sandbox.
        let started = try h.exec(
            name,
            [
                "/bin/sh", "-c",
                "cat > /tmp/ca.pem; (\(internet.slowCommand(seconds: 120))) > /tmp/slow.out 2>&1 < /dev/null &",
            ], stdin: internet.certificatePEM)
        XCTAssertEqual(started.json?["exitCode"] as? Int, 0, started.text)
        XCTAssertTrue(Harness.eventually(timeout: 60) { self.internet.served.contains("/slow/120") }, internet.served)
        let during = objects(name)
        for kind in ["veth ", "route ", "nftables table ", "netns file ", "lease "] {
            XCTAssertTrue(during.contains { $0.hasPrefix(kind) }, "no \(kind) in \(during)")
        }
        h.kill9()
        try h.start()
        let listed = try h.client.request("GET", "/v1/sandboxes/\(name)")
        XCTAssertEqual(listed.status, 200, listed.text)
        // Egress through the new daemon's filter (new ports: the table was rewritten).
        try assertPip(name)
        XCTAssertEqual(try h.delete(name).status, 200)
        XCTAssertEqual(objects(name), [])
        // The adopted init's parent was the daemon that died: its zombie is reaped by PID 1.
        var left = h.leftovers()
        for _ in 0..<100 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:], h.log)
    }

    /// `safespace run` through the daemon prints the denied destinations on exit, as the
    /// embedded run does; a record that comes after the sandbox's delete makes no new series.
    func testSafespaceRunThroughTheDaemonSumsUpDenials() throws {
        let h = try XCTUnwrap(harness)
        try XCTSkipUnless(access(DaemonHarness.cli, X_OK) == 0, "build safespace first")
        let name = h.name("run")
        let file = h.dir + "/run.yaml"
        try """
        apiVersion: llmsafespace.dev/v1
        kind: Sandbox
        metadata: {name: \(name)}
        spec:
          runtime: python:3.11
          networkAccess:
            egress:
              - domain: pypi.org
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let script = """
            import socket
            for _ in range(2):
                try:
                    socket.getaddrinfo("denied.test", 80)
                    print("resolved")
                except socket.gaierror:
                    print("nxdomain")
            """
        let run = try h.safespace(["run", "-f", file, "--", "python3", "-c", script])
        let (o, e) = (run.stdout, run.stderr)
        XCTAssertEqual(run.status, 0, e)
        XCTAssertEqual(lines(o), ["nxdomain", "nxdomain"], e)
        // Each lookup asks for A and AAAA (glibc's getaddrinfo): one denial per question.
        let summary = lines(e).filter { $0.hasPrefix("safespace: egress denied: ") }
        XCTAssertEqual(summary.count, 1, e)
        XCTAssertTrue(summary.first?.hasSuffix(" x denied.test") == true, e)
        // Through the daemon, not embedded: the daemon made and deleted it.
        let types = h.auditRecords().filter { $0["sandbox"] as? String == name }.compactMap { $0["type"] as? String }
        XCTAssertTrue(types.contains("sandbox.created") && types.contains("sandbox.deleted"), "\(types)")
        XCTAssertFalse(try h.client.request("GET", "/metrics").text.contains("sandbox=\"\(name)\""))
        XCTAssertEqual(h.leftovers(), [:], h.log)
    }

    /// A filter that cannot start (its DNS port is taken) leaves the daemon running without
    /// one: a sandbox with egress rules is refused naming the field, one without runs.
    func testADaemonWhoseFilterCannotStartRefusesEgressByName() throws {
        let taken = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(taken, 0)
        defer { close(taken) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(taken, $0, length) == 0 && getsockname(taken, $0, &length) == 0
            }
        }
        XCTAssertTrue(bound)
        let port = UInt16(bigEndian: address.sin_port)
        let h = try DaemonHarness(extraConfig: "network:\n  dnsPort: \(port)\n")
        defer { h.tearDown() }
        try h.start()
        XCTAssertTrue(h.log.contains("no egress filter"), h.log)
        let refused = try h.client.request(
            "POST", "/v1/sandboxes", json: ["metadata": ["name": h.name("net")], "spec": Self.egress])
        XCTAssertEqual(refused.status, 400, refused.text)
        XCTAssertEqual(refused.error?.code, "not_enforceable", refused.text)
        XCTAssertEqual(refused.error?.field, "spec.networkAccess.egress", refused.text)
        try h.create(h.name("plain"))
        XCTAssertEqual(try h.delete(h.name("plain")).status, 200)
        XCTAssertEqual(h.stop(), 0)
        XCTAssertEqual(h.leftovers(), [:], h.log)
    }
}
