import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Issue 16 item 2: `spec` writes runc's default config.json, byte for byte but for the two
/// values the README lists (`ociVersion`, `hostname`), and a container made from it runs.
@Suite(.enabled(if: RuncDifferential.available, "needs root and runc"))
struct RuncParityDefaultsTests {
    /// The documented differences, replaced by runc's values.
    static func normalized(_ text: String) -> String {
        text.replacingOccurrences(of: "\"ociVersion\": \"\(Spec.version)\"", with: "\"ociVersion\": \"RUNC\"")
            .replacingOccurrences(of: "\"hostname\": \"\(DefaultSpec.hostname)\"", with: "\"hostname\": \"runc\"")
    }

    @Test(
        "`spec` and `spec --rootless` write runc's file: same bytes once ociVersion and hostname are set aside",
        arguments: [[], ["--rootless"]])
    func sameFile(flags: [String]) throws {
        let runcDir = try Harness.tempDir("runc-spec")
        let ourDir = try Harness.tempDir("spec")
        defer { Harness.cleanup(runcDir, ourDir) }
        let r = try Harness.run(RuncDifferential.runcBinary!, ["spec", "--bundle", runcDir] + flags)
        let o = try Harness.run(Harness.runtimeBinary, ["spec", "--bundle", ourDir] + flags)
        try #require(r.status == 0 && o.status == 0, "runc: \(r.stderr) ours: \(o.stderr)")
        let runcText = try String(contentsOfFile: runcDir + "/config.json", encoding: .utf8)
        let ourText = try String(contentsOfFile: ourDir + "/config.json", encoding: .utf8)
        let runcVersion = try #require(runcText.firstMatch(of: /"ociVersion": "([^"]+)"/)?.1)
        #expect(
            Self.normalized(ourText)
                == runcText.replacingOccurrences(
                    of: "\"ociVersion\": \"\(runcVersion)\"", with: "\"ociVersion\": \"RUNC\""))
        // The two differences are exactly those values.
        #expect(
            ourText.contains("\"ociVersion\": \"\(Spec.version)\"")
                && ourText.contains("\"hostname\": \"\(DefaultSpec.hostname)\""))
        let attrs = try FileManager.default.attributesOfItem(atPath: ourDir + "/config.json")
        let runcAttrs = try FileManager.default.attributesOfItem(atPath: runcDir + "/config.json")
        #expect(attrs[.posixPermissions] as? Int == runcAttrs[.posixPermissions] as? Int)
    }

    @Test("`spec` refuses as runc does: an existing config.json, a bundle that cannot be entered (status and message)")
    func refusals() throws {
        let dir = try Harness.tempDir("spec-twice")
        defer { Harness.cleanup(dir) }
        try "{}".write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        for args in [["spec", "--bundle", dir], ["spec", "--bundle", dir + "/missing"]] {
            let r = try Harness.run(RuncDifferential.runcBinary!, args)
            let o = try Harness.run(Harness.runtimeBinary, args)
            #expect(r.status == o.status && o.status == 1, "\(args): runc \(r.status), ours \(o.status)")
            #expect(
                RuncDifferential.errorMessage(o.stderr) == RuncDifferential.errorMessage(r.stderr),
                "runc: \(r.stderr)\nours: \(o.stderr)")
        }
        #expect(try String(contentsOfFile: dir + "/config.json", encoding: .utf8) == "{}")
    }

    @Test(
        "a container made from `spec` runs (terminal off): runc's namespaces, its own cgroup at /sys/fs/cgroup, no cgroup namespace"
    )
    func templateRuns() throws {
        let bundle = try Harness.tempDir("spec-run")
        try Harness.busyboxRootfs(at: bundle + "/rootfs")
        let spec = try Harness.run(Harness.runtimeBinary, ["spec", "--bundle", bundle])
        try #require(spec.status == 0, "\(spec.stderr)")
        let script =
            "readlink /proc/self/ns/cgroup; cat /sys/fs/cgroup/pids/cgroup.procs /sys/fs/cgroup/cgroup.procs 2>/dev/null | wc -l; hostname"
        try Harness.patchConfig(bundle: bundle) { config in
            var process = config["process"] as! [String: Any]
            process["terminal"] = false
            process["args"] = ["sh", "-c", script]
            config["process"] = process
        }
        let d = try RuncDifferential("spec", bundle: bundle)
        defer { d.destroy() }
        let (r, o) = try d.both(["run", "--bundle", bundle, "ID"])
        #expect(r.status == 0 && o.status == 0, "runc: \(r.stderr) ours: \(o.stderr)")
        let host = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/cgroup")
        let runcLines = lines(r.stdout)
        let ourLines = lines(o.stdout)
        #expect(
            runcLines.first == host && ourLines.first == host,
            "no cgroup namespace: runc \(runcLines), ours \(ourLines)")
        // Only the container's own processes (sh, cat, wc) are in the cgroup it sees.
        #expect(Int(ourLines.dropFirst().first ?? "") ?? 99 <= 3, "\(ourLines)")
        // The bundle is ours, so both set our template's hostname.
        #expect(ourLines.last == DefaultSpec.hostname && runcLines.last == DefaultSpec.hostname)
    }
}
