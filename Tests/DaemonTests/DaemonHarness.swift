/// A real safespaced for the tests: the built binary on a temporary socket, with its own
/// state directory, runtime root, bundle root, CPU allocation file, ephemeral storage base and
/// audit log, so that what it leaves can be counted apart from the node's.
import DaemonClient
import Foundation
import Glibc
import TestSupport
import XCTest

final class DaemonHarness: @unchecked Sendable {
    let id: String
    let dir: String
    let runDir: String
    let ephemeral: String
    var socket: String { dir + "/d.sock" }
    var stateDir: String { dir + "/state" }
    var auditPath: String { dir + "/audit.jsonl" }
    var configPath: String { dir + "/safespaced.yaml" }
    var runtimeRoot: String { runDir + "/runtime" }
    var bundleRoot: String { runDir + "/bundles" }
    private(set) var pid: Int32 = 0
    private(set) var client: DaemonClient

    static var binary: String {
        if let dir = ProcessInfo.processInfo.environment["SAFESPACE_BUILD_DIR"] { return dir + "/safespaced" }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.path + "/.build/debug/safespaced"
    }

    /// The CLI beside safespaced.
    static var cli: String { URL(fileURLWithPath: binary).deletingLastPathComponent().path + "/safespace" }

    /// `safespace ARGS…` against this daemon (`SAFESPACE_SOCKET`), through the tests' one
    /// process runner (`Harness.run`).
    func safespace(_ args: [String], stdin: String? = nil) throws -> Harness.Result {
        try Harness.run(
            Self.cli, args, stdin: stdin, env: ["SAFESPACE_SOCKET": socket, "PATH": "/usr/bin:/bin"], timeout: 300)
    }

