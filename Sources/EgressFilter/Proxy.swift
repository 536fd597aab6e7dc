import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import NIOTLS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One proxied connection from a sandbox, from accept to close.
///
/// Phases: sniffing (reading the request head or ClientHello, at most `sniffTimeout`),
/// deciding (resolving the name through the upstream servers, connecting), spliced (bytes
/// both ways through a `GlueHandler` pair), closed. The sandbox's bytes read while deciding
/// are held and written first once connected; reads stop meanwhile (autoRead off).
///
/// The destination is the name's resolved address (the first usable A, else AAAA), port 80 or
/// 443: never the address the sandbox connected to, which is only recorded
/// (`originalDestination`, from SO_ORIGINAL_DST, linux/netfilter_ipv4.h, of a connection
/// redirected by nftables). Without an allowed name, a `cidr` rule covering the original
/// destination and port lets the connection through to that address.
final class ProxyConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase { case sniffing, deciding, spliced, closed }

    let filter: EgressFilter
    let kind: EgressRecord.NetworkProtocol
    let sandbox: String
    let policy: CompiledPolicy
    let source: IPAddress
    let accepted = NIODeadline.now()
    var phase = Phase.sniffing
    var pending: ByteBuffer?
    var inputClosed = false
    var originalDestination: (IPAddress, UInt16)?
    var domain: String?
    var destination: SocketAddress?
    var reason = ""
    var bytesOut: UInt64 = 0
    var bytesIn: UInt64 = 0
    var upstream: Channel?
    /// A request head was read: denials answer 403 (HTTP only).
    var sawHead = false
    /// HTTP by a domain rule: every later request head on the connection (keep-alive,
    /// pipelining) is parsed too and must name the same host, or the connection is closed.
    var followUp: EmbeddedChannel?
    var timer: Scheduled<Void>?
    weak var context: ChannelHandlerContext?

    var port: Int { kind == .tls ? 443 : 80 }

    init(
        filter: EgressFilter, kind: EgressRecord.NetworkProtocol, sandbox: String, policy: CompiledPolicy,
        source: IPAddress
    ) {
        self.filter = filter
        self.kind = kind
        self.sandbox = sandbox
        self.policy = policy
        self.source = source
    }

    /// The child channel initializer of the proxy listeners (on the channel's event loop).
    static func install(on channel: Channel, kind: EgressRecord.NetworkProtocol, filter: EgressFilter) throws {
        let started = NIODeadline.now()
        let source = channel.remoteAddress?.ipAddress.flatMap(IPAddress.init)
        func refuse(_ sandbox: String, _ reason: String) {
            filter.emit(
                EgressRecord(
                    event: .denied, sandbox: sandbox, domain: nil, destinationAddress: nil, destinationPort: nil,
                    originalDestination: nil, networkProtocol: kind, queryType: nil, bytesOut: 0, bytesIn: 0,
                    durationMs: UInt64((NIODeadline.now() - started).nanoseconds / 1_000_000), reason: reason,
                    source: source?.description ?? "?"))
            channel.close(promise: nil)
        }
        let local = channel.localAddress?.ipAddress.flatMap(IPAddress.init)
        guard let source, let (sandbox, policy) = filter.sandbox(for: source, at: local) else {
            guard filter.admitUnknownSource() else {
                channel.close(promise: nil)
                return
            }
            refuse("", "unknown source \(source?.description ?? "?") (at \(local?.description ?? "?"))")
            return
        }
        if let refusal = filter.acquireConnection(sandbox) {
            filter.update(sandbox) { $0.deniedConnections += 1 }
            refuse(sandbox, refusal)
            return
        }
        channel.closeFuture.whenComplete { _ in filter.releaseConnection(sandbox) }

        let connection = ProxyConnection(filter: filter, kind: kind, sandbox: sandbox, policy: policy, source: source)
        let bound = NIOLoopBound(connection, eventLoop: channel.eventLoop)
        let sync = channel.pipeline.syncOperations
        switch kind {
        case .tls:
            try sync.addHandler(
                ByteToMessageHandler(
                    SNIHandler { result in
                        switch result {
                        case .hostname(let name): bound.value.sniffed(name: name, head: nil, failure: nil)
                        case .fallback:
                            bound.value.sniffed(
                                name: nil, head: nil, failure: "no server name (SNI) in the ClientHello")
                        }
                        return channel.eventLoop.makeSucceededVoidFuture()
                    }))
        default:
            try sync.addHandler(
                HTTPHeadSniffer(maxHead: filter.configuration.maxRequestHead) { result in
                    switch result {
                    case .success(let head): bound.value.sniffed(head: head)
                    case .failure(let why): bound.value.sniffed(name: nil, head: nil, failure: why.description)
                    }
                })
        }
        try sync.addHandler(connection)
        // The destination the sandbox asked for, when nftables redirected the connection.
        if let provider = channel as? SocketOptionProvider {
            let future: EventLoopFuture<sockaddr_in> = provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_IP), name: SocketOptionName(80))  // SO_ORIGINAL_DST
            future.whenSuccess { address in
                var raw = address.sin_addr
                let bytes = withUnsafeBytes(of: &raw) { Array($0) }
                if let ip = IPAddress(bytes: bytes) {
                    bound.value.originalDestination = (ip, UInt16(bigEndian: address.sin_port))
                }
            }
        }
        let timeout = filter.configuration.sniffTimeout
        connection.timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            let connection = bound.value
            if connection.phase == .sniffing {
                connection.deny("no \(kind == .tls ? "ClientHello" : "request head") within \(timeout) s")
            }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// The Host header of an HTTP request head, checked: one Host, origin-form target.
    func sniffed(head: HTTPRequestHead) {
        let hosts = head.headers["host"]
        guard hosts.count == 1 else {
            sniffed(name: nil, head: head, failure: "\(hosts.count) Host headers (one expected, RFC 9112 §3.2)")
            return
        }
        // An absolute-form or authority-form target names a host the origin server would
        // use instead of Host (RFC 9112 §3.2.2): only origin-form ("/path") and "*" pass.
        guard head.uri.hasPrefix("/") || (head.uri == "*" && head.method == .OPTIONS) else {
            sniffed(name: nil, head: head, failure: "request target \"\(head.uri.prefix(100))\" is not origin-form")
            return
        }
        guard let name = HostName.fromHostHeader(hosts[0]) else {
            sniffed(name: nil, head: head, failure: "Host \"\(hosts[0].prefix(100))\" is not a host name")
            return
        }
        sniffed(name: name, head: head, failure: nil)
    }

    /// The decision, once the name (or its absence) is known.
    func sniffed(name rawName: String?, head: HTTPRequestHead?, failure: String?) {
        guard phase == .sniffing, let context else { return }
        timer?.cancel()
        sawHead = head != nil
        phase = .deciding
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        let name = rawName.flatMap(HostName.normalize)
        domain = name ?? rawName.map { String($0.prefix(253)) }
        let loop = context.eventLoop
        if let name, policy.allows(name: name) {
            let bound = NIOLoopBound(self, eventLoop: loop)
            filter.resolve(name, on: loop).whenComplete { result in
                let connection = bound.value
                switch result {
                case .failure(let error): connection.deny("resolving \(name) failed: \(error)")
                case .success(let (usable, refused)):
                    guard let address = usable.first,
                        let target = try? SocketAddress(ipAddress: address.description, port: connection.port)
                    else {
                        connection.deny(
                            refused.first.map { "resolved address refused: \($0)" } ?? "\(name) has no address")
                        return
                    }
                    connection.connect(to: target, reason: "domain rule")
                }
            }
            return
        }
        if let (ip, port) = originalDestination, policy.allows(address: ip, port: port) {
            if let why = AddressPolicy.refusal(for: ip, allowed: filter.allowedRanges) {
                deny("cidr rule, but \(why)")
            } else if let target = try? SocketAddress(ipAddress: ip.description, port: Int(port)) {
                connect(to: target, reason: "cidr rule")
            } else {
                deny("bad original destination")
            }
            return
        }
        deny(failure ?? "name not allowed")
    }

    func connect(to target: SocketAddress, reason: String) {
        guard let context, phase == .deciding else { return }
        destination = target
        self.reason = reason
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(Int64(filter.configuration.connectTimeout * 1000)))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.recvAllocator, value: EgressFilter.receiveAllocator)
            .channelOption(.writeBufferWaterMark, value: EgressFilter.waterMark)
            .connect(to: target)
            .whenComplete { result in
                let connection = bound.value
                switch result {
                case .failure(let error): connection.deny("connecting to \(target) failed: \(error)")
                case .success(let upstream): connection.splice(upstream)
                }
            }
    }

    func splice(_ upstream: Channel) {
        guard let context, phase == .deciding, context.channel.isActive else {
            upstream.close(promise: nil)
            return
        }
        phase = .spliced
        self.upstream = upstream
        filter.update(sandbox) { $0.allowedConnections += 1 }
        let (sandboxSide, upstreamSide) = GlueHandler.matchedPair(
            firstRead: { _ in },  // counted in channelRead below, where pending bytes are too
            secondRead: { [weak self] count in self?.bytesIn += UInt64(count) })
        do {
            try context.pipeline.syncOperations.addHandler(sandboxSide, position: .after(self))
            try upstream.pipeline.syncOperations.addHandler(upstreamSide)
        } catch {
            upstream.close(promise: nil)
            deny("splicing failed: \(error)")
            return
        }
        if kind == .http, reason == "domain rule" {
            followUp = EmbeddedChannel(
                handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        }
        if let pending, pending.readableBytes > 0 {
            if let violation = checkFollowUp(pending) {
                refuseFollowUp(violation, context: context)
                return
            }
            bytesOut += UInt64(pending.readableBytes)
            upstream.writeAndFlush(pending, promise: nil)
        }
        pending = nil
        if inputClosed { upstream.close(mode: .output, promise: nil) }
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
    }

    /// Parses the sandbox's bytes of an HTTP connection for request heads (RFC 9112 §9.3):
    /// - Returns: why the connection must close (another host, a target that is not
    ///   origin-form, bytes that are not HTTP/1.1), nil while every head names `domain`.
    ///   After an Upgrade the parser stops (the rest is dropped by it), as the server does.
    func checkFollowUp(_ buffer: ByteBuffer) -> String? {
        guard let parser = followUp else { return nil }
        do {
            try parser.writeInbound(buffer)
            while let part = try parser.readInbound(as: HTTPServerRequestPart.self) {
                guard case .head(let head) = part else { continue }
                let hosts = head.headers["host"]
                guard hosts.count == 1, let host = HostName.fromHostHeader(hosts[0]), host == domain else {
                    return
                        "a later request on the connection names another Host: \(hosts.joined(separator: ",").prefix(100))"
                }
                guard head.uri.hasPrefix("/") || (head.uri == "*" && head.method == .OPTIONS) else {
                    return "a later request target \"\(head.uri.prefix(100))\" is not origin-form"
                }
            }
        } catch {
            return "malformed HTTP on the connection: \(error)"
        }
        return nil
    }

    /// Closes a spliced connection whose later request broke the rule; a `network.denied`
    /// record now, the connection's `network.allowed` (bytes so far) when it closes.
    func refuseFollowUp(_ why: String, context: ChannelHandlerContext) {
        _ = try? followUp?.finish()
        followUp = nil
        filter.update(sandbox) { $0.deniedConnections += 1 }
        filter.emit(record(.denied, why))
        context.close(promise: nil)
    }

    func deny(_ why: String) {
        guard phase != .closed, phase != .spliced, let context else { return }
        phase = .closed
        timer?.cancel()
        filter.update(sandbox) { $0.deniedConnections += 1 }
        filter.emit(record(.denied, why))
        if sawHead, kind == .http {
            let body = "egress denied: \(domain ?? "?"): \(why)\n"
            let response =
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
                + body
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(string: response))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            context.close(promise: nil)
        }
    }

    func record(_ event: EgressRecord.Event, _ reason: String) -> EgressRecord {
        EgressRecord(
            event: event, sandbox: sandbox, domain: domain, destinationAddress: destination?.ipAddress,
            destinationPort: destination?.port.map(UInt16.init) ?? UInt16(port),
            originalDestination: originalDestination.map { "\($0.0):\($0.1)" }, networkProtocol: kind, queryType: nil,
            bytesOut: bytesOut, bytesIn: bytesIn,
            durationMs: UInt64((NIODeadline.now() - accepted).nanoseconds / 1_000_000),
            reason: reason, source: source.description)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        switch phase {
        case .spliced:
            if let violation = checkFollowUp(buffer) {
                refuseFollowUp(violation, context: context)
                return
            }
            bytesOut += UInt64(buffer.readableBytes)
            context.fireChannelRead(data)
        case .sniffing, .deciding:
            // Bounded: reads stop when the decision starts; the sniffers hold at most a
            // request head or a TLS record before it.
            if pending == nil { pending = buffer } else { pending!.writeImmutableBuffer(buffer) }
        case .closed:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event, phase != .spliced {
            inputClosed = true
            if phase == .sniffing {
                deny("connection closed before the \(kind == .tls ? "ClientHello" : "request head")")
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        _ = try? followUp?.finish()
        followUp = nil
        if phase == .spliced {
            phase = .closed
            let (out, into) = (bytesOut, bytesIn)
            filter.update(sandbox) {
                $0.bytesOut += out
                $0.bytesIn += into
            }
            filter.emit(record(.allowed, reason))
        } else if phase == .sniffing {
            deny("connection closed before the \(kind == .tls ? "ClientHello" : "request head")")
        } else if phase == .deciding {
            phase = .closed
            filter.update(sandbox) { $0.deniedConnections += 1 }
            filter.emit(record(.denied, "closed by the sandbox while the filter was resolving or connecting"))
        }
        phase = .closed
        upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if phase == .sniffing || phase == .deciding {
            deny("error: \(error)")
        } else {
            context.close(promise: nil)
        }
    }
}

/// Reads an HTTP/1.x request head with NIOHTTP1's parser (llhttp) without consuming it: the
/// raw bytes are held and passed on unchanged once the head is complete, then the sniffer
/// removes itself. Heads over `maxHead` bytes and parse errors fail.
final class HTTPHeadSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    struct Failure: Error, CustomStringConvertible { var description: String }

    let maxHead: Int
    let onHead: (Result<HTTPRequestHead, Failure>) -> Void
    var held: ByteBuffer?
    var parser: EmbeddedChannel?
    var done = false

    init(maxHead: Int, onHead: @escaping (Result<HTTPRequestHead, Failure>) -> Void) {
        self.maxHead = maxHead
        self.onHead = onHead
        self.parser = EmbeddedChannel(
            handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if done {
            context.fireChannelRead(data)
            return
        }
        if held == nil { held = buffer } else { held!.writeImmutableBuffer(buffer) }
        var result: Result<HTTPRequestHead, Failure>?
        do {
            try parser?.writeInbound(buffer)
            while let part = try parser?.readInbound(as: HTTPServerRequestPart.self) {
                if case .head(let head) = part {
                    result = .success(head)
                    break
                }
            }
        } catch {
            result = .failure(Failure(description: "malformed HTTP request: \(error)"))
        }
        if result == nil, held!.readableBytes > maxHead {
            result = .failure(Failure(description: "request head over \(maxHead) bytes"))
        }
        guard let result else { return }
        finish(context: context, result)
    }

    private func finish(context: ChannelHandlerContext, _ result: Result<HTTPRequestHead, Failure>) {
        done = true
        _ = try? parser?.finish()
        parser = nil
        onHead(result)
        if let held { context.fireChannelRead(wrapInboundOut(held)) }
        held = nil
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    typealias InboundOut = ByteBuffer

    func handlerRemoved(context: ChannelHandlerContext) {
        _ = try? parser?.finish()
        parser = nil
    }
}
