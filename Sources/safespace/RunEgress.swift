/// `safespace run`'s egress filter (issue 13): embedded, started only for a sandbox with
/// `spec.networkAccess.egress`, with the node's `network:` settings (the `network:` section of
/// safespaced's configuration file, `$SAFESPACE_UPSTREAM_DNS` over its upstream servers);
/// denied destinations are summed up in one line on exit, as seccomp denials are.
import EgressFilter
import EgressHosting
import SandboxHosting
import SandboxSpec

/// The filter of one run, from start to shutdown.
struct RunEgress {
    let host: EgressHost
    let summary: EgressDenialSummary

    /// Starts a filter when `sandbox` has egress rules and puts it in `configuration`.
    /// - Returns: nil when the sandbox asks for no egress (it keeps only `lo`).
    /// - Throws: `NetworkSettingsError` for a bad `network:` setting (naming the key),
    ///   `EgressFilterError` when the filter cannot start (no upstream server, a port taken).
    static func start(for sandbox: Sandbox, configPath: String, into configuration: inout SandboxHost.Configuration)
        throws -> RunEgress?
    {
        guard let egress = sandbox.spec.networkAccess?.egress, !egress.isEmpty, let name = sandbox.metadata.name else {
            return nil
        }
        let settings = try NetworkSettings.load(path: configPath)
        let summary = EgressDenialSummary(sandbox: name)
        let host = try EgressHost.start(settings: settings) { record in summary.add(record) }
        configuration.egressFilter = host.adapter
        configuration.networkPool = settings.pool
        return RunEgress(host: host, summary: summary)
    }

    /// Prints `safespace: egress denied: …` when something was, and stops the filter.
    func finish() {
        if let line = summary.line() { writeStandardError("safespace: \(line)\n") }
        host.shutdownAndWait()
    }
}
