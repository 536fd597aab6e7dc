import NIOCore
import NIOPosix

/// The DNS side of the filter.
///
/// Decisions (recorded as `protocol: dns`):
/// - unknown source, over the sandbox's queries-per-second, class other than IN: REFUSED;
/// - a message that does not parse: FORMERR (header echoed) or dropped when even the header
///   is short; a response (QR=1): dropped; opcode other than QUERY: NOTIMP; QDCOUNT ≠ 1: FORMERR;
/// - a name no domain rule allows: NXDOMAIN whatever the QTYPE, and never forwarded, so a
///   query cannot carry data out (DNS tunnelling) nor tell whether the name exists;
/// - an allowed name, A or AAAA: forwarded (a fresh query, random ID) and answered with the
///   CNAME chain and the A/AAAA records from the upstream answer, minus addresses that are
///   not global (rebinding, RFC 6890), with the upstream RCODE; upstream failure: SERVFAIL;
/// - an allowed name, any other QTYPE: NOERROR with no answer (NODATA, RFC 2308 §2.2), so
///   resolvers asking HTTPS/SVCB or MX do not wait; nothing is forwarded.
/// UDP answers over 512 bytes (RFC 1035 §2.3.4) are sent truncated (TC, no records): the
/// client repeats over TCP, which the filter serves on the same port.
extension EgressFilter {
    enum Transport { case udp, tcp }

    func answer(
        _ bytes: [UInt8], from source: IPAddress, at local: IPAddress?, transport: Transport, on loop: EventLoop
    )
        -> EventLoopFuture<[UInt8]?>
    {
        let started = NIODeadline.now()
        guard let header = DNSMessage.header(bytes), header.flags & 0x8000 == 0 else {
            return loop.makeSucceededFuture(nil)
        }
        @Sendable func reply(
            _ code: DNSMessage.ResponseCode, questions: [DNSMessage.Question] = [], answers: [DNSMessage.Record] = []
        )
            -> [UInt8]?
        {
            // QR, the query's opcode and RD, RA; AA clear: the filter is not authoritative.
            let flags = 0x8000 | (header.flags & 0x7900) | 0x0080 | code.rawValue
            var message = DNSMessage(id: header.id, flags: flags, questions: questions, answers: answers)
            guard var wire = try? message.encode() else { return nil }
            if transport == .udp, wire.count > 512 {
                message.answers = []
                message.flags |= 0x0200
                wire = (try? message.encode()) ?? wire
            }
            return wire
        }
        @Sendable func record(
            _ event: EgressRecord.Event, _ sandbox: String, _ question: DNSMessage.Question?, _ reason: String,
            addresses: [IPAddress] = []
        ) {
            emit(
                EgressRecord(
                    event: event, sandbox: sandbox, domain: question?.name,
                    destinationAddress: addresses.isEmpty ? nil : addresses.map(\.description).joined(separator: ","),
                    destinationPort: nil, originalDestination: nil, networkProtocol: .dns,
                    queryType: question.map { Self.typeName($0.type) }, bytesOut: 0, bytesIn: 0,
                    durationMs: UInt64((NIODeadline.now() - started).nanoseconds / 1_000_000), reason: reason,
                    source: source.description))
        }
        guard let (sandbox, policy) = self.sandbox(for: source, at: local) else {
            guard admitUnknownSource() else { return loop.makeSucceededFuture(nil) }
            record(.denied, "", nil, "unknown source \(source) (at \(local?.description ?? "?"))")
            return loop.makeSucceededFuture(reply(.refused))
        }
        let message: DNSMessage
        do {
            message = try DNSMessage.parse(bytes)
        } catch {
            update(sandbox) { $0.dnsRefused += 1 }
            record(.denied, sandbox, nil, "malformed query: \(error)")
            return loop.makeSucceededFuture(reply(.formatError))
        }
        guard message.opcode == 0 else {
            update(sandbox) { $0.dnsRefused += 1 }
            record(
                .denied, sandbox, nil,
                "opcode \(message.opcode): answered NOTIMP (RFC 1035 4.1.1; only QUERY is served)")
            return loop.makeSucceededFuture(reply(.notImplemented))
        }
        guard message.questions.count == 1 else {
            update(sandbox) { $0.dnsRefused += 1 }
            record(.denied, sandbox, nil, "\(message.questions.count) questions (one expected)")
            return loop.makeSucceededFuture(reply(.formatError))
        }
        let question = message.questions[0]
        guard takeDNSToken(sandbox) else {
            update(sandbox) { $0.dnsRefused += 1 }
            record(
                .denied, sandbox, question, "DNS rate limit: \(policy.policy.dnsQueriesPerSecond) queries per second")
            return loop.makeSucceededFuture(reply(.refused, questions: [question]))
        }
        guard question.qclass == DNSMessage.classIN else {
            update(sandbox) { $0.dnsRefused += 1 }
            record(.denied, sandbox, question, "class \(question.qclass) refused (IN only)")
            return loop.makeSucceededFuture(reply(.refused, questions: [question]))
        }
        guard let name = HostName.normalize(question.name), policy.allows(name: name) else {
            update(sandbox) { $0.dnsRefused += 1 }
            record(.denied, sandbox, question, "name not allowed")
            return loop.makeSucceededFuture(reply(.nameError, questions: [question]))
        }
        guard question.type == DNSMessage.typeA || question.type == DNSMessage.typeAAAA else {
            update(sandbox) { $0.dnsRefused += 1 }
            record(.denied, sandbox, question, "only A and AAAA are answered: NODATA")
            return loop.makeSucceededFuture(reply(.noError, questions: [question]))
        }
        return resolver.query(name: name, type: question.type, on: loop).map { upstream -> [UInt8]? in
            let (usable, refused) = self.addresses(in: upstream, for: name)
            let kept = upstream.answers.filter { answer in
                switch answer.type {
                case DNSMessage.typeCNAME: return true
                case DNSMessage.typeA, DNSMessage.typeAAAA:
                    return IPAddress(bytes: answer.data).map { usable.contains($0) } ?? false
                default: return false
                }
            }.filter { $0.rclass == DNSMessage.classIN }
            let code = DNSMessage.ResponseCode(rawValue: upstream.responseCode) ?? .serverFailure
            self.update(sandbox) { $0.dnsAnswered += 1 }
            var reason = "allowed name, upstream rcode \(upstream.responseCode)"
            if !refused.isEmpty { reason += "; left out: " + refused.joined(separator: "; ") }
            record(.allowed, sandbox, question, reason, addresses: usable)
            return reply(code, questions: [question], answers: kept)
        }.recover { error in
            self.update(sandbox) { $0.dnsAnswered += 1 }
            record(.allowed, sandbox, question, "allowed name, upstream failed: \(error)")
            return reply(.serverFailure, questions: [question])
        }
    }