    /// Makes the directories and the configuration (`extra` YAML sections appended).
    init(extraConfig: String = "") throws {
        id = "ssd" + String(UInt32.random(in: 0x1000_0000...0xFFFF_FFFF), radix: 16)
        dir = "/tmp/" + id
        runDir = "/run/" + id
        ephemeral = "/var/lib/safespace/" + id + "-ephemeral"
        for d in [dir, runDir] { mkdir(d, 0o755) }
        chmod(dir, 0o755)
        client = DaemonClient(socketPath: dir + "/d.sock", timeout: 120)
        let config = """
            audit:
              path: \(dir)/audit.jsonl
              journald: false
            paths:
              runtimeRoot: \(runDir)/runtime
              bundleRoot: \(runDir)/bundles
              ephemeralStorage: \(ephemeral)
            \(extraConfig.contains("pools:") ? "" : "pools:\n  directory: \(dir)/pools\n")\(extraConfig)
            """
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts the daemon and waits (at most 60 s) for `GET /v1/healthz`.
    func start() throws {
        try spawn()
        try waitUntilAnswering()
    }

    /// Who `LISTEN_PID` names when the daemon is started with inherited fds.
    enum ListenPID {
        /// The daemon itself: it is exec'd by `/bin/sh -c 'LISTEN_PID=$$ exec ...'`, as systemd
        /// (and systemd-socket-activate) set it between fork and exec.
        case daemon
        /// Another process (this pid), with the daemon started directly.
        case other(pid_t)
    }

    /// Starts the daemon as socket activation would (sd_listen_fds(3)): `fds` become fds 3, 4,
    /// ... of the daemon, with `LISTEN_FDS`, `LISTEN_PID` and (when given) `LISTEN_FDNAMES`
    /// set. Does not wait for it to answer.
    func spawnActivated(fds: [Int32], listenPID: ListenPID = .daemon, names: String? = "safespaced.socket") throws {
        var env = ["LISTEN_FDS": String(fds.count)]
        if let names { env["LISTEN_FDNAMES"] = names }
        switch listenPID {
        case .daemon: try spawn(passing: fds, environment: env, listenPIDOfDaemon: true)
        case .other(let other):
            env["LISTEN_PID"] = String(other)
            try spawn(passing: fds, environment: env, listenPIDOfDaemon: false)
        }
    }

    /// posix_spawn of the daemon, output to daemon.log; `passing` fds become 3, 4, ...
    private func spawn(passing fds: [Int32] = [], environment: [String: String] = [:], listenPIDOfDaemon: Bool = false)
        throws
    {
        var fileActions: posix_spawn_file_actions_t = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        // Moved out of the way first: a source fd may itself be 3, 4, ... (dup2 onto itself
        // would keep FD_CLOEXEC, and a later target could overwrite an earlier source).
        var moved: [Int32] = []
        for fd in fds {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 100)
            guard copy >= 0 else {
                throw DaemonClient.ClientError("F_DUPFD of fd \(fd): \(String(cString: strerror(errno)))")
            }
            moved.append(copy)
        }
        defer { moved.forEach { close($0) } }
        for (i, fd) in moved.enumerated() { posix_spawn_file_actions_adddup2(&fileActions, fd, 3 + Int32(i)) }
        posix_spawn_file_actions_addopen(&fileActions, 1, dir + "/daemon.log", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        var argv = [Self.binary, "--config", configPath, "--socket", socket, "--state-dir", stateDir]
        if listenPIDOfDaemon {
            // The shell's pid is the daemon's: exec keeps it.
            argv = ["/bin/sh", "-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\""] + argv
        }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LISTEN_") }
        for (k, v) in environment { env[k] = v }
        var cEnv: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cEnv.forEach { free($0) } }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArgv.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, argv[0], &fileActions, nil, &cArgv, &cEnv)
        guard rc == 0 else {
            throw DaemonClient.ClientError("posix_spawn \(argv[0]): \(String(cString: strerror(rc)))")
        }
        pid = child
    }

    /// Waits (at most 60 s) for `GET /v1/healthz`.
    func waitUntilAnswering() throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let response = try? client.request("GET", "/v1/healthz"), response.status == 200 { return }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                pid = 0
                throw DaemonClient.ClientError("safespaced exited at start: \(log)")
            }
            usleep(50_000)
        }
        throw DaemonClient.ClientError("safespaced did not answer within 60 s: \(log)")
    }

    /// Waits (at most `seconds`) for the daemon to exit by itself.
    /// - Returns: its wait status, nil when it still runs (then it is killed).
    func waitForExit(seconds: Double = 60) -> Int32? {
        guard pid > 0 else { return nil }
        let deadline = Date().addingTimeInterval(seconds)
        var status: Int32 = 0
        while Date() < deadline {
            if waitpid(pid, &status, WNOHANG) == pid {
                pid = 0
                return status
            }
            usleep(20_000)
        }
        kill9()
        return nil
    }

    var log: String { (try? String(contentsOfFile: dir + "/daemon.log", encoding: .utf8)) ?? "" }

    /// SIGTERM, then waits for the exit (at most `seconds`).
    /// - Returns: the exit status, nil when it had to be killed.
    @discardableResult
    func stop(seconds: Double = 60) -> Int32? {
        guard pid > 0 else { return nil }
        kill(pid, SIGTERM)
        return waitForExit(seconds: seconds)
    }

    /// SIGKILL, as a crash.
    func kill9() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        pid = 0
    }

    /// What the daemon's sandboxes hold on the node, by kind: every non-empty list is a leak
    /// once they are all deleted.
    func leftovers() -> [String: [String]] {
        var out: [String: [String]] = [:]
        func entries(_ path: String) -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter {
                !$0.hasPrefix(".") && !$0.hasSuffix(".lock")
            }.sorted()
        }
        out["runtime state"] = entries(runtimeRoot)
        out["bundles (leases)"] = entries(bundleRoot)
        out["ephemeral volumes"] = entries(ephemeral)
        out["daemon records"] = entries(stateDir + "/sandboxes")
        out["agent directories"] = entries(runDir + "/safespaced-agents/sandboxes")
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        out["mounts"] = mounts.split(separator: "\n").map(String.init).filter {
            $0.contains(runDir) || $0.contains(ephemeral)
        }
        // Pinned CPUs: leases of the node's store (runtime.json), keyed by sandbox name.
        out["cpu leases"] = entries(LeaseDirectory.path + "/cpus").filter { $0.hasPrefix(id) }
        out["cgroups"] = entries("/sys/fs/cgroup/safespace").filter { $0.hasPrefix(id) }
        // Processes of sandboxes: in a cgroup of this test's sandboxes.
        var procs: [String] = []
        for entry in entries("/proc") where Int32(entry) != nil {
            if let cgroup = try? String(contentsOfFile: "/proc/\(entry)/cgroup", encoding: .utf8),
                cgroup.contains("/safespace/\(id)")
            {
                // The command line says which process it is when a test fails.
                let cmdline = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline"))) ?? Data()
                let argv = String(decoding: cmdline, as: UTF8.self).split(separator: "\0").joined(separator: " ")
                let cg = cgroup.split(separator: "\n").first { $0.contains("/safespace/\(id)") } ?? ""
                // State and parent: a zombie names who did not reap it.
                let sp = Self.stateAndParent(entry).map { "\($0.state) \($0.ppid)" } ?? ""
                procs.append("\(entry) \(argv) [\(cg)] state,ppid=\(sp) daemon=\(pid)")
            }
        }
        out["processes"] = procs
        // Loop devices of the volumes' images.
        var loops: [String] = []
        for entry in entries("/sys/block") where entry.hasPrefix("loop") {
            if let backing = try? String(contentsOfFile: "/sys/block/\(entry)/loop/backing_file", encoding: .utf8),
                backing.contains(ephemeral)
            {
                loops.append(entry)
            }
        }
        out["loop devices"] = loops
        return out.filter { !$0.value.isEmpty }
    }

    /// The daemon's children that have exited and were not reaped (state Z in stat(5)), by pid.
    func zombieChildren() -> [String] {
        guard pid > 0 else { return [] }
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { entry in
            guard Int32(entry) != nil, let sp = Self.stateAndParent(entry) else { return false }
            return sp.state == "Z" && sp.ppid == pid
        }
    }

    /// Fields 3 (state) and 4 (ppid) of /proc/PID/stat (proc(5)), read after the `)` that ends
    /// the command name; nil when the process is gone.
    static func stateAndParent(_ pid: String) -> (state: String, ppid: Int32)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 1,
            let ppid = Int32(fields[1])
        else { return nil }
        return (String(fields[0]), ppid)
    }

    /// Stops the daemon if it runs, removes what is left (for a failed test) and the directories.
    func tearDown() {
        if pid > 0 { stop(seconds: 30) }
        // Whatever a failing test left, by this test's paths only: the containers (their
        // inits own the rest), then `safespace gc` for what dead owners hold.
        let binDir = URL(fileURLWithPath: Self.binary).deletingLastPathComponent().path
        for name in leftovers()["runtime state"] ?? [] {
            Self.run([binDir + "/safespace-runtime", "--root", runtimeRoot, "delete", "--force", name])
        }
        Self.run([
            binDir + "/safespace", "gc", "--root", runtimeRoot, "--bundle-root", bundleRoot, "--ephemeral-storage",
            ephemeral,
        ])
        // The agent directories (tmpfs mounts) of sandboxes the daemon kept at its stop and
        // the lines above removed: the next daemon's recovery would sweep them.
        let agents = runDir + "/safespaced-agents/sandboxes"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: agents)) ?? [] {
            umount2(agents + "/" + name, Int32(MNT_DETACH))
        }
        for d in [dir, runDir, ephemeral] { try? FileManager.default.removeItem(atPath: d) }
        if let names = try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/safespace") {
            for name in names where name.hasPrefix(id) { rmdir("/sys/fs/cgroup/safespace/" + name) }
        }
    }

    /// Runs a tool of the build, output discarded; waits for it.
    static func run(_ argv: [String]) {
        guard access(argv[0], X_OK) == 0 else { return }
        var cArgv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArgv.forEach { free($0) } }
        var fileActions: posix_spawn_file_actions_t = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 2, "/dev/null", O_WRONLY, 0)
        var child: pid_t = 0
        guard posix_spawn(&child, argv[0], &fileActions, nil, &cArgv, environ) == 0 else { return }
        var status: Int32 = 0
        _ = waitpid(child, &status, 0)
    }

    /// A sandbox name of this test (its cgroup and leftovers are recognisable by the prefix).
    func name(_ suffix: String) -> String { id + "-" + suffix }

    // MARK: requests

    @discardableResult
    func create(_ name: String, spec: [String: Any] = [:], file: StaticString = #filePath, line: UInt = #line) throws
        -> DaemonClient.Response
    {
        var body: [String: Any] = ["metadata": ["name": name]]
        var spec = spec
        if spec["resources"] == nil {
            spec["resources"] = ["cpu": "100m", "memory": "128Mi", "ephemeralStorage": "64Mi"]
        }
        body["spec"] = spec
        let response = try client.request("POST", "/v1/sandboxes", json: body)
        XCTAssertEqual(response.status, 201, "create \(name): \(response.text)", file: file, line: line)
        return response
    }

    func exec(_ name: String, _ command: [String], stdin: String? = nil, extra: [String: Any] = [:]) throws
        -> DaemonClient.Response
    {
        var body: [String: Any] = ["command": command]
        if let stdin { body["stdin"] = stdin }
        for (k, v) in extra { body[k] = v }
        return try client.request("POST", "/v1/sandboxes/\(name)/exec", json: body)
    }

    func delete(_ name: String) throws -> DaemonClient.Response {
        try client.request("DELETE", "/v1/sandboxes/\(name)")
    }

    /// The audit log's records.
    func auditRecords() -> [[String: Any]] {
        let text = (try? String(contentsOfFile: auditPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }
}

/// The node's lease store (runtime.json's `leases`, default /run/safespace-leases).
enum LeaseDirectory {
    static var path: String {
        if let data = FileManager.default.contents(atPath: "/etc/safespace/runtime.json"),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let dir = object["leases"] as? String
        {
            return dir
        }
        return "/run/safespace-leases"
    }
}

/// A count shared by concurrent requests.
final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add() { lock.withLock { count += 1 } }
}
