/// runc's global options as the hot verbs read them (runc main.go: `--root`, `--log`,
/// `--log-format`, `--debug`, `--systemd-cgroup`).
public struct RuncGlobalOptions: Equatable, Sendable {
    /// Where container state lives when `--root` is not given.
    public static let defaultRoot = "/run/safespace"

    public var root = RuncGlobalOptions.defaultRoot
    /// `--log` (nil: stderr).
    public var log: String?
    /// `--log-format`: `text` or `json` (anything else is refused by the verb, naming the flag).
    public var logFormat = "text"
    public var debug = false
    public var systemdCgroup = false

    public init() {}
}

/// The flags `create` and `run` share (runc create.go / run.go).
public struct RuncCreateFlags: Equatable, Sendable {
    /// `--bundle`/`-b` (default: the current directory).
    public var bundle = "."
    public var pidFile: String?
    public var consoleSocket: String?
    public var noPivot = false
    public var noNewKeyring = false
    /// `--preserve-fds`: extra fds (3…) passed to the workload.
    public var preserveFds = 0

    public init() {}

    /// The same flags as ``CreateOptions``.
    public var options: CreateOptions {
        CreateOptions(
            pidFile: pidFile, consoleSocket: consoleSocket, noPivot: noPivot, noNewKeyring: noNewKeyring,
            preserveFds: preserveFds)
    }
}

/// One command line of a hot verb (`create`, `start`, `state`, `kill`, `delete`, `run`: what
/// containerd, podman and CRI run for every container), read without reflection.
///
/// ``parse(_:)`` accepts only the plain forms these callers use and returns nil for anything
/// else: `-h`/`--help`, `help`, `-v`/`--version`, another verb, an unknown or repeated option,
/// a missing, empty or dash-led value, `--`, a value on a boolean flag, bundled short flags,
/// a missing or extra argument, a non-number `--preserve-fds`, the hidden `--criu` and
/// `--rootless`. The caller then hands the whole command line to the full parser
/// (ArgumentParser), which answers it exactly as before: the result of a command line this
/// parser takes is the one the full parser gives it, and every refusal is the full parser's.
///
/// Forms taken (runc 1.1 create.go, run.go, start.go, state.go, kill.go, delete.go):
/// - global options before the verb or among its own: `--root X`/`--root=X`, `--log`,
///   `--log-format`, `--debug`, `--systemd-cgroup`;
/// - `create`/`run`: `--bundle X`/`-b X`/`--bundle=X`, `--pid-file`, `--console-socket`,
///   `--no-pivot`, `--no-new-keyring`, `--preserve-fds N`; `run` also `--detach`/`-d`, `--keep`;
/// - `kill`: `--all`/`-a`, then the id and an optional signal (default SIGTERM);
/// - `delete`: `--force`/`-f`;
/// - options and the id in any order after the verb, as the full parser takes them.
public enum RuncInvocation: Equatable, Sendable {
    case create(RuncGlobalOptions, RuncCreateFlags, id: String)
    case run(RuncGlobalOptions, RuncCreateFlags, detach: Bool, keep: Bool, id: String)
    case start(RuncGlobalOptions, id: String)
    case state(RuncGlobalOptions, id: String)
    case kill(RuncGlobalOptions, all: Bool, id: String, signal: String)
    case delete(RuncGlobalOptions, force: Bool, id: String)

    /// The verbs this parser reads; every other command line is the full parser's.
    public static let verbs: Set<String> = ["create", "run", "start", "state", "kill", "delete"]

