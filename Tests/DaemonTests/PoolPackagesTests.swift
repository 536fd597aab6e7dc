/// Preloaded packages of warm pools against the real daemon (root only), offline: a
/// wheelhouse of two tiny pure-Python wheels made by the test (`tinypkg`, which requires
/// `tinydep`), an allowlist and an OSV fixture. Covers the allowlist (a requested package
/// and a dependency), an advisory refused and waived, the filled pool importing the package
/// in its warm interpreter, the layer read-only in the sandbox, the scan (API and CLI, by
/// pool and by file), and a tampered layer caught before a sandbox is made ready (a changed
/// file, then an added one).
import DaemonClient
import Foundation
import Glibc
import TestSupport
import XCTest

final class PoolPackagesTests: XCTestCase {
    var harness: DaemonHarness!
    var fixtures = ""

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    /// Writes `tinypkg` 0.9 and 1.0 (each requiring tinydep==0.1) and `tinydep` 0.1 as wheels
    /// (PEP 427: the modules, METADATA, WHEEL and a RECORD with each file's hash).
    static func makeWheelhouse(_ dir: String) throws {
        let script = #"""
            import base64, hashlib, os, sys, zipfile
            out = sys.argv[1]
            def wheel(name, version, files, requires=()):
                info = "%s-%s.dist-info" % (name, version)
                entries = dict(files)
                entries[info + "/METADATA"] = "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s" % (
                    name, version, "".join("Requires-Dist: %s\n" % r for r in requires))
                entries[info + "/WHEEL"] = "Wheel-Version: 1.0\nGenerator: safespace-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                record = []
                for path, text in entries.items():
                    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
                    record.append("%s,sha256=%s,%d" % (path, digest, len(text.encode())))
                entries[info + "/RECORD"] = "\n".join(record + [info + "/RECORD,,"]) + "\n"
                with zipfile.ZipFile(os.path.join(out, "%s-%s-py3-none-any.whl" % (name, version)), "w") as z:
                    for path, text in entries.items():
                        z.writestr(path, text)
            for version in ("0.9", "1.0"):
                wheel("tinypkg", version, {"tinypkg/__init__.py": "import tinydep\nVALUE = 'tiny %s ' + tinydep.NAME\n" % version},
                      ["tinydep==0.1"])
            wheel("tinydep", "0.1", {"tinydep/__init__.py": "NAME = 'dep'\n"})
            """#
        mkdir(dir, 0o755)
        let made = try Harness.run("/usr/bin/env", ["python3", "-c", script, dir], timeout: 120)
        XCTAssertEqual(made.status, 0, "making the wheels: \(made.stderr)")
    }

    /// One advisory: tinypkg [0, 1.0) (PYSEC-2099-7, alias GHSA-tiny-tiny-tiny).
    static let advisory = """
        {"id": "PYSEC-2099-7", "aliases": ["GHSA-tiny-tiny-tiny"], "summary": "tinypkg before 1.0 is too small",
         "affected": [{"package": {"ecosystem": "PyPI", "name": "tinypkg"},
                       "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}]}]}]}
        """

    func make() throws -> DaemonHarness {
        let id = String(UInt32.random(in: .min ... .max), radix: 16)
        fixtures = "/tmp/ssd-pkg-" + id
        mkdir(fixtures, 0o755)
        addTeardownBlock { [fixtures] in try? FileManager.default.removeItem(atPath: fixtures) }
        try Self.makeWheelhouse(fixtures + "/wheels")
        mkdir(fixtures + "/osv", 0o755)
        try Self.advisory.write(toFile: fixtures + "/osv/PYSEC-2099-7.json", atomically: true, encoding: .utf8)
        let h = try DaemonHarness(
            extraConfig: """
                node:
                  allocatableCPU: "100"
                  allocatableMemory: 100Gi
                packages:
                  allowlist: \(fixtures)/allowlist.txt
                  wheelhouse: \(fixtures)/wheels
                  advisoryDatabase: \(fixtures)/osv
                  layers: \(fixtures)/layers

                """)
        harness = h
        mkdir(h.dir + "/pools", 0o755)
        return h
    }

    func createPool(_ h: DaemonHarness, _ name: String, _ spec: [String: Any]) throws -> DaemonClient.Response {
        var spec = spec
        spec["template"] = ["resources": ["cpu": "100m", "memory": "128Mi", "ephemeralStorage": "64Mi"]]
        return try h.client.request(
            "POST", "/v1/warmpools",
            json: ["apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool", "metadata": ["name": name], "spec": spec])
    }

    func status(_ h: DaemonHarness, _ pool: String) throws -> [String: Any] {
        try h.client.request("GET", "/v1/warmpools/\(pool)").json?["status"] as? [String: Any] ?? [:]
    }

    /// Polls the pool's status (at most 120 s) until `done` holds.
    func waitStatus(
        _ h: DaemonHarness, _ pool: String, _ what: String, file: StaticString = #filePath, line: UInt = #line,
        _ done: ([String: Any]) -> Bool
    ) throws {
        let deadline = Date().addingTimeInterval(120)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try status(h, pool)
            if done(last) { return }
            usleep(50_000)
        }
        XCTFail("pool \(pool): \(what) did not happen: \(last)\n\(h.log)", file: file, line: line)
    }

    func testAllowlistAdvisoriesImportAndTamper() throws {
        let h = try make()
        try h.start()
        let p = h.name("p")

        // No allowlist: no package may be preloaded.
        var response = try createPool(h, p, ["preloadPackages": ["tinypkg==1.0"]])
        XCTAssertEqual(response.status, 400, response.text)
        XCTAssertEqual(response.error?.code, "package_not_allowed")
        XCTAssertEqual(response.error?.field, "spec.preloadPackages")
        XCTAssertTrue(response.text.contains("no package allowlist"), response.text)

        // A requested package outside the allowlist, refused before anything is fetched.
        try "# test\ntinypkg\n".write(toFile: fixtures + "/allowlist.txt", atomically: true, encoding: .utf8)
        response = try createPool(h, p, ["preloadPackages": ["tinypkg==1.0", "other-pkg==1.0"]])
        XCTAssertEqual(response.status, 400, response.text)
        XCTAssertEqual(response.error?.code, "package_not_allowed")
        XCTAssertEqual(response.error?.field, "spec.preloadPackages[1]")
        XCTAssertTrue(response.text.contains("other-pkg"), response.text)
        // A dependency outside it, refused after the download, before the install.
        response = try createPool(h, p, ["preloadPackages": ["tinypkg==1.0"]])
        XCTAssertEqual(response.status, 400, response.text)
        XCTAssertEqual(response.error?.code, "package_not_allowed")
        XCTAssertTrue(response.text.contains("tinydep==0.1 (a dependency"), response.text)

        // A known advisory: refused, naming it; accepted when waived (by an alias here).
        try "tinypkg\nTinyDep\n".write(toFile: fixtures + "/allowlist.txt", atomically: true, encoding: .utf8)
        response = try createPool(h, p, ["preloadPackages": ["tinypkg==0.9"]])
        XCTAssertEqual(response.status, 400, response.text)
        XCTAssertEqual(response.error?.code, "advisory")
        XCTAssertTrue(response.text.contains("PYSEC-2099-7"), response.text)
        let audit = h.auditRecords().filter { $0["type"] as? String == "pool.layer_built" }
        XCTAssertEqual(audit.map { $0["outcome"] as? String }, ["denied", "denied", "denied", "denied"], "\(audit)")
        XCTAssertEqual(
            (try FileManager.default.contentsOfDirectory(atPath: fixtures + "/layers")), [],
            "a refused build leaves nothing")
        // A layers directory the sandboxes' (mapped) root cannot reach: refused at once, naming
        // packages.layers, instead of every refill failing its bind with EACCES.
        chmod(fixtures, 0o700)
        response = try createPool(
            h, h.name("x"),
            ["minSize": 0, "preloadPackages": ["tinypkg==0.9"], "waiveAdvisories": ["GHSA-tiny-tiny-tiny"]])
        chmod(fixtures, 0o755)
        XCTAssertEqual(response.status, 400, response.text)
        XCTAssertTrue(
            response.text.contains("packages.layers") && response.text.contains("not searchable"), response.text)
        let waived = h.name("w")
        response = try createPool(
            h, waived, ["minSize": 0, "preloadPackages": ["tinypkg==0.9"], "waiveAdvisories": ["GHSA-tiny-tiny-tiny"]])
        XCTAssertEqual(response.status, 201, response.text)
        let scan = try h.client.request("GET", "/v1/warmpools/\(waived)/scan")
        XCTAssertEqual(scan.status, 200, scan.text)
        XCTAssertEqual(scan.json?["unwaived"] as? Int, 0)
        XCTAssertEqual((scan.json?["findings"] as? [[String: Any]])?.map { $0["id"] as? String }, ["PYSEC-2099-7"])
        XCTAssertEqual((scan.json?["findings"] as? [[String: Any]])?.first?["waived"] as? Bool, true)
        let scanned = try h.safespace(["pool", "scan", waived])
        let (scanStatus, scanOut) = (scanned.status, scanned.stdout + scanned.stderr)
        XCTAssertEqual(scanStatus, 0, scanOut)
        XCTAssertTrue(scanOut.contains("tinypkg==0.9  PYSEC-2099-7") && scanOut.contains("[waived]"), scanOut)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(waived)").status, 200)

        // `safespace pool scan --file`: the same pool without the waiver has a finding: exit 1.
        let file = fixtures + "/pool.yaml"
        try """
        apiVersion: llmsafespace.dev/v1
        kind: WarmPool
        metadata: {name: scanned}
        spec:
          preloadPackages: ["tinypkg==0.9"]
          template: {}
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try h.safespace(["pool", "scan", "--file", file, "--advisory-database", fixtures + "/osv"])
        let (exitStatus, out) = (fromFile.status, fromFile.stdout + fromFile.stderr)
        XCTAssertEqual(exitStatus, 1, out)
        XCTAssertTrue(out.contains("tinypkg==0.9  PYSEC-2099-7"), out)

        // A good pool fills; the warm interpreter has tinypkg imported already.
        response = try createPool(h, p, ["minSize": 1, "maxSize": 3, "preloadPackages": ["tinypkg==1.0"]])
        XCTAssertEqual(response.status, 201, response.text)
        let packages = (response.json?["status"] as? [String: Any])?["packages"] as? [String: Any] ?? [:]
        XCTAssertEqual(packages["packages"] as? [String], ["tinydep==0.1", "tinypkg==1.0"])
        XCTAssertEqual(packages["modules"] as? [String], ["tinypkg"])
        let layer = try XCTUnwrap(packages["layer"] as? String)
        let lock = try String(contentsOfFile: layer + "/requirements.lock", encoding: .utf8)
        XCTAssertTrue(lock.contains("tinypkg==1.0 --hash=sha256:"), lock)
        XCTAssertTrue(lock.contains("tinydep==0.1 --hash=sha256:"), lock)
        try waitStatus(h, p, "fill") { $0["ready"] as? Int == 1 }

        // Tampering with the layer on the node: the sandbox made next (the refill after this
        // claim) is not made ready. The ready one was verified when it was made.
        let file1 = layer + "/site-packages/tinypkg/__init__.py"
        let original = try String(contentsOfFile: file1, encoding: .utf8)
        try (original + "import os\n").write(toFile: file1, atomically: false, encoding: .utf8)
        let first = try claimAndImport(h, p)
        try waitStatus(h, p, "a changed file caught") {
            ($0["lastError"] as? String)?.contains("/tinypkg/__init__.py changed") == true
        }
        XCTAssertEqual(try status(h, p)["ready"] as? Int, 0)
        // A claim of the empty pool falls back to a cold create, which checks the layer too:
        // refused, and its sandbox is gone (counted with the rest at the end).
        let cold = try h.client.request("POST", "/v1/sandboxes?pool=\(p)")
        XCTAssertEqual(cold.status, 500, cold.text)
        XCTAssertEqual(cold.error?.code, "layer_tampered", cold.text)
        var verified = h.auditRecords().filter { $0["type"] as? String == "pool.layer_verified" }
        XCTAssertEqual(verified.first?["outcome"] as? String, "denied", "\(verified)")
        XCTAssertTrue("\(verified.first ?? [:])".contains("tinypkg/__init__.py"), "\(verified)")
        // Put back (same bytes, same mode): the pool fills again.
        try original.write(toFile: file1, atomically: false, encoding: .utf8)
        try waitStatus(h, p, "refill after repair") { $0["ready"] as? Int == 1 }
        // An added file (json.py: PYTHONPATH comes before the standard library, so it would
        // shadow the stdlib's json): caught.
        try "print('shadowed')\n".write(toFile: layer + "/site-packages/json.py", atomically: false, encoding: .utf8)
        let second = try claimAndImport(h, p)
        try waitStatus(h, p, "an added file caught") {
            ($0["lastError"] as? String)?.contains("/json.py was added") == true
        }
        verified = h.auditRecords().filter { $0["type"] as? String == "pool.layer_verified" }
        XCTAssertGreaterThanOrEqual(verified.count, 2)

        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        // The same pool again reuses the built layer, which is checked first: refused.
        response = try createPool(h, p, ["minSize": 0, "preloadPackages": ["tinypkg==1.0"]])
        XCTAssertEqual(response.status, 400, response.text)
        XCTAssertEqual(response.error?.code, "layer_tampered", response.text)
        XCTAssertTrue(response.text.contains("/json.py was added"), response.text)
        // Removed by the operator: built anew, accepted.
        try FileManager.default.removeItem(atPath: layer)
        response = try createPool(h, p, ["minSize": 0, "preloadPackages": ["tinypkg==1.0"]])
        XCTAssertEqual(response.status, 201, response.text)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        for name in [first, second] { XCTAssertEqual(try h.delete(name).status, 200) }
        XCTAssertEqual(h.stop(), 0)
        var left = h.leftovers()
        for _ in 0..<20 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:], "leaked")
    }

    /// Claims a sandbox of `pool` and checks the package: preloaded in the warm interpreter,
    /// importable by a command, and read-only. Returns its name.
    func claimAndImport(_ h: DaemonHarness, _ pool: String) throws -> String {
        let claimed = try h.client.request("POST", "/v1/sandboxes?pool=\(pool)")
        XCTAssertEqual(claimed.status, 201, claimed.text)
        XCTAssertEqual((claimed.json?["status"] as? [String: Any])?["warm"] as? Bool, true)
        let name = try XCTUnwrap((claimed.json?["metadata"] as? [String: Any])?["name"] as? String)
        let code = """
            import sys
            print('tinypkg' in sys.modules)
            import tinypkg
            print(tinypkg.VALUE)
            try:
                open(tinypkg.__file__, 'a')
            except OSError:
                print('read-only')
            """
        let warm = try h.client.request(
            "POST", "/v1/sandboxes/\(name)/exec", json: ["code": code, "language": "python"])
        XCTAssertEqual(warm.status, 200, warm.text)
        XCTAssertEqual(warm.json?["stdout"] as? String, "True\ntiny 1.0 dep\nread-only\n", warm.text)
        let command = try h.exec(name, ["python3", "-c", "import tinypkg; print(tinypkg.__file__)"])
        XCTAssertEqual(
            command.json?["stdout"] as? String, "/dev/.safespace-packages/tinypkg/__init__.py\n", command.text)
        return name
    }

}
