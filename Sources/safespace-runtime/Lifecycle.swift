import ArgumentParser
import Glibc
import OCI
import Runtime

struct CreateFlags: ParsableArguments {
    @Option(name: [.short, .long], help: "Path to the bundle (default: current directory).")
    var bundle: String = "."
    @Option(name: .customLong("pid-file"), help: "Write the init's pid here.")
    var pidFile: String?
    @Option(name: .customLong("console-socket"), help: "Unix socket that receives the pty master.")
    var consoleSocket: String?
    @Flag(name: .customLong("no-pivot"), help: "MS_MOVE + chroot instead of pivot_root (weaker; only when asked).")
    var noPivot = false
    @Flag(name: .customLong("no-new-keyring"), help: "Keep the caller's session keyring.")
    var noNewKeyring = false
    @Option(name: .customLong("preserve-fds"), help: "Pass N extra fds (3…) to the workload.")
    var preserveFds: Int = 0

    /// The same flags as the hot verbs' parser gives them (`RuncInvocation`).
    var plain: RuncCreateFlags {
        var f = RuncCreateFlags()
        f.bundle = bundle
        f.pidFile = pidFile
        f.consoleSocket = consoleSocket
        f.noPivot = noPivot
        f.noNewKeyring = noNewKeyring
        f.preserveFds = preserveFds
        return f
    }
}

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a container (runtime.md#create).")
    @OptionGroup var globals: GlobalOptions
    @OptionGroup var flags: CreateFlags
    @Argument var id: String
    func run() throws { try HotVerbs.create(globals.options, flags.plain, id: id) }
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a created container.")
    @OptionGroup var globals: GlobalOptions
    @Argument var id: String
    func run() throws { try HotVerbs.start(globals.options, id: id) }
}

struct StateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state", abstract: "Print a container's state as JSON.")
    @OptionGroup var globals: GlobalOptions
    @Argument var id: String
    func run() throws { try HotVerbs.state(globals.options, id: id) }
}

/// Signal names (with or without SIG) and numbers 0...64, as runc's `kill` takes them (0:
/// kill(2)'s existence check).
/// - Throws: `ValidationError` "unknown signal" for anything else.
func parseSignal(_ text: String) throws -> Int32 {
    if let n = Int32(text), n >= 0, n < 65 { return n }
    let names: [String: Int32] = [
        "HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "ILL": SIGILL, "TRAP": SIGTRAP, "ABRT": SIGABRT,
        "IOT": SIGIOT, "BUS": SIGBUS, "FPE": SIGFPE, "KILL": SIGKILL, "USR1": SIGUSR1, "SEGV": SIGSEGV,
        "USR2": SIGUSR2, "PIPE": SIGPIPE, "ALRM": SIGALRM, "TERM": SIGTERM, "STKFLT": SIGSTKFLT,
        "CHLD": SIGCHLD, "CONT": SIGCONT, "STOP": SIGSTOP, "TSTP": SIGTSTP, "TTIN": SIGTTIN,
        "TTOU": SIGTTOU, "URG": SIGURG, "XCPU": SIGXCPU, "XFSZ": SIGXFSZ, "VTALRM": SIGVTALRM,
        "PROF": SIGPROF, "WINCH": SIGWINCH, "IO": SIGIO, "POLL": SIGPOLL, "PWR": SIGPWR, "SYS": SIGSYS,
    ]
    var name = text.uppercased()
    if name.hasPrefix("SIG") { name.removeFirst(3) }
    guard let n = names[name] else { throw ValidationError("unknown signal \"\(text)\"") }
    return n
}

struct Kill: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send a signal (default SIGTERM) to a container's init.")
    @OptionGroup var globals: GlobalOptions
    @Flag(name: [.short, .long], help: "Signal every process in the container's cgroup.")
    var all = false
    @Argument var id: String
    @Argument var signal: String = "SIGTERM"
    func run() throws { try HotVerbs.kill(globals.options, all: all, id: id, signal: signal) }
}

