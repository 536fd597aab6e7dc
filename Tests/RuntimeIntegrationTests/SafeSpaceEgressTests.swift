import Foundation
import Glibc
import SandboxNetwork
import TestSupport
import Testing

/// `safespace run` with `spec.networkAccess.egress` (issue 13): the embedded egress filter
/// against a simulated internet (`TestInternet`: its own DNS server, and pypi.org /
/// files.pythonhosted.org / denied.test on 198.18.0.0/15), at `standard` and `high`.
@Suite(
    "safespace run: egress through the embedded filter", .serialized,
    .enabled(
        if: Harness.isRoot && Harness.hasPythonRootfs && Harness.find("openssl") != nil,
        "needs root, the python rootfs and openssl (scripts/setup)"))
final class SafeSpaceEgressTests {
    let internet: TestInternet
    let dir: String

    init() throws {
        internet = try TestInternet()
        dir = try Harness.tempDir("egress-run")
        do { try internet.up() } catch {
            internet.close()
            throw error
        }
        // The node's configuration: the simulated internet's range may be dialled.
        try "network:\n  allowedPrivateRanges: [\"\(TestInternet.range)\"]\n".write(
            toFile: dir + "/node.yaml", atomically: true, encoding: .utf8)
    }

    deinit {
        internet.close()
        Harness.cleanup(dir)
    }

    func spec(_ name: String, level: String) -> String {
        """
        apiVersion: llmsafespace.dev/v1
        kind: Sandbox
        metadata:
          name: \(name)
        spec:
          runtime: python:3.11
          securityLevel: \(level)
          resources:
            memory: 512Mi
          networkAccess:
            egress:
              - domain: pypi.org
              - domain: files.pythonhosted.org
        """
    }

    func objects(_ name: String) -> [String] {
        SandboxNetworkObjects.find(
            veth: SandboxNetworks.vethName(name), table: SandboxNetworks.table(name),
            namespaceFile: SandboxNetworks.defaultNamespaceDirectory + "/" + name, sandbox: name)
    }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["SAFESPACE_UPSTREAM_DNS"] = internet.upstreamDNS
        return env
    }

    func arguments(_ name: String, level: String, script: String) throws -> [String] {
        try spec(name, level: level).write(toFile: dir + "/\(name).yaml", atomically: true, encoding: .utf8)
        return [
            "run", "--embedded", "--node-config", dir + "/node.yaml", "-f", dir + "/\(name).yaml", "-e",
            "CA=\(internet.certificatePEM)", "--", "/bin/sh", "-c", script,
        ]
    }

    @Test(
        "pip download/install from pypi.org and files.pythonhosted.org works; denied.test gets NXDOMAIN, its address is dropped; the denials are summed up",
        arguments: ["standard", "high"])
    func pip(level: String) throws {
        if level == "high" { try #require(Harness.find("runsc") != nil, "runsc is not installed") }
        let name = "egress-pip-\(level)-\(getpid() % 100_000)"
        #expect(objects(name).isEmpty)
        let result = try Harness.run(
            Harness.cliBinary,
            try arguments(name, level: level, script: internet.pipScript(certificateFromStdin: false)),
            env: environment, timeout: 300)
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        let out = lines(result.stdout)
        #expect(out.contains("tinypkg-1.0-py3-none-any.whl"), "\(result.stdout)")
        #expect(out.contains("tinypkg 42"), "\(result.stdout)\n\(result.stderr)")
        #expect(out.contains("lookup nxdomain"), "\(result.stdout)")
        #expect(out.contains("tls443 refused") || out.contains("tls443 closed"), "\(result.stdout)")
        #expect(out.contains("tcp8443 dropped"), "\(result.stdout)")
        // Nothing reached denied.test; the index and the wheel were served through the filter.
        #expect(internet.deniedLog.isEmpty, "\(internet.deniedLog)")
        #expect(internet.served.contains("pypi.org /simple/tinypkg/"), "\(internet.served)")
        #expect(internet.served.contains("files.pythonhosted.org /packages/tinypkg-1.0-py3-none-any.whl"))
        // The one-line summary of denied destinations, on exit.
        let summary = lines(result.stderr).filter { $0.hasPrefix("safespace: egress denied: ") }
        #expect(summary.count == 1 && summary[0].contains("denied.test"), "\(result.stderr)")
        #expect(objects(name).isEmpty, "\(objects(name))")
    }

    @Test("kill -9 of safespace run mid-connection: safespace gc leaves nothing of the sandbox's network")
    func killedMidConnection() throws {
        let name = "egress-kill-\(getpid() % 100_000)"
        let before = objects(name)
        #expect(before.isEmpty, "\(before)")
        let run = try ClientProcess(
            Harness.cliBinary,
            try arguments(
                name, level: "standard",
                script: "printf '%s' \"$CA\" > /tmp/ca.pem; exec " + internet.slowCommand(seconds: 120)),
            stdout: dir + "/kill.out", stderr: dir + "/kill.err", env: environment)
        defer { run.kill() }
        let midConnection = Harness.eventually(timeout: 120) {
            ((try? String(contentsOfFile: dir + "/kill.out", encoding: .utf8)) ?? "").contains("started")
        }
        #expect(
            midConnection,
            "\((try? String(contentsOfFile: dir + "/kill.err", encoding: .utf8)) ?? "")")
        #expect(internet.served.contains("pypi.org /slow/120"))
        let during = objects(name)
        // veth, its routes, the table, the namespace file and the lease are all there.
        #expect(during.contains { $0.hasPrefix("veth ") }, "\(during)")
        #expect(during.contains { $0.hasPrefix("route ") }, "\(during)")
        #expect(during.contains { $0.hasPrefix("nftables table ") }, "\(during)")
        #expect(during.contains { $0.hasPrefix("netns file ") }, "\(during)")
        #expect(during.contains { $0.hasPrefix("lease ") }, "\(during)")
        run.kill()
        #expect(run.status == 137)
        let gc = try Harness.run(Harness.cliBinary, ["gc"], timeout: 120)
        #expect(gc.status == 0, "\(gc.stdout)\n\(gc.stderr)")
        let after = objects(name)
        #expect(after.isEmpty, "\(after)\n\(gc.stdout)")
        #expect(Harness.leftovers(id: name, root: "/run/safespace").isEmpty)
    }
}
