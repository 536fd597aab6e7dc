/// `safespace run`: a Sandbox spec and a command -> a sandboxed run of the command.
import ArgumentParser
import DaemonClient
import Foundation
import Glibc
import NodeResources
import SandboxHosting
import SandboxSpec

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command in a new sandbox and remove the sandbox when it ends.",
        discussion: """
            The sandbox comes from -f (an llmsafespace.dev/v1 Sandbox in YAML or JSON) or, \
            without it, from defaults; --name, --runtime and --timeout override the file. \
            Fields this build cannot enforce are refused, never ignored.

            Exit status: the command's; 124 when --timeout/spec.timeout expired; 128+N when \
            safespace got signal N (130 for Ctrl-C, 143 for SIGTERM); 125 when safespace \
            itself failed (bad flags or Sandbox, setup error).
            """)

    @Option(name: [.customShort("f"), .long], help: "Sandbox spec file (YAML or JSON); - reads stdin.")
    var file: String?

    @Option(help: "Runtime rootfs, e.g. python:3.11 (overrides spec.runtime; default \(Sandbox.defaultRuntime)).")
    var runtime: String?

    @Option(help: "Sandbox name, a DNS-1123 label (overrides metadata.name; default sandbox-<8 hex>).")
    var name: String?

    @Option(help: "Seconds the command may run (overrides spec.timeout).")
    var timeout: Int?

    @Option(
        name: .customLong("security-level"), help: "standard, high (gVisor) or custom (overrides spec.securityLevel).")
    var securityLevel: String?

    @Option(help: "Seccomp profile file, Docker/Podman format (overrides spec.securityContext.seccompProfile).")
    var seccomp: String?

    @Option(help: ArgumentHelp("Directory of SandboxProfiles and Localhost seccomp profiles.", visibility: .hidden))
    var profileDir: String = SeccompProfiles.defaultDirectory

    @Option(name: [.customShort("e"), .long], help: "Environment variable KEY=VALUE for the command (repeatable).")
    var env: [String] = []

    @OptionGroup var node: NodePathOptions

    @Option(
        name: .customLong("node-config"),
        help: ArgumentHelp(
            "The node's configuration, whose network: section (egress filter, address pool) is read.",
            visibility: .hidden))
    var nodeConfig: String = "/etc/safespace/safespaced.yaml"

    @Option(help: ArgumentHelp("Rootfs store directory.", visibility: .hidden))
    var rootfsStore: String = RootfsStore.defaultRoot

    @Flag(help: "Run in this process even when safespaced answers on its socket.")
    var embedded = false

    @Option(
        help: ArgumentHelp(
            "safespaced's socket (default $SAFESPACE_SOCKET, else /run/safespace/safespaced.sock).", visibility: .hidden
        ))
    var socket: String?

    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.")
    var command: [String] = []

    func validate() throws {
        if command.isEmpty {
            throw ValidationError("no command given: safespace run [OPTIONS] -- COMMAND [ARGS...]")
        }
    }

    func run() throws {
        let client = DaemonClient(socketPath: socket ?? DaemonClient.defaultSocket)
        if !embedded && client.isAnswering() {
            throw ExitCode(DaemonRun(command: self, client: client).execute())
        }
        do {
            let sandbox = try makeSandbox()
            var configuration = hostConfiguration
            let egress = try RunEgress.start(for: sandbox, configPath: nodeConfig, into: &configuration)
            let code: Int32
            do {
                let host = SandboxHost(configuration: configuration)
                let plan = try host.plan(for: sandbox, args: command, env: env)
                code = SandboxRun(host: host, plan: plan).execute()
            } catch {
                egress?.finish()
                throw error
            }
            egress?.finish()
            throw ExitCode(code)
        } catch let error as SandboxError {
            Diagnostics.error(error.description)
            throw ExitCode(Diagnostics.setupFailure)
        } catch let error as ExitCode {
            throw error
        } catch {
            Diagnostics.error("\(error)")
            throw ExitCode(Diagnostics.setupFailure)
        }
    }

    /// The node paths of the flags; warnings and the seccomp summary go to stderr.
    var hostConfiguration: SandboxHost.Configuration {
        SandboxHost.Configuration(
            stateRoot: node.root, bundleRoot: node.bundleRoot, ephemeralStorageBase: node.ephemeralStorage,
            rootfsStore: rootfsStore, seccompProfiles: profileDir, messages: Diagnostics.report)
    }

    /// The Sandbox with flags applied and validated.
    func makeSandbox() throws -> Sandbox {
        let base =
            try file.map { path throws(SandboxError) in try Sandbox.load(path: path) }
            ?? Sandbox()
        var sandbox = base.applying(SandboxOverrides(name: name, runtime: runtime, timeout: timeout))
        if let securityLevel { sandbox.spec.securityLevel = securityLevel }
        if let seccomp {
            // A Localhost profile, absolute: the file as given, relative to the current directory.
            let path = seccomp.hasPrefix("/") ? seccomp : FileManager.default.currentDirectoryPath + "/" + seccomp
            var context = sandbox.spec.securityContext ?? SecurityContextSpec()
            context.seccompProfile = SeccompProfileRef(type: "Localhost", localhostProfile: path)
            sandbox.spec.securityContext = context
        }
        try sandbox.validate()
        if geteuid() != 0 { throw CLIError(.needsRoot, "safespace run needs root (namespaces, mounts, cgroups)") }
        return sandbox
    }
}
