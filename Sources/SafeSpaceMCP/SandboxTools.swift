/// The tools of `safespace mcp`: their JSON schemas (MCP 2025-06-18 "Tools",
/// https://modelcontextprotocol.io/specification/2025-06-18/server/tools) and their calls,
/// each one or two requests to safespaced's API (Sources/SafeSpaceDaemon/openapi.yaml).
import DaemonClient
import Foundation
import MCP

/// The sandboxes this MCP session created, and whether each is to outlive it (`keep`).
///
/// A create read from the client but not answered yet is counted (`inFlightCreates`, from
/// its arrival in CountingTransport to the end of its call) so that the cleanup waits for it;
/// a create that ends after the close anyway (the wait is bounded) is deleted at once
/// (`record` answers false).
public actor SessionSandboxes {
    /// name -> keep
    private(set) var owned: [String: Bool] = [:]
    private(set) var inFlightCreates = 0
    private(set) var closing = false

    public init() {}

    func beginCreate() { inFlightCreates += 1 }

    /// Records a created sandbox; false when the session has closed and it is to be removed now.
    func record(_ name: String, keep: Bool) -> Bool {
        owned[name] = keep
        return !closing || keep
    }

    func endCreate() { inFlightCreates -= 1 }

    func forget(_ name: String) { owned[name] = nil }

    func isOwned(_ name: String) -> Bool { owned[name] != nil }

    /// Marks the session closed; the names to delete once no create is in flight.
    func close() -> Bool {
        closing = true
        return inFlightCreates == 0
    }

    /// The sandboxes to delete: created here, not asked to be kept.
    func removable() -> [String] { owned.filter { !$0.value }.keys.sorted() }
}

/// What a tool call failed on: shown to the client as an `isError` result whose JSON has
/// `error.code`, `error.message` and, when one field was at fault, `error.field`; `status` is
/// the daemon's HTTP status when the daemon refused.
struct ToolFailure: Error {
    var code: String
    var message: String
    var field: String?
    var status: Int?

    /// A bad argument of the tool call (never sent to the daemon).
    static func argument(_ field: String, _ message: String) -> ToolFailure {
        ToolFailure(code: "invalid_argument", message: message, field: field)
    }

    /// The daemon's error answer (`{"error": {"code", "message", "field"}}`).
    static func daemon(_ response: DaemonClient.Response) -> ToolFailure {
        if let error = response.error {
            return ToolFailure(code: error.code, message: error.message, field: error.field, status: response.status)
        }
        return ToolFailure(
            code: "daemon_error", message: "safespaced answered \(response.status): \(response.text)",
            status: response.status)
    }

    var json: [String: Any] {
        var error: [String: Any] = ["code": code, "message": message]
        if let field { error["field"] = field }
        var object: [String: Any] = ["error": error]
        if let status { object["status"] = status }
        return object
    }
}

/// The tools and their calls against one daemon, for one MCP session.
public struct SandboxTools: Sendable {
    public let client: DaemonClient
    public let session: SessionSandboxes

    public init(client: DaemonClient, session: SessionSandboxes) {
        self.client = client
        self.session = session
    }

