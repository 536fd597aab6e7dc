/// Warm pools against the real daemon (root only): filling, claims (warm, cold fallback, 503),
/// concurrent claims, claim/release cycles, max age, restart, shutdown, bad pools. Each test
/// ends by counting what its sandboxes left.
import DaemonClient
import Foundation
import Glibc
import XCTest

final class WarmPoolTests: XCTestCase {
    var harness: DaemonHarness!

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    static var small: [String: Any] { ["cpu": "100m", "memory": "128Mi", "ephemeralStorage": "64Mi"] }

    /// A harness (not started) whose pools directory holds `files` (name -> YAML).
    func make(_ extra: String = "", files: [String: String] = [:], cpu: String = "100") throws -> DaemonHarness {
        let h = try DaemonHarness(
            extraConfig: "node:\n  allocatableCPU: \"\(cpu)\"\n  allocatableMemory: 100Gi\n" + extra)
        harness = h
        mkdir(h.dir + "/pools", 0o755)
        for (name, text) in files {
            try text.write(toFile: h.dir + "/pools/" + name, atomically: true, encoding: .utf8)
        }
        return h
    }

    static func poolYAML(_ name: String, _ spec: String) -> String {
        """
        apiVersion: llmsafespace.dev/v1
        kind: WarmPool
        metadata:
          name: \(name)
        spec:
        \(spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
          template:
            resources: {cpu: 100m, memory: 128Mi, ephemeralStorage: 64Mi}
        """
    }

    func createPool(_ h: DaemonHarness, _ name: String, _ spec: [String: Any]) throws -> DaemonClient.Response {
        var spec = spec
        if spec["template"] == nil { spec["template"] = ["resources": Self.small] }
        return try h.client.request(
            "POST", "/v1/warmpools",
            json: ["apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool", "metadata": ["name": name], "spec": spec])
    }

    func status(_ h: DaemonHarness, _ pool: String) throws -> [String: Any] {
        let response = try h.client.request("GET", "/v1/warmpools/\(pool)")
        XCTAssertEqual(response.status, 200, response.text)
        return response.json?["status"] as? [String: Any] ?? [:]
    }

    /// Waits (at most 120 s) until `pool` has `count` ready sandboxes.
    func waitReady(_ h: DaemonHarness, _ pool: String, _ count: Int, file: StaticString = #filePath, line: UInt = #line)
        throws
    {
        let deadline = Date().addingTimeInterval(120)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try status(h, pool)
            if last["ready"] as? Int ?? 0 >= count { return }
            usleep(50_000)
        }
        XCTFail("pool \(pool) did not reach \(count) ready: \(last)\n\(h.log)", file: file, line: line)
    }

    func claim(_ h: DaemonHarness, _ pool: String, body: Any? = nil) throws -> DaemonClient.Response {
        if let body { return try h.client.request("POST", "/v1/sandboxes?pool=\(pool)", json: body) }
        return try h.client.request("POST", "/v1/sandboxes?pool=\(pool)")
    }

