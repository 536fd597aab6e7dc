import NIOCore
import NIOPosix
import Synchronization

/// The node's egress filter (issue 13): a DNS responder that answers A/AAAA for allowed names
/// only, and a transparent TCP proxy for HTTP (Host) and TLS (SNI) that dials the address it
/// resolved itself. Sandboxes are told apart by their source address (`register`); the
/// topology redirects their DNS, port 80 and port 443 to the bound ports. Every decision is
/// an `EgressRecord`. One event loop group of its own (2 threads), shut down by `shutdown()`.
public final class EgressFilter: Sendable {
    let configuration: EgressFilterConfiguration
    let allowedRanges: [CIDR]
    let resolver: UpstreamResolver
    let group: MultiThreadedEventLoopGroup
    let state = Mutex(State())

    struct SandboxEntry {
        var name: String
        var source: IPAddress
        /// Where its connections and queries must arrive (the DNAT target), when given.
        var hostAddress: IPAddress?
        var policy: CompiledPolicy
        var counters = EgressCounters()
        var tokens: Double
        var refilled: NIODeadline
    }

    /// A name the proxy resolved, until its TTL (capped at `maxCacheSeconds`) runs out.
    struct CachedResolution {
        var usable: [IPAddress]
        var refused: [String]
        var expires: NIODeadline
    }

    /// Seconds a resolution is reused at most, whatever the records' TTL.
    static let maxCacheSeconds: UInt32 = 300
    /// Names cached at most (expired ones are dropped first, then all when still full).
    static let maxCacheEntries = 4096

    struct State {
        var resolutions: [String: CachedResolution] = [:]
        var bySource: [IPAddress: String] = [:]
        var sandboxes: [String: SandboxEntry] = [:]
        var channels: [Channel] = []
        var ports: (dns: UInt16, http: UInt16, tls: UInt16) = (0, 0, 0)
        /// Tokens for traffic from unknown sources (answered and recorded while any are left).
        var unknownTokens = Double(EgressFilter.unknownSourceRate)
        var unknownRefilled = NIODeadline.now()
        var stopped = false
    }

    /// - Throws: `EgressFilterError` naming the field: listenAddress not IPv4, an upstream or
    ///   private range that does not parse, no upstream.
    public init(configuration: EgressFilterConfiguration) throws {
        guard let listen = IPAddress(configuration.listenAddress), listen.isIPv4 else {
            throw EgressFilterError.invalidAddress(field: "listenAddress", value: configuration.listenAddress)
        }
        self.configuration = configuration
        self.allowedRanges = try configuration.allowedPrivateRanges.map { text throws(EgressFilterError) in
            try CIDR(text)
        }
        self.resolver = UpstreamResolver(
            servers: try UpstreamResolver.parse(configuration.upstreamDNS),
            timeout: .milliseconds(Int64(configuration.upstreamTimeout * 1000)))
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    }

    /// The ports bound by `start()` (the configured ones, or the kernel's picks for 0).
    public var boundPorts: (dns: UInt16, http: UInt16, tls: UInt16) { state.withLock { $0.ports } }

