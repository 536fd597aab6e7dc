/// The HTTP API (`openapi.yaml` beside this file documents it): routes, the access check of
/// every request, and the JSON of sandboxes.
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus

/// Per-request context: the connection (for SO_PEERCRED) and, once checked, the caller.
public struct DaemonContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel
    var caller: Caller?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The caller, set by `AccessMiddleware` before any route runs.
    func requireCaller() throws -> Caller {
        guard let caller else { throw APIError(.forbidden, "forbidden", "the caller is unknown") }
        return caller
    }
}

/// Reads the caller's credentials, refuses callers who are neither root nor in the group
/// (audited `api.denied`, 403), and turns every error into the API's JSON error.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = DaemonContext
    let policy: AccessPolicy
    let audit: AuditTrail
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        Metrics.requests.increment()
        var context = context
        do {
            let caller = try await Caller.of(channel: context.channel)
            if let refusal = policy.refusal(for: caller) {
                Metrics.accessDenied.increment()
                audit.record(
                    "api.denied", sandbox: nil, caller: caller, outcome: "denied",
                    fields: [
                        "method": .string(request.method.rawValue), "path": .string(request.uri.path),
                        "reason": .string(refusal),
                    ])
                throw APIError(.forbidden, "forbidden", refusal)
            }
            context.caller = caller
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            switch error.status {
            case .notFound:
                throw APIError(.notFound, "no_route", "no route \(request.method.rawValue) \(request.uri.path)")
            case .contentTooLarge:
                throw APIError(.contentTooLarge, "too_large", "the request body is above the limit", field: "body")
            case .methodNotAllowed:
                throw APIError(
                    .methodNotAllowed, "method_not_allowed",
                    "\(request.method.rawValue) is not allowed on \(request.uri.path)")
            default: throw APIError(error.status, "http_error", error.body ?? error.status.reasonPhrase)
            }
        } catch {
            logger.error("request failed: \(error)", metadata: ["path": "\(request.uri.path)"])
            throw APIError(.internalServerError, "internal", "\(error)")
        }
    }
}

/// The routes.
struct DaemonAPI: Sendable {
    let manager: SandboxManager
    let pools: PoolManager
    let registry: PrometheusCollectorRegistry

    /// Every route as `METHOD path-template` (the OpenAPI file must list exactly these).
    static let routes = [
        "GET /v1/healthz",
        "GET /v1/sandboxes",
        "POST /v1/sandboxes",
        "GET /v1/sandboxes/{name}",
        "DELETE /v1/sandboxes/{name}",
        "POST /v1/sandboxes/{name}/exec",
        "PUT /v1/sandboxes/{name}/files/{path}",
        "GET /v1/sandboxes/{name}/files/{path}",
        "POST /v1/sandboxes/{name}/ports/{port}",
        "GET /metrics",
        "GET /v1/warmpools",
        "POST /v1/warmpools",
        "GET /v1/warmpools/{name}",
        "DELETE /v1/warmpools/{name}",
        "GET /v1/warmpools/{name}/scan",
    ]