struct Delete: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a container and everything it holds.")
    @OptionGroup var globals: GlobalOptions
    @Flag(name: [.short, .long], help: "Kill it first if it is running.")
    var force = false
    @Argument var id: String
    func run() throws { try HotVerbs.delete(globals.options, force: force, id: id) }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and start a container; wait for it unless --detach.")
    @OptionGroup var globals: GlobalOptions
    @OptionGroup var flags: CreateFlags
    @Flag(name: [.short, .long], help: "Do not wait for the container.")
    var detach = false
    @Flag(name: .customLong("keep"), help: "Do not delete the container after it exits.")
    var keep = false
    @Argument var id: String
    func run() throws { try HotVerbs.run(globals.options, flags.plain, detach: detach, keep: keep, id: id) }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Freeze every process of a running container.")
    @OptionGroup var globals: GlobalOptions
    @Argument var id: String
    func run() throws { try perform(globals) { try $0.pause(id: id) } }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Thaw a paused container.")
    @OptionGroup var globals: GlobalOptions
    @Argument var id: String
    func run() throws { try perform(globals) { try $0.resume(id: id) } }
}

/// The bodies of the hot verbs, for both parsers: ArgumentParser's commands above and
/// `RuncInvocation` (main.swift), which reads their plain command lines without reflection.
enum HotVerbs {
    static func create(_ globals: RuncGlobalOptions, _ flags: RuncCreateFlags, id: String) throws {
        // A signal now would leave a half-made container: take it after create (runc survives
        // SIGTERM during create too).
        blockStopSignals(true)
        defer { blockStopSignals(false) }
        try perform(globals) { rt in
            let terminal = ForegroundTerminal.terminal(inBundle: flags.bundle)
            try ForegroundTerminal.check(detach: true, terminal: terminal, consoleSocket: flags.consoleSocket)
            try rt.create(id: id, bundle: flags.bundle, options: flags.options)
        }
    }

    static func start(_ globals: RuncGlobalOptions, id: String) throws { try perform(globals) { try $0.start(id: id) } }

    static func state(_ globals: RuncGlobalOptions, id: String) throws {
        try perform(globals) { try printJSON(try $0.state(id: id)) }
    }

    static func kill(_ globals: RuncGlobalOptions, all: Bool, id: String, signal: String) throws {
        // Signal 0 checks that the container's init is alive (kill(2)), as runc's `kill ID 0`.
        try perform(globals) { try $0.kill(id: id, signal: try parseSignal(signal), all: all) }
    }

    static func delete(_ globals: RuncGlobalOptions, force: Bool, id: String) throws {
        try perform(globals) { try $0.delete(id: id, force: force) }
    }

    static func run(_ globals: RuncGlobalOptions, _ flags: RuncCreateFlags, detach: Bool, keep: Bool, id: String) throws
    {
        blockStopSignals(true)
        let code: Int32 = try perform(globals) { rt in
            let terminal = ForegroundTerminal.terminal(inBundle: flags.bundle)
            try ForegroundTerminal.check(detach: detach, terminal: terminal, consoleSocket: flags.consoleSocket)
            // runc's foreground terminal: the pty's master comes to us, and we relay it.
            let tty = !detach && terminal == true ? try ForegroundTerminal() : nil
            var options = flags.options
            if let tty { options.consoleSocket = tty.socketPath }
            if let tty {
                try rt.create(id: id, bundle: flags.bundle, options: options)
                do {
                    // The master first (raw mode, window size), then the process runs: runc's order.
                    try tty.awaitMaster()
                    try rt.start(id: id)
                } catch {
                    try? rt.delete(id: id, force: true)
                    throw error
                }
            } else {
                // One step where the backend can (gVisor: `runsc run --detach`).
                try rt.createAndStart(id: id, bundle: flags.bundle, options: options)
            }
            if detach { return 0 }
            let pid = try rt.state(id: id).pid
            forwardSignals(to: pid)
            blockStopSignals(false)
            let status: Int32
            if let tty {
                let container = id
                do { status = try tty.relay { try rt.wait(id: container) } } catch {
                    try? rt.delete(id: id, force: true)
                    throw error
                }
            } else {
                status = try rt.wait(id: id)
            }
            if !keep { try rt.delete(id: id, force: true) }
            return status
        }
        throw ExitCode(code)
    }
}

extension RuncInvocation {
    /// Runs the verb as its ArgumentParser command would.
    func perform() throws {
        switch self {
        case .create(let g, let f, let id): try HotVerbs.create(g, f, id: id)
        case .run(let g, let f, let detach, let keep, let id):
            try HotVerbs.run(g, f, detach: detach, keep: keep, id: id)
        case .start(let g, let id): try HotVerbs.start(g, id: id)
        case .state(let g, let id): try HotVerbs.state(g, id: id)
        case .kill(let g, let all, let id, let signal): try HotVerbs.kill(g, all: all, id: id, signal: signal)
        case .delete(let g, let force, let id): try HotVerbs.delete(g, force: force, id: id)
        }
    }
}
