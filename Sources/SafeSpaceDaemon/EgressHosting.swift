/// The daemon's egress filter (issue 13): started with the daemon (`network:` settings,
/// `$SAFESPACE_UPSTREAM_DNS`), handed to SandboxHosting for every sandbox with
/// `spec.networkAccess.egress`, re-pointed at adopted sandboxes after a restart, shut down
/// with the daemon. Each decision becomes an audit record (`network.allowed` /
/// `network.denied`) and per-sandbox counters in /metrics.
import EgressFilter
import EgressHosting
import Foundation
import Logging
import Metrics
import Runtime
import SandboxHosting
import SandboxNetwork
import SandboxSpec

final class DaemonEgress: Sendable {
    let host: EgressHost
    let settings: NetworkSettings
    let logger: Logger

    private init(host: EgressHost, settings: NetworkSettings, logger: Logger) {
        self.host = host
        self.settings = settings
        self.logger = logger
    }

    /// Starts the filter of `config.network`. A filter that cannot start (no upstream server,
    /// a port taken) is logged, and the daemon runs without one: sandboxes with egress rules
    /// are then refused (`not_enforceable`, naming `spec.networkAccess.egress`).
    static func start(config: DaemonConfig, audit: AuditTrail, logger: Logger) async -> DaemonEgress? {
        // Audit writes block (file, journald): off the filter's event loops, in order.
        let queue = DispatchQueue(label: "safespaced.egress-records")
        do {
            let host = try await EgressHost(settings: config.network) { record in
                EgressMetrics.count(record)
                queue.async { audit.record(record) }
            }
            let ports = host.filter.boundPorts
            logger.info(
                "egress filter listening on 0.0.0.0",
                metadata: [
                    "dns": "\(ports.dns)", "http": "\(ports.http)", "tls": "\(ports.tls)",
                    "upstream": "\(host.upstreamDNS.joined(separator: ","))",
                ])
            return DaemonEgress(host: host, settings: config.network, logger: logger)
        } catch {
            logger.warning(
                "no egress filter, sandboxes with spec.networkAccess.egress are refused: \(error)")
            return nil
        }
    }

    func shutdown() async { await host.shutdown() }

    /// Serves an adopted sandbox again: its nftables table is rewritten for this filter's
    /// ports (`SandboxNetworks.retarget`) and its address registered with its rules. Nothing
    /// for a sandbox without egress rules.
    /// - Throws: what the topology or the filter refused; the sandbox's egress then stays off
    ///   (its DNS, 80 and 443 reach no filter: refused or dropped, never let out).
    func adopt(_ name: String, resource: Data) throws {
        let sandbox = try Sandbox.decode(data: resource)
        guard let plan = try SandboxNetworkPlan(sandbox) else { return }
        let networks = try SandboxNetworks(pool: settings.pool, leases: RuntimeConfiguration.load().leaseStore)
        guard
            let record = try networks.retarget(
                sandbox: name, ports: host.adapter.egressPorts, cidrRules: plan.cidrRules, ingress: plan.ingress)
        else { return }
        try host.adapter.register(
            sandbox: name, source: record.sandboxAddress, hostAddress: record.hostAddress, rules: plan.rules)
    }

    /// The sandbox is gone: its source is refused from now on, its series leave /metrics.
    func forget(_ name: String) {
        host.adapter.unregister(sandbox: name)
        EgressMetrics.forget(name)
    }
}

