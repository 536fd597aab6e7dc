import Foundation
import TestSupport
import Testing

/// scripts/install-node against a staged node root (`--destdir`): containerd's own
/// `config dump` checks the result, so the drop-in is exactly what containerd would load.
@Suite(
    "scripts/install-node", .serialized,
    .enabled(if: Harness.isRoot, "needs root"),
    .enabled(if: ClientTools.containerd != nil, "containerd not installed (apt-get install containerd)"))
struct CRIInstallNodeTests {
    static let script = ClientTools.repo + "/scripts/install-node"

    /// A node's config.toml with CRI settings of its own, which the drop-in must keep.
    static let nodeConfig = """
        version = 2
        oom_score = 0

        [plugins]
          [plugins."io.containerd.grpc.v1.cri"]
            sandbox_image = "example.org/pause:9"
            [plugins."io.containerd.grpc.v1.cri".cni]
              bin_dir = "/usr/lib/cni"
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
              runtime_type = "io.containerd.runc.v2"
              [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                SystemdCgroup = true

        """

    func run(_ args: [String]) throws -> Harness.Result {
        try ClientTools.run(Self.script, args, timeout: 300)
    }

    func dump(_ dest: String) throws -> String {
        let r = try ClientTools.run(
            ClientTools.containerd!, ["--config", dest + "/etc/containerd/config.toml", "config", "dump"], timeout: 60)
        try #require(r.status == 0, "config dump: \(r.stderr)")
        return r.stdout
    }

    /// The lines of `[<prefix>]`'s table in a config dump.
    func table(_ dump: String, _ name: String) -> [String] {
        let header = "[plugins.\"io.containerd.grpc.v1.cri\"\(name)]"
        var out: [String] = []
        var inside = false
        for line in dump.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if line.hasPrefix("[") {
                inside = line == header
                continue
            }
            if inside { out.append(line) }
        }
        return out
    }

    @Test(
        "--destdir: both handlers over the node's own CRI settings; a second run changes nothing; --uninstall restores config.toml"
    )
    func installTwiceThenUninstall() throws {
        let dest = try Harness.tempDir("node")
        defer { Harness.cleanup(dest) }
        let config = dest + "/etc/containerd/config.toml"
        try FileManager.default.createDirectory(atPath: dest + "/etc/containerd", withIntermediateDirectories: true)
        try Self.nodeConfig.write(toFile: config, atomically: true, encoding: .utf8)
        let args = ["--destdir", dest, "--bin-dir", Harness.buildDir, "--no-restart"]

        let first = try run(args)
        try #require(first.status == 0, "install-node: \(first.stdout)\n\(first.stderr)")
        for file in [
            "/usr/local/bin/safespace-runtime", "/usr/local/bin/safespace", "/etc/safespace/runtime.json",
            "/etc/containerd/conf.d/safespace.toml", "/usr/local/share/safespace/deploy/runtimeclasses.yaml",
        ] {
            #expect(FileManager.default.fileExists(atPath: dest + file), "\(file) not installed")
        }
        let d = try dump(dest)
        for handler in ["safespace", "safespace-high"] {
            let t = table(d, ".containerd.runtimes.\(handler)")
            #expect(t.contains(#"runtime_type = "io.containerd.runc.v2""#), "\(handler): \(t)")
            #expect(t.contains(#"pod_annotations = ["llmsafespace.dev/*"]"#), "\(handler): \(t)")
            let o = table(d, ".containerd.runtimes.\(handler).options")
            #expect(o.contains(#"BinaryName = "/usr/local/bin/safespace-runtime""#), "\(handler): \(o)")
            #expect(o.contains("Root = \"/run/\(handler)\""), "\(handler): \(o)")
        }
        // The node's settings survive containerd's section-replacing import.
        #expect(table(d, "").contains(#"sandbox_image = "example.org/pause:9""#))
        #expect(table(d, ".cni").contains(#"bin_dir = "/usr/lib/cni""#))
        #expect(table(d, ".containerd.runtimes.runc.options").contains("SystemdCgroup = true"))

        let snapshot = try ClientTools.run(
            "/usr/bin/sha256sum", [config, dest + "/etc/containerd/conf.d/safespace.toml"]
        ).stdout
        let second = try run(args)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("containerd config unchanged"), "\(second.stdout)")
        #expect(
            try ClientTools.run("/usr/bin/sha256sum", [config, dest + "/etc/containerd/conf.d/safespace.toml"]).stdout
                == snapshot)

        let un = try run(["--destdir", dest, "--uninstall", "--no-restart"])
        #expect(un.status == 0, "\(un.stdout)\n\(un.stderr)")
        #expect(try String(contentsOfFile: config, encoding: .utf8) == Self.nodeConfig, "config.toml is back as it was")
        for file in [
            "/usr/local/bin/safespace-runtime", "/etc/safespace", "/etc/containerd/conf.d",
            "/usr/local/share/safespace",
        ] {
            #expect(!FileManager.default.fileExists(atPath: dest + file), "\(file) left after --uninstall")
        }
        #expect(table(try dump(dest), ".containerd.runtimes.safespace").isEmpty)
    }

    @Test("--check (safespace doctor) names what the host lacks for safespace-high, or offers it")
    func check() throws {
        let r = try run(["--check", "--bin-dir", Harness.buildDir])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        if CRITools.runsc == nil {
            #expect(
                r.stdout.contains("safespace-high is not offered"),
                "expected because runsc is not installed: \(r.stdout)")
        } else {
            #expect(r.stdout.contains("both handlers"), "\(r.stdout)")
        }
    }
}
