/// The `network:` section of safespaced's configuration (NetworkSettings), no daemon needed.
import EgressHosting
import XCTest

@testable import SafeSpaceDaemon

final class DaemonNetworkConfigTests: XCTestCase {
    func testEveryNetworkKey() throws {
        let config = try DaemonConfig.parse(
            yaml: """
                network:
                  pool: 100.80.0.0/20
                  dnsPort: 5353
                  httpPort: 8080
                  tlsPort: 8443
                  upstreamDNS: ["192.0.2.53:5353", "192.0.2.54", "[2001:db8::1]:53"]
                  allowedPrivateRanges: [198.18.0.0/15, 10.1.0.0/16]
                  maxConnections: 32
                  dnsQueriesPerSecond: 10
                """)
        var expected = NetworkSettings()
        expected.pool = "100.80.0.0/20"
        expected.dnsPort = 5353
        expected.httpPort = 8080
        expected.tlsPort = 8443
        expected.upstreamDNS = ["192.0.2.53:5353", "192.0.2.54", "[2001:db8::1]:53"]
        expected.allowedPrivateRanges = ["198.18.0.0/15", "10.1.0.0/16"]
        expected.maxConnections = 32
        expected.dnsQueriesPerSecond = 10
        XCTAssertEqual(config.network, expected)
        XCTAssertEqual(try DaemonConfig.parse(yaml: "group: x").network, NetworkSettings())
    }

    func testBadNetworkValuesAreRefusedNamingTheKey() {
        func message(_ body: String) -> String {
            do {
                _ = try DaemonConfig.parse(yaml: "network:\n" + body)
                return "accepted"
            } catch { return "\(error)" }
        }
        let cases: [(String, String)] = [
            ("  pool: 100.64.0.0/31", "network.pool: "),
            ("  pool: lots", "network.pool: "),
            ("  dnsPort: 70000", "network.dnsPort: "),
            ("  tlsPort: -1", "network.tlsPort: "),
            ("  upstreamDNS: [\"1.2.3.4:0\"]", "network.upstreamDNS[0]: "),
            ("  upstreamDNS: [\"ns.example\"]", "network.upstreamDNS[0]: "),
            ("  upstreamDNS: 1.2.3.4", "network.upstreamDNS: expected a list"),
            ("  allowedPrivateRanges: [10.0.0.0/33]", "network.allowedPrivateRanges[0]: "),
            ("  maxConnections: 0", "network.maxConnections: "),
            ("  dnsQueriesPerSecond: many", "network.dnsQueriesPerSecond: "),
            ("  proxyPort: 1", "network.proxyPort: unknown key"),
            ("  pool: 100.64.0.0/16\n  pool: 100.65.0.0/16", "network.pool: given twice"),
        ]
        for (body, prefix) in cases {
            XCTAssertTrue(message(body).hasPrefix(prefix), "\(body): \(message(body))")
        }
        XCTAssertTrue(message("").hasPrefix("network: expected a mapping") || message("") == "accepted")
    }

    /// `safespace run` reads the same section of the same file, and nothing else of it.
    func testTheNodeReadsTheNetworkSectionOnly() throws {
        let path = NSTemporaryDirectory() + "/net-\(getpid()).yaml"
        defer { unlink(path) }
        try "group: whatever\nfuture: {x: 1}\nnetwork:\n  maxConnections: 7\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try NetworkSettings.load(path: path).maxConnections, 7)
        XCTAssertEqual(try NetworkSettings.load(path: path + ".missing"), NetworkSettings())
        try "network:\n  pool: x\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try NetworkSettings.load(path: path)) { error in
            XCTAssertEqual((error as? NetworkSettingsError)?.field, "network.pool")
        }
    }
}
