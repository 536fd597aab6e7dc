/// `safespace pool scan`: a pool's preloaded packages against the OSV advisory database.
import ArgumentParser
import DaemonClient
import Foundation
import SandboxSpec

struct PoolScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Scan a warm pool's preloaded packages against the offline OSV advisory database.",
        discussion: """
            With POOL, the daemon scans the packages of the pool's layer (dependencies included) \
            against its advisory database (packages.advisoryDatabase) as it is now. With --file, \
            the pins of a WarmPool file are scanned here against --advisory-database (the \
            dependencies are known only once the daemon has built the layer). Exits 1 when a \
            finding is not waived by the pool's spec.waiveAdvisories.
            """)

    @OptionGroup var daemon: SocketOption
    @Argument(help: "The pool's name (asks the daemon).") var pool: String?
    @Option(name: [.short, .customLong("file")], help: "A WarmPool file, scanned locally.") var file: String?
    @Option(help: "The OSV database directory for --file.")
    var advisoryDatabase: String = OSVDatabase.defaultDirectory
    @Option(help: "table or json.") var format: PoolOutputFormat = .table

    func validate() throws {
        guard (pool == nil) != (file == nil) else { throw ValidationError("give either POOL or --file") }
    }

    func run() throws {
        let packages: [String]
        let findings: [[String: Any]]
        let database: String
        if let file {
            let warmPool: WarmPool
            do {
                warmPool = try WarmPool.load(path: file)
                try warmPool.validate()
            } catch { throw CLIError(.localFile, "\(file): \(error)") }
            let osv: OSVDatabase
            do { osv = try OSVDatabase.load(directory: advisoryDatabase) } catch {
                throw CLIError(.localFile, "\(error)")
            }
            packages = warmPool.preloadPins.map(\.description)
            findings = osv.scan(warmPool.preloadPins, waivers: warmPool.spec.waiveAdvisories ?? []).map(\.json)
            database = advisoryDatabase
        } else {
            let response = try daemon.client.request("GET", "/v1/warmpools/\(pool ?? "")/scan")
            guard response.status == 200 else { throw daemonError(response) }
            packages = response.json?["packages"] as? [String] ?? []
            findings = response.json?["findings"] as? [[String: Any]] ?? []
            database = response.json?["database"] as? String ?? ""
        }
        let unwaived = findings.count { ($0["waived"] as? Bool) != true }
        if format == .json {
            let object: [String: Any] = [
                "packages": packages, "findings": findings, "unwaived": unwaived, "database": database,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                "\(packages.count) packages scanned against \(database): \(findings.count) findings, \(unwaived) not waived"
            )
            for finding in findings {
                let waived = (finding["waived"] as? Bool) == true ? "  [waived]" : ""
                print(
                    "\(finding["package"] as? String ?? "?")==\(finding["version"] as? String ?? "?")  \(finding["id"] as? String ?? "?")  \(finding["summary"] as? String ?? "")\(waived)"
                )
            }
        }
        if unwaived > 0 { throw ExitCode(1) }
    }
}
