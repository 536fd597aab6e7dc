import ArgumentParser
import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

func forwardSignals(to pid: Int32) { _ = ss_forward_signals(pid) }
func blockStopSignals(_ block: Bool) { _ = ss_block_stop_signals(block ? 1 : 0) }

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a process in a running container.")
    @OptionGroup var globals: GlobalOptions
    @Option(name: [.short, .long], help: "A JSON file with an OCI process object.")
    var process: String?
    @Flag(name: [.short, .long]) var detach = false
    @Option(name: .customLong("pid-file")) var pidFile: String?
    @Flag(name: [.short, .long]) var tty = false
    @Option(name: .customLong("console-socket")) var consoleSocket: String?
    @Option var cwd: String?
    @Option(name: [.short, .long], parsing: .singleValue) var env: [String] = []
    @Option(name: [.short, .long], help: "uid[:gid]") var user: String?
    @Option(name: .customLong("additional-gids"), parsing: .singleValue) var additionalGids: [UInt32] = []
    @Option(name: .customLong("preserve-fds")) var preserveFds: Int = 0
    @Flag(name: .customLong("no-new-privs")) var noNewPrivs = false
    @Option(
        name: .customLong("cgroup"), parsing: .singleValue,
        help: "Run the process in an existing sub-cgroup of the container: [<controller>[,<controller>...]:]<path>.")
    var cgroup: [String] = []
    @Flag(
        name: .customLong("ignore-paused"),
        help: "Allow exec in a paused container (the process stays frozen until resume).")
    var ignorePaused = false
    @Argument var id: String
    @Argument(parsing: .captureForPassthrough) var args: [String] = []

    func run() throws {
        let code: Int32 = try perform(globals, failure: .exec) { rt in
            var p: OCI.Process
            if let file = process {
                let data = try readFile(file)
                do { p = try JSONDecoder().decode(OCI.Process.self, from: data) } catch {
                    throw ValidationError("--process \(file): \(error)")
                }
            } else {
                guard !args.isEmpty else { throw ValidationError("exec: give a command or --process") }
                p = try rt.defaultExecProcess(id: id)
                p.args = args.first == "--" ? Array(args.dropFirst()) : args
                p.terminal = tty
                if let cwd { p.cwd = cwd }
                p.env = (p.env ?? []) + env
                if let user {
                    let parts = user.split(separator: ":")
                    guard let uid = UInt32(parts[0]) else {
                        throw ValidationError("--user: \"\(user)\" is not uid[:gid]")
                    }
                    p.user.uid = uid
                    if parts.count > 1 {
                        guard let gid = UInt32(parts[1]) else {
                            throw ValidationError("--user: \"\(user)\" is not uid[:gid]")
                        }
                        p.user.gid = gid
                    }
                }
                if !additionalGids.isEmpty { p.user.additionalGids = additionalGids }
                if noNewPrivs { p.noNewPrivileges = true }
            }
            let terminal = p.terminal == true
            try ForegroundTerminal.check(detach: detach, terminal: terminal, consoleSocket: consoleSocket)
            // A foreground pty starts with the host console's size (set by the init before the
            // process runs), not 0x0 until the relay's first resize: a process that asks at
            // once (`stty size`) would otherwise race that resize.
            if !detach && terminal && p.consoleSize == nil { p.consoleSize = hostConsoleSize() }
            var options = ExecOptions(
                process: p, detach: detach, pidFile: pidFile, consoleSocket: consoleSocket, preserveFds: preserveFds)
            options.subCgroups = try SubCgroups(parsing: cgroup)
            options.ignorePaused = ignorePaused
            guard !detach && terminal else { return try rt.exec(id: id, options: options) }
            // runc's foreground terminal: the pty's master comes to us, and we relay it.
            let tty = try ForegroundTerminal()
            options.consoleSocket = tty.socketPath
            let container = id
            let execOptions = options
            return try tty.relay { try rt.exec(id: container, options: execOptions) }
        }
        if !detach { throw ExitCode(code) }
    }
}

/// The size of the host console (stderr, stdout or stdin, the first that is a terminal, as
/// runc's `initHostConsole` picks), or nil without one or when the kernel reports 0x0
/// (TIOCGWINSZ, ioctl_tty(2)).
func hostConsoleSize() -> ConsoleSize? {
    for fd in [STDERR_FILENO, STDOUT_FILENO, STDIN_FILENO] where isatty(fd) == 1 {
        var rows: UInt16 = 0
        var cols: UInt16 = 0
        guard ss_get_winsize(fd, &rows, &cols) == 0, rows > 0, cols > 0 else { return nil }
        return ConsoleSize(height: UInt(rows), width: UInt(cols))
    }
    return nil
}

