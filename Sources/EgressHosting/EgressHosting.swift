/// The node's egress filter hosted by a front end (`safespace run`, `safespaced`): made from
/// `NetworkSettings` and the environment, started on 0.0.0.0, handed to SandboxHosting as a
/// `SandboxEgressFilter` (SandboxNetwork's protocol, so that SandboxNetwork and SandboxHosting
/// do not link NIO), shut down with its host.
import EgressFilter
import Foundation
import SandboxNetwork

/// `EgressFilter` as SandboxHosting takes it (`SandboxHost.Configuration.egressFilter`): rules
/// translated, the node's per-sandbox limits applied.
public struct HostedEgressFilter: SandboxEgressFilter {
    public let filter: EgressFilter
    /// Per-sandbox limits (`EgressPolicy.maxConnections`, `dnsQueriesPerSecond`).
    public let maxConnections: Int
    public let dnsQueriesPerSecond: Int

    public init(filter: EgressFilter, maxConnections: Int = 256, dnsQueriesPerSecond: Int = 100) {
        self.filter = filter
        self.maxConnections = maxConnections
        self.dnsQueriesPerSecond = dnsQueriesPerSecond
    }

    public var egressPorts: EgressPorts {
        let p = filter.boundPorts
        return EgressPorts(dns: p.dns, http: p.http, tls: p.tls)
    }

    /// The filter's policy for `rules`.
    public func policy(_ rules: [SandboxEgressRule]) -> EgressPolicy {
        EgressPolicy(
            rules: rules.map {
                switch $0 {
                case .domain(let name): .domain(name)
                case .cidr(let prefix, let ports): .cidr(prefix.description, ports: ports)
                }
            }, maxConnections: maxConnections, dnsQueriesPerSecond: dnsQueriesPerSecond)
    }

    /// - Throws: `EgressFilterError` (a source or name registered already, a bad rule).
    public func register(sandbox: String, source: IPv4Address, hostAddress: IPv4Address, rules: [SandboxEgressRule])
        throws
    {
        try filter.register(
            sandbox: sandbox, source: source.description, policy: policy(rules), hostAddress: hostAddress.description)
    }

    public func unregister(sandbox: String) { filter.unregister(sandbox: sandbox) }
}

/// A started egress filter and its adapter.
public final class EgressHost: Sendable {
    public let filter: EgressFilter
    public let adapter: HostedEgressFilter
    /// The upstream servers it forwards to, as chosen (`upstreamServers`).
    public let upstreamDNS: [String]

    /// Makes and starts the filter on 0.0.0.0 (the topology DNATs each sandbox's DNS, 80 and
    /// 443 to its own veth's host-side address; the filter serves a source only there).
    /// - Parameters:
    ///   - settings: ports, upstream servers, allowed private ranges, limits.
    ///   - environment: `SAFESPACE_UPSTREAM_DNS=ip:port[,ip:port]` overrides
    ///     `settings.upstreamDNS`, which overrides /etc/resolv.conf (`upstreamServers`).
    ///   - record: every decision, called on an event loop thread (must not block).
    /// - Throws: `EgressFilterError`: no upstream server, a bad entry, a port that cannot be bound.
    public init(
        settings: NetworkSettings, environment: [String: String] = ProcessInfo.processInfo.environment,
        resolvConf: String = "/etc/resolv.conf", record: @escaping @Sendable (EgressRecord) -> Void
    ) async throws {
        let upstream = try EgressFilterConfiguration.upstreamDNS(
            environment: environment, nodeConfig: settings.upstreamDNS, resolvConf: resolvConf)
        let filter = try EgressFilter(
            configuration: EgressFilterConfiguration(
                listenAddress: "0.0.0.0", dnsPort: settings.dnsPort, httpPort: settings.httpPort,
                tlsPort: settings.tlsPort, upstreamDNS: upstream, allowedPrivateRanges: settings.allowedPrivateRanges,
                record: record))
        do { try await filter.start() } catch {
            try? await filter.shutdown()
            throw error
        }
        self.filter = filter
        self.upstreamDNS = upstream
        self.adapter = HostedEgressFilter(
            filter: filter, maxConnections: settings.maxConnections, dnsQueriesPerSecond: settings.dnsQueriesPerSecond)
    }

    /// Closes the listeners (and open connections) and ends the filter's threads.
    public func shutdown() async {
        try? await filter.shutdown()
    }
}

extension EgressHost {
    /// `init` from synchronous code (`safespace run`'s main thread, which is not a thread of
    /// the concurrency pool): blocks until the filter is started or failed.
    public static func start(
        settings: NetworkSettings, environment: [String: String] = ProcessInfo.processInfo.environment,
        record: @escaping @Sendable (EgressRecord) -> Void
    ) throws -> EgressHost {
        try waitFor { try await EgressHost(settings: settings, environment: environment, record: record) }
    }

    /// `shutdown` from synchronous code.
    public func shutdownAndWait() {
        waitFor { await self.shutdown() }
    }
}

/// Runs `body` in a task and blocks the calling thread until it ends.
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<T, any Error>?
    Task.detached {
        do { result = .success(try await body()) } catch { result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try result!.get()
}

func waitFor(_ body: @escaping @Sendable () async -> Void) {
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        await body()
        done.signal()
    }
    done.wait()
}
