import Foundation
import Testing

/// The `safespace` binary: exit codes and messages of `safespace run`.
///
/// The refusal tests need only the binary. The run tests need root and the python:3.11
/// rootfs installed (`safespace rootfs build python`), and are skipped without them.
struct SafeSpaceCLITests {
    /// `safespace`, built next to this test bundle.
    static let binary: String? = {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        var directory = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("safespace").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return nil
    }()

    static let canRun =
        binary != nil && geteuid() == 0
        && FileManager.default.fileExists(atPath: "/var/lib/safespace/rootfs/python-3.11/rootfs")

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func safespace(_ arguments: [String], stdin: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(binary))
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        let stderrData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: stdoutData, as: UTF8.self),
            stderr: String(decoding: stderrData, as: UTF8.self))
    }

    static let header = "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\n"

    /// (Sandbox read from stdin, the error line expected)
    static let refusals: [(String, String)] = [
        (header + "spec:\n  filesystm: {}\n", "safespace: error: spec.filesystm: unknown field"),
        (
            header + "spec:\n  securityContext:\n    runAsUser: 0\n",
            "safespace: error: spec.securityContext.runAsUser: 0 is root; sandboxes run as a non-root id (1-65534)"
        ),
        (
            header + "spec:\n  resources:\n    memory: lots\n",
            "safespace: error: spec.resources.memory: \"lots\" is not a quantity such as \"500m\", \"2\", \"512Mi\" or \"1Gi\""
        ),
        // Egress rules are served (SafeSpaceEgressTests); a domain limited to 443 alone is not.
        (
            header + "spec:\n  networkAccess:\n    egress:\n      - domain: pypi.org\n        ports: [{port: 443}]\n",
            "safespace: error: spec.networkAccess.egress[0].ports: not enforceable yet: a domain is reached on both 80 and 443 (through the egress filter); limiting it to some of them; remove the field"
        ),
        (
            header + "spec:\n  filesystem:\n    writablePaths: [/proc/x]\n",
            "safespace: error: spec.filesystem.writablePaths[0]: /proc/x is under /proc, which the sandbox mounts itself"
        ),
    ]

    @Test(
        "a refused Sandbox exits 125 with an error naming the field", .enabled(if: binary != nil), arguments: refusals)
    func refused(sandbox: String, message: String) throws {
        let result = try Self.safespace(["run", "-f", "-", "--", "true"], stdin: sandbox)
        #expect(result.status == 125)
        #expect(result.stderr.split(separator: "\n").map(String.init) == [message])
        #expect(result.stdout.isEmpty)
    }

    @Test("flags are validated like the file's fields", .enabled(if: binary != nil))
    func badFlags() throws {
        let name = try Self.safespace(["run", "--name", "Not_A_Label", "--", "true"])
        #expect(name.status == 125)
        #expect(name.stderr.hasPrefix("safespace: error: metadata.name: "))
        let timeout = try Self.safespace(["run", "--timeout", "0", "--", "true"])
        #expect(timeout.status == 125)
        #expect(timeout.stderr.hasPrefix("safespace: error: spec.timeout: "))
        let runtime = try Self.safespace(["run", "--runtime", "Python", "--", "true"])
        #expect(runtime.stderr.hasPrefix("safespace: error: spec.runtime: "))
    }

    @Test("usage errors exit 125", .enabled(if: binary != nil))
    func usage() throws {
        let noCommand = try Self.safespace(["run"])
        #expect(noCommand.status == 125)
        #expect(noCommand.stderr.contains("safespace: error: no command given"))
        let unknownFlag = try Self.safespace(["run", "--privileged", "--", "true"])
        #expect(unknownFlag.status == 125)
        let help = try Self.safespace(["run", "--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("USAGE: safespace run"))
    }

    @Test(
        "a run prints the workload's output, exits with its code, as 1000:1000 without capabilities",
        .enabled(if: canRun))
    func run() throws {
        let name = "cli-test-\(UInt32.random(in: 0 ... .max))"
        let script = """
            import os, sys
            status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
            print(os.getuid(), os.getgid(), os.getgroups(), os.getcwd(), os.uname().nodename)
            print(status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip())
            print(sys.stdin.read().strip())
            sys.exit(7)
            """
        let result = try Self.safespace(["run", "--name", name, "--", "python3", "-c", script], stdin: "from stdin")
        #expect(result.status == 7)
        #expect(
            result.stdout.split(separator: "\n").map(String.init) == [
                "1000 1000 [] /workspace \(name)", "0000000000000000 0000000000000000 1", "from stdin",
            ])
        #expect(result.stderr.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace-bundles/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace/\(name)"))
    }

    @Test("the timeout kills the workload and exits 124; nothing is left", .enabled(if: canRun))
    func timeout() throws {
        let name = "cli-timeout-\(UInt32.random(in: 0 ... .max))"
        let result = try Self.safespace(["run", "--name", name, "--timeout", "1", "--", "sleep", "60"])
        #expect(result.status == 124)
        #expect(result.stderr == "safespace: error: sandbox \(name) timed out after 1 seconds (spec.timeout); killed\n")
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace-bundles/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace/\(name)"))
    }

    @Test(
        "a writable root is a private overlay: writes never reach the store, and it is unmounted",
        .enabled(if: canRun))
    func writableRoot() throws {
        let name = "cli-overlay-\(UInt32.random(in: 0 ... .max))"
        let sandbox =
            Self.header
            + "metadata:\n  name: \(name)\nspec:\n  securityLevel: custom\n  filesystem:\n    readOnlyRoot: false\n"
        let marker = "/home/sandbox/written-\(name)"
        let result = try Self.safespace(
            ["run", "-f", "-", "--", "sh", "-c", "echo x > \(marker) && cat \(marker)"], stdin: sandbox)
        #expect(result.status == 0)
        #expect(result.stdout == "x\n")
        #expect(!FileManager.default.fileExists(atPath: "/var/lib/safespace/rootfs/python-3.11/rootfs\(marker)"))
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains("/run/safespace-bundles/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace-bundles/\(name)"))
    }

    @Test(
        "SIGTERM and SIGINT are forwarded; the run exits 128+N and leaves nothing",
        .enabled(if: canRun), arguments: [SIGTERM, SIGINT])
    func signal(signo: Int32) throws {
        let name = "cli-signal-\(signo)-\(UInt32.random(in: 0 ... .max))"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(Self.binary))
        // The workload ignores the signal: the forwarded one does nothing, SIGKILL after the
        // grace period ends it.
        process.arguments = ["run", "--name", name, "--", "sh", "-c", "trap '' TERM INT; echo ready; sleep 60"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var output = Data()
        while !String(decoding: output, as: UTF8.self).contains("ready") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            output += chunk
        }
        #expect(String(decoding: output, as: UTF8.self) == "ready\n")
        kill(process.processIdentifier, signo)
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + signo)
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace-bundles/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/run/safespace/\(name)"))
    }
}
