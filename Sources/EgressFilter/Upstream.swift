import NIOCore
import NIOPosix

/// Splits a TCP stream of DNS messages, each after a two-octet length (RFC 1035 §4.2.2).
final class DNSLengthFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length: UInt16 = buffer.getInteger(at: buffer.readerIndex),
            buffer.readableBytes >= 2 + Int(length)
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        let frame = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}

/// An error of a query to the upstream servers.
struct UpstreamError: Error, CustomStringConvertible {
    var description: String
}

/// Queries the upstream DNS servers: UDP first, TCP when the answer is truncated (RFC 1035
/// §4.2.1, RFC 7766); each server in turn until one answers. A reply is accepted only from
/// the server's address, with the query's random ID and the same question (RFC 5452 §9.1).
struct UpstreamResolver: Sendable {
    let servers: [SocketAddress]
    let timeout: TimeAmount

    /// - Throws: `EgressFilterError.invalidAddress` for an entry that is not "ip", "ip:port"
    ///   or "[v6]:port".
    static func parse(_ entries: [String]) throws(EgressFilterError) -> [SocketAddress] {
        guard !entries.isEmpty else { throw .noUpstreamDNS("upstreamDNS is empty") }
        var out: [SocketAddress] = []
        for entry in entries {
            var host = entry
            var port = 53
            if entry.hasPrefix("["), let close = entry.firstIndex(of: "]") {
                host = String(entry[entry.index(after: entry.startIndex)..<close])
                let rest = entry[entry.index(after: close)...]
                if !rest.isEmpty {
                    guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p) else {
                        throw .invalidAddress(field: "upstreamDNS", value: entry)
                    }
                    port = p
                }
            } else if entry.filter({ $0 == ":" }).count == 1 {
                let parts = entry.split(separator: ":")
                guard parts.count == 2, let p = Int(parts[1]), (1...65535).contains(p) else {
                    throw .invalidAddress(field: "upstreamDNS", value: entry)
                }
                host = String(parts[0])
                port = p
            }
            guard IPAddress(host) != nil, let address = try? SocketAddress(ipAddress: host, port: port) else {
                throw .invalidAddress(field: "upstreamDNS", value: entry)
            }
            out.append(address)
        }
        return out
    }

    /// The answer to one question, from the first server that gives one.
    func query(name: String, type: UInt16, on loop: EventLoop) -> EventLoopFuture<DNSMessage> {
        @Sendable func attempt(_ index: Int, _ lastError: Error?) -> EventLoopFuture<DNSMessage> {
            guard index < servers.count else {
                return loop.makeFailedFuture(lastError ?? UpstreamError(description: "no upstream server"))
            }
            let server = servers[index]
            return queryUDP(name: name, type: type, server: server, on: loop).flatMap { message in
                message.isTruncated
                    ? queryTCP(name: name, type: type, server: server, on: loop) : loop.makeSucceededFuture(message)
            }.flatMapError { error in attempt(index + 1, error) }
        }
        return attempt(0, nil)
    }

    private func request(name: String, type: UInt16) -> (DNSMessage, [UInt8])? {
        let message = DNSMessage(
            id: UInt16.random(in: 0...UInt16.max), flags: 0x0100, questions: [.init(name: name, type: type)])
        guard let bytes = try? message.encode() else { return nil }
        return (message, bytes)
    }

    private func queryUDP(name: String, type: UInt16, server: SocketAddress, on loop: EventLoop) -> EventLoopFuture<
        DNSMessage
    > {
        guard let (message, bytes) = request(name: name, type: type) else {
            return loop.makeFailedFuture(UpstreamError(description: "name \(name) not encodable"))
        }
        let promise = loop.makePromise(of: DNSMessage.self)
        let timeout = self.timeout
        let bindHost = server.protocol == .inet ? "0.0.0.0" : "::"
        DatagramBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamUDPReplyHandler(promise: promise, server: server, query: message))
                }
            }
            .bind(host: bindHost, port: 0)
            .whenComplete { result in
                switch result {
                case .failure(let error): promise.fail(error)
                case .success(let channel):
                    let envelope = AddressedEnvelope(
                        remoteAddress: server, data: channel.allocator.buffer(bytes: bytes))
                    channel.writeAndFlush(envelope).whenFailure { promise.fail($0) }
                    let timer = loop.scheduleTask(in: timeout) {
                        promise.fail(
                            UpstreamError(
                                description: "no answer from \(server) within \(timeout.nanoseconds / 1_000_000) ms"))
                    }
                    promise.futureResult.whenComplete { _ in
                        timer.cancel()
                        channel.close(promise: nil)
                    }
                }
            }
        return promise.futureResult
    }

    private func queryTCP(name: String, type: UInt16, server: SocketAddress, on loop: EventLoop) -> EventLoopFuture<
        DNSMessage
    > {
        guard let (message, bytes) = request(name: name, type: type) else {
            return loop.makeFailedFuture(UpstreamError(description: "name \(name) not encodable"))
        }
        let promise = loop.makePromise(of: DNSMessage.self)
        let timeout = self.timeout
        ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSLengthFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamTCPReplyHandler(promise: promise, query: message))
                }
            }
            .connect(to: server)
            .whenComplete { result in
                switch result {
                case .failure(let error): promise.fail(error)
                case .success(let channel):
                    var buffer = channel.allocator.buffer(capacity: bytes.count + 2)
                    buffer.writeInteger(UInt16(bytes.count))
                    buffer.writeBytes(bytes)
                    channel.writeAndFlush(buffer).whenFailure { promise.fail($0) }
                    let timer = loop.scheduleTask(in: timeout) {
                        promise.fail(
                            UpstreamError(
                                description: "no TCP answer from \(server) within \(timeout.nanoseconds / 1_000_000) ms"
                            ))
                    }
                    promise.futureResult.whenComplete { _ in
                        timer.cancel()
                        channel.close(promise: nil)
                    }
                }
            }
        return promise.futureResult
    }
}

/// Completes a query's promise with the first matching reply; others are ignored.
struct ReplyMatcher {
    let promise: EventLoopPromise<DNSMessage>
    let query: DNSMessage

    func offer(_ buffer: ByteBuffer) {
        let bytes = Array(buffer.readableBytesView)
        guard let reply = try? DNSMessage.parse(bytes), reply.isResponse, reply.id == query.id,
            reply.questions.count == 1, reply.questions[0].name == query.questions[0].name,
            reply.questions[0].type == query.questions[0].type
        else { return }
        promise.succeed(reply)
    }
}

/// UDP: replies from addresses other than the server's are ignored.
final class UpstreamUDPReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let matcher: ReplyMatcher
    let server: SocketAddress

    init(promise: EventLoopPromise<DNSMessage>, server: SocketAddress, query: DNSMessage) {
        self.matcher = ReplyMatcher(promise: promise, query: query)
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == server else { return }
        matcher.offer(envelope.data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP port unreachable and the like: this server failed.
        matcher.promise.fail(error)
    }
}

/// TCP: one framed reply on a connected channel.
final class UpstreamTCPReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let matcher: ReplyMatcher

    init(promise: EventLoopPromise<DNSMessage>, query: DNSMessage) {
        self.matcher = ReplyMatcher(promise: promise, query: query)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        matcher.offer(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        matcher.promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        matcher.promise.fail(UpstreamError(description: "upstream closed the connection"))
    }
}
