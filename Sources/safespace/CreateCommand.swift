/// `safespace create`: creates and starts a sandbox in safespaced and prints its name, for
/// the `exec`/`cp`/`rm` verbs that follow (`safespace run` creates, runs and deletes in one).
import ArgumentParser
import DaemonClient
import Foundation
import SandboxSpec

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a sandbox in the daemon and print its name.",
        discussion: """
            The body is the Sandbox of --file (YAML or JSON), if given, with the options set over \
            it. Fields the daemon cannot enforce (egress, securityLevel high on some nodes) are \
            refused by the daemon, naming the field. --format json prints the API's answer.
            """)

    @OptionGroup var daemon: SocketOption
    @Option(name: [.customShort("f"), .long], help: "Sandbox spec file (YAML or JSON); - reads stdin.") var file:
        String?
    @Option(help: "Runtime rootfs, e.g. python:3.11 (spec.runtime).") var runtime: String?
    @Option(help: "Sandbox name, a DNS-1123 label (metadata.name; default generated).") var name: String?
    @Option(help: "standard or high (spec.securityLevel).") var securityLevel: String?
    @Option(help: "A domain the sandbox may reach (spec.networkAccess.egress; repeatable).") var egress: [String] = []
    @Option(help: "The sandbox's lifetime in seconds (spec.timeoutSeconds).") var lifetime: Int?
    @Option(help: "table (the name) or json (the API's answer).") var format: OutputFormat = .table

    func run() throws {
        var body: [String: Any] = [:]
        if let file {
            // The Sandbox as `safespace run -f` reads it (YAML or JSON), sent as JSON.
            let sandbox = try Sandbox.load(path: file)
            body = try JSONSerialization.jsonObject(with: JSONEncoder().encode(sandbox)) as? [String: Any] ?? [:]
        }
        var metadata = body["metadata"] as? [String: Any] ?? [:]
        var spec = body["spec"] as? [String: Any] ?? [:]
        if let name { metadata["name"] = name }
        if let runtime { spec["runtime"] = runtime }
        if let securityLevel { spec["securityLevel"] = securityLevel }
        if !egress.isEmpty { spec["networkAccess"] = ["egress": egress.map { ["domain": $0] }] }
        if let lifetime { spec["timeoutSeconds"] = lifetime }
        body["metadata"] = metadata
        body["spec"] = spec
        let response = try daemon.client.request("POST", "/v1/sandboxes", json: body)
        guard response.status == 201 else { throw daemonError(response) }
        if format == .json {
            print(response.text)
            return
        }
        guard let created = (response.json?["metadata"] as? [String: Any])?["name"] as? String else {
            throw CLIError(.daemonProtocol, "safespaced's answer has no metadata.name")
        }
        print(created)
    }
}
