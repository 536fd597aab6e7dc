import Foundation
import TestSupport
import Testing

@testable import EgressFilter

/// Numbers, not a check (run with EGRESS_BENCH=1 as root; prints, asserts nothing about
/// speed): a download of EGRESS_BENCH_BYTES (default 1 GiB) from the simulated internet's
/// server through the filter (client namespace → veth → proxy → veth → server) against the
/// same download straight over the server's veth from the host (no proxy, one veth), and
/// the time to the first byte of a small GET (connection set-up plus one round trip), p50
/// and p99 over 200 connections each way, HTTP and HTTPS.
@Suite(.serialized) struct EgressFilterBench {
    @Test(.enabled(if: Harness.isRoot && ProcessInfo.processInfo.environment["EGRESS_BENCH"] != nil))
    func throughputAndSetup() async throws {
        let net = try SimulatedInternet()
        var filter: EgressFilter?
        do {
            try net.up()
            let configuration = EgressFilterConfiguration(
                listenAddress: net.hostAddress, upstreamDNS: ["\(net.dnsServer):53"],
                allowedPrivateRanges: ["198.18.0.0/15"])
            let started = try EgressFilter(configuration: configuration)
            filter = started
            try await started.start()
            let ports = started.boundPorts
            try net.redirect(dns: ports.dns, http: ports.http, tls: ports.tls)
            try started.register(
                sandbox: "bench", source: net.clientAddress,
                policy: EgressPolicy(rules: [.domain("allowed.test")], maxConnections: 1024, dnsQueriesPerSecond: 1000))
            let bytes = Int(ProcessInfo.processInfo.environment["EGRESS_BENCH_BYTES"] ?? "") ?? (1 << 30)
            let curl = Harness.find("curl") ?? "/usr/bin/curl"
            let resolve = [
                "--resolve", "allowed.test:80:\(net.allowedServer)", "--resolve",
                "allowed.test:443:\(net.allowedServer)",
            ]
            func speed(_ via: [String]) throws -> Double {
                let r = try Harness.run(
                    via.first ?? curl,
                    Array(via.dropFirst()) + ["-sS", "-o", "/dev/null", "-w", "%{speed_download}"] + resolve + [
                        "http://allowed.test/bytes/\(bytes)"
                    ], timeout: 600)
                return Double(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            }
            func ttfb(_ via: [String], _ scheme: String) throws -> [Double] {
                let urls = [String](repeating: "\(scheme)://allowed.test/", count: 200)
                let r = try Harness.run(
                    via.first ?? curl,
                    Array(via.dropFirst()) + [
                        "-sS", "-k", "-H", "Connection: close", "-w", "%{time_starttransfer}\\n", "-o", "/dev/null",
                    ]
                        + resolve + urls, timeout: 600)
                return lines(r.stdout).compactMap(Double.init).sorted()
            }
            let proxied = [net.ip, "netns", "exec", net.clientNS, curl]
            let direct = [curl]
            var report = "egress filter bench (\(bytes) bytes; MB/s = 10^6 bytes/s)\n"
            for run in 1...2 {
                let p = try speed(proxied)
                let d = try speed(direct)
                report += String(
                    format: "download run %d: proxied %.0f MB/s, direct %.0f MB/s, ratio %.2f\n", run, p / 1e6, d / 1e6,
                    d > 0 ? p / d : 0)
            }
            for scheme in ["http", "https"] {
                let p = try ttfb(proxied, scheme)
                let d = try ttfb(direct, scheme)
                func pct(_ v: [Double], _ q: Double) -> Double {
                    v.isEmpty ? 0 : v[min(v.count - 1, Int(Double(v.count) * q))] * 1e6
                }
                report += String(
                    format:
                        "%@ time to first byte (µs): proxied p50 %.0f p99 %.0f; direct p50 %.0f p99 %.0f; added p50 %.0f (n=%d/%d)\n",
                    scheme, pct(p, 0.5), pct(p, 0.99), pct(d, 0.5), pct(d, 0.99), pct(p, 0.5) - pct(d, 0.5), p.count,
                    d.count)
            }
            print(report)
            if let path = ProcessInfo.processInfo.environment["EGRESS_BENCH_OUT"] {
                try report.write(toFile: path, atomically: true, encoding: .utf8)
            }
        } catch {
            Issue.record("\(error)")
        }
        try? await filter?.shutdown()
        net.close()
        #expect(net.leftovers() == [])
    }
}
