import DaemonClient
import Foundation
import MCP
import Testing

@testable import SafeSpaceMCP

/// The parts of `safespace mcp` that need no daemon: schemas, arguments, paths, JSON text, the
/// counting of creates. The whole server is driven by a real MCP client against a real daemon
/// in sdk/python/tests/test_mcp.py.
@Suite("SafeSpaceMCP")
struct SandboxToolsTests {
    @Test("every tool has an object schema whose required arguments are among its properties")
    func schemas() throws {
        #expect(
            Set(SandboxTools.tools.map(\.name)) == [
                "create_sandbox", "run_code", "run_command", "write_file", "read_file", "list_sandboxes",
                "delete_sandbox",
            ])
        for tool in SandboxTools.tools {
            let schema = try #require(tool.inputSchema.objectValue)
            #expect(schema["type"] == "object", "\(tool.name)")
            let properties = try #require(schema["properties"]?.objectValue, "\(tool.name)")
            for required in schema["required"]?.arrayValue ?? [] {
                #expect(properties[try #require(required.stringValue)] != nil, "\(tool.name): \(required)")
            }
        }
    }

    @Test("arguments: a missing, mistyped or non-positive one names its field")
    func arguments() throws {
        let arguments: [String: Value] = ["s": "x", "n": 3, "f": 2.0, "half": 2.5, "zero": 0, "b": true]
        #expect(try SandboxTools.string(arguments, "s") == "x")
        #expect(try SandboxTools.string(arguments, "absent", required: false) == nil)
        #expect(try SandboxTools.integer(arguments, "n") == 3)
        #expect(try SandboxTools.integer(arguments, "f") == 2)
        #expect(try SandboxTools.bool(arguments, "b") == true)
        for (field, call) in [
            ("absent", { _ = try SandboxTools.string(arguments, "absent") }),
            ("n", { _ = try SandboxTools.string(arguments, "n") }),
            ("half", { _ = try SandboxTools.integer(arguments, "half") }),
            ("zero", { _ = try SandboxTools.integer(arguments, "zero") }),
            ("s", { _ = try SandboxTools.bool(arguments, "s") }),
        ] as [(String, () throws -> Void)] {
            do {
                try call()
                Issue.record("\(field): accepted")
            } catch let failure as ToolFailure {
                #expect(failure.field == field && failure.code == "invalid_argument", "\(failure)")
            }
        }
    }

    @Test("paths: each component one percent-encoded segment; dot segments encoded, never resolved here")
    func paths() throws {
        #expect(SandboxTools.sandboxPath("demo") == "/v1/sandboxes/demo")
        #expect(SandboxTools.sandboxPath("../x") == "/v1/sandboxes/..%2Fx")
        #expect(SandboxTools.sandboxPath("..") == "/v1/sandboxes/%2E%2E")
        #expect(try SandboxTools.filePath("/workspace/a b/ü.txt") == "workspace/a%20b/%C3%BC.txt")
        #expect(try SandboxTools.filePath("/workspace/../etc/passwd") == "workspace/%2E%2E/etc/passwd")
        #expect(try SandboxTools.filePath("/workspace/a?b#c") == "workspace/a%3Fb%23c")
        #expect(throws: ToolFailure.self) { try SandboxTools.filePath("workspace/x") }
    }

    @Test("the text content: sorted keys, a space after colons and commas, JSON types kept")
    func jsonText() {
        let object: [String: Any] = ["name": "sandbox-1", "keep": false, "n": 3, "list": ["a/b", "\"q\""]]
        #expect(JSONText.render(object) == #"{"keep": false, "list": ["a/b", "\"q\""], "n": 3, "name": "sandbox-1"}"#)
        #expect(
            JSONText.value(object)
                == .object(["name": "sandbox-1", "keep": false, "n": 3, "list": .array(["a/b", "\"q\""])]))
    }

    @Test("creates are counted as they arrive: single requests and batches, not other calls or notifications")
    func countsCreates() {
        func count(_ text: String) -> Int { CountingTransport.creates(in: Data(text.utf8)) }
        let create =
            #"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_sandbox","arguments":{}}}"#
        let run = #"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"run_code","arguments":{}}}"#
        #expect(count(create) == 1)
        #expect(count(run) == 0)
        #expect(count("[\(create),\(run),\(create.replacingOccurrences(of: "\"id\":1", with: "\"id\":3"))]") == 2)
        #expect(count(#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#) == 0)
        #expect(count("not json") == 0)
    }

    @Test("the session's bookkeeping: a create ending after the close is not kept unless asked")
    func session() async {
        let session = SessionSandboxes()
        await session.beginCreate()
        #expect(await session.record("a", keep: false))
        #expect(await session.record("k", keep: true))
        #expect(await session.close() == false)  // a create is still counted
        await session.endCreate()
        #expect(await session.close())
        #expect(await session.removable() == ["a"])
        #expect(await session.record("late", keep: false) == false)
        #expect(await session.record("late-kept", keep: true))
    }
}
