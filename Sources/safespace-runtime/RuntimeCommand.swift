import ArgumentParser
import GVisor
import Glibc
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runc's global flags; they may stand before or after the verb.
struct GlobalOptions: ParsableArguments {
    @Option(help: "Root directory for container state.")
    var root: String = RuncGlobalOptions.defaultRoot
    @Option(help: "Log file (default: stderr).")
    var log: String?
    @Option(name: .customLong("log-format"), help: "text or json.")
    var logFormat: String = "text"
    @Flag(help: "Debug logging.")
    var debug = false
    @Flag(name: .customLong("systemd-cgroup"), help: "Manage cgroups with systemd (unsupported).")
    var systemdCgroup = false
    @Option(help: .hidden) var criu: String?
    @Flag(help: .hidden) var rootless = false

    /// The same options as the hot verbs' parser gives them (`RuncInvocation`).
    var options: RuncGlobalOptions {
        var o = RuncGlobalOptions()
        o.root = root
        o.log = log
        o.logFormat = logFormat
        o.debug = debug
        o.systemdCgroup = systemdCgroup
        return o
    }
}

extension RuncGlobalOptions {
    func runtime() throws -> ContainerRuntime {
        let format = RuntimeLog.Format(rawValue: logFormat) ?? .text
        let logger = RuntimeLog(path: log, format: format, debug: debug)
        if RuntimeLog.Format(rawValue: logFormat) == nil {
            throw Failure(logger: logger, message: "--log-format: \"\(logFormat)\" is not text or json")
        }
        if systemdCgroup {
            throw Failure(
                logger: logger,
                message:
                    "--systemd-cgroup: the systemd cgroup driver is not supported; use cgroupfs (drop the flag, or SystemdCgroup = false in containerd)"
            )
        }
        // The backends this runtime runs containers with: its own and gVisor's (security level high).
        return ContainerRuntime(root: root, log: logger, backends: RuntimeBackends([NativeBackend(), GVisorBackend()]))
    }
}

/// An error already written to the log; exits 1 like runc.
struct Failure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
    init(logger: RuntimeLog, message: String) {
        logger.log(.error, message)
        self.message = message
    }
}

/// How a verb reports a failure: the exit status and the words before the error, as runc's
/// verb does it (`exec`: 255 and `exec failed: `, runc exec.go).
struct FailureStyle {
    var status: Int32 = 1
    var prefix = ""
    static let exec = FailureStyle(status: 255, prefix: "exec failed: ")
}

/// Runs `body`, logging any error runc-style (JSON line under --log-format json) and exiting
/// with `style`'s status (1 unless the verb's runc counterpart uses another).
func perform<T>(
    _ globals: GlobalOptions, failure style: FailureStyle = FailureStyle(), _ body: (ContainerRuntime) throws -> T
) throws -> T {
    try perform(globals.options, failure: style, body)
}

/// `perform` with the options as the hot verbs' parser gives them.
func perform<T>(
    _ globals: RuncGlobalOptions, failure style: FailureStyle = FailureStyle(), _ body: (ContainerRuntime) throws -> T
) throws -> T {
    let rt = try globals.runtime()
    do {
        return try body(rt)
    } catch let e as Failure {
        throw e
    } catch let e as ExitCode {
        throw e
    } catch {
        rt.log.log(.error, style.prefix + "\(error)")
        if globals.log != nil && globals.log != "/dev/stderr" {
            writeStderr("safespace-runtime: \(style.prefix)\(error)\n")
        }
        throw ExitCode(style.status)
    }
}

func printJSON<T: Encodable>(_ value: T, pretty: Bool = true) throws {
    let enc = JSONEncoder()
    if pretty { enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] }
    writeStdout(String(decoding: try enc.encode(value), as: UTF8.self) + "\n")
}

/// Writes `text` to fd 1 after whatever stdio holds (fflush(3) of every stream), as print(_:)
/// would, without print's cast of its `Any` to `TextOutputStreamable`: the first such cast in
/// a process scans every protocol conformance of this binary (swift_conformsToProtocol).
func writeStdout(_ text: String) {
    fflush(nil)
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        bytes = bytes.dropFirst(n)
    }
}

struct RuntimeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "safespace-runtime",
        abstract: "An OCI runtime with runc's command line (runtime-spec \(Spec.version)).",
        version: RuntimeVersion.text,
        subcommands: [
            Create.self, Start.self, StateCommand.self, Kill.self, Delete.self, Run.self, Exec.self,
            List.self, Ps.self, Features.self, SpecCommand.self, Update.self, Events.self, Pause.self, Resume.self,
            Checkpoint.self, Restore.self,
        ])
    @OptionGroup var globals: GlobalOptions
}
