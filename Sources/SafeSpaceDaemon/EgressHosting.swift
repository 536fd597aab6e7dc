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
import Synchronization

final class DaemonEgress: Sendable {
    let host: EgressHost
    let settings: NetworkSettings
    let logger: Logger
    /// The sandboxes this filter serves, each with its denied destinations.
    let ledger: EgressLedger

    private init(host: EgressHost, settings: NetworkSettings, logger: Logger, ledger: EgressLedger) {
        self.host = host
        self.settings = settings
        self.logger = logger
        self.ledger = ledger
    }

    /// Starts the filter of `config.network`. A filter that cannot start (no upstream server,
    /// a port taken) is logged, and the daemon runs without one: sandboxes with egress rules
    /// are then refused (`not_enforceable`, naming `spec.networkAccess.egress`).
    static func start(config: DaemonConfig, audit: AuditTrail, logger: Logger) async -> DaemonEgress? {
        // Audit writes block (file, journald): off the filter's event loops, in order.
        let queue = DispatchQueue(label: "safespaced.egress-records")
        let ledger = EgressLedger()
        do {
            let host = try await EgressHost(settings: config.network) { record in
                ledger.count(record)
                queue.async { audit.record(record) }
            }
            let ports = host.filter.boundPorts
            logger.info(
                "egress filter listening on 0.0.0.0",
                metadata: [
                    "dns": "\(ports.dns)", "http": "\(ports.http)", "tls": "\(ports.tls)",
                    "upstream": "\(host.upstreamDNS.joined(separator: ","))",
                ])
            return DaemonEgress(host: host, settings: config.network, logger: logger, ledger: ledger)
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
        ledger.begin(name)
        let networks = try SandboxNetworks(pool: settings.pool, leases: RuntimeConfiguration.load().leaseStore)
        guard
            let record = try networks.retarget(
                sandbox: name, ports: host.adapter.egressPorts, cidrRules: plan.cidrRules, ingress: plan.ingress)
        else { return }
        try host.adapter.register(
            sandbox: name, source: record.sandboxAddress, hostAddress: record.hostAddress, rules: plan.rules)
    }

    /// The sandbox is gone: its source is refused from now on, its series leave /metrics (and
    /// the records of its connections that close later are not counted in new ones).
    func forget(_ name: String) {
        host.adapter.unregister(sandbox: name)
        ledger.forget(name)
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

/// The sandboxes the daemon's filter serves, from `begin` (before the sandbox's network is
/// registered with the filter, so no decision is missed) to `forget`: each decision is counted
/// in /metrics (`EgressMetrics`) and each denied destination in the sandbox's summary
/// (`GET /v1/sandboxes/{name}`: `status.egress.denied`, which `safespace run` prints on exit).
/// A record of a sandbox not (or no longer) served, such as a connection that closes after
/// its sandbox was deleted, goes to the audit log only: it does not make a new series.
final class EgressLedger: Sendable {
    private let served = Mutex<[String: EgressDenialSummary]>([:])

    func begin(_ sandbox: String) {
        served.withLock { $0[sandbox] = $0[sandbox] ?? EgressDenialSummary(sandbox: sandbox) }
    }

    func count(_ record: EgressRecord) {
        guard !record.sandbox.isEmpty else {
            EgressMetrics.count(record, as: EgressMetrics.unknownSandbox)
            return
        }
        guard let summary = served.withLock({ $0[record.sandbox] }) else { return }
        summary.add(record)
        EgressMetrics.count(record, as: record.sandbox)
    }

    /// The denied destinations of `sandbox` (domain, else ip:port) and how often each was
    /// denied; nil when the filter does not serve it.
    func denied(_ sandbox: String) -> [String: Int]? {
        served.withLock { $0[sandbox] }?.counts
    }

    /// The filter's denials (DNS and connections) of `sandbox` since it was made: what pool
    /// recycling reads (0 when none, or when the filter does not serve it).
    func denials(of sandbox: String) -> Int {
        denied(sandbox)?.values.reduce(0, +) ?? 0
    }

    /// Starts the sandbox's series from zero (a recycled sandbox, for its next claimant); its
    /// denials stay (a sandbox with one is never recycled).
    func rebase(_ sandbox: String) {
        EgressMetrics.forget(sandbox)
    }

    func forget(_ sandbox: String) {
        // Out of the map first: a record counted after this finds no entry.
        guard served.withLock({ $0.removeValue(forKey: sandbox) }) != nil else { return }
        EgressMetrics.forget(sandbox)
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

    static func count(_ record: EgressRecord, as sandbox: String) {
        let decision = record.event == .allowed ? "allowed" : "denied"
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

    /// Removes the sandbox's series (a node runs many sandboxes over its life; a recycled
    /// sandbox's counters start from zero for its next claimant).
    static func forget(_ sandbox: String) {
        for decision in ["allowed", "denied"] {
            connections(sandbox, decision).destroy()
            dns(sandbox, decision).destroy()
        }
        for direction in ["out", "in"] { bytes(sandbox, direction).destroy() }
    }
}
