/// The verbs that talk to safespaced over its socket (`$SAFESPACE_SOCKET`, default
/// /run/safespace/safespaced.sock): `ps`, `exec`, `cp`, `rm`, and `run` when the daemon
/// answers (RunCommand).
import ArgumentParser
import DaemonClient
import Foundation
import Glibc

/// `--socket` of the daemon verbs.
struct SocketOption: ParsableArguments {
    @Option(help: "safespaced's socket (default $SAFESPACE_SOCKET, else /run/safespace/safespaced.sock).")
    var socket: String?

    var client: DaemonClient { DaemonClient(socketPath: socket ?? DaemonClient.defaultSocket) }
}

/// An error answer of the daemon as the CLI's error: the message, with the field.
func daemonError(_ response: DaemonClient.Response) -> CLIError {
    if let error = response.error {
        return CLIError(.daemonRefused, error.field.map { "\($0): \(error.message)" } ?? error.message)
    }
    return CLIError(.daemonRefused, "safespaced answered \(response.status): \(response.text)")
}

struct PsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List the daemon's sandboxes (yours; root sees all).")

    @OptionGroup var daemon: SocketOption
    @Option(help: "table, or json (the API's answer).") var format: OutputFormat = .table
    @Flag(help: ArgumentHelp("The same as --format json.", visibility: .hidden)) var json = false

    func run() throws {
        let response = try daemon.client.request("GET", "/v1/sandboxes")
        guard response.status == 200 else { throw daemonError(response) }
        if json || format == .json {
            print(response.text, terminator: "")
            return
        }
        let items = response.json?["items"] as? [[String: Any]] ?? []
        var rows = [["NAME", "PHASE", "LEVEL", "RUNTIME", "CREATED", "EXPIRES", "EXECS", "UID"]]
        for item in items {
            let status = item["status"] as? [String: Any] ?? [:]
            rows.append([
                (item["metadata"] as? [String: Any])?["name"] as? String ?? "?", status["phase"] as? String ?? "",
                status["level"] as? String ?? "",
                status["runtime"] as? String ?? "", status["createdAt"] as? String ?? "",
                status["expiresAt"] as? String ?? "-",
                "\(status["execs"] as? Int ?? 0)", "\(status["creatorUID"] as? Int ?? 0)",
            ])
        }
        printTable(rows)
    }
}

