/// `safespace run` through safespaced: the same Sandbox (file, flags) created by the daemon,
/// the command run in it as an exec (output streamed), the sandbox deleted. Used when the
/// daemon answers on its socket, unless `--embedded`.
import DaemonClient
import Dispatch
import EgressFilter
import Foundation
import Glibc
import SandboxSpec

struct DaemonRun {
    let command: RunCommand
    let client: DaemonClient

    /// Seconds a sandbox of `run` outlives its command's own limit: its lifetime in the
    /// daemon (`spec.timeoutSeconds`), so that a client killed hard leaves nothing for long.
    static let lifetimeMargin = 60
    /// The lifetime when the command has no limit.
    static let defaultLifetime = 24 * 3600

    /// Runs the command and returns the code to exit with: the command's, 124 on timeout,
    /// 128+N on signal N (the sandbox is deleted first), 125 for an error of safespace.
    func execute() -> Int32 {
        let sandbox: Sandbox
        do { sandbox = try makeSandbox() } catch {
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        let name = sandbox.metadata.name!
        var body: [String: Any]
        do {
            let data = try JSONEncoder().encode(sandbox)
            body = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        } catch {
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        var spec = body["spec"] as? [String: Any] ?? [:]
        spec["timeoutSeconds"] = sandbox.spec.timeout.map { $0 + Self.lifetimeMargin } ?? Self.defaultLifetime
        body["spec"] = spec

        let created: DaemonClient.Response
        do { created = try client.request("POST", "/v1/sandboxes", json: body) } catch {
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
        guard created.status == 201 else {
            Diagnostics.error("\(daemonError(created))")
            return Diagnostics.setupFailure
        }
        // Ctrl-C, SIGTERM, SIGHUP: the sandbox is deleted (its exec with it), then 128+N.
        let client = self.client
        var sources: [DispatchSourceSignal] = []
        for signo in [SIGINT, SIGTERM, SIGHUP] {
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                _ = try? client.request("DELETE", "/v1/sandboxes/\(name)")
                exit(128 + signo)
            }
            source.resume()
            sources.append(source)
        }
        defer {
            sources.forEach { $0.cancel() }
            if sandbox.spec.networkAccess?.egress?.isEmpty == false { printEgressDenials(name) }
            do {
                let deleted = try client.request("DELETE", "/v1/sandboxes/\(name)")
                if deleted.status != 200 { Diagnostics.warning("sandbox \(name) not deleted: \(daemonError(deleted))") }
            } catch { Diagnostics.warning("sandbox \(name) not deleted: \(error)") }
        }

        var exec: [String: Any] = ["command": command.command]
        var environment: [String: String] = [:]
        for entry in command.env {
            guard let eq = entry.firstIndex(of: "="), eq != entry.startIndex else {
                Diagnostics.error("--env \(entry): expected KEY=VALUE")
                return Diagnostics.setupFailure
            }
            environment[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        if !environment.isEmpty { exec["env"] = environment }
        do {
            let result = try streamExec(client, name: name, body: exec)
            if result.timedOut {
                Diagnostics.error(
                    "sandbox \(name) timed out after \(sandbox.spec.timeout ?? 0) seconds (spec.timeout); killed")
                return RunExit.timedOut
            }
            if result.oomKilled { writeStandardError("safespace: sandbox \(name) was OOM-killed\n") }
            return result.exitCode
        } catch {
            Diagnostics.error("\(error)")
            return Diagnostics.setupFailure
        }
    }

    /// Prints `safespace: egress denied: 3 x evil.example, …` when the daemon's filter denied
    /// the sandbox something (its `status.egress.denied`), as the embedded run does.
    func printEgressDenials(_ name: String) {
        guard let response = try? client.request("GET", "/v1/sandboxes/\(name)"), response.status == 200,
            let status = response.json?["status"] as? [String: Any],
            let denied = (status["egress"] as? [String: Any])?["denied"] as? [[String: Any]]
        else { return }
        var counts: [String: Int] = [:]
        for entry in denied {
            if let destination = entry["destination"] as? String, let count = entry["count"] as? Int {
                counts[destination] = count
            }
        }
        if let line = EgressDenialSummary(sandbox: name, counts: counts).line() {
            writeStandardError("safespace: \(line)\n")
        }
    }

    /// The Sandbox of the file and flags, validated here for early errors (the daemon checks
    /// it again).
    func makeSandbox() throws -> Sandbox {
        if command.seccomp != nil {
            throw CLIError(
                .embeddedOnly,
                "--seccomp names a file of this machine, which safespaced does not read for a client; use --embedded")
        }
        let base = try command.file.map { path throws(SandboxError) in try Sandbox.load(path: path) } ?? Sandbox()
        var sandbox = base.applying(
            SandboxOverrides(name: command.name, runtime: command.runtime, timeout: command.timeout))
        if let level = command.securityLevel { sandbox.spec.securityLevel = level }
        try sandbox.validate()
        return sandbox
    }
}