    func register(on router: Router<DaemonContext>) {
        router.get("/v1/healthz") { _, _ in JSON.response(["status": "ok"]) }
        router.get("/metrics") { _, _ in
            var buffer: [UInt8] = []
            Metrics.sandboxes.record(manager.count)
            pools.publishMetrics()
            registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.get("/v1/sandboxes") { _, context in
            let caller = try context.requireCaller()
            return JSON.response(["items": manager.list(for: caller).map { describe($0, usage: false) }])
        }
        router.post("/v1/sandboxes") { request, context in
            let caller = try context.requireCaller()
            let body = try await collect(request, limit: manager.config.maxRequestBytes)
            if let claimed = try await claimIfPooled(request, body: body, caller: caller) { return claimed }
            let sandbox = try await manager.create(body, caller: caller)
            return JSON.response(describe(sandbox, usage: false), status: .created)
        }
        router.get("/v1/sandboxes/:name") { _, context in
            let sandbox = try manager.sandbox(try sandboxName(context), for: try context.requireCaller())
            return JSON.response(describe(sandbox, usage: true))
        }
        router.delete("/v1/sandboxes/:name") { _, context in
            let caller = try context.requireCaller()
            let sandbox = try manager.sandbox(try sandboxName(context), for: caller)
            try await manager.delete(sandbox, reason: .request, caller: caller)
            return JSON.response(["name": sandbox.name, "deleted": true])
        }
        router.post("/v1/sandboxes/:name/exec") { request, context in
            let caller = try context.requireCaller()
            let sandbox = try manager.sandbox(try sandboxName(context), for: caller)
            let exec = try ExecRequest.parse(try await collect(request, limit: manager.config.maxRequestBytes))
            if request.headers[.accept]?.contains("application/x-ndjson") == true {
                return try await streamExec(sandbox, exec, caller: caller, channel: context.channel)
            }
            let result = try await manager.exec(sandbox, request: exec, caller: caller, emit: nil)
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(
                    byteBuffer: ByteBuffer(bytes: ExecResultJSON.encode(result, encoding: exec.encoding) + [0x0A])))
        }
        router.post("/v1/sandboxes/:name/ports/:port") { _, context in
            let caller = try context.requireCaller()
            let sandbox = try manager.sandbox(try sandboxName(context), for: caller)
            let port = context.parameters.get("port") ?? ""
            let opened = try await blocking { try manager.openPort(sandbox, portText: port, caller: caller) }
            return JSON.response(
                ["hostPort": Int(opened.hostPort), "address": "127.0.0.1", "port": Int(port) ?? 0],
                status: opened.opened ? .created : .ok)
        }
        router.put("/v1/sandboxes/:name/files/**") { request, context in
            let caller = try context.requireCaller()
            let sandbox = try manager.sandbox(try sandboxName(context), for: caller)
            let files = try manager.files(of: sandbox)
            let target = try files.target(rawPath: try filePath(request, context))
            let bytes = try await collect(request, limit: manager.config.maxFileBytes, field: "body", what: "file")
            // Still the caller's now that the body is in (a pool may have taken it back).
            guard sandbox.beginFileOperation(for: caller) else { throw APIError.notFound(sandbox.name) }
            defer { sandbox.endFileOperation() }
            do {
                let sha = try await blocking { try files.write(target, bytes: bytes) }
                Metrics.fileBytes.increment(by: bytes.count)
                manager.audit.record(
                    "file.written", sandbox: sandbox.name, caller: caller, outcome: "ok",
                    fields: [
                        "path": .string(target.absolute), "bytes": .int(bytes.count), "sha256": .string(sha),
                    ])
                return JSON.response(["path": target.absolute, "bytes": bytes.count, "sha256": sha])
            } catch let error as APIError {
                manager.audit.record(
                    "file.written", sandbox: sandbox.name, caller: caller, outcome: "error",
                    fields: [
                        "path": .string(target.absolute), "error": .string(error.message),
                    ])
                throw error
            }
        }
        router.get("/v1/sandboxes/:name/files/**") { request, context in
            let caller = try context.requireCaller()
            let sandbox = try manager.sandbox(try sandboxName(context), for: caller)
            let files = try manager.files(of: sandbox)
            let target = try files.target(rawPath: try filePath(request, context))
            let limit = manager.config.maxFileBytes
            guard sandbox.beginFileOperation(for: caller) else { throw APIError.notFound(sandbox.name) }
            defer { sandbox.endFileOperation() }
            do {
                let bytes = try await blocking { try files.read(target, limit: limit) }
                let sha = SandboxFiles.sha256(bytes)
                Metrics.fileBytes.increment(by: bytes.count)
                manager.audit.record(
                    "file.read", sandbox: sandbox.name, caller: caller, outcome: "ok",
                    fields: [
                        "path": .string(target.absolute), "bytes": .int(bytes.count), "sha256": .string(sha),
                    ])
                return Response(
                    status: .ok, headers: [.contentType: "application/octet-stream"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
            } catch let error as APIError {
                manager.audit.record(
                    "file.read", sandbox: sandbox.name, caller: caller, outcome: "error",
                    fields: [
                        "path": .string(target.absolute), "error": .string(error.message),
                    ])
                throw error
            }
        }
    }

    private func sandboxName(_ context: DaemonContext) throws -> String {
        guard let name = context.parameters.get("name") else {
            throw APIError.badRequest("missing sandbox name", field: "name")
        }
        return name
    }

    /// The raw (still percent-encoded) path after `/files/`.
    private func filePath(_ request: Request, _ context: DaemonContext) throws -> Substring {
        let path = request.uri.path
        guard let range = path.range(of: "/files/") else {
            throw APIError.badRequest("missing file path", field: "path")
        }
        let rest = path[range.upperBound...]
        if rest.isEmpty { throw APIError.badRequest("missing file path", field: "path") }
        return rest
    }

    /// The request body, at most `limit` bytes.
    /// - Throws: 413 naming `field` above the limit.
    private func collect(_ request: Request, limit: Int, field: String = "body", what: String = "request body")
        async throws -> [UInt8]
    {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw APIError(
                .contentTooLarge, "too_large", "the \(what) is \(length) bytes, above the limit of \(limit)",
                field: field)
        }
        do {
            var buffer = try await request.body.collect(upTo: limit)
            return buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw APIError(
                .contentTooLarge, "too_large", "the \(what) is above the limit of \(limit) bytes", field: field)
        }
    }

    /// `application/x-ndjson`: `{"stdout": ...}` / `{"stderr": ...}` lines as the process
    /// writes, then one line with `exitCode`, `durationMs`, `timedOut`, `oomKilled`. Errors
    /// before the process starts are answered as usual (status + JSON error). In text
    /// (`utf8`) a chunk never ends inside a character; in `base64` each chunk is the base64
    /// of the bytes read, decodable on its own.
    private func streamExec(_ sandbox: ManagedSandbox, _ exec: ExecRequest, caller: Caller, channel: any Channel)
        async throws -> Response
    {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        // A silent process writes nothing that would tell a gone client (ClientDisconnect.swift).
        let gone = ClientGone()
        let watcher = DisconnectWatcher(gone)
        try? await channel.pipeline.addHandler(watcher, position: .first).get()
        // At most `StreamBudget.limit` bytes wait for a slow client: past it the exec's reader
        // waits, its pipes fill, and the process blocks on its writes.
        let budget = StreamBudget()
        let splitter = UTF8Splitter()
        let gate = StartGate()
        let manager = self.manager
        Task {
            do {
                let result = try await manager.exec(
                    sandbox, request: exec, caller: caller,
                    emit: { stream, bytes in
                        let text = exec.encoding == .utf8 ? splitter.take(stream, bytes) : exec.encoding.string(bytes)
                        if !text.isEmpty {
                            let line = JSON.encode([stream.rawValue: text]) + [0x0A]
                            budget.take(line.count)
                            continuation.yield(ByteBuffer(bytes: line))
                        }
                    },
                    onHandle: { handle in
                        continuation.onTermination = { termination in
                            budget.cancel()
                            if case .cancelled = termination { handle.kill(reason: "client disconnected") }
                        }
                        handle.onStart = { gate.open(nil) }
                        gone.attach(handle)
                    })
                for stream in [OutputStream.stdout, .stderr] {
                    let rest = splitter.finish(stream)
                    if !rest.isEmpty {
                        continuation.yield(ByteBuffer(bytes: JSON.encode([stream.rawValue: rest]) + [0x0A]))
                    }
                }
                var exit: [String: Any] = [
                    "exitCode": Int(result.exitCode), "durationMs": result.durationMs, "timedOut": result.timedOut,
                    "oomKilled": result.oomKilled,
                ]
                if let killed = result.killedBy { exit["killedBy"] = killed }
                if exec.encoding != .utf8 { exit["encoding"] = exec.encoding.rawValue }
                continuation.yield(ByteBuffer(bytes: JSON.encode(exit) + [0x0A]))
                gate.open(nil)
            } catch {
                if !gate.open(error) {
                    let apiError = error as? APIError ?? APIError(.internalServerError, "internal", "\(error)")
                    continuation.yield(ByteBuffer(bytes: apiError.body))
                }
            }
            continuation.finish()
            channel.pipeline.removeHandler(watcher, promise: nil)
        }
        try await gate.wait()
        let metered = stream.map { buffer -> ByteBuffer in
            budget.give(buffer.readableBytes)
            return buffer
        }
        return Response(
            status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody(asyncSequence: metered))
    }

    /// The JSON of a sandbox: the resource as created, with `spec.timeoutSeconds` and a
    /// `status` (phase, level, limits, owner, times; with `usage`, the cgroup's counters; for a
    /// sandbox with egress rules, `egress.denied`: `[{"destination", "count"}]`, each domain
    /// (else ip:port) the filter denied it and how often).
    func describe(_ sandbox: ManagedSandbox, usage: Bool) -> [String: Any] {
        let record = sandbox.record
        var object = (try? JSONSerialization.jsonObject(with: record.resource)) as? [String: Any] ?? [:]
        if let timeout = record.timeoutSeconds {
            var spec = object["spec"] as? [String: Any] ?? [:]
            spec["timeoutSeconds"] = timeout
            object["spec"] = spec
        }
        var limits: [String: Any] = [:]
        limits["cpuMillis"] = record.cpuMillis ?? NSNull()
        limits["memoryBytes"] = record.memoryBytes ?? NSNull()
        limits["ephemeralStorageBytes"] = record.ephemeralStorageBytes ?? NSNull()
        var status: [String: Any] = [
            "phase": record.phase.rawValue, "level": record.level, "runtime": record.runtime, "limits": limits,
            "createdAt": record.created, "creatorUID": Int(record.creatorUID), "writablePaths": record.writablePaths,
            "execs": sandbox.execs.count, "warm": record.claimed == true,
        ]
        if let pool = record.pool { status["pool"] = pool }
        if let expires = record.expiresAt {
            status["expiresAt"] = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: expires))
        }
        if usage { status["usage"] = manager.usage(sandbox.name) ?? NSNull() }
        if let denied = manager.egress?.ledger.denied(sandbox.name) {
            status["egress"] = [
                "denied": denied.sorted { $0.key < $1.key }.map { ["destination": $0.key, "count": $0.value] }
            ]
        }
        object["status"] = status
        return object
    }
}