struct RmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete sandboxes of the daemon.")

    @OptionGroup var daemon: SocketOption
    @Argument(help: "Sandbox names.") var names: [String]

    func run() throws {
        var failed = false
        for name in names {
            let response = try daemon.client.request("DELETE", "/v1/sandboxes/\(name)")
            if response.status == 200 {
                print(name)
            } else {
                Diagnostics.error("\(name): \(daemonError(response))")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec", abstract: "Run a command in a sandbox of the daemon.",
        discussion:
            "Output streams as it is written. Exit status: the command's (124 on --timeout); 125 when safespace failed."
    )

    @OptionGroup var daemon: SocketOption
    @Option(name: [.customShort("e"), .long], help: "Environment variable KEY=VALUE (repeatable).") var env: [String] =
        []
    @Option(help: "Working directory in the sandbox.") var cwd: String?
    @Option(help: "Seconds the command may run.") var timeout: Int?
    @Flag(name: [.customShort("i"), .long], help: "Send this process's standard input to the command.")
    var interactive = false
    @Argument(help: "The sandbox's name.") var name: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    func validate() throws {
        if command.isEmpty { throw ValidationError("no command given: safespace exec NAME -- COMMAND [ARGS...]") }
    }

    func run() throws {
        var body: [String: Any] = ["command": command]
        var environment: [String: String] = [:]
        for entry in env {
            guard let eq = entry.firstIndex(of: "="), eq != entry.startIndex else {
                throw ValidationError("--env \(entry): expected KEY=VALUE")
            }
            environment[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        if !environment.isEmpty { body["env"] = environment }
        if let cwd { body["cwd"] = cwd }
        if let timeout { body["timeoutSeconds"] = timeout }
        if interactive {
            // Bytes as they are (streamExec asks for base64 both ways).
            body["stdin"] = FileHandle.standardInput.readDataToEndOfFile().base64EncodedString()
        }
        let result = try streamExec(daemon.client, name: name, body: body)
        if result.timedOut { Diagnostics.error("the command timed out after \(timeout ?? 0) seconds; killed") }
        if result.oomKilled { Diagnostics.error("the command was OOM-killed") }
        throw ExitCode(result.timedOut ? RunExit.timedOut : result.exitCode)
    }
}

/// Runs an exec with `Accept: application/x-ndjson` and `encoding: base64`, writing its
/// output byte for byte to this process's stdout and stderr as it comes. A `stdin` in `body`
/// must be base64.
/// - Returns: the exit object's fields.
func streamExec(_ client: DaemonClient, name: String, body: [String: Any]) throws -> (
    exitCode: Int32, timedOut: Bool, oomKilled: Bool
) {
    var body = body
    body["encoding"] = "base64"
    let data = try JSONSerialization.data(withJSONObject: body)
    var pending: [UInt8] = []
    var errorBody: [UInt8] = []
    var exit: [String: Any]?
    let response = try client.send(
        "POST", "/v1/sandboxes/\(name)/exec", body: [UInt8](data),
        headers: ["Accept": "application/x-ndjson", "Content-Type": "application/json"]
    ) { chunk in
        pending += chunk
        errorBody += chunk
        while let newline = pending.firstIndex(of: 0x0A) {
            let line = pending[..<newline]
            pending.removeSubrange(...newline)
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else { continue }
            if let text = object["stdout"] as? String {
                guard let bytes = Data(base64Encoded: text) else {
                    throw CLIError(.daemonProtocol, "safespaced sent stdout that is not base64")
                }
                FileHandle.standardOutput.write(bytes)
            } else if let text = object["stderr"] as? String {
                guard let bytes = Data(base64Encoded: text) else {
                    throw CLIError(.daemonProtocol, "safespaced sent stderr that is not base64")
                }
                FileHandle.standardError.write(bytes)
            } else if object["exitCode"] != nil {
                exit = object
            } else if let error = object["error"] as? [String: Any] {
                throw CLIError(.daemonRefused, error["message"] as? String ?? "exec failed")
            }
        }
    }
    guard response.status == 200 else {
        throw daemonError(DaemonClient.Response(status: response.status, headers: response.headers, body: errorBody))
    }
    guard let exit, let code = exit["exitCode"] as? Int else {
        throw CLIError(.daemonProtocol, "safespaced ended the exec without an exit status")
    }
    return (Int32(truncatingIfNeeded: code), exit["timedOut"] as? Bool ?? false, exit["oomKilled"] as? Bool ?? false)
}

struct CpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp", abstract: "Copy a file into or out of a sandbox of the daemon.",
        discussion: "One of SOURCE and DEST is NAME:/path (below the sandbox's writable paths); - is stdin or stdout.")

    @OptionGroup var daemon: SocketOption
    @Argument(help: "Local file, -, or NAME:/path.") var source: String
    @Argument(help: "Local file, -, or NAME:/path.") var destination: String

    /// `NAME:/path` -> (NAME, path without its leading /, percent-encoded per component).
    static func remote(_ text: String) -> (String, String)? {
        guard let colon = text.firstIndex(of: ":"), text[text.index(after: colon)...].hasPrefix("/") else { return nil }
        let name = String(text[..<colon])
        guard !name.isEmpty, !name.contains("/") else { return nil }
        let path = text[text.index(after: colon)...].split(separator: "/").map {
            String($0).addingPercentEncoding(
                withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? String($0)
        }.joined(separator: "/")
        return (name, path)
    }

    func run() throws {
        switch (Self.remote(source), Self.remote(destination)) {
        case (nil, let (name, path)?):
            let bytes: Data
            if source == "-" {
                bytes = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard let data = FileManager.default.contents(atPath: source) else {
                    throw CLIError(.localFile, "\(source): cannot read: \(String(cString: strerror(errno)))")
                }
                bytes = data
            }
            let response = try daemon.client.request("PUT", "/v1/sandboxes/\(name)/files/\(path)", body: [UInt8](bytes))
            guard response.status == 200 else { throw daemonError(response) }
        case (let (name, path)?, nil):
            let response = try daemon.client.request("GET", "/v1/sandboxes/\(name)/files/\(path)")
            guard response.status == 200 else { throw daemonError(response) }
            if destination == "-" {
                FileHandle.standardOutput.write(Data(response.body))
            } else {
                guard FileManager.default.createFile(atPath: destination, contents: Data(response.body)) else {
                    throw CLIError(.localFile, "\(destination): cannot write")
                }
            }
        default:
            throw ValidationError("exactly one of SOURCE and DEST must be NAME:/path")
        }
    }
}
