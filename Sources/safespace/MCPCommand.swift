/// `safespace mcp`: serves the Model Context Protocol on stdin/stdout (SafeSpaceMCP).
import ArgumentParser
import DaemonClient
import Dispatch
import Foundation
import SafeSpaceMCP

struct MCPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp", abstract: "Serve the Model Context Protocol on stdio (tools that drive safespaced).",
        discussion: """
            An MCP client starts `safespace mcp` and speaks JSON-RPC on its stdin/stdout. Tools: \
            create_sandbox, run_code, run_command, write_file, read_file, list_sandboxes, \
            delete_sandbox. When the client disconnects (stdin EOF) or on SIGTERM/SIGINT/SIGHUP, the \
            sandboxes this session created are deleted, except those created with keep: true. \
            Logs go to stderr. Exit status 0 after a disconnect, 128+N after signal N.
            """)

    @OptionGroup var daemon: SocketOption

    func run() throws {
        let client = daemon.client
        let done = DispatchSemaphore(value: 0)
        let outcome = Outcome()
        Task.detached {
            do {
                let end = try await SafeSpaceMCPServer.serve(client: client, version: "0.1.0") { line in
                    writeStandardError("safespace mcp: \(line)\n")
                }
                outcome.set(.success(end))
            } catch {
                outcome.set(.failure(error))
            }
            done.signal()
        }
        done.wait()
        switch outcome.get() {
        case .success(.disconnected): return
        case .success(.signal(let signo)): throw ExitCode(128 + signo)
        case .failure(let error): throw CLIError(.daemonProtocol, "mcp: \(error)")
        case nil: throw ExitCode(1)
        }
    }

    /// The served session's result, handed from the task to the blocked main thread.
    final class Outcome: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Result<SafeSpaceMCPServer.End, any Error>?
        func set(_ result: Result<SafeSpaceMCPServer.End, any Error>) { lock.withLock { value = result } }
        func get() -> Result<SafeSpaceMCPServer.End, any Error>? { lock.withLock { value } }
    }
}