    /// Binds DNS (UDP and TCP on the same port), HTTP and TLS listeners on `listenAddress`.
    /// - Throws: `EgressFilterError.bind` naming the address, port and listener; nothing
    ///   stays bound after a failure (`shutdown()` still ends the event loop threads).
    public func start() async throws {
        let address = configuration.listenAddress
        var channels: [Channel] = []
        func bound(_ what: String, _ port: UInt16, _ make: () async throws -> Channel) async throws -> UInt16 {
            do {
                let channel = try await make()
                channels.append(channel)
                return UInt16(channel.localAddress?.port ?? 0)
            } catch {
                for channel in channels { try? await channel.close() }
                throw EgressFilterError.bind(address: address, port: port, what: what, reason: "\(error)")
            }
        }
        // UDP and TCP DNS share a port. With port 0 the kernel picks the UDP one, which may be
        // taken for TCP: a few other picks are tried. No SO_REUSEADDR on UDP: on Linux it
        // would let a second filter bind the same port and take half of the queries.
        let attempts = configuration.dnsPort == 0 ? 8 : 1
        var dnsPort: UInt16 = 0
        for attempt in 1...attempts {
            let udpPort = try await bound("DNS (udp)", configuration.dnsPort) {
                try await DatagramBootstrap(group: group)
                    .channelOption(.receivePacketInfo, value: true)  // IP_PKTINFO: the address a query arrived at
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(DNSUDPServerHandler(filter: self))
                        }
                    }
                    .bind(host: address, port: Int(configuration.dnsPort)).get()
            }
            do {
                let tcp = try await ServerBootstrap(group: group)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let sync = channel.pipeline.syncOperations
                            try sync.addHandler(
                                IdleStateHandler(readTimeout: .seconds(Int64(max(1, self.configuration.sniffTimeout)))))
                            try sync.addHandler(ByteToMessageHandler(DNSLengthFrameDecoder()))
                            try sync.addHandler(DNSTCPServerHandler(filter: self))
                        }
                    }
                    .bind(host: address, port: Int(udpPort)).get()
                channels.append(tcp)
                dnsPort = udpPort
                break
            } catch {
                if attempt == attempts {
                    for channel in channels { try? await channel.close() }
                    throw EgressFilterError.bind(address: address, port: udpPort, what: "DNS (tcp)", reason: "\(error)")
                }
                try? await channels.removeLast().close()
            }
        }
        let httpPort = try await bound("HTTP proxy", configuration.httpPort) {
            try await proxyBootstrap(.http).bind(host: address, port: Int(configuration.httpPort)).get()
        }
        let tlsPort = try await bound("TLS proxy", configuration.tlsPort) {
            try await proxyBootstrap(.tls).bind(host: address, port: Int(configuration.tlsPort)).get()
        }
        state.withLock {
            $0.channels = channels
            $0.ports = (dnsPort, httpPort, tlsPort)
        }
    }

    private func proxyBootstrap(_ kind: EgressRecord.NetworkProtocol) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.recvAllocator, value: Self.receiveAllocator)
            .childChannelOption(.writeBufferWaterMark, value: Self.waterMark)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try ProxyConnection.install(on: channel, kind: kind, filter: self)
                }
            }
    }

    /// Reads of up to 256 KiB and up to 1 MiB queued per direction before reads pause: the
    /// splice's buffers (bytes).
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: 65536, maximum: 262_144)
    static let waterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 262_144, high: 1_048_576)

    /// Starts filtering for a sandbox whose packets come from `source` (its IPv4 address on
    /// its veth). `hostAddress`: the local address its traffic is DNATed to (the host side of
    /// its veth); when given, a connection or query from `source` that arrives at another
    /// local address is refused, so a filter bound to 0.0.0.0 serves a source only on its own
    /// veth (an address from another interface is not taken for the sandbox's).
    /// - Throws: `EgressFilterError` for a bad source, host address, rule or limit, a source
    ///   or sandbox name already registered.
    public func register(sandbox: String, source: String, policy: EgressPolicy, hostAddress: String? = nil) throws {
        guard let address = IPAddress(source), address.isIPv4 else {
            throw EgressFilterError.invalidAddress(field: "source", value: source)
        }
        var host: IPAddress?
        if let hostAddress {
            guard let parsed = IPAddress(hostAddress), parsed.isIPv4 else {
                throw EgressFilterError.invalidAddress(field: "hostAddress", value: hostAddress)
            }
            host = parsed
        }
        let compiled = try CompiledPolicy(policy)
        try state.withLock { state throws(EgressFilterError) in
            if let other = state.bySource[address] { throw .sourceInUse(source: source, sandbox: other) }
            if state.sandboxes[sandbox] != nil { throw .sandboxInUse(sandbox) }
            state.bySource[address] = sandbox
            state.sandboxes[sandbox] = SandboxEntry(
                name: sandbox, source: address, hostAddress: host, policy: compiled,
                tokens: Double(policy.dnsQueriesPerSecond),
                refilled: .now())
        }
    }

    /// Stops filtering for a sandbox: its source becomes unknown (refused), its counters are
    /// dropped (read them first). Connections open now run to their end.
    public func unregister(sandbox: String) {
        state.withLock { state in
            guard let entry = state.sandboxes.removeValue(forKey: sandbox) else { return }
            state.bySource.removeValue(forKey: entry.source)
        }
    }

    /// The sandbox's counters since `register` (zero when not registered).
    public func counters(sandbox: String) -> EgressCounters {
        state.withLock { $0.sandboxes[sandbox]?.counters ?? EgressCounters() }
    }

    /// Closes the listeners and the event loops (open connections are closed with them).
    public func shutdown() async throws {
        let channels = state.withLock { state in
            state.stopped = true
            defer { state.channels = [] }
            return state.channels
        }
        for channel in channels { try? await channel.close() }
        try await group.shutdownGracefully()
    }

    // MARK: - Shared by the DNS responder and the proxy

    /// The sandbox sending from `source` to `local`, or nil (unknown source, or arrived at
    /// another address than its registered host address; `local` nil: not known).
    func sandbox(for source: IPAddress, at local: IPAddress?) -> (name: String, policy: CompiledPolicy)? {
        state.withLock { state in
            guard let name = state.bySource[source], let entry = state.sandboxes[name] else { return nil }
            if let expected = entry.hostAddress, local != expected { return nil }
            return (name, entry.policy)
        }
    }

    func update(_ sandbox: String, _ change: (inout EgressCounters) -> Void) {
        state.withLock { state in
            if state.sandboxes[sandbox] != nil { change(&state.sandboxes[sandbox]!.counters) }
        }
    }

    /// Queries and connections from unknown sources answered (REFUSED, closed) and recorded
    /// per second, all sources together; beyond it they are dropped unrecorded, so a flood
    /// (with the filter on 0.0.0.0, from any host that reaches it) cannot flood the audit log.
    static let unknownSourceRate = 20

    /// Takes a token of the unknown-source bucket. - Returns: false when over the rate.
    func admitUnknownSource() -> Bool {
        state.withLock { state in
            let now = NIODeadline.now()
            let rate = Double(Self.unknownSourceRate)
            let elapsed = Double((now - state.unknownRefilled).nanoseconds) / 1e9
            state.unknownTokens = min(rate, state.unknownTokens + elapsed * rate)
            state.unknownRefilled = now
            guard state.unknownTokens >= 1 else { return false }
            state.unknownTokens -= 1
            return true
        }
    }

    /// Takes a DNS token of the sandbox's bucket. - Returns: false when over the rate.
    func takeDNSToken(_ sandbox: String) -> Bool {
        state.withLock { state in
            guard var entry = state.sandboxes[sandbox] else { return false }
            let now = NIODeadline.now()
            let rate = Double(entry.policy.policy.dnsQueriesPerSecond)
            let elapsed = Double((now - entry.refilled).nanoseconds) / 1e9
            entry.tokens = min(rate, entry.tokens + elapsed * rate)
            entry.refilled = now
            let ok = entry.tokens >= 1
            if ok { entry.tokens -= 1 }
            state.sandboxes[sandbox] = entry
            return ok
        }
    }

    /// Takes a connection slot. - Returns: nil when taken, else the refusal.
    func acquireConnection(_ sandbox: String) -> String? {
        state.withLock { state in
            guard var entry = state.sandboxes[sandbox] else { return "sandbox unregistered" }
            guard entry.counters.activeConnections < entry.policy.policy.maxConnections else {
                return "connection limit: \(entry.policy.policy.maxConnections) concurrent connections"
            }
            entry.counters.activeConnections += 1
            state.sandboxes[sandbox] = entry
            return nil
        }
    }

    func releaseConnection(_ sandbox: String) {
        update(sandbox) { $0.activeConnections = max(0, $0.activeConnections - 1) }  // a re-registered name starts at 0
    }

    func emit(_ record: EgressRecord) {
        configuration.record(record)
    }

    /// The addresses `name` resolves to through the upstream servers that the filter may
    /// dial: A records first, then AAAA; addresses that are not global (and not in
    /// `allowedPrivateRanges`) are left out. - Returns: the usable addresses and the refusals.
    /// Answers with usable addresses are cached for their smallest TTL (RFC 1035 §3.2.1),
    /// at most `maxCacheSeconds`; failures and empty answers are not.
    func resolve(_ name: String, on loop: EventLoop) -> EventLoopFuture<(usable: [IPAddress], refused: [String])> {
        let now = NIODeadline.now()
        if let cached = state.withLock({ $0.resolutions[name] }), cached.expires > now {
            return loop.makeSucceededFuture((cached.usable, cached.refused))
        }
        @Sendable func remember(_ usable: [IPAddress], _ refused: [String], _ reply: DNSMessage) {
            let ttl = min(reply.answers.map(\.ttl).min() ?? 0, Self.maxCacheSeconds)
            guard !usable.isEmpty, ttl > 0 else { return }
            state.withLock { state in
                if state.resolutions.count >= Self.maxCacheEntries {
                    state.resolutions = state.resolutions.filter { $0.value.expires > now }
                    if state.resolutions.count >= Self.maxCacheEntries { state.resolutions = [:] }
                }
                state.resolutions[name] = CachedResolution(
                    usable: usable, refused: refused, expires: now + .seconds(Int64(ttl)))
            }
        }
        return resolver.query(name: name, type: DNSMessage.typeA, on: loop).flatMap { reply in
            let (usable, refused) = self.addresses(in: reply, for: name)
            if !usable.isEmpty {
                remember(usable, refused, reply)
                return loop.makeSucceededFuture((usable, refused))
            }
            return self.resolver.query(name: name, type: DNSMessage.typeAAAA, on: loop).map { reply6 in
                let (usable6, refused6) = self.addresses(in: reply6, for: name)
                remember(usable6, refused + refused6, reply6)
                return (usable6, refused + refused6)
            }
        }
    }

    /// The A/AAAA addresses of the answer chain starting at `name` (following CNAMEs in the
    /// answer section, RFC 1034 §3.6.2), split into usable and refused (with the reason).
    func addresses(in reply: DNSMessage, for name: String) -> (usable: [IPAddress], refused: [String]) {
        var owners: Set<String> = [name]
        // A chain is at most as long as the answer section; iterate to a fixed point.
        for _ in 0..<reply.answers.count {
            for record in reply.answers where record.type == DNSMessage.typeCNAME && owners.contains(record.name) {
                if let target = record.target { owners.insert(target) }
            }
        }
        var usable: [IPAddress] = []
        var refused: [String] = []
        for record in reply.answers
        where (record.type == DNSMessage.typeA || record.type == DNSMessage.typeAAAA) && owners.contains(record.name) {
            guard let address = IPAddress(bytes: record.data) else { continue }
            if let why = AddressPolicy.refusal(for: address, allowed: allowedRanges) {
                refused.append(why)
            } else {
                usable.append(address)
            }
        }
        return (usable, refused)
    }
}
