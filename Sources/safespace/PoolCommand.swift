/// `safespace pool ls|create|rm|scan`: the daemon's warm pools (`/v1/warmpools`).
import ArgumentParser
import DaemonClient
import Foundation
import Glibc

/// `--format table|json` of the pool verbs.
enum PoolOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

struct PoolCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool", abstract: "Warm pools of the daemon: sandboxes made ahead of need.",
        subcommands: [PoolLsCommand.self, PoolCreateCommand.self, PoolRmCommand.self, PoolScanCommand.self])
}

struct PoolLsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the warm pools.")

    @OptionGroup var daemon: SocketOption
    @Option(help: "table or json (the API's JSON).") var format: PoolOutputFormat = .table

    func run() throws {
        let response = try daemon.client.request("GET", "/v1/warmpools")
        guard response.status == 200 else { throw daemonError(response) }
        if format == .json {
            print(response.text, terminator: "")
            return
        }
        let items = response.json?["items"] as? [[String: Any]] ?? []
        printPoolTable(items)
    }
}

/// NAME, READY, CLAIMED, MIN, MAX, REFILLS, HITS, MISSES, HIT RATIO, WHEN EMPTY, SOURCE.
func printPoolTable(_ items: [[String: Any]]) {
    var rows = [["NAME", "READY", "CLAIMED", "MIN", "MAX", "REFILLS", "HITS", "MISSES", "HIT%", "EMPTY", "SOURCE"]]
    for item in items {
        let status = item["status"] as? [String: Any] ?? [:]
        func number(_ key: String) -> String { "\(status[key] as? Int ?? 0)" }
        let ratio = (status["hitRatio"] as? Double).map { String(format: "%.0f", $0 * 100) } ?? "-"
        rows.append([
            (item["metadata"] as? [String: Any])?["name"] as? String ?? "?", number("ready"), number("claimed"),
            number("minSize"), number("maxSize"), number("refills"), number("hits"), number("misses"), ratio,
            status["whenEmpty"] as? String ?? "", status["source"] as? String ?? "",
        ])
    }
    let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
        print(
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(
                separator: "  "
            ).trimmingCharacters(in: .whitespaces))
    }
}

struct PoolCreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a warm pool from a WarmPool file (root only).")

    @OptionGroup var daemon: SocketOption
    @Option(name: [.short, .customLong("file")], help: "The WarmPool (YAML or JSON; - reads standard input).")
    var file: String
    @Option(help: "table or json (the API's JSON).") var format: PoolOutputFormat = .table

    func run() throws {
        let bytes: [UInt8]
        if file == "-" {
            bytes = Array(FileHandle.standardInput.readDataToEndOfFile())
        } else {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CLIError(.localFile, "\(file): cannot read: \(lastError())")
            }
            bytes = Array(data)
        }
        let response = try daemon.client.request(
            "POST", "/v1/warmpools", body: bytes, headers: ["Content-Type": "application/yaml"])
        guard response.status == 201 else { throw daemonError(response) }
        if format == .json {
            print(response.text, terminator: "")
        } else {
            printPoolTable(response.json.map { [$0] } ?? [])
        }
    }
}

struct PoolRmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Remove warm pools (their ready sandboxes are destroyed; root only).")

    @OptionGroup var daemon: SocketOption
    @Argument(help: "Pool names.") var names: [String]

    func run() throws {
        var failed = false
        for name in names {
            let response = try daemon.client.request("DELETE", "/v1/warmpools/\(name)")
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
