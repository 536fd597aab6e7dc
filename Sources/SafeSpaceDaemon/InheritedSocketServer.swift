/// The API over HTTP/1.1 on a listening socket the daemon inherited from systemd (socket
/// activation, `safespaced.socket`), with Hummingbird's HTTP/1.1 channel and the same router.
///
/// Why not `Application`: Hummingbird 2.28.1 binds only by `BindAddress` (host and port, or a
/// unix socket path, which it unlinks and binds anew: `Server.makeServer` calls NIO's
/// `bind(unixDomainSocketPath:cleanupExistingSocketFile: true)`), and every step on the way
/// (`Application.run`, `HTTPServerBuilder.buildServer`, `ServerChildChannel.server`) is a
/// protocol extension or a final type: no hook takes an fd. Rebinding the path would replace
/// the socket a `.socket` unit owns (connections queued in its backlog are lost, and systemd
/// keeps listening on an inode nobody can reach). So this service does what `Server.run` does
/// with public pieces: NIO's `ServerBootstrap.bind(_:)` on the existing socket (NIO takes it
/// as already bound and never unlinks its path), Hummingbird's public `HTTP1Channel` for each
/// connection (parsing, keep-alive, idle and quiesce handling), NIOExtras'
/// `ServerQuiescingHelper` for graceful shutdown (stop accepting, let open requests finish),
/// and the responder call of `Application.run` (a context per request, `Date` and `Server`
/// headers, a 500 for an error the router did not turn into a response).
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

struct InheritedSocketServer<Responder: HTTPResponder>: Service
where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
    /// A listening AF_UNIX SOCK_STREAM socket (checked by `SocketActivation`); NIO owns it from
    /// `run` on and closes it when the server stops.
    let fd: Int32
    let responder: Responder
    let serverName: String?
    let logger: Logger
    let onServerRunning: @Sendable (any Channel) async -> Void
    var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    /// Writing the response failed on a parse error of the request: `HTTP1Channel` must not
    /// answer it a second time, so the connection is closed (Hummingbird's own
    /// `HTTPChannelError.parseErrorWhileWritingResponse`, which is not public).
    struct ParseErrorWhileWritingResponse: Error {}

    func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let serverName = self.serverName
        let http = HTTP1Channel(responder: { request, responseWriter, channel in
            var requestLogger = logger
            requestLogger[metadataKey: "hb.request.id"] = .stringConvertible(RequestID())
            let context = Responder.Context(source: .init(channel: channel, logger: requestLogger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error
            } catch {
                requestLogger.debug("Unrecognised Error", metadata: ["error.type": "\(error)"])
                response = Response(status: .internalServerError, body: .init())
            }
            response.headers[.date] = HTTPDate.now()
            if let serverName { response.headers[.server] = serverName }
            do {
                try await responseWriter.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                throw ParseErrorWhileWritingResponse()
            }
        })
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        // NIO calls listen(2) on the socket again with its backlog (128 pending connections),
        // which replaces the unit's Backlog= (systemd.socket(5), default SOMAXCONN); queued
        // connections stay queued.
        let server = try await bootstrap.bind(fd) { channel in http.setup(channel: channel, logger: logger) }
        logger.info("Server started and listening on the inherited socket (fd \(fd))")
        await withGracefulShutdownHandler {
            await onServerRunning(server.channel)
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await http.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("Waiting on child channel: \(error)")
                }
            }
        } onGracefulShutdown: {
            // Closes the listening socket (this process's copy: a socket unit keeps its own
            // and queues new connections for the next start) and asks every connection to
            // close once its request is answered; the accept loop above then ends.
            quiescing.initiateShutdown(promise: nil)
        }
    }
}

/// The `Date` header's value (RFC 9110 section 5.6.7, IMF-fixdate: `Sun, 06 Nov 1994 08:49:37
/// GMT`), as Hummingbird's (internal) DateCache writes it.
enum HTTPDate {
    static func now() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return
            "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