    func assertNothingLeft(_ h: DaemonHarness, file: StaticString = #filePath, line: UInt = #line) {
        var left = h.leftovers()
        for _ in 0..<20 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:], "leaked; the daemon's log:\n\(left.isEmpty ? "" : h.log)", file: file, line: line)
    }

    static func name(_ response: DaemonClient.Response) -> String? {
        (response.json?["metadata"] as? [String: Any])?["name"] as? String
    }
    static func statusOf(_ response: DaemonClient.Response) -> [String: Any] {
        response.json?["status"] as? [String: Any] ?? [:]
    }

    // MARK: fill, claim, fall back, refuse

    func testPoolFillsClaimsWarmFallsBackColdOrRefuses() throws {
        let h = try make()
        let a = h.name("a")
        let b = h.name("b")
        try String(Self.poolYAML(a, "minSize: 2\nmaxSize: 3\nwhenEmpty: create")).write(
            toFile: h.dir + "/pools/a.yaml", atomically: true, encoding: .utf8)
        try h.start()
        XCTAssertEqual(try createPool(h, b, ["minSize": 1, "maxSize": 1, "whenEmpty": "refuse"]).status, 201)
        try waitReady(h, a, 2)
        try waitReady(h, b, 1)
        // Ready sandboxes are nobody's: not listed, even to root.
        XCTAssertEqual((try h.client.request("GET", "/v1/sandboxes").json?["items"] as? [Any])?.count, 0)
        let listed = try h.client.request("GET", "/v1/warmpools").json?["items"] as? [[String: Any]] ?? []
        XCTAssertEqual(listed.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }, [a, b])
        XCTAssertEqual(
            (listed.first?["status"] as? [String: Any])?["source"] as? String, "file:\(h.dir)/pools/a.yaml")

        // A warm claim: one round trip, warm, the caller's, it runs.
        let warm = try claim(h, a)
        XCTAssertEqual(warm.status, 201, warm.text)
        let warmName = try XCTUnwrap(Self.name(warm))
        XCTAssertTrue(warmName.hasPrefix(a + "-"))
        XCTAssertEqual(Self.statusOf(warm)["warm"] as? Bool, true)
        XCTAssertEqual(Self.statusOf(warm)["pool"] as? String, a)
        XCTAssertEqual(Self.statusOf(warm)["claim"] as? [String: String], ["pool": a, "outcome": "warm"])
        XCTAssertEqual(try h.exec(warmName, ["echo", "warm"]).json?["stdout"] as? String, "warm\n")
        XCTAssertEqual(
            (try h.client.request("GET", "/v1/sandboxes/\(warmName)").json?["status"] as? [String: Any])?["warm"]
                as? Bool, true)
        let claimed = h.auditRecords().first {
            $0["type"] as? String == "pool.claimed" && $0["sandbox"] as? String == warmName
        }
        XCTAssertEqual(claimed?["pool"] as? String, a)
        XCTAssertEqual(claimed?["warm"] as? Bool, true)

        // A claim with a lifetime and the template's spec is honoured; one that asks for
        // another spec or a name is refused naming the field.
        let timed = try claim(h, a, body: ["spec": ["timeoutSeconds": 600, "resources": Self.small]])
        XCTAssertEqual(timed.status, 201, timed.text)
        XCTAssertEqual((timed.json?["spec"] as? [String: Any])?["timeoutSeconds"] as? Int, 600)
        let otherSpec = try claim(h, a, body: ["spec": ["resources": ["cpu": "200m", "memory": "128Mi"]]])
        XCTAssertEqual(otherSpec.status, 400, otherSpec.text)
        XCTAssertEqual(otherSpec.error?.field, "spec")
        let named = try claim(h, a, body: ["metadata": ["name": h.name("mine")]])
        XCTAssertEqual(named.status, 400, named.text)
        XCTAssertEqual(named.error?.field, "metadata")
        let missing = try claim(h, h.name("nope"))
        XCTAssertEqual(missing.status, 404, missing.text)
        XCTAssertEqual(missing.error?.code, "pool_not_found")
        XCTAssertEqual(missing.error?.field, "pool")

        // Pool a (maxSize 3, whenEmpty create): two claimed, at most one more ready; the
        // claims past it are cold creates, said in the answer.
        var names = [warmName, try XCTUnwrap(Self.name(timed))]
        var outcomes: [String] = []
        for _ in 0..<3 {
            let response = try claim(h, a)
            XCTAssertEqual(response.status, 201, response.text)
            names.append(try XCTUnwrap(Self.name(response)))
            let claim = Self.statusOf(response)["claim"] as? [String: String]
            outcomes.append(claim?["outcome"] ?? "?")
            XCTAssertEqual(Self.statusOf(response)["warm"] as? Bool, claim?["outcome"] == "warm")
        }
        XCTAssertGreaterThanOrEqual(outcomes.filter { $0 == "cold" }.count, 2, "\(outcomes)")
        XCTAssertEqual(Set(names).count, names.count)
        let aStatus = try status(h, a)
        XCTAssertLessThanOrEqual((aStatus["ready"] as? Int ?? 0) + (aStatus["claimed"] as? Int ?? 0), 3, "\(aStatus)")
        XCTAssertGreaterThanOrEqual(aStatus["misses"] as? Int ?? 0, 2)

        // Pool b (maxSize 1, whenEmpty refuse): one claim, then 503 until it is given back.
        let bWarm = try claim(h, b)
        XCTAssertEqual(Self.statusOf(bWarm)["warm"] as? Bool, true, bWarm.text)
        let refused = try claim(h, b)
        XCTAssertEqual(refused.status, 503, refused.text)
        XCTAssertEqual(refused.error?.code, "pool_empty")
        XCTAssertEqual(refused.error?.field, "pool")
        XCTAssertEqual(try status(h, b)["refusals"] as? Int, 1)
        XCTAssertTrue(
            h.auditRecords().contains {
                $0["type"] as? String == "pool.claimed" && $0["pool"] as? String == b
                    && $0["outcome"] as? String == "error"
            }, h.log)
        XCTAssertEqual(try h.delete(try XCTUnwrap(Self.name(bWarm))).status, 200)
        try waitReady(h, b, 1)

        // A plain create whose spec is a pool's template (no name) is served by the pool.
        for name in names { XCTAssertEqual(try h.delete(name).status, 200, name) }
        try waitReady(h, a, 2)
        let matched = try h.client.request("POST", "/v1/sandboxes", json: ["spec": ["resources": Self.small]])
        XCTAssertEqual(matched.status, 201, matched.text)
        XCTAssertEqual(Self.statusOf(matched)["claim"] as? [String: String], ["pool": a, "outcome": "warm"])
        XCTAssertEqual(try h.delete(try XCTUnwrap(Self.name(matched))).status, 200)

        // Metrics.
        let metrics = try h.client.request("GET", "/metrics").text
        for needle in [
            "safespaced_pool_ready{pool=\"\(a)\"}", "safespaced_pool_claimed{pool=\"\(b)\"}",
            "safespaced_pool_claim_duration_seconds_bucket", "safespaced_pool_refill_duration_seconds",
            "safespaced_pool_claims_total{pool=\"\(b)\",outcome=\"refused\"} 1",
        ] {
            XCTAssertTrue(metrics.contains(needle), "no \(needle) in /metrics:\n\(metrics)")
        }

        // Removing a pool destroys its ready sandboxes.
        for pool in [a, b] { XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(pool)").status, 200) }
        XCTAssertEqual(try h.client.request("GET", "/v1/warmpools/\(a)").error?.code, "pool_not_found")
        // Once the answers are given, nothing of the pools is left (a refill in flight included).
        XCTAssertEqual(h.leftovers(), [:])
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    // MARK: who may

    /// One request as another user (setpriv, a python client): (status, raw answer).
    static func call(
        _ h: DaemonHarness, uid: Int, gid: UInt32, _ method: String, _ path: String, _ body: String = ""
    ) throws -> (Int, String) {
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
            body = sys.argv[4].encode()
            s.sendall(("%s %s HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n" % (sys.argv[2], sys.argv[3], len(body))).encode() + body)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
            sys.stdout.write(data.decode())
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = [
            "--reuid=\(uid)", "--regid=\(gid)", "--groups=\(gid)", "/usr/bin/python3", "-c", script, h.socket, method,
            path, body,
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        return (Int(text.split(separator: " ").dropFirst().first ?? "") ?? -1, text)
    }

    /// Only root makes or removes pools; a member of the group lists and claims, and the
    /// claimed sandbox is then its own (others: 403). A ready sandbox is nobody's: even root
    /// cannot exec into it, read it or delete it through the API before it is claimed.
    func testClaimMakesTheCallerTheOwnerAndOnlyRootManagesPools() throws {
        try XCTSkipUnless(
            access("/usr/bin/setpriv", X_OK) == 0 && access("/usr/bin/python3", X_OK) == 0, "needs setpriv and python3")
        let h = try make()
        try h.start()
        guard let group = getgrnam("safespace") else { return XCTFail("no safespace group") }
        let gid = group.pointee.gr_gid
        let p = h.name("own")
        let body =
            #"{"apiVersion":"llmsafespace.dev/v1","kind":"WarmPool","metadata":{"name":"\#(p)"},"spec":{"minSize":2,"template":{"resources":{"cpu":"100m","memory":"128Mi"}}}}"#
        let refused = try Self.call(h, uid: 65534, gid: gid, "POST", "/v1/warmpools", body)
        XCTAssertEqual(refused.0, 403, refused.1)
        XCTAssertEqual(try h.client.request("POST", "/v1/warmpools", body: Array(body.utf8)).status, 201)
        try waitReady(h, p, 2)
        XCTAssertEqual(try Self.call(h, uid: 65534, gid: gid, "DELETE", "/v1/warmpools/\(p)").0, 403)
        let listed = try Self.call(h, uid: 65534, gid: gid, "GET", "/v1/warmpools")
        XCTAssertEqual(listed.0, 200, listed.1)
        XCTAssertTrue(listed.1.contains(p), listed.1)

        // The ready sandboxes, by the runtime's state: hidden from every caller.
        let ready = try FileManager.default.contentsOfDirectory(atPath: h.runtimeRoot).filter { $0.hasPrefix(p + "-") }
        XCTAssertEqual(ready.count, 2, "\(ready)")
        for name in ready {
            XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(name)").status, 404)
            XCTAssertEqual(try h.exec(name, ["id"]).status, 404)
            XCTAssertEqual(try h.delete(name).status, 404)
            XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(name)/files/tmp/x").status, 404)
        }

        let claimed = try Self.call(h, uid: 65534, gid: gid, "POST", "/v1/sandboxes?pool=\(p)")
        XCTAssertEqual(claimed.0, 201, claimed.1)
        let name = try XCTUnwrap(ready.first { claimed.1.contains($0) }, claimed.1)
        XCTAssertTrue(claimed.1.contains(#""creatorUID":65534"#), claimed.1)
        XCTAssertTrue(claimed.1.contains(#""warm":true"#), claimed.1)
        let mine = try Self.call(h, uid: 65534, gid: gid, "GET", "/v1/sandboxes")
        XCTAssertTrue(mine.1.contains(name), mine.1)
        let other = try Self.call(h, uid: 65533, gid: gid, "POST", "/v1/sandboxes/\(name)/exec", #"{"command":["id"]}"#)
        XCTAssertEqual(other.0, 403, other.1)
        let record = h.auditRecords().first {
            $0["type"] as? String == "pool.claimed" && $0["sandbox"] as? String == name
        }
        XCTAssertEqual((record?["caller"] as? [String: Any])?["uid"] as? Int, 65534, "\(String(describing: record))")
        let own = try Self.call(h, uid: 65534, gid: gid, "DELETE", "/v1/sandboxes/\(name)")
        XCTAssertEqual(own.0, 200, own.1)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    // MARK: the CLI

    /// `safespace pool create -f`, `ls` (table and `--format json`), `rm`, over the daemon.
    func testPoolVerbsOfTheCLI() throws {
        let cli = URL(fileURLWithPath: DaemonHarness.binary).deletingLastPathComponent().path + "/safespace"
        try XCTSkipUnless(access(cli, X_OK) == 0, "build safespace first")
        let h = try make()
        try h.start()
        func safespace(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: cli)
            process.arguments = args
            process.environment = ["SAFESPACE_SOCKET": h.socket, "PATH": "/usr/bin:/bin"]
            let out = Pipe()
            let err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            let o = out.fileHandleForReading.readDataToEndOfFile()
            let e = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
        let p = h.name("cli")
        let file = h.dir + "/cli-pool.yaml"
        try Self.poolYAML(p, "minSize: 1\nmaxSize: 2").write(toFile: file, atomically: true, encoding: .utf8)
        let created = try safespace(["pool", "create", "-f", file])
        XCTAssertEqual(created.status, 0, created.err)
        XCTAssertTrue(created.out.hasPrefix("NAME"), created.out)
        XCTAssertTrue(created.out.contains(p), created.out)
        let again = try safespace(["pool", "create", "-f", file])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.err.contains("metadata.name"), again.err)
        try waitReady(h, p, 1)
        let table = try safespace(["pool", "ls"])
        XCTAssertEqual(table.status, 0, table.err)
        let row = try XCTUnwrap(table.out.split(separator: "\n").first { $0.hasPrefix(p) }, table.out)
        XCTAssertEqual(row.split(separator: " ", omittingEmptySubsequences: true)[1], "1", table.out)
        let json = try safespace(["pool", "ls", "--format", "json"])
        let items =
            (try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any])?["items"]
            as? [[String: Any]]
        XCTAssertEqual((items?.first?["status"] as? [String: Any])?["ready"] as? Int, 1, json.out)
        XCTAssertEqual(try safespace(["pool", "rm", p]).status, 0)
        let gone = try safespace(["pool", "rm", p])
        XCTAssertNotEqual(gone.status, 0)
        XCTAssertTrue(gone.err.contains("no warm pool"), gone.err)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    // MARK: bad pools

    func testBadPoolsAreRefusedNamingTheField() throws {
        let h = try make()
        try h.start()
        let p = h.name("p")
        let cases: [([String: Any], Int, String, String)] = [
            (["minSize": 5, "maxSize": 2], 400, "invalid_value", "spec.minSize"),
            (["maxAgeSeconds": 0], 400, "invalid_value", "spec.maxAgeSeconds"),
            (["whenEmpty": "wait"], 400, "invalid_value", "spec.whenEmpty"),
            (["preloadPackages": ["numpy>=2.1"]], 400, "invalid_value", "spec.preloadPackages[0]"),
            // Recycling is verified from the host: native levels only.
            (["recycle": true, "template": ["securityLevel": "high"]], 400, "not_enforceable", "spec.recycle"),
            (["minsize": 1], 400, "unknown_field", "spec.minsize"),
            (["template": ["resources": ["cpu": "lots"]]], 400, "", "spec.template.resources.cpu"),
            (["template": ["runtim": "python:3.11"]], 400, "unknown_field", "spec.template.runtim"),
            (["template": ["securityLevel": "high"]], 400, "not_enforceable", "spec.template.securityLevel"),
        ]
        for (spec, status, code, field) in cases {
            let response = try createPool(h, p, spec)
            XCTAssertEqual(response.status, status, "\(spec): \(response.text)")
            if !code.isEmpty { XCTAssertEqual(response.error?.code, code, "\(spec): \(response.text)") }
            XCTAssertEqual(response.error?.field, field, "\(spec): \(response.text)")
        }
        XCTAssertEqual(try createPool(h, p, ["minSize": 0]).status, 201)
        let twice = try createPool(h, p, ["minSize": 0])
        XCTAssertEqual(twice.status, 409, twice.text)
        XCTAssertEqual(twice.error?.field, "metadata.name")
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 404)
        XCTAssertEqual(h.stop(), 0)

        // A bad file in the pools directory stops the start, naming the file and the field.
        try Self.poolYAML(p, "minSize: 1\nmaxAgeSeconds: -5").write(
            toFile: h.dir + "/pools/bad.yaml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try h.start()) { error in
            XCTAssertTrue("\(error)".contains("bad.yaml"), "\(error)")
            XCTAssertTrue("\(error)".contains("spec.maxAgeSeconds"), "\(error)")
        }
        assertNothingLeft(h)
    }

    // MARK: concurrency, cycles

    /// 8 concurrent claims of a pool of 4 (which cannot refill while 4 are claimed): 4 get
    /// distinct sandboxes, 4 get 503.
    func testConcurrentClaimsNeverHandOutOneSandboxTwice() throws {
        let h = try make()
        try h.start()
        let p = h.name("c")
        XCTAssertEqual(try createPool(h, p, ["minSize": 4, "maxSize": 4, "whenEmpty": "refuse"]).status, 201)
        try waitReady(h, p, 4)
        let results = Locked<[DaemonClient.Response]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            let client = DaemonClient(socketPath: h.socket, timeout: 120)
            if let response = try? client.request("POST", "/v1/sandboxes?pool=\(p)") {
                results.mutate { $0.append(response) }
            }
        }
        let all = results.value
        XCTAssertEqual(all.count, 8)
        let won = all.filter { $0.status == 201 }
        XCTAssertEqual(won.count, 4, all.map(\.text).joined(separator: "\n"))
        XCTAssertEqual(Set(won.compactMap(Self.name)).count, 4)
        XCTAssertTrue(won.allSatisfy { Self.statusOf($0)["warm"] as? Bool == true })
        XCTAssertEqual(all.filter { $0.error?.code == "pool_empty" }.count, 4)
        for name in won.compactMap(Self.name) { XCTAssertEqual(try h.delete(name).status, 200) }
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    /// Claim, exec, delete, many times (the soak of 500 is `scripts/bench-daemon.py soak`): every claim
    /// is served, the pool refills, nothing leaks and the daemon leaves no zombie.
    func testClaimReleaseCyclesLeakNothing() throws {
        let cycles = Int(ProcessInfo.processInfo.environment["SAFESPACE_POOL_CYCLES"] ?? "") ?? 25
        let h = try make("pools:\n  directory: /nonexistent-pools\n  refillPerSecond: 20\n")
        try h.start()
        let p = h.name("cy")
        XCTAssertEqual(try createPool(h, p, ["minSize": 2, "maxSize": 3, "whenEmpty": "create"]).status, 201)
        var warm = 0
        for i in 0..<cycles {
            if i % 5 == 0 { try waitReady(h, p, 1) }
            let response = try claim(h, p)
            XCTAssertEqual(response.status, 201, response.text)
            let name = try XCTUnwrap(Self.name(response))
            if Self.statusOf(response)["warm"] as? Bool == true { warm += 1 }
            XCTAssertEqual(try h.exec(name, ["echo", "\(i)"]).json?["stdout"] as? String, "\(i)\n")
            XCTAssertEqual(try h.delete(name).status, 200)
        }
        XCTAssertGreaterThanOrEqual(warm, cycles / 5)
        let status = try status(h, p)
        XCTAssertEqual(status["hits"] as? Int, warm)
        XCTAssertEqual(status["claimed"] as? Int, 0)
        XCTAssertEqual(h.zombieChildren(), [])
        print("pool cycles: \(cycles), warm \(warm), status \(status)")
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    /// Refills go through the node's admission: a pool larger than the node's allocatable
    /// CPU fills as far as it fits, says why it stops (status.lastError, refillFailures), and
    /// backs off; what it holds is released once it is removed.
    func testRefillsStayWithinTheNodesAdmission() throws {
        let h = try make(cpu: "250m")
        try h.start()
        let p = h.name("adm")
        XCTAssertEqual(try createPool(h, p, ["minSize": 4, "maxSize": 4]).status, 201)
        try waitReady(h, p, 2)
        var status: [String: Any] = [:]
        for _ in 0..<200 {
            status = try self.status(h, p)
            if status["refillFailures"] as? Int ?? 0 >= 1 { break }
            usleep(50_000)
        }
        XCTAssertEqual(status["ready"] as? Int, 2, "\(status)")
        XCTAssertGreaterThanOrEqual(status["refillFailures"] as? Int ?? 0, 1, "\(status)")
        XCTAssertTrue((status["lastError"] as? String)?.contains("allocatable") == true, "\(status)")
        // The node's own creates are refused as usual while the pool holds its share.
        let refused = try h.client.request(
            "POST", "/v1/sandboxes", json: ["metadata": ["name": h.name("x")], "spec": ["resources": ["cpu": "100m"]]])
        XCTAssertEqual(refused.status, 429, refused.text)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        XCTAssertEqual(h.leftovers(), [:])
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    /// A pool removed while a refill is making a sandbox: the answer comes once that sandbox
    /// is gone too, so nothing of the pool is left when the caller has it.
    func testRemovingAPoolDuringARefillLeavesNothing() throws {
        let h = try make()
        try h.start()
        for round in 0..<3 {
            let p = h.name("rm\(round)")
            XCTAssertEqual(try createPool(h, p, ["minSize": 3, "maxSize": 3]).status, 201)
            var creating = false
            for _ in 0..<2000 where !creating {
                creating = try status(h, p)["creating"] as? Int == 1
                if !creating { usleep(2_000) }
            }
            XCTAssertTrue(creating, "no refill in flight")
            XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
            XCTAssertEqual(h.leftovers(), [:], "round \(round)")
        }
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    // MARK: age, restart, shutdown

    func testReadySandboxesOlderThanMaxAgeAreReplaced() throws {
        let h = try make()
        try h.start()
        let p = h.name("age")
        XCTAssertEqual(try createPool(h, p, ["minSize": 1, "maxSize": 1, "maxAgeSeconds": 1]).status, 201)
        var replaced = false
        for _ in 0..<600 where !replaced {
            usleep(50_000)
            replaced = h.auditRecords().contains {
                $0["type"] as? String == "sandbox.deleted" && $0["reason"] as? String == "pool max age"
            }
        }
        XCTAssertTrue(replaced, h.log)
        try waitReady(h, p, 1)
        XCTAssertGreaterThanOrEqual(try status(h, p)["refills"] as? Int ?? 0, 2)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    /// kill -9 with ready and claimed sandboxes: the restart destroys the ready ones, keeps
    /// the claimed one (its owner's, counted as claimed), refills; a graceful stop then
    /// destroys the ready ones, and once the claimed one is deleted nothing is left.
    func testRestartDestroysReadySandboxesAndKeepsClaimedOnes() throws {
        let h = try make()
        let pool = h.name("rs")
        try Self.poolYAML(pool, "minSize: 2\nmaxSize: 3").write(
            toFile: h.dir + "/pools/p.yaml", atomically: true, encoding: .utf8)
        try h.start()
        try waitReady(h, pool, 2)
        let claimed = try claim(h, pool)
        let claimedName = try XCTUnwrap(Self.name(claimed))
        try waitReady(h, pool, 2)
        h.kill9()
        try h.start()
        let restarted = h.auditRecords().filter {
            $0["type"] as? String == "sandbox.deleted" && $0["reason"] as? String == "pool: daemon restart"
        }
        XCTAssertEqual(restarted.count, 2, h.log)
        XCTAssertEqual(try h.exec(claimedName, ["echo", "kept"]).json?["stdout"] as? String, "kept\n")
        XCTAssertEqual(try status(h, pool)["claimed"] as? Int, 1)
        try waitReady(h, pool, 2)
        XCTAssertEqual(h.stop(), 0)
        let shutdown = h.auditRecords().filter {
            $0["type"] as? String == "sandbox.deleted" && $0["reason"] as? String == "daemon shutdown"
        }
        XCTAssertEqual(shutdown.count, 2, h.log)
        try h.start()
        XCTAssertEqual(try h.delete(claimedName).status, 200)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(pool)").status, 200)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }

    // MARK: CPU priority of refills

    /// Policy (field 41 of stat(5): 0 SCHED_OTHER, 5 SCHED_IDLE) of every thread of every
    /// process whose cgroup path has `cgroupPart`, by "pid/tid".
    static func threadPolicies(cgroup cgroupPart: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
            guard let cgroup = try? String(contentsOfFile: "/proc/\(entry)/cgroup", encoding: .utf8),
                cgroup.contains(cgroupPart)
            else { continue }
            out.merge(threadPolicies(pid: entry)) { a, _ in a }
        }
        return out
    }

    static func threadPolicies(pid: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 38,
                let policy = Int(fields[38])
            else { continue }
            out[pid + "/" + tid] = policy
        }
        return out
    }

    /// A refill makes its sandbox under SCHED_IDLE (sched(7)): every thread of a ready
    /// sandbox (agent, warm interpreter, its spare child) is SCHED_IDLE, and no thread of the
    /// daemon is once the refill is done (the sandbox's seccomp agent thread included). A
    /// claim moves the sandbox's threads to SCHED_OTHER before it answers: the claimant's
    /// code and commands run under the default policy; the next ready sandbox is idle again.
    func testRefillsRunUnderSchedIdleAndAClaimEndsIt() throws {
        let h = try make()
        try h.start()
        let p = h.name("idle")
        XCTAssertEqual(try createPool(h, p, ["minSize": 1, "maxSize": 2]).status, 201)
        func settled() throws {
            try waitReady(h, p, 1)
            for _ in 0..<200 where try status(h, p)["creating"] as? Int != 0 { usleep(50_000) }
        }
        try settled()
        let ready = Self.threadPolicies(cgroup: "/safespace/\(p)-")
        XCTAssertGreaterThanOrEqual(Set(ready.keys.map { $0.split(separator: "/")[0] }).count, 2, "\(ready)")
        XCTAssertEqual(Set(ready.values), [5], "a ready sandbox's threads: \(ready)")
        let daemon = Self.threadPolicies(pid: "\(h.pid)")
        XCTAssertFalse(daemon.isEmpty)
        XCTAssertEqual(daemon.filter { $0.value != 0 }, [:], "the daemon's threads after the refill")

        let claimed = try claim(h, p)
        XCTAssertEqual(claimed.status, 201, claimed.text)
        let name = try XCTUnwrap(Self.name(claimed))
        let mine = Self.threadPolicies(cgroup: "/safespace/\(name)")
        XCTAssertFalse(mine.isEmpty)
        XCTAssertEqual(mine.filter { $0.value != 0 }, [:], "the claimed sandbox's threads")
        let code = try h.client.request(
            "POST", "/v1/sandboxes/\(name)/exec",
            json: ["code": "import os; print(os.sched_getscheduler(0))", "language": "python"])
        XCTAssertEqual(code.json?["stdout"] as? String, "0\n", code.text)
        let command = try h.exec(name, ["python3", "-c", "import os; print(os.sched_getscheduler(0))"])
        XCTAssertEqual(command.json?["stdout"] as? String, "0\n", command.text)

        try settled()
        let next = Self.threadPolicies(cgroup: "/safespace/\(p)-")
        let others = Self.threadPolicies(cgroup: "/safespace/\(name)")
        XCTAssertEqual(Set(next.filter { others[$0.key] == nil }.values), [5], "the refilled sandbox: \(next)")
        XCTAssertEqual(try h.delete(name).status, 200)
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(p)").status, 200)
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
    }
}