/// Resolved once: the exec started (nil) or failed before it did (the error).
final class StartGate: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<Void, Error>?
    private var waiter: CheckedContinuation<Void, Error>?

    /// Resolves the gate; false when it was resolved already.
    @discardableResult
    func open(_ error: Error?) -> Bool {
        let waiter: CheckedContinuation<Void, Error>?
        let outcome: Result<Void, Error> = error.map { .failure($0) } ?? .success(())
        let first: Bool = lock.withLock {
            guard result == nil else { return false }
            result = outcome
            return true
        }
        guard first else { return false }
        waiter = lock.withLock {
            defer { self.waiter = nil }
            return self.waiter
        }
        waiter?.resume(with: outcome)
        return true
    }

    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            let ready: Result<Void, Error>? = lock.withLock {
                if let result { return result }
                waiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}

/// Splits each stream's bytes at UTF-8 character boundaries, so a chunk never ends inside a
/// character; invalid bytes become U+FFFD.
final class UTF8Splitter: @unchecked Sendable {
    private let lock = NSLock()
    private var pending: [OutputStream: [UInt8]] = [:]

    func take(_ stream: OutputStream, _ bytes: [UInt8]) -> String {
        lock.withLock {
            let all = (pending[stream] ?? []) + bytes
            if all.isEmpty { return "" }
            var cut = all.count
            // A lead byte in the last 3 whose sequence is not complete stays for the next chunk.
            for back in 1...min(3, all.count) {
                let byte = all[all.count - back]
                if byte & 0xC0 == 0x80 { continue }  // continuation byte
                let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                if length > back { cut = all.count - back }
                break
            }
            pending[stream] = Array(all[cut...])
            return String(decoding: all[..<cut], as: UTF8.self)
        }
    }

    func finish(_ stream: OutputStream) -> String {
        lock.withLock {
            defer { pending[stream] = nil }
            return String(decoding: pending[stream] ?? [], as: UTF8.self)
        }
    }
}

/// Bytes of a streamed exec produced but not yet sent: the producer (the exec's reader
/// thread) waits while more than `limit` are pending.
final class StreamBudget: @unchecked Sendable {
    static let limit = 4 << 20
    private let condition = NSCondition()
    private var pending = 0
    private var cancelled = false

    /// Called by the producer before it hands on `count` bytes; blocks while over the limit.
    func take(_ count: Int) {
        condition.lock()
        while pending > Self.limit && !cancelled { condition.wait() }
        pending += count
        condition.unlock()
    }

    /// Called as `count` bytes are sent.
    func give(_ count: Int) {
        condition.lock()
        pending -= count
        condition.broadcast()
        condition.unlock()
    }

    /// The client is gone: the producer never waits again.
    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }
}
