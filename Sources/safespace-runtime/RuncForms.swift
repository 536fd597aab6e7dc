import ArgumentParser
import Glibc
import OCI
import Runtime
import SeccompFilters

/// What `-v`/`--version` prints, in runc's shape (runc main.go: `runc version X`, then
/// `commit:`, `spec:`, `go:`, `libseccomp:` lines). There is no commit line: the build does
/// not record one.
enum RuntimeVersion {
    static let version = "0.1.0"

    static var text: String {
        """
        safespace-runtime version \(version)
        spec: \(Spec.version)
        swift: \(swift)
        libseccomp: \(Libseccomp.version)
        """
    }

    /// The Swift language version this binary was compiled with.
    static var swift: String {
        #if compiler(>=6.4)
            "6.4 or later"
        #elseif compiler(>=6.3)
            "6.3"
        #elseif compiler(>=6.2)
            "6.2"
        #elseif compiler(>=6.1)
            "6.1"
        #else
            "6.0"
        #endif
    }
}

/// runc's command-line forms that ArgumentParser does not give by itself, handled before it
/// parses (runc 1.1 main.go with urfave/cli):
/// - `-v`/`--version` after any global options: the version text, exit 0;
/// - an unknown verb, or `help` of one: `No help topic for 'X'` logged as an error, exit 3.
/// Everything else (`help VERB`, `VERB -h`, `VERB --help`, no verb) is ArgumentParser's.
enum RuncCommandLine {
    /// Global options that take a value (`--root X` or `--root=X`).
    static let valued = ["--root", "--log", "--log-format", "--criu"]
    /// Global flags.
    static let flags = ["--debug", "--systemd-cgroup", "--rootless"]

    /// Exits for the forms above; returns for everything else. `verbs` (the known verbs) is
    /// read only past `-v`/`--version`, which needs none of ArgumentParser's reflection.
    static func preflight(_ arguments: [String], verbs: () -> [String]) {
        var i = 1
        var log: String?
        var format = RuntimeLog.Format.text
        func take(_ name: String, _ value: String) {
            if name == "--log" { log = value }
            if name == "--log-format" { format = RuntimeLog.Format(rawValue: value) ?? .text }
        }
        scan: while i < arguments.count {
            let a = arguments[i]
            if valued.contains(a) {
                guard i + 1 < arguments.count else { return }
                take(a, arguments[i + 1])
                i += 2
                continue
            }
            for name in valued where a.hasPrefix(name + "=") {
                take(name, String(a.dropFirst(name.count + 1)))
                i += 1
                continue scan
            }
            if flags.contains(a) {
                i += 1
                continue
            }
            break
        }
        guard i < arguments.count else { return }
        let verb = arguments[i]
        if verb == "-v" || verb == "--version" {
            writeStdout(RuntimeVersion.text + "\n")
            exit(0)
        }
        if verb.hasPrefix("-") { return }
        var topic = verb
        if verb == "help" {
            guard i + 1 < arguments.count, !arguments[i + 1].hasPrefix("-") else { return }
            topic = arguments[i + 1]
        }
        guard !verbs().contains(topic) else { return }
        let message = "No help topic for '\(topic)'"
        RuntimeLog(path: log, format: format, debug: false).log(.error, message)
        if let log, log != "/dev/stderr" { writeStderr("safespace-runtime: \(message)\n") }
        exit(3)
    }
}

/// runc's `checkpoint` and `restore` go through CRIU; this runtime has no CRIU path. Both verbs
/// exist so that scripts and `help` find them, and are refused by name.
struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Not supported: checkpoint a running container (runc does it with CRIU).",
        discussion:
            "safespace-runtime does not checkpoint containers: it has no CRIU integration. The command fails with exit status 1."
    )
    @OptionGroup var globals: GlobalOptions
    @Argument(parsing: .allUnrecognized, help: "runc's checkpoint options and the container id (not used).")
    var arguments: [String] = []
    func run() throws { try refuseCRIU("checkpoint", globals) }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Not supported: restore a container from a checkpoint (runc does it with CRIU).",
        discussion:
            "safespace-runtime does not restore containers: it has no CRIU integration. The command fails with exit status 1."
    )
    @OptionGroup var globals: GlobalOptions
    @Argument(parsing: .allUnrecognized, help: "runc's restore options and the container id (not used).")
    var arguments: [String] = []
    func run() throws { try refuseCRIU("restore", globals) }
}

/// Logs `VERB is not supported: ...` as runc logs an error, exit 1.
func refuseCRIU(_ verb: String, _ globals: GlobalOptions) throws {
    try perform(globals) { (_: ContainerRuntime) throws -> Void in
        throw RuntimeError(
            .unsupported,
            "\(verb) is not supported: safespace-runtime cannot checkpoint or restore containers (runc does it through CRIU, which this runtime does not use)"
        )
    }
}
