/// `safespace`: run sandboxes from a `Sandbox` spec on this node (embedded mode, no daemon).
import ArgumentParser
import Glibc
import Runtime
import SandboxHosting

// The runtime re-executes /proc/self/exe as `<argv0> init` inside the new namespaces
// (Runtime/Spawn.swift): that process must become the container's init before any argument
// parsing or thread.
if CommandLine.arguments.count == 2, CommandLine.arguments[1] == "init", getenv("_SAFESPACE_INITPIPE") != nil {
    ContainerInit.main()
}
// `run` starts the sandbox's processes: from the sealed binary, so that none the sandbox can
// see runs the host's file (SealedExecutable.reexecIfUnsealed).
if CommandLine.arguments.dropFirst().contains("run") {
    do { try SealedExecutable.reexecIfUnsealed() } catch {
        Diagnostics.error("\(error)")
        exit(Diagnostics.setupFailure)
    }
}
do {
    var command = try SafeSpace.parseAsRoot()
    try command.run()
} catch {
    exit(Diagnostics.exitCode(for: error))
}

/// The root command.
struct SafeSpace: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "safespace",
        abstract: "Run untrusted code in a sandbox described by an llmsafespace.dev/v1 Sandbox.",
        subcommands: [
            RunCommand.self, CreateCommand.self, StatsCommand.self, RootfsCommand.self, GCCommand.self, PsCommand.self,
            ExecCommand.self, CpCommand.self, RmCommand.self, AuditCommand.self, MCPCommand.self, DoctorCommand.self,
            PoolCommand.self,
        ])
}

/// Error output and exit codes, as docker and podman do: `safespace: error: ...` and 125 for
/// an error of safespace itself (bad flags, bad Sandbox, setup failure).
enum Diagnostics {
    /// Exit code of an error of safespace itself, not of the workload.
    static let setupFailure: Int32 = 125

    static func error(_ message: String) {
        for line in message.split(separator: "\n", omittingEmptySubsequences: false) {
            writeStandardError("safespace: error: \(line)\n")
        }
    }

    static func warning(_ message: String) {
        writeStandardError("safespace: warning: \(message)\n")
    }

    /// Prints what `SandboxHost` reports: `safespace: warning: …`, `safespace: <seccomp summary>`.
    @Sendable static func report(_ message: SandboxHost.Message) {
        switch message {
        case .warning(let text): warning(text)
        case .seccompSummary(let summary): writeStandardError("safespace: \(summary)\n")
        }
    }

    /// Prints `error` (help goes to stdout) and returns the code to exit with.
    static func exitCode(for error: any Error) -> Int32 {
        if let code = error as? ExitCode { return code.rawValue }
        let code = SafeSpace.exitCode(for: error)
        if code == .success {
            print(SafeSpace.fullMessage(for: error))
            return 0
        }
        Diagnostics.error(SafeSpace.message(for: error))
        return setupFailure
    }
}

/// write(2) to fd 2, whole string (no stdio buffering, safe from any thread).
func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return }
        bytes = bytes.dropFirst(written)
    }
}