    static func typeName(_ type: UInt16) -> String {
        switch type {
        case DNSMessage.typeA: "A"
        case DNSMessage.typeAAAA: "AAAA"
        case DNSMessage.typeCNAME: "CNAME"
        case 15: "MX"
        case 16: "TXT"
        case 33: "SRV"
        case 64: "SVCB"
        case 65: "HTTPS"
        case 255: "ANY"
        default: String(type)
        }
    }
}

/// The UDP listener: one datagram, one answer to its sender.
final class DNSUDPServerHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let filter: EgressFilter

    init(filter: EgressFilter) { self.filter = filter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let ip = envelope.remoteAddress.ipAddress, let source = IPAddress(ip) else { return }
        let channel = context.channel
        let remote = envelope.remoteAddress
        let local = envelope.metadata?.packetInfo?.destinationAddress.ipAddress.flatMap(IPAddress.init)
        filter.answer(
            Array(envelope.data.readableBytesView), from: source, at: local, transport: .udp, on: context.eventLoop
        )
        .whenSuccess { reply in
            guard let reply else { return }
            channel.writeAndFlush(
                AddressedEnvelope(remoteAddress: remote, data: channel.allocator.buffer(bytes: reply)), promise: nil
            )
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A send error for one client (ICMP unreachable) must not close the listener.
    }
}

/// The TCP listener (RFC 7766): length-framed queries, answered in order of completion.
/// Unknown sources are closed at once; idle connections after `sniffTimeout`.
final class DNSTCPServerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let filter: EgressFilter

    init(filter: EgressFilter) { self.filter = filter }

    /// A TCP DNS connection takes one of the sandbox's connection slots (`maxConnections`)
    /// until it closes, so held-open DNS connections cannot exhaust the filter's descriptors.
    func channelActive(context: ChannelHandlerContext) {
        let source = context.channel.remoteAddress?.ipAddress.flatMap(IPAddress.init)
        let local = context.channel.localAddress?.ipAddress.flatMap(IPAddress.init)
        guard let sandbox = source.flatMap({ filter.sandbox(for: $0, at: local) })?.name else {
            context.close(promise: nil)
            return
        }
        if filter.acquireConnection(sandbox) != nil {
            filter.update(sandbox) { $0.dnsRefused += 1 }
            context.close(promise: nil)
            return
        }
        let owner = filter
        context.channel.closeFuture.whenComplete { _ in owner.releaseConnection(sandbox) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let ip = context.channel.remoteAddress?.ipAddress, let source = IPAddress(ip) else {
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        filter.answer(
            Array(unwrapInboundIn(data).readableBytesView), from: source,
            at: context.channel.localAddress?.ipAddress.flatMap(IPAddress.init), transport: .tcp, on: context.eventLoop
        )
        .whenSuccess { reply in
            guard let reply else { return }
            var buffer = channel.allocator.buffer(capacity: reply.count + 2)
            buffer.writeInteger(UInt16(reply.count))
            buffer.writeBytes(reply)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
