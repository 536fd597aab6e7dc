/// `safespace mcp`: a Model Context Protocol server (MCP 2025-06-18, stdio transport:
/// newline-delimited JSON-RPC 2.0 on stdin/stdout,
/// https://modelcontextprotocol.io/specification/2025-06-18/basic/transports#stdio) whose
/// tools drive safespaced (SandboxTools). The session ends at stdin's EOF (the client went
/// away) or on SIGTERM/SIGINT/SIGHUP; then the sandboxes it created without `keep` are deleted.
import DaemonClient
import Dispatch
import Foundation
import Glibc
import Logging
import MCP

public enum SafeSpaceMCPServer {
    /// Why the session ended.
    public enum End: Sendable, Equatable {
        /// stdin reached EOF (or the transport failed).
        case disconnected
        /// This signal arrived.
        case signal(Int32)
    }

    /// The signals that end the session (and its cleanup), instead of killing the process.
    public static let stopSignals: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    /// Serves one MCP session on stdin/stdout until it ends, then deletes the session's
    /// sandboxes not created with `keep: true`. Nothing else is written to stdout; `log`
    /// gets one line per notable event (for stderr).
    /// - Returns: why the session ended.
    /// - Throws: when the transport cannot be set up (stdin/stdout not usable).
    public static func serve(client: DaemonClient, version: String, log: @escaping @Sendable (String) -> Void)
        async throws -> End
    {
        // A client that closes our stdout must not kill us (SIGPIPE) before the cleanup.
        signal(SIGPIPE, SIG_IGN)
        let (events, continuation) = AsyncStream.makeStream(of: End.self)
        // Signals become events: SIG_IGN keeps the default action from ending the process,
        // the dispatch source still sees them (signalfd-like, kqueue/epoll backed).
        var sources: [any DispatchSourceSignal] = []
        for signo in stopSignals {
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler { continuation.yield(.signal(signo)) }
            source.resume()
            sources.append(source)
        }
        defer { for source in sources { source.cancel() } }

        let session = SessionSandboxes()
        let tools = SandboxTools(client: client, session: session)
        let server = Server(
            name: "safespace", version: version, title: "SafeSpace sandboxes",
            instructions: """
                Run untrusted code in isolated SafeSpace sandboxes on this node: create_sandbox, \
                then run_code / run_command / write_file / read_file with its name, then delete_sandbox. \
                Sandboxes created here are deleted when the session ends unless created with keep: true.
                """,
            capabilities: .init(tools: .init(listChanged: false)))
        await server.withMethodHandler(ListTools.self) { _ in .init(tools: SandboxTools.tools) }
        await server.withMethodHandler(CallTool.self) { parameters in
            // CountingTransport counted a create when it arrived; the call ends it.
            if parameters.name == "create_sandbox" {
                let result = await tools.call(parameters.name, parameters.arguments ?? [:])
                await session.endCreate()
                return result
            }
            return await tools.call(parameters.name, parameters.arguments ?? [:])
        }
        try await server.start(transport: CountingTransport(LineTransport(), session: session))
        let watcher = Task {
            await server.waitUntilCompleted()
            continuation.yield(.disconnected)
        }
        var end = End.disconnected
        for await event in events {
            end = event
            break
        }
        watcher.cancel()
        switch end {
        case .disconnected: log("the client disconnected")
        case .signal(let signo): log("signal \(signo): ending the session")
        }
        await server.stop()
        let (deleted, failed) = await tools.removeSessionSandboxes()
        if !deleted.isEmpty { log("deleted \(deleted.joined(separator: ", "))") }
        for (name, message) in failed.sorted(by: { $0.key < $1.key }) { log("could not delete \(name): \(message)") }
        return end
    }
}

/// The stdio transport (LineTransport), counting each `tools/call` of `create_sandbox` as it arrives, before
/// the server dispatches it (the SDK runs each request in a task of its own): the cleanup at
/// the session's end then waits for a create that was read but not yet begun.
actor CountingTransport: Transport {
    let inner: LineTransport
    let session: SessionSandboxes
    nonisolated var logger: Logger { inner.logger }

    init(_ inner: LineTransport, session: SessionSandboxes) {
        self.inner = inner
        self.session = session
    }

    func connect() async throws { try await inner.connect() }
    func disconnect() async { await inner.disconnect() }
    func send(_ data: Data) async throws { try await inner.send(data) }

    func receive() -> AsyncThrowingStream<Data, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
        let upstream = inner
        let session = self.session
        let task = Task {
            do {
                for try await message in await upstream.receive() {
                    for _ in 0..<Self.creates(in: message) { await session.beginCreate() }
                    continuation.yield(message)
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// The `create_sandbox` calls in one message (a request or a JSON-RPC 2.0 batch) that the
    /// server will hand to its CallTool handler: those that decode as `Request<CallTool>`.
    static func creates(in message: Data) -> Int {
        guard let value = try? JSONDecoder().decode(Value.self, from: message) else { return 0 }
        let items = value.arrayValue ?? [value]
        return items.filter { item in
            guard item.objectValue?["method"]?.stringValue == CallTool.name,
                let data = try? JSONEncoder().encode(item),
                let request = try? JSONDecoder().decode(Request<CallTool>.self, from: data)
            else { return false }
            return request.params.name == "create_sandbox"
        }.count
    }
}

/// MCP's stdio transport (newline-delimited JSON-RPC messages on fds 0 and 1) with blocking
/// reads on a thread of its own: the SDK's StdioTransport polls a non-blocking stdin with
/// 10 ms sleeps, which adds up to 10 ms to every request.
actor LineTransport: Transport {
    nonisolated let logger = Logger(label: "safespace.mcp.stdio", factory: { _ in SwiftLogNoOpLogHandler() })
    let input: Int32
    let output: Int32
    private let stream: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation
    private var started = false

    init(input: Int32 = 0, output: Int32 = 1) {
        self.input = input
        self.output = output
        (stream, continuation) = AsyncThrowingStream.makeStream(of: Data.self)
    }

    func connect() async throws {
        guard !started else { return }
        started = true
        let continuation = self.continuation
        let fd = input
        let reader = Thread {
            var block = [UInt8](repeating: 0, count: 65536)
            var pending: [UInt8] = []
            while true {
                let n = block.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }  // EOF (the client closed stdin) or a read error: the session ends
                pending += block[..<n]
                var start = 0
                while let newline = pending[start...].firstIndex(of: 0x0A) {
                    if newline > start { continuation.yield(Data(pending[start..<newline])) }
                    start = newline + 1
                }
                pending.removeFirst(start)
            }
            continuation.finish()
        }
        reader.name = "mcp-stdin"
        reader.start()
    }

    func disconnect() async { continuation.finish() }

    func send(_ data: Data) async throws {
        let bytes = [UInt8](data) + [0x0A]
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(output, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw MCPError.internalError("write to stdout: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    func receive() -> AsyncThrowingStream<Data, any Error> { stream }
}