func readFile(_ path: String) throws -> Data {
    do { return Data(try Files.read(path)) } catch let error as SysError {
        throw ValidationError("\(path): \(String(cString: strerror(error.errno ?? EIO)))")
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List containers.")
    @OptionGroup var globals: GlobalOptions
    @Option(name: [.short, .long]) var format: String = "table"
    @Flag(name: [.short, .long]) var quiet = false
    func run() throws {
        try perform(globals) { rt in
            let all = rt.list()
            // runc list.go: -q first, then the format.
            if quiet { return all.forEach { print($0.id) } }
            switch format {
            case "table":
                var rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
                // A half-made container (its create has not finished) shows who creates it.
                rows += all.map { s in
                    [
                        s.id, "\(s.pid)", s.status, s.bundle, s.created,
                        s.owner + (s.creator.map { " (create: pid \($0))" } ?? ""),
                    ]
                }
                print(goTabwriter(rows), terminator: "")
            case "json":
                print(String(decoding: try GoJSON.marshal(all), as: UTF8.self))
            default:
                throw RuntimeError(.invalidSpec, "invalid format option")
            }
        }
    }
}

/// Rows laid out as Go's `text/tabwriter` does for runc's `list` (`NewWriter(out, 12, 1, 3,
/// ' ', 0)`): every cell but a row's last is padded with spaces to its column's widest cell
/// plus 3, and at least 12 characters; the last cell stands as it is. Widths count characters.
func goTabwriter(_ rows: [[String]], minWidth: Int = 12, padding: Int = 3) -> String {
    let columns = (rows.map(\.count).max() ?? 1) - 1
    var widths = [Int](repeating: minWidth, count: max(columns, 0))
    for row in rows {
        for (i, cell) in row.dropLast().enumerated() { widths[i] = max(widths[i], cell.count + padding) }
    }
    var out = ""
    for row in rows {
        for (i, cell) in row.enumerated() {
            out += cell
            if i < row.count - 1 { out += String(repeating: " ", count: widths[i] - cell.count) }
        }
        out += "\n"
    }
    return out
}

struct Ps: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the processes of a container.")
    @OptionGroup var globals: GlobalOptions
    @Option(name: [.short, .long]) var format: String = "table"
    @Argument var id: String
    @Argument(parsing: .captureForPassthrough) var psArgs: [String] = []
    func run() throws {
        try perform(globals) { rt in
            let pids = try rt.processes(id: id)
            if format == "json" { return try printJSON(pids, pretty: false) }
            // gVisor: the workload's processes live in the sandbox, not on the host: runsc's table.
            if let table = try rt.processTable(id: id) { return print(table, terminator: "") }
            // Table: ps(1)'s own output filtered to the container's pids, as runc does.
            var pipeFds: [Int32] = [-1, -1]
            guard pipe(&pipeFds) == 0 else { throw ValidationError("pipe failed") }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            posix_spawn_file_actions_adddup2(&actions, pipeFds[1], 1)
            posix_spawn_file_actions_addclose(&actions, pipeFds[0])
            let argv = ["ps"] + (psArgs.isEmpty ? ["-ef"] : psArgs.filter { $0 != "--" })
            var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
            var pid: pid_t = 0
            let rc = posix_spawnp(&pid, "ps", &actions, nil, &cArgs, environ)
            close(pipeFds[1])
            guard rc == 0 else { throw ValidationError("ps: \(String(cString: strerror(rc)))") }
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(pipeFds[0], &buf, buf.count)
                if n <= 0 { break }
                out += buf[0..<n]
            }
            close(pipeFds[0])
            var st: Int32 = 0
            waitpid(pid, &st, 0)
            let lines = String(decoding: out, as: UTF8.self).split(separator: "\n")
            guard let header = lines.first else { return }
            let pidColumn = header.split(separator: " ").firstIndex(of: "PID") ?? 1
            print(header)
            let set = Set(pids)
            for line in lines.dropFirst() {
                let cols = line.split(separator: " ")
                if cols.count > pidColumn, let p = Int32(cols[pidColumn]), set.contains(p) { print(line) }
            }
        }
    }
}