    /// - Parameter arguments: the whole command line, the program name first (`CommandLine.arguments`).
    /// - Returns: the invocation, or nil when the full parser must read the command line.
    public static func parse(_ arguments: [String]) -> RuncInvocation? {
        var globals = RuncGlobalOptions()
        var create = RuncCreateFlags()
        var seen: Set<String> = []
        var verb: String?
        var positionals: [String] = []
        var detach = false
        var keep = false
        var all = false
        var force = false

        var i = 1
        while i < arguments.count {
            let word = arguments[i]
            i += 1
            guard word.hasPrefix("-") else {
                guard !word.isEmpty else { return nil }
                if verb == nil {
                    guard verbs.contains(word) else { return nil }
                    verb = word
                } else {
                    positionals.append(word)
                }
                continue
            }
            // `--name=value` or `--name`; a short name is one letter and takes no `=`.
            var name = word
            var inline: String?
            if word.hasPrefix("--"), let eq = word.firstIndex(of: "=") {
                name = String(word[..<eq])
                inline = String(word[word.index(after: eq)...])
            }
            guard let option = option(named: name, verb: verb) else { return nil }
            // A repeated option (under either of its names) is the full parser's to judge.
            guard seen.insert(option.key).inserted else { return nil }
            var value: String?
            if option.takesValue {
                if let inline {
                    value = inline
                } else {
                    guard i < arguments.count else { return nil }
                    value = arguments[i]
                    i += 1
                }
                guard let v = value, !v.isEmpty, !v.hasPrefix("-") else { return nil }
            } else if inline != nil {
                return nil
            }
            switch option.key {
            case "root": globals.root = value!
            case "log": globals.log = value!
            case "log-format": globals.logFormat = value!
            case "debug": globals.debug = true
            case "systemd-cgroup": globals.systemdCgroup = true
            case "bundle": create.bundle = value!
            case "pid-file": create.pidFile = value!
            case "console-socket": create.consoleSocket = value!
            case "no-pivot": create.noPivot = true
            case "no-new-keyring": create.noNewKeyring = true
            case "preserve-fds":
                guard let n = Int(value!) else { return nil }
                create.preserveFds = n
            case "detach": detach = true
            case "keep": keep = true
            case "all": all = true
            case "force": force = true
            default: return nil
            }
        }
        guard let verb else { return nil }
        switch (verb, positionals.count) {
        case ("create", 1): return .create(globals, create, id: positionals[0])
        case ("run", 1): return .run(globals, create, detach: detach, keep: keep, id: positionals[0])
        case ("start", 1): return .start(globals, id: positionals[0])
        case ("state", 1): return .state(globals, id: positionals[0])
        case ("kill", 1): return .kill(globals, all: all, id: positionals[0], signal: "SIGTERM")
        case ("kill", 2): return .kill(globals, all: all, id: positionals[0], signal: positionals[1])
        case ("delete", 1): return .delete(globals, force: force, id: positionals[0])
        default: return nil
        }
    }

    private struct Option {
        let key: String
        let takesValue: Bool
    }

    /// The option `name` (`--long` or `-x`) means before the verb (nil) or after `verb`.
    private static func option(named name: String, verb: String?) -> Option? {
        switch name {
        case "--root": return Option(key: "root", takesValue: true)
        case "--log": return Option(key: "log", takesValue: true)
        case "--log-format": return Option(key: "log-format", takesValue: true)
        case "--debug": return Option(key: "debug", takesValue: false)
        case "--systemd-cgroup": return Option(key: "systemd-cgroup", takesValue: false)
        default: break
        }
        switch (verb, name) {
        case ("create", "--bundle"), ("create", "-b"), ("run", "--bundle"), ("run", "-b"):
            return Option(key: "bundle", takesValue: true)
        case ("create", "--pid-file"), ("run", "--pid-file"): return Option(key: "pid-file", takesValue: true)
        case ("create", "--console-socket"), ("run", "--console-socket"):
            return Option(key: "console-socket", takesValue: true)
        case ("create", "--no-pivot"), ("run", "--no-pivot"): return Option(key: "no-pivot", takesValue: false)
        case ("create", "--no-new-keyring"), ("run", "--no-new-keyring"):
            return Option(key: "no-new-keyring", takesValue: false)
        case ("create", "--preserve-fds"), ("run", "--preserve-fds"):
            return Option(key: "preserve-fds", takesValue: true)
        case ("run", "--detach"), ("run", "-d"): return Option(key: "detach", takesValue: false)
        case ("run", "--keep"): return Option(key: "keep", takesValue: false)
        case ("kill", "--all"), ("kill", "-a"): return Option(key: "all", takesValue: false)
        case ("delete", "--force"), ("delete", "-f"): return Option(key: "force", takesValue: false)
        default: return nil
        }
    }
}