extension AuditTrail {
    /// One filter decision as an audit record: type `network.allowed` / `network.denied`,
    /// outcome `ok` / `denied`; fields `protocol` (dns, http, tls), `domain`, `queryType`,
    /// `destination` (the address dialled), `port`, `originalDestination` (ip:port the
    /// sandbox asked for), `source`, `reason`, and for allowed connections `bytesOut`,
    /// `bytesIn` (bytes) and `durationMs`.
    func record(_ record: EgressRecord) {
        var fields: [String: AuditField] = [
            "protocol": .string(record.networkProtocol.rawValue), "source": .string(record.source),
            "reason": .string(record.reason),
        ]
        if let domain = record.domain { fields["domain"] = .string(domain) }
        if let type = record.queryType { fields["queryType"] = .string(type) }
        if let address = record.destinationAddress { fields["destination"] = .string(address) }
        if let port = record.destinationPort { fields["port"] = .int(Int(port)) }
        if let original = record.originalDestination { fields["originalDestination"] = .string(original) }
        if record.event == .allowed && record.networkProtocol != .dns {
            fields["bytesOut"] = .int(Int(clamping: record.bytesOut))
            fields["bytesIn"] = .int(Int(clamping: record.bytesIn))
            fields["durationMs"] = .int(Int(clamping: record.durationMs))
        }
        self.record(
            record.event.rawValue, sandbox: record.sandbox.isEmpty ? nil : record.sandbox, caller: nil,
            outcome: record.event == .allowed ? "ok" : "denied", fields: fields)
    }
}

/// Per-sandbox counters of the filter's decisions, in /metrics:
/// `safespaced_egress_connections_total{sandbox,decision}` (proxied connections, decision
/// `allowed` / `denied`), `safespaced_egress_dns_queries_total{sandbox,decision}`,
/// `safespaced_egress_bytes_total{sandbox,direction}` (direction `out`: sandbox to
/// destination, `in`: back; counted when a connection closes).
enum EgressMetrics {
    static func connections(_ sandbox: String, _ decision: String) -> Counter {
        Counter(
            label: "safespaced_egress_connections_total", dimensions: [("sandbox", sandbox), ("decision", decision)])
    }
    static func dns(_ sandbox: String, _ decision: String) -> Counter {
        Counter(
            label: "safespaced_egress_dns_queries_total", dimensions: [("sandbox", sandbox), ("decision", decision)])
    }
    static func bytes(_ sandbox: String, _ direction: String) -> Counter {
        Counter(label: "safespaced_egress_bytes_total", dimensions: [("sandbox", sandbox), ("direction", direction)])
    }

    /// Traffic from sources no sandbox holds is counted under this name.
    static let unknownSandbox = "(unknown)"

    /// Denials (DNS and connections) by sandbox, since the sandbox was made: what pool
    /// recycling reads (`denials(of:)`); removed by `forget`.
    private static let denied = DenialCounts()

    /// The filter's denials of `sandbox` since it was made (0 when none or unknown).
    static func denials(of sandbox: String) -> Int { denied.withLock { $0[sandbox] ?? 0 } }

    static func count(_ record: EgressRecord) {
        let decision = record.event == .allowed ? "allowed" : "denied"
        let sandbox = record.sandbox.isEmpty ? unknownSandbox : record.sandbox
        if record.event != .allowed { denied.withLock { $0[sandbox, default: 0] += 1 } }
        if record.networkProtocol == .dns {
            dns(sandbox, decision).increment()
            return
        }
        connections(sandbox, decision).increment()
        if record.event == .allowed {
            bytes(sandbox, "out").increment(by: Int64(clamping: record.bytesOut))
            bytes(sandbox, "in").increment(by: Int64(clamping: record.bytesIn))
        }
    }

    /// Removes the sandbox's series (a node runs many sandboxes over its life).
    static func forget(_ sandbox: String) {
        denied.withLock { _ = $0.removeValue(forKey: sandbox) }
        rebase(sandbox)
    }

    /// Removes the sandbox's series but keeps its denial count (a recycled sandbox's counters
    /// start from zero for its next claimant; its history of denials does not).
    static func rebase(_ sandbox: String) {
        for decision in ["allowed", "denied"] {
            connections(sandbox, decision).destroy()
            dns(sandbox, decision).destroy()
        }
        for direction in ["out", "in"] { bytes(sandbox, direction).destroy() }
    }
}

/// Denial counts by sandbox, under a lock.
final class DenialCounts: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    func withLock<T>(_ body: (inout [String: Int]) -> T) -> T { lock.withLock { body(&counts) } }
}
