/// Ends a streamed exec whose client went away while the process printed nothing.
///
/// Hummingbird learns that a connection is gone only when it writes to it; a streamed exec
/// whose process is silent writes nothing, so it would run on until its timeout for nobody.
/// The server allows half-closed connections (`ChannelOptions.allowRemoteHalfClosure`), so the
/// end of the client's stream arrives as the `ChannelEvent.inputClosed` user event (NIO reads
/// the socket while the request's body iterator has room, as it has once the body is read),
/// and a reset as `channelInactive`. `DisconnectWatcher` sits first in the connection's
/// pipeline for the length of one streamed exec and kills the exec on either.
///
/// A client that half-closes its sending side (shutdown(SHUT_WR)) while it streams an exec is
/// taken as gone, as nginx takes it (`proxy_ignore_client_abort off`): an HTTP/1.1 client has
/// no reason to (RFC 9112 section 9.6 asks a client to keep the connection open until the
/// response is read).
import Foundation
import NIOCore

/// The exec to kill once the client is gone; either may come first.
final class ClientGone: @unchecked Sendable {
    private let lock = NSLock()
    private var handle: ExecHandle?
    private var gone = false

    /// The exec started (its handle): killed at once when the client left before.
    func attach(_ handle: ExecHandle) {
        let kill = lock.withLock { () -> Bool in
            self.handle = handle
            return gone
        }
        if kill { handle.kill(reason: "client disconnected") }
    }

    /// The client's connection ended.
    func fire() {
        let handle = lock.withLock { () -> ExecHandle? in
            gone = true
            return self.handle
        }
        handle?.kill(reason: "client disconnected")
    }
}

/// Passes everything on; on the end of the client's input or the channel's end, fires `gone`.
final class DisconnectWatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    let gone: ClientGone

    init(_ gone: ClientGone) { self.gone = gone }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { gone.fire() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        gone.fire()
        context.fireChannelInactive()
    }
}