    /// Runs `ToolCall` values' blocking daemon requests off the concurrency pool (DaemonClient
    /// blocks on its socket; an exec may take minutes).
    static func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                do { continuation.resume(returning: try work()) } catch { continuation.resume(throwing: error) }
            }
        }
    }

    /// `POST path` with a JSON body, off the concurrency pool.
    func post(_ path: String, _ body: [String: Any]) async throws -> DaemonClient.Response {
        let bytes = [UInt8](try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]))
        let client = self.client
        return try await Self.blocking {
            try client.request("POST", path, body: bytes, headers: ["Content-Type": "application/json"])
        }
    }

    // MARK: - Schemas

    static let sandboxArgument: Value = .object([
        "type": "string", "description": "The sandbox's name (metadata.name, as create_sandbox returned it).",
    ])
    static let timeoutArgument: Value = .object([
        "type": "integer", "minimum": 1,
        "description": "Seconds the process may run; then it is killed (timedOut: true, exitCode 137).",
    ])

    /// The tools, each with its JSON Schema (draft 2020-12 subset: type, properties, required).
    public static let tools: [Tool] = [
        Tool(
            name: "create_sandbox",
            description: """
                Create and start an isolated sandbox (a container with no network unless egress \
                is allowed). Returns its name; pass it as `sandbox` to the other tools. The \
                sandbox is deleted when this MCP session ends unless keep is true.
                """,
            inputSchema: .object([
                "type": "object",
                "properties": .object([
                    "runtime": .object([
                        "type": "string",
                        "description": "The runtime image, e.g. python:3.11 or node:18 (default: the daemon's).",
                    ]),
                    "security_level": .object([
                        "type": "string", "enum": ["standard", "high"],
                        "description": "spec.securityLevel: standard (namespaces + seccomp) or high (gVisor).",
                    ]),
                    "egress": .object([
                        "type": "array",
                        "description":
                            "Domains the sandbox may reach (spec.networkAccess.egress); a string is a domain, an object a full rule.",
                        "items": .object([
                            "anyOf": [
                                .object(["type": "string"]),
                                .object([
                                    "type": "object",
                                    "properties": .object([
                                        "domain": .object(["type": "string"]),
                                        "ports": .object(["type": "array"]),
                                    ]),
                                    "required": ["domain"],
                                ]),
                            ]
                        ]),
                    ]),
                    "name": .object(["type": "string", "description": "metadata.name (default: generated)."]),
                    "timeout_seconds": .object([
                        "type": "integer", "minimum": 1,
                        "description": "The sandbox's lifetime (spec.timeoutSeconds); then the daemon deletes it.",
                    ]),
                    "keep": .object([
                        "type": "boolean",
                        "description": "Keep the sandbox after this MCP session ends (default false).",
                    ]),
                ]),
            ]),
            annotations: .init(readOnlyHint: false, destructiveHint: false, openWorldHint: false)),
        Tool(
            name: "run_code",
            description: """
                Run code in a fresh interpreter in the sandbox (python3 -c, node -e, sh -c). \
                Returns stdout, stderr and exitCode; a non-zero exitCode is the code's, not a tool error.
                """,
            inputSchema: .object([
                "type": "object",
                "properties": .object([
                    "sandbox": sandboxArgument,
                    "code": .object(["type": "string", "description": "The program's source."]),
                    "language": .object([
                        "type": "string", "enum": ["python", "javascript", "sh", "bash"],
                        "description": "default python",
                    ]),
                    "timeout": timeoutArgument,
                ]),
                "required": ["sandbox", "code"],
            ])),
        Tool(
            name: "run_command",
            description:
                "Run a shell command in the sandbox through sh -c. Returns stdout, stderr and exitCode.",
            inputSchema: .object([
                "type": "object",
                "properties": .object([
                    "sandbox": sandboxArgument,
                    "command": .object(["type": "string", "description": "A command line for sh -c."]),
                    "timeout": timeoutArgument,
                ]),
                "required": ["sandbox", "command"],
            ])),
        Tool(
            name: "write_file",
            description:
                "Write a file in the sandbox (below its writable paths, e.g. /workspace), creating missing directories.",
            inputSchema: .object([
                "type": "object",
                "properties": .object([
                    "sandbox": sandboxArgument,
                    "path": .object([
                        "type": "string", "description": "Absolute path in the sandbox, e.g. /workspace/a.py.",
                    ]),
                    "content": .object(["type": "string", "description": "The file's content (UTF-8 text, or base64)."]
                    ),
                    "encoding": .object([
                        "type": "string", "enum": ["utf8", "base64"],
                        "description": "How content is encoded (default utf8).",
                    ]),
                ]),
                "required": ["sandbox", "path", "content"],
            ])),
        Tool(
            name: "read_file",
            description:
                "Read a file of the sandbox. Text comes back as content; bytes that are not UTF-8 as base64 (encoding: base64).",
            inputSchema: .object([
                "type": "object",
                "properties": .object([
                    "sandbox": sandboxArgument,
                    "path": .object(["type": "string", "description": "Absolute path in the sandbox."]),
                ]),
                "required": ["sandbox", "path"],
            ]),
            annotations: .init(readOnlyHint: true)),
        Tool(
            name: "list_sandboxes",
            description: "List the sandboxes the daemon shows this user (created here or elsewhere).",
            inputSchema: .object(["type": "object", "properties": .object([:])]),
            annotations: .init(readOnlyHint: true)),
        Tool(
            name: "delete_sandbox",
            description: "Delete a sandbox: kills its processes and removes everything it holds.",
            inputSchema: .object([
                "type": "object",
                "properties": .object(["sandbox": sandboxArgument]),
                "required": ["sandbox"],
            ]),
            annotations: .init(readOnlyHint: false, destructiveHint: true, idempotentHint: false)),
    ]

    // MARK: - Calls

    /// Runs one tool call; a failure (bad argument, daemon refusal, daemon unreachable) is an
    /// `isError` result, never a JSON-RPC error (MCP: "Tool Execution Errors").
    public func call(_ name: String, _ arguments: [String: Value]) async -> CallTool.Result {
        do {
            let object: [String: Any]
            switch name {
            case "create_sandbox": object = try await createSandbox(arguments)
            case "run_code": object = try await runCode(arguments)
            case "run_command": object = try await runCommand(arguments)
            case "write_file": object = try await writeFile(arguments)
            case "read_file": object = try await readFile(arguments)
            case "list_sandboxes": object = try await listSandboxes()
            case "delete_sandbox": object = try await deleteSandbox(arguments)
            default: throw ToolFailure(code: "unknown_tool", message: "no tool named \(name)", field: "name")
            }
            return Self.result(object, isError: false)
        } catch let failure as ToolFailure {
            return Self.result(failure.json, isError: true)
        } catch {
            return Self.result(ToolFailure(code: "unavailable", message: "\(error)").json, isError: true)
        }
    }

    static func result(_ object: [String: Any], isError: Bool) -> CallTool.Result {
        CallTool.Result(
            content: [.text(text: JSONText.render(object), annotations: nil, _meta: nil)],
            structuredContent: Optional.some(JSONText.value(object)), isError: isError)
    }

    func createSandbox(_ arguments: [String: Value]) async throws -> [String: Any] {
        var spec: [String: Any] = [:]
        var metadata: [String: Any] = [:]
        if let runtime = try Self.string(arguments, "runtime", required: false) { spec["runtime"] = runtime }
        if let level = try Self.string(arguments, "security_level", required: false) { spec["securityLevel"] = level }
        if let egress = arguments["egress"], egress != .null {
            guard let rules = egress.arrayValue else {
                throw ToolFailure.argument("egress", "egress must be an array of domains or rules")
            }
            spec["networkAccess"] = [
                "egress": try rules.enumerated().map { index, rule -> Any in
                    if let domain = rule.stringValue { return ["domain": domain] }
                    if rule.objectValue != nil { return JSONText.foundation(rule) }
                    throw ToolFailure.argument("egress[\(index)]", "an egress rule is a domain or an object")
                }
            ]
        }
        if let lifetime = try Self.integer(arguments, "timeout_seconds") { spec["timeoutSeconds"] = lifetime }
        if let name = try Self.string(arguments, "name", required: false) { metadata["name"] = name }
        let keep = try Self.bool(arguments, "keep") ?? false
        let body: [String: Any] = [
            "apiVersion": "llmsafespace.dev/v1", "kind": "Sandbox", "metadata": metadata, "spec": spec,
        ]

        let response = try await post("/v1/sandboxes", body)
        guard response.status == 201, let view = response.json,
            let name = (view["metadata"] as? [String: Any])?["name"] as? String
        else { throw ToolFailure.daemon(response) }
        if !(await session.record(name, keep: keep)) {
            _ = try? await Self.blocking { try client.request("DELETE", Self.sandboxPath(name)) }
            await session.forget(name)
            throw ToolFailure(code: "session_closed", message: "the MCP session ended; \(name) was deleted")
        }
        let status = view["status"] as? [String: Any] ?? [:]
        var object: [String: Any] = ["name": name, "keep": keep]
        for key in ["phase", "runtime", "level", "expiresAt"] { if let value = status[key] { object[key] = value } }
        return object
    }

    func runCode(_ arguments: [String: Value]) async throws -> [String: Any] {
        let sandbox = try Self.string(arguments, "sandbox")!
        let code = try Self.string(arguments, "code")!
        let language = try Self.string(arguments, "language", required: false) ?? "python"
        let interpreters: [String: (argument: [String], stdin: [String])] = [
            "python": (["python3", "-c"], ["python3", "-"]), "python3": (["python3", "-c"], ["python3", "-"]),
            "javascript": (["node", "-e"], ["node", "-"]), "js": (["node", "-e"], ["node", "-"]),
            "node": (["node", "-e"], ["node", "-"]), "sh": (["sh", "-c"], ["sh", "-s"]),
            "bash": (["bash", "-c"], ["bash", "-s"]),
        ]
        guard let interpreter = interpreters[language] else {
            throw ToolFailure.argument(
                "language",
                "unknown language \(language) (known: \(interpreters.keys.sorted().joined(separator: ", ")))")
        }
        // One argument is at most MAX_ARG_STRLEN (131072 bytes, execve(2)): larger code goes on stdin.
        if code.utf8.count <= Self.maxCodeArgumentBytes {
            return try await exec(sandbox, interpreter.argument + [code], stdin: nil, arguments)
        }
        return try await exec(sandbox, interpreter.stdin, stdin: code, arguments)
    }

    /// Code up to this many bytes (UTF-8) is passed as an argument, larger code on stdin.
    static let maxCodeArgumentBytes = 100_000

    func runCommand(_ arguments: [String: Value]) async throws -> [String: Any] {
        let sandbox = try Self.string(arguments, "sandbox")!
        let command = try Self.string(arguments, "command")!
        return try await exec(sandbox, ["sh", "-c", command], stdin: nil, arguments)
    }

    /// `POST /v1/sandboxes/{name}/exec` (JSON answer, utf8 encoding).
    func exec(_ sandbox: String, _ command: [String], stdin: String?, _ arguments: [String: Value]) async throws
        -> [String: Any]
    {
        var body: [String: Any] = ["command": command]
        if let stdin { body["stdin"] = stdin }
        if let timeout = try Self.integer(arguments, "timeout") { body["timeoutSeconds"] = timeout }
        let response = try await post(Self.sandboxPath(sandbox) + "/exec", body)
        guard response.status == 200, let result = response.json else { throw ToolFailure.daemon(response) }
        var object: [String: Any] = [
            "stdout": result["stdout"] as? String ?? "", "stderr": result["stderr"] as? String ?? "",
            "exitCode": result["exitCode"] as? Int ?? -1,
        ]
        for key in ["timedOut", "oomKilled", "truncated", "durationMs", "killedBy"] {
            if let value = result[key] { object[key] = value }
        }
        return object
    }

    func writeFile(_ arguments: [String: Value]) async throws -> [String: Any] {
        let sandbox = try Self.string(arguments, "sandbox")!
        let path = try Self.string(arguments, "path")!
        let encoding = try Self.string(arguments, "encoding", required: false) ?? "utf8"
        let bytes: [UInt8]
        switch (arguments["content"], encoding) {
        // MCP's Value decodes a string that is a data: URL (RFC 2397) as data.
        case (.data(_, let data)?, _): bytes = [UInt8](data)
        case (.string(let text)?, "utf8"): bytes = Array(text.utf8)
        case (.string(let text)?, "base64"):
            guard let data = Data(base64Encoded: text) else {
                throw ToolFailure.argument("content", "content is not base64 (RFC 4648 section 4)")
            }
            bytes = [UInt8](data)
        case (.string?, _): throw ToolFailure.argument("encoding", "encoding is utf8 or base64, not \(encoding)")
        case (nil, _), (.null?, _): throw ToolFailure.argument("content", "content is required")
        default: throw ToolFailure.argument("content", "content must be a string")
        }
        let filePath = try Self.filePath(path)
        let client = self.client
        let response = try await Self.blocking {
            try client.request("PUT", Self.sandboxPath(sandbox) + "/files/" + filePath, body: bytes)
        }
        guard response.status == 200 else { throw ToolFailure.daemon(response) }
        let answer = response.json ?? [:]
        return ["path": path, "bytes": answer["bytes"] ?? bytes.count, "sha256": answer["sha256"] ?? ""]
    }

    func readFile(_ arguments: [String: Value]) async throws -> [String: Any] {
        let sandbox = try Self.string(arguments, "sandbox")!
        let path = try Self.string(arguments, "path")!
        let filePath = try Self.filePath(path)
        let client = self.client
        let response = try await Self.blocking {
            try client.request("GET", Self.sandboxPath(sandbox) + "/files/" + filePath)
        }
        guard response.status == 200 else { throw ToolFailure.daemon(response) }
        if let text = String(validating: response.body, as: UTF8.self) {
            return ["path": path, "bytes": response.body.count, "content": text, "encoding": "utf8"]
        }
        return [
            "path": path, "bytes": response.body.count, "content": Data(response.body).base64EncodedString(),
            "encoding": "base64",
        ]
    }

    func listSandboxes() async throws -> [String: Any] {
        let client = self.client
        let response = try await Self.blocking { try client.request("GET", "/v1/sandboxes") }
        guard response.status == 200, let items = response.json?["items"] as? [[String: Any]] else {
            throw ToolFailure.daemon(response)
        }
        var sandboxes: [[String: Any]] = []
        for item in items {
            guard let name = (item["metadata"] as? [String: Any])?["name"] as? String else { continue }
            let status = item["status"] as? [String: Any] ?? [:]
            var entry: [String: Any] = ["name": name, "createdHere": await session.isOwned(name)]
            for key in ["phase", "runtime", "level", "createdAt", "expiresAt"] {
                if let value = status[key] { entry[key] = value }
            }
            sandboxes.append(entry)
        }
        return ["sandboxes": sandboxes]
    }

    func deleteSandbox(_ arguments: [String: Value]) async throws -> [String: Any] {
        let sandbox = try Self.string(arguments, "sandbox")!
        let client = self.client
        let response = try await Self.blocking { try client.request("DELETE", Self.sandboxPath(sandbox)) }
        guard response.status == 200 else { throw ToolFailure.daemon(response) }
        await session.forget(sandbox)
        return ["name": sandbox, "deleted": true]
    }

    /// Deletes the sandboxes this session created and did not ask to keep, after any create
    /// still in flight has ended (at most `wait` seconds). Returns the names deleted and the
    /// failures (name: message).
    public func removeSessionSandboxes(waitingAtMost wait: Double = 120) async -> (
        deleted: [String], failed: [String: String]
    ) {
        let deadline = Date().addingTimeInterval(wait)
        while !(await session.close()), Date() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        // All at once: an MCP client gives a server a few seconds after closing its stdin
        // before SIGTERM, then SIGKILL (MCP 2025-06-18 "Lifecycle", Shutdown).
        let client = self.client
        let outcomes = await withTaskGroup(of: (String, String?).self) { group in
            for name in await session.removable() {
                group.addTask {
                    do {
                        let response = try await Self.blocking { try client.request("DELETE", Self.sandboxPath(name)) }
                        // 404: already gone (deleted elsewhere, or its lifetime ended).
                        if response.status == 200 || response.status == 404 { return (name, nil) }
                        return (name, ToolFailure.daemon(response).message)
                    } catch {
                        return (name, "\(error)")
                    }
                }
            }
            var outcomes: [(String, String?)] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        var deleted: [String] = []
        var failed: [String: String] = [:]
        for (name, failure) in outcomes {
            if let failure {
                failed[name] = failure
            } else {
                deleted.append(name)
                await session.forget(name)
            }
        }
        deleted.sort()
        return (deleted, failed)
    }

    // MARK: - Arguments and paths

    /// A string argument; nil when absent and not `required`.
    /// - Throws: `ToolFailure` naming the field when missing (and required) or not a string.
    static func string(_ arguments: [String: Value], _ field: String, required: Bool = true) throws -> String? {
        switch arguments[field] {
        case .string(let text)?: return text
        case nil, .null?:
            if required { throw ToolFailure.argument(field, "\(field) is required") }
            return nil
        default: throw ToolFailure.argument(field, "\(field) must be a string")
        }
    }

    /// A positive integer argument (a JSON number with no fraction); nil when absent.
    static func integer(_ arguments: [String: Value], _ field: String) throws -> Int? {
        let number: Int
        switch arguments[field] {
        case nil, .null?: return nil
        case .int(let value)?: number = value
        case .double(let value)? where value.rounded() == value && abs(value) < 1e15: number = Int(value)
        default: throw ToolFailure.argument(field, "\(field) must be an integer")
        }
        guard number > 0 else { throw ToolFailure.argument(field, "\(field) must be positive, got \(number)") }
        return number
    }

    static func bool(_ arguments: [String: Value], _ field: String) throws -> Bool? {
        switch arguments[field] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw ToolFailure.argument(field, "\(field) must be true or false")
        }
    }

    /// One URL path segment (RFC 3986 section 3.3): all but unreserved characters
    /// percent-encoded, and `.`/`..` as `%2E`/`%2E%2E` so that no normalisation (section
    /// 5.2.4) turns the request into another URL; the daemon then refuses the name or path.
    static func segment(_ text: String) -> String {
        if text == "." || text == ".." { return String(repeating: "%2E", count: text.count) }
        let unreserved = CharacterSet(
            charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    static func sandboxPath(_ name: String) -> String { "/v1/sandboxes/" + segment(name) }

    /// The `{path}` of `/v1/sandboxes/{name}/files/{path}`: the absolute path without its
    /// leading `/`, each component a segment.
    /// - Throws: `ToolFailure` (field `path`) when `path` is not absolute.
    static func filePath(_ path: String) throws -> String {
        guard path.hasPrefix("/") else {
            throw ToolFailure.argument(
                "path", "path must be absolute (a path in the sandbox, e.g. /workspace/x): \(path)")
        }
        return path.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map { segment(String($0)) }
            .joined(separator: "/")
    }
}

/// JSON of tool results: the text content (`{"name": "sandbox-…", ...}`: keys sorted, one
/// space after each colon and comma) and the same object as MCP's `Value` (structuredContent).
enum JSONText {
    /// Foundation JSON (JSONSerialization's types) as `Value`, through its JSON text, so that
    /// booleans, integers and doubles keep their JSON types.
    static func value(_ object: Any) -> Value {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.fragmentsAllowed]),
            let value = try? JSONDecoder().decode(Value.self, from: data)
        else { return .null }
        return value
    }

    static func render(_ object: Any) -> String { render(value(object)) }

    static func render(_ value: Value) -> String {
        switch value {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .int(let integer): return String(integer)
        case .double(let double): return double.isFinite ? "\(double)" : "null"
        case .string(let text): return quoted(text)
        case .data: return quoted(foundation(value) as? String ?? "")
        case .array(let array): return "[" + array.map(render).joined(separator: ", ") + "]"
        case .object(let object):
            return "{" + object.keys.sorted().map { "\(quoted($0)): \(render(object[$0]!))" }.joined(separator: ", ")
                + "}"
        }
    }

    static func quoted(_ text: String) -> String {
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: text, options: [.fragmentsAllowed, .withoutEscapingSlashes])
        else {
            return "\"\""
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// MCP's `Value` as Foundation JSON (for request bodies). A `.data` value (a string that
    /// was a data: URL, RFC 2397) is that URL again.
    static func foundation(_ value: Value) -> Any {
        switch value {
        case .null: return NSNull()
        case .bool(let flag): return flag
        case .int(let integer): return integer
        case .double(let double): return double
        case .string(let text): return text
        case .data(let mimeType, let data): return "data:\(mimeType ?? "");base64,\(data.base64EncodedString())"
        case .array(let array): return array.map(foundation)
        case .object(let object): return object.mapValues(foundation)
        }
    }
}
