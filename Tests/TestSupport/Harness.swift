import Foundation
import OCI
import Runtime

/// Shared helpers for tests that run the real `safespace-runtime` binary as root against real
/// bundles. Every test uses its own `--root` and unique container ids and removes what it made.
/// The test-support target of the package: used by test targets only.
package enum Harness {
    /// The package's build directory (where `swift build` put safespace-runtime).
    package static let buildDir: String = {
        if let env = ProcessInfo.processInfo.environment["SAFESPACE_BUILD_DIR"] { return env }
        // The test bundle lives in .build/<triple>/debug/; the executables sit next to it.
        var url = Bundle.main.bundleURL
        for _ in 0..<4 {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("safespace-runtime").path) {
                return url.path
            }
            url.deleteLastPathComponent()
        }
        let cwd = FileManager.default.currentDirectoryPath
        return cwd + "/.build/debug"
    }()

    package static var runtimeBinary: String { buildDir + "/safespace-runtime" }
    package static var cliBinary: String { buildDir + "/safespace" }

    package static var isRoot: Bool { getuid() == 0 }
    package static let pythonRootfs = "/var/lib/safespace/rootfs/python-3.11/rootfs"
    package static var hasPythonRootfs: Bool {
        FileManager.default.fileExists(atPath: pythonRootfs + "/usr/bin/python3")
    }

    package struct Result {
        package var status: Int32
        package var stdout: String
        package var stderr: String

        package init(status: Int32, stdout: String, stderr: String) {
            self.status = status
            self.stdout = stdout
            self.stderr = stderr
        }
    }

    /// Runs a program to completion: the one process runner of these tests (`spawn` and
    /// `ClientTools.run` are this). A `ClientProcess`: stdin from `stdin` (else /dev/null),
    /// stdout and stderr captured through files, every fd above 2 closed except `inherit` (fds
    /// of the test process duplicated onto the given numbers), reaped by pid — so a daemon or
    /// container the program leaves behind holding its stdio never blocks the caller.
    /// `env` nil: the test process's environment. After `timeout` seconds (none when nil) the
    /// program is SIGKILLed, its status is -1 and stderr says so.
    /// - Returns: the shell-style status (128+N for signal N) and the output.
    @discardableResult
    package static func run(
        _ path: String, _ args: [String], stdin: String? = nil, env: [String: String]? = nil, timeout: Double? = nil,
        inherit: [(fd: Int32, as: Int32)] = []
    ) throws -> Result {
        let dir = try tempDir("io")
        defer { cleanup(dir) }
        var input: String?
        if let stdin {
            try stdin.write(toFile: dir + "/in", atomically: false, encoding: .utf8)
            input = dir + "/in"
        }
        let p = try ClientProcess(
            path, args, stdout: dir + "/out", stderr: dir + "/err", stdin: input, env: env, inherit: inherit)
        let exited = timeout.map { p.wait(timeout: $0) } ?? true
        if !exited { p.kill() }
        let status = exited ? p.wait() : -1
        let out = (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? ""
        var err = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
        if !exited { err += "\n[killed after \(timeout ?? 0)s: \(path) \(args.joined(separator: " "))]" }
        return Result(status: status, stdout: out, stderr: err)
    }

    /// Polls `condition` every `interval` seconds until it holds or `timeout` seconds have
    /// passed: the one polling helper of these tests. A bound against hanging, not a timing
    /// assertion. - Returns: whether it held.
    package static func eventually(timeout: Double = 30, every interval: Double = 0.02, _ condition: () -> Bool) -> Bool
    {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if condition() { return true }
            if Date() > deadline { return false }
            usleep(useconds_t(interval * 1_000_000))
        }
    }

    /// `safespace-runtime --root <root> ARGS…`
    @discardableResult
    package static func runtime(root: String, _ args: [String], stdin: String? = nil) throws -> Result {
        try run(runtimeBinary, ["--root", root] + args, stdin: stdin)
    }

    package static func uniqueID(_ prefix: String) -> String {
        "\(prefix)-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
    }

    /// A temporary directory removed by `cleanup`.
    package static func tempDir(_ prefix: String) throws -> String {
        let path = NSTemporaryDirectory() + "safespace-\(prefix)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A minimal root file system made of busybox-static (Debian's busybox-static package).
    package static func busyboxRootfs(at dir: String) throws {
        let fm = FileManager.default
        for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "workspace"] {
            try fm.createDirectory(atPath: dir + "/" + sub, withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: "/bin/busybox", toPath: dir + "/bin/busybox")
        // The host's busybox, not the fresh copy: exec'ing a file just written races with other
        // threads' fork/spawn still holding its write fd (ETXTBSY).
        let list = try run("/bin/busybox", ["--list"]).stdout.split(separator: "\n")
        for applet in list where applet != "busybox" {
            try? fm.createSymbolicLink(atPath: dir + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try "root:x:0:0:root:/:/bin/sh\nsandbox:x:1000:1000::/tmp:/bin/sh\n".write(
            toFile: dir + "/etc/passwd", atomically: true, encoding: .utf8)
        try "root:x:0:\nsandbox:x:1000:\n".write(toFile: dir + "/etc/group", atomically: true, encoding: .utf8)
    }

    /// Writes `spec` as `<bundle>/config.json`.
    package static func writeSpec(_ spec: Spec, bundle: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(spec).write(to: URL(fileURLWithPath: bundle + "/config.json"))
    }

    /// A bundle with a busybox rootfs and runc's default config running `args` (`sh -c …`).
    package static func busyboxBundle(_ args: [String], edit: (inout Spec) -> Void = { _ in }) throws -> String {
        let bundle = try tempDir("bundle")
        do {
            try busyboxRootfs(at: bundle + "/rootfs")
            var spec = DefaultSpec.make(rootfs: "rootfs", args: args)
            spec.process?.env = ["PATH=/bin", "HOME=/tmp"]
            edit(&spec)
            try writeSpec(spec, bundle: bundle)
        } catch {
            cleanup(bundle)
            throw error
        }
        return bundle
    }

    /// What a container may leave on the host: mount entries, cgroup directories and state dirs
    /// naming `id`. Used before/after to prove cleanup.
    package static func leftovers(id: String, root: String) -> [String] {
        var found: [String] = []
        if let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) {
            found += mounts.split(separator: "\n").filter { $0.contains(id) }.map { "mount: \($0)" }
        }
        if let out = try? run("/usr/bin/find", ["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", id]).stdout {
            found += out.split(separator: "\n").map { "cgroup: \($0)" }
        }
        if FileManager.default.fileExists(atPath: root + "/" + id) { found.append("state: \(root)/\(id)") }
        if let ps = try? run("/bin/ps", ["-eo", "pid,args"]).stdout {
            found += ps.split(separator: "\n").filter { $0.contains(id) && !$0.contains("/bin/ps") }.map {
                "process: \($0)"
            }
        }
        return found
    }

    /// The first executable `name` in the sbin and bin directories (not $PATH: a test must not
    /// pick up a tool from the caller's environment); nil when none is installed.
    package static func find(_ name: String) -> String? {
        for dir in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
            let path = dir + "/" + name
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// `run` of `args` (`args[0]` the program): stdout and stderr through files, every fd above
    /// 2 closed except `inherit`, waited for by pid.
    ///
    /// Container commands need this shape (so does every command here, hence one runner): a
    /// created container's init keeps the stdio it was given and every fd its caller leaked to
    /// it (as runc's does), and Foundation.Process both reads its pipes to EOF and detects exit
    /// through a socket its child inherits — either would wait for the container to die, not
    /// for the command.
    package static func spawn(_ args: [String], stdin: String? = nil, inherit: [(fd: Int32, as: Int32)] = []) throws
        -> Result
    {
        try run(args[0], Array(args.dropFirst()), stdin: stdin, inherit: inherit)
    }

    package static func cleanup(_ paths: String...) {
        for p in paths { try? FileManager.default.removeItem(atPath: p) }
    }
}

/// Lines of `text`, trimmed, without empty ones.
package func lines(_ text: String) -> [String] {
    text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}
