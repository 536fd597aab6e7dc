import Foundation
import Glibc
import Testing

/// systemd/safespaced.service, .socket and sysusers.d/safespace.conf, checked by systemd's
/// own tools (`systemd-analyze verify`, `systemd-analyze security --offline`, `systemd-sysusers
/// --root`). Needs the `systemd` package (scripts/setup installs it).
@Suite("systemd units")
struct SystemdUnitTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let analyze = "/usr/bin/systemd-analyze"

    /// The daemon binary for ExecStart=: verify requires an executable there. The built
    /// safespaced when there is one, else an installed one, else the built `safespace` as a
    /// stand-in (verify checks only that the file is executable).
    static var daemonBinary: String {
        let env = ProcessInfo.processInfo.environment["SAFESPACE_BUILD_DIR"]
        var candidates: [String] = []
        if let env { candidates += [env + "/safespaced"] }
        var url = Bundle.main.bundleURL
        for _ in 0..<4 {
            candidates.append(url.appendingPathComponent("safespaced").path)
            url.deleteLastPathComponent()
        }
        candidates += ["/usr/local/bin/safespaced"]
        if let env { candidates += [env + "/safespace"] }
        candidates += ["/bin/true"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }!
    }

    /// Copies of the units in a temporary directory, ExecStart= pointing at `daemonBinary`,
    /// `edit` applied to the service's text.
    private func stage(edit: (String) -> String = { $0 }) throws -> String {
        let dir = FileManager.default.temporaryDirectory.path + "/safespace-units-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var service = try String(contentsOfFile: Self.repo + "/systemd/safespaced.service", encoding: .utf8)
        service = service.replacingOccurrences(
            of: "ExecStart=/usr/local/bin/safespaced", with: "ExecStart=\(Self.daemonBinary)")
        try edit(service).write(toFile: dir + "/safespaced.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(
            atPath: Self.repo + "/systemd/safespaced.socket", toPath: dir + "/safespaced.socket")
        return dir
    }

    private func verify(_ dir: String) throws -> Output {
        try run(Self.analyze, ["verify", dir + "/safespaced.service", dir + "/safespaced.socket"])
    }

    @Test("systemd-analyze verify: both units load without a warning")
    func analyzeVerify() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.analyze),
            "systemd-analyze is missing (apt-get install systemd)")
        let dir = try stage()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try verify(dir)
        #expect(out.status == 0, "\(out)")
        #expect(out.stderr.isEmpty && out.stdout.isEmpty, "\(out)")

        // The same check fails on a misspelt value and a missing binary: it can fail.
        let bad = try stage { $0.replacingOccurrences(of: "KillMode=process", with: "KillMode=proces") }
        defer { try? FileManager.default.removeItem(atPath: bad) }
        #expect(try verify(bad).stderr.contains("Failed to parse kill mode"))
        let missing = try stage {
            $0.replacingOccurrences(of: "ExecStart=\(Self.daemonBinary)", with: "ExecStart=/nonexistent/safespaced")
        }
        defer { try? FileManager.default.removeItem(atPath: missing) }
        #expect(try verify(missing).status != 0)
    }

    @Test("the service's settings: notify, watchdog, KillMode=process, delegation, preserved runtime directory")
    func settings() throws {
        let text = try String(contentsOfFile: Self.repo + "/systemd/safespaced.service", encoding: .utf8)
        let lines = Set(text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") })
        for line in [
            "Type=notify", "NotifyAccess=main", "ExecStart=/usr/local/bin/safespaced", "Restart=on-failure",
            "KillMode=process",
            "Delegate=yes", "RuntimeDirectory=safespace", "RuntimeDirectoryMode=0755", "RuntimeDirectoryPreserve=yes",
            "LogsDirectory=safespace", "NoNewPrivileges=yes",
        ] {
            #expect(lines.contains(line), "\(line)")
        }
        #expect(lines.contains { $0.hasPrefix("WatchdogSec=") })
        // No directive that would give the daemon a mount namespace of its own.
        for key in [
            "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ReadWritePaths", "ReadOnlyPaths",
            "InaccessiblePaths",
            "TemporaryFileSystem", "BindPaths", "PrivateMounts", "MemoryDenyWriteExecute", "RestrictNamespaces",
        ] {
            #expect(!lines.contains { $0.hasPrefix(key + "=") }, "\(key)=")
        }
        let socket = try String(contentsOfFile: Self.repo + "/systemd/safespaced.socket", encoding: .utf8)
        for line in ["ListenStream=/run/safespace/safespaced.sock", "SocketMode=0660", "SocketGroup=safespace"] {
            #expect(socket.contains("\n" + line + "\n"), "\(line)")
        }
    }

    @Test("systemd-analyze security --offline: the hardening lowers the exposure below a bare service's")
    func exposure() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.analyze), "systemd-analyze is missing")
        let dir = try stage()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "[Service]\nExecStart=\(Self.daemonBinary)\n".write(
            toFile: dir + "/bare.service", atomically: true, encoding: .utf8)
        func exposure(_ unit: String) throws -> Double {
            let out = try run(Self.analyze, ["security", "--offline=yes", "--no-pager", dir + "/" + unit])
            let line = try #require(
                out.stdout.split(separator: "\n").last { $0.contains("Overall exposure level") }, "\(out)")
            let number = try #require(line.firstMatch(of: /level for [^:]+: (\d+\.\d)/), "\(line)")
            return try #require(Double(number.1))
        }
        let ours = try exposure("safespaced.service")
        let bare = try exposure("bare.service")
        print("systemd-analyze security: safespaced.service \(ours), a bare service \(bare)")
        #expect(ours < bare)
    }

    @Test("sysusers.d/safespace.conf creates the group safespace")
    func sysusers() throws {
        let tool = "/usr/bin/systemd-sysusers"
        try #require(FileManager.default.isExecutableFile(atPath: tool), "systemd-sysusers is missing")
        let root = FileManager.default.temporaryDirectory.path + "/safespace-sysusers-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let out = try run(tool, ["--root=\(root)", Self.repo + "/systemd/sysusers.d/safespace.conf"])
        #expect(out.status == 0, "\(out)")
        let group = try String(contentsOfFile: root + "/etc/group", encoding: .utf8)
        #expect(group.split(separator: "\n").contains { $0.hasPrefix("safespace:x:") }, "\(group)")
    }
}

struct Output {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program to completion; stdout and stderr through files.
func run(_ path: String, _ args: [String]) throws -> Output {
    let dir = FileManager.default.temporaryDirectory.path + "/safespace-run-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
    _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out"))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
    try p.run()
    p.waitUntilExit()
    return Output(
        status: p.terminationStatus,
        stdout: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
}
