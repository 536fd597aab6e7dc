/// Recycling of warm pool sandboxes (`recycle: true`) against the real daemon (root only):
/// a used sandbox goes back to its pool only when every check passes. Each refusal has its
/// own test — a file left in /tmp, a package written into site-packages, a background
/// process, a seccomp denial, an age past maxAgeSeconds — asserting the check that failed in
/// the audit's `pool.recycle` record and that the next claim gets another sandbox; and a
/// clean sandbox is recycled: the next claim gets it back warm, with nothing of the previous
/// claimant. Each test ends by counting what its sandboxes left.
import DaemonClient
import Foundation
import Glibc
import XCTest

final class PoolRecycleTests: XCTestCase {
    var harness: DaemonHarness!

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    /// A started daemon with pool `name` (one sandbox, recycled), ready; `template` extra
    /// fields of the pool's template.
    func start(maxAgeSeconds: Int = 3600, template: [String: Any] = [:]) throws -> (DaemonHarness, String) {
        let h = try DaemonHarness(extraConfig: "node:\n  allocatableCPU: \"100\"\n  allocatableMemory: 100Gi\n")
        harness = h
        try h.start()
        let pool = h.name("r")
        let created = try h.client.request(
            "POST", "/v1/warmpools",
            json: [
                "apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool", "metadata": ["name": pool],
                "spec": [
                    "minSize": 1, "maxSize": 1, "recycle": true, "maxAgeSeconds": maxAgeSeconds,
                    "whenEmpty": "refuse",
                    "template": template.merging([
                        "resources": ["cpu": "100m", "memory": "128Mi", "ephemeralStorage": "64Mi"]
                    ]) { $1 },
                ],
            ])
        XCTAssertEqual(created.status, 201, created.text)
        try waitReady(h, pool)
        return (h, pool)
    }

    func status(_ h: DaemonHarness, _ pool: String) throws -> [String: Any] {
        try h.client.request("GET", "/v1/warmpools/\(pool)").json?["status"] as? [String: Any] ?? [:]
    }

    func waitReady(_ h: DaemonHarness, _ pool: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let deadline = Date().addingTimeInterval(120)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try status(h, pool)
            if last["ready"] as? Int ?? 0 >= 1 { return }
            usleep(50_000)
        }
        XCTFail("pool \(pool) has no ready sandbox: \(last)\n\(h.log)", file: file, line: line)
    }

    /// Claims a sandbox of `pool`; its name.
    func claim(_ h: DaemonHarness, _ pool: String, file: StaticString = #filePath, line: UInt = #line) throws
        -> String
    {
        let response = try h.client.request("POST", "/v1/sandboxes?pool=\(pool)")
        XCTAssertEqual(response.status, 201, response.text, file: file, line: line)
        XCTAssertEqual((response.json?["status"] as? [String: Any])?["warm"] as? Bool, true, file: file, line: line)
        return try XCTUnwrap((response.json?["metadata"] as? [String: Any])?["name"] as? String)
    }

    /// Claims, runs `use`, deletes: the `pool.recycle` record of that release.
    func release(
        _ h: DaemonHarness, _ pool: String, file: StaticString = #filePath, line: UInt = #line,
        use: (String) throws -> Void
    ) throws -> (name: String, record: [String: Any]) {
        let name = try claim(h, pool, file: file, line: line)
        try use(name)
        let deleted = try h.delete(name)
        XCTAssertEqual(deleted.status, 200, deleted.text, file: file, line: line)
        // The owner's view: gone either way.
        XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(name)").status, 404, file: file, line: line)
        let record = try XCTUnwrap(
            h.auditRecords().last { $0["type"] as? String == "pool.recycle" && $0["sandbox"] as? String == name },
            "no pool.recycle record for \(name): \(h.log)", file: file, line: line)
        return (name, record)
    }

    /// `record` failed `check` (and the sandbox is destroyed, the pool refills with another).
    func assertRefused(
        _ h: DaemonHarness, _ pool: String, _ released: (name: String, record: [String: Any]), check: String,
        mentions: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let record = released.record
        XCTAssertEqual(record["outcome"] as? String, "denied", "\(record)", file: file, line: line)
        XCTAssertEqual(record["pool"] as? String, pool, file: file, line: line)
        let detail = record["check_" + check] as? String ?? ""
        XCTAssertTrue(detail.hasPrefix("failed: "), "check \(check): \(record)", file: file, line: line)
        XCTAssertTrue(
            detail.contains(mentions), "check \(check) should mention \(mentions): \(detail)", file: file, line: line)
        XCTAssertTrue((record["failed"] as? [String] ?? []).contains(check), "\(record)", file: file, line: line)
        // Destroyed: deleted in the audit, and the pool's next sandbox is another one.
        XCTAssertTrue(
            h.auditRecords().contains {
                $0["type"] as? String == "sandbox.deleted" && $0["sandbox"] as? String == released.name
            }, file: file, line: line)
        try waitReady(h, pool, file: file, line: line)
        let next = try claim(h, pool, file: file, line: line)
        XCTAssertNotEqual(next, released.name, file: file, line: line)
        XCTAssertEqual(try status(h, pool)["recycled"] as? Int, 0, file: file, line: line)
        XCTAssertEqual(try status(h, pool)["recycleFailures"] as? Int, 1, file: file, line: line)
        XCTAssertEqual(try h.delete(next).status, 200, file: file, line: line)
    }

    func finish(_ h: DaemonHarness, _ pool: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try h.client.request("DELETE", "/v1/warmpools/\(pool)").status, 200, file: file, line: line)
        var left = h.leftovers()
        for _ in 0..<20 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:], "leaked; the daemon's log:\n\(left.isEmpty ? "" : h.log)", file: file, line: line)
    }

    func exitCode(_ response: DaemonClient.Response) -> Int? { response.json?["exitCode"] as? Int }
    func stdout(_ response: DaemonClient.Response) -> String { response.json?["stdout"] as? String ?? "" }

    // MARK: refusals, one check each

    func testFileLeftInTmpIsNotRecycled() throws {
        let (h, pool) = try start()
        let released = try release(h, pool) { name in
            XCTAssertEqual(exitCode(try h.exec(name, ["sh", "-c", "echo left > /tmp/left.txt"])), 0)
        }
        try assertRefused(h, pool, released, check: "writablePaths", mentions: "/tmp")
        try finish(h, pool)
    }

    func testPackageWrittenIntoSitePackagesIsNotRecycled() throws {
        let (h, pool) = try start()
        let released = try release(h, pool) { name in
            // The user site of the sandbox's python (HOME is writable): importable from now on.
            let site = "$HOME/.local/lib/python3.11/site-packages"
            let wrote = try h.exec(
                name,
                [
                    "sh", "-c",
                    "mkdir -p \(site)/evil-1.0.dist-info && echo 'x = 1' > \(site)/evil.py && python3 -c 'import evil'",
                ])
            XCTAssertEqual(exitCode(wrote), 0, wrote.text)
        }
        try assertRefused(h, pool, released, check: "packages", mentions: "evil.py")
        try finish(h, pool)
    }

    func testBackgroundProcessIsNotRecycled() throws {
        let (h, pool) = try start()
        let released = try release(h, pool) { name in
            let started = try h.exec(name, ["sh", "-c", "setsid nohup sleep 1000 </dev/null >/dev/null 2>&1 &"])
            XCTAssertEqual(exitCode(started), 0, started.text)
        }
        try assertRefused(h, pool, released, check: "processes", mentions: "sleep")
        try finish(h, pool)
    }

    func testSeccompDenialIsNotRecycled() throws {
        let (h, pool) = try start()
        let released = try release(h, pool) { name in
            // unshare(2) is denied by the standard level's filter (EPERM, counted).
            XCTAssertNotEqual(exitCode(try h.exec(name, ["unshare", "-U", "true"])), 0)
        }
        try assertRefused(h, pool, released, check: "securityEvents", mentions: "unshare")
        try finish(h, pool)
    }

    func testEgressDenialIsNotRecycled() throws {
        let (h, pool) = try start(template: ["networkAccess": ["egress": [["domain": "pypi.org"]]]])
        let released = try release(h, pool) { name in
            // A name outside the egress rules: the filter denies its DNS queries (A, AAAA);
            // with no seccomp denial, the check fails on those alone.
            let looked = try h.exec(name, ["sh", "-c", "getent hosts denied.test || echo none"])
            XCTAssertEqual(stdout(looked), "none\n", looked.text)
        }
        try assertRefused(h, pool, released, check: "securityEvents", mentions: "seccomp denials: 0; egress denials: ")
        try finish(h, pool)
    }

    func testSandboxPastMaxAgeIsNotRecycled() throws {
        let (h, pool) = try start(maxAgeSeconds: 2)
        let released = try release(h, pool) { name in
            XCTAssertEqual(exitCode(try h.exec(name, ["true"])), 0)
            // Older than maxAgeSeconds by the time it is released (its age counts from when
            // it was made, not claimed).
            sleep(3)
        }
        try assertRefused(h, pool, released, check: "age", mentions: "maxAgeSeconds 2")
        try finish(h, pool)
    }

    /// Claim, run code, release, ten times: one sandbox serves every claim, and once the pool
    /// is removed nothing is left (the harness's count) and the daemon holds no more fds than
    /// after the first cycle (an agent connection or a tree walk's fd kept would add one a
    /// cycle).
    func testTenRecycleCyclesUseOneSandboxAndLeakNothing() throws {
        let (h, pool) = try start()
        var names = Set<String>()
        var fdsAfterFirst = 0
        for cycle in 0..<10 {
            try waitReady(h, pool)
            let name = try claim(h, pool)
            names.insert(name)
            let code = try h.client.request(
                "POST", "/v1/sandboxes/\(name)/exec", json: ["code": "print(\(cycle))"])
            XCTAssertEqual(stdout(code), "\(cycle)\n", code.text)
            XCTAssertEqual(try h.delete(name).status, 200)
            if cycle == 0 {
                fdsAfterFirst = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(h.pid)/fd"))?.count ?? 0
            }
        }
        XCTAssertEqual(names.count, 1, "\(names)")
        XCTAssertEqual(try status(h, pool)["recycled"] as? Int, 10)
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(h.pid)/fd"))?.count ?? 0
        XCTAssertLessThanOrEqual(
            fds, fdsAfterFirst + 3, "daemon fds \(fdsAfterFirst) after one cycle, \(fds) after ten")
        try finish(h, pool)
    }

    /// The end of a claim's lifetime releases the sandbox like its owner's delete: recycled,
    /// and the next claimant does not inherit the lifetime.
    func testLifetimeEndRecyclesAndClearsTheLifetime() throws {
        let (h, pool) = try start()
        let claimed = try h.client.request("POST", "/v1/sandboxes?pool=\(pool)", json: ["spec": ["timeoutSeconds": 1]])
        XCTAssertEqual(claimed.status, 201, claimed.text)
        let name = try XCTUnwrap((claimed.json?["metadata"] as? [String: Any])?["name"] as? String)
        XCTAssertNotNil((claimed.json?["status"] as? [String: Any])?["expiresAt"])
        let deadline = Date().addingTimeInterval(60)
        var record: [String: Any]?
        while record == nil, Date() < deadline {
            record = h.auditRecords().last {
                $0["type"] as? String == "pool.recycle" && $0["sandbox"] as? String == name
            }
            usleep(100_000)
        }
        XCTAssertEqual(record?["reason"] as? String, "timeout", "\(String(describing: record))")
        XCTAssertEqual(record?["outcome"] as? String, "ok", "\(String(describing: record))")
        XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(name)").status, 404)
        try waitReady(h, pool)
        let again = try h.client.request("POST", "/v1/sandboxes?pool=\(pool)")
        XCTAssertEqual((again.json?["metadata"] as? [String: Any])?["name"] as? String, name, again.text)
        XCTAssertNil((again.json?["status"] as? [String: Any])?["expiresAt"], again.text)
        XCTAssertEqual(try h.delete(name).status, 200)
        try finish(h, pool)
    }

    /// PID 1 (the agent) outlives a claimant when its sandbox is recycled, so no process of
    /// the sandbox may change it: it runs with the same uid, and without PR_SET_DUMPABLE 0
    /// it could write the agent's memory through /proc/1/mem (ptrace access mode ATTACH,
    /// ptrace(2)), and the next claimant's execs would be forked by code it planted.
    func testSandboxCannotWriteItsAgentsMemory() throws {
        let (h, pool) = try start()
        let name = try claim(h, pool)
        let tried = try h.exec(name, ["sh", "-c", "(exec 3<>/proc/1/mem) 2>/dev/null && echo opened || echo refused"])
        XCTAssertEqual(exitCode(tried), 0, tried.text)
        XCTAssertTrue(stdout(tried).hasPrefix("refused"), tried.text)
        XCTAssertEqual(try h.delete(name).status, 200)
        try finish(h, pool)
    }

    // MARK: the former owner

    /// A file write whose request found the sandbox before its owner released it, and whose
    /// body arrives after the release: refused (404), nothing lands in the sandbox the pool
    /// hands to its next claimant.
    func testWriteInFlightAtReleaseLandsNowhere() throws {
        let (h, pool) = try start()
        let name = try claim(h, pool)
        // The request line and headers now (the route finds the sandbox), the body later.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let path = Array(h.socket.utf8)
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(connected, 0)
        func send(_ text: String) { _ = text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }
        send(
            "PUT /v1/sandboxes/\(name)/files/tmp/planted HTTP/1.1\r\nHost: safespaced\r\nContent-Length: 10\r\n\r\nhello"
        )
        usleep(500_000)
        let released = try h.delete(name)
        XCTAssertEqual(released.status, 200, released.text)
        XCTAssertEqual(try status(h, pool)["recycled"] as? Int, 1, "\(h.log)")
        send("world")
        var answer = [UInt8](repeating: 0, count: 4096)
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let n = recv(fd, &answer, answer.count, 0)
        let text = String(decoding: answer.prefix(max(0, n)), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 404"), text)
        // The next claimant gets the sandbox back without the file.
        let again = try claim(h, pool)
        XCTAssertEqual(again, name)
        XCTAssertEqual(stdout(try h.exec(again, ["sh", "-c", "ls -A /tmp | wc -l"])), "0\n")
        XCTAssertEqual(try h.delete(again).status, 200)
        try finish(h, pool)
    }

    // MARK: recycled

    func testCleanSandboxIsRecycledWithNothingOfItsLastClaimant() throws {
        let (h, pool) = try start()
        var forkserver = ""
        let released = try release(h, pool) { name in
            // Used, leaving nothing: a command with its own env and cwd, code in the warm
            // interpreter that changes the interpreter's state, a file written and removed.
            let used = try h.exec(
                name, ["sh", "-c", "echo $SECRET > /tmp/x && cat /tmp/x && rm /tmp/x"],
                extra: ["env": ["SECRET": "s3cret"], "cwd": "/tmp"])
            XCTAssertEqual(stdout(used), "s3cret\n", used.text)
            let code = try h.client.request(
                "POST", "/v1/sandboxes/\(name)/exec",
                json: ["code": "import os, sys; os.environ['LEAK'] = '1'; sys.modules['leak'] = 1; print(os.getppid())"]
            )
            XCTAssertEqual(exitCode(code), 0, code.text)
            forkserver = stdout(code)
        }
        let record = released.record
        XCTAssertEqual(record["outcome"] as? String, "ok", "\(record)")
        for check in ["age", "securityEvents", "agent", "processes", "writablePaths", "packages", "counters", "python"]
        {
            XCTAssertTrue((record["check_" + check] as? String ?? "").hasPrefix("passed: "), "\(check): \(record)")
        }
        XCTAssertEqual(record["failed"] as? [String], [], "\(record)")
        XCTAssertFalse(
            h.auditRecords().contains {
                $0["type"] as? String == "sandbox.deleted" && $0["sandbox"] as? String == released.name
            })
        XCTAssertEqual(try status(h, pool)["recycled"] as? Int, 1)

        // The next claim gets the same sandbox back, warm, as made.
        try waitReady(h, pool)
        let again = try claim(h, pool)
        XCTAssertEqual(again, released.name)
        let look = try h.exec(
            again,
            ["sh", "-c", "find /tmp /workspace /dev/shm -mindepth 1 | wc -l; echo \"SECRET=$SECRET LEAK=$LEAK\"; pwd"])
        XCTAssertEqual(stdout(look), "0\nSECRET= LEAK=\n/workspace\n", look.text)
        let code = try h.client.request(
            "POST", "/v1/sandboxes/\(again)/exec",
            json: ["code": "import os, sys; print(os.environ.get('LEAK'), 'leak' in sys.modules, os.getppid())"])
        let words = stdout(code).split(separator: " ").map(String.init)
        XCTAssertEqual(words.prefix(2), ["None", "False"], code.text)
        // A fresh warm interpreter: another process than the last claimant's.
        XCTAssertNotEqual(words.last, forkserver, code.text)
        let metrics = try h.client.request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("safespaced_pool_recycles_total"), metrics)
        XCTAssertTrue(metrics.contains("safespaced_pool_recycle_checks_total"), metrics)
        // Recycled again (the recycle's own requests to the agent leave no denial behind).
        XCTAssertEqual(try h.delete(again).status, 200)
        let second = h.auditRecords().filter {
            $0["type"] as? String == "pool.recycle" && $0["sandbox"] as? String == again
        }
        XCTAssertEqual(second.count, 2)
        XCTAssertEqual(second.last?["outcome"] as? String, "ok", "\(second)")
        XCTAssertEqual(try status(h, pool)["recycled"] as? Int, 2)
        try finish(h, pool)
    }
}
