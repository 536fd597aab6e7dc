/// safespaced's API against the real daemon on a temporary socket (root only: it makes
/// namespaces, mounts and cgroups). Each test ends by counting what its sandboxes left.
import Audit
import DaemonClient
import Foundation
import Glibc
import XCTest
import Yams

@testable import SafeSpaceDaemon

final class DaemonAPITests: XCTestCase {
    var harness: DaemonHarness!

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    func start(_ extra: String = "") throws -> DaemonHarness {
        let h = try DaemonHarness(extraConfig: extra)
        harness = h
        try h.start()
        return h
    }

    func assertNothingLeft(_ h: DaemonHarness, file: StaticString = #filePath, line: UInt = #line) {
        // Deletion is synchronous, but a lazily detached mount may take a moment.
        var left = h.leftovers()
        for _ in 0..<20 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:], "leaked; the daemon's log:\n\(left.isEmpty ? "" : h.log)", file: file, line: line)
    }

    func assertError(
        _ response: DaemonClient.Response, _ status: Int, _ code: String, field: String? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(response.status, status, response.text, file: file, line: line)
        XCTAssertEqual(response.error?.code, code, response.text, file: file, line: line)
        XCTAssertFalse(response.error?.message.isEmpty ?? true, file: file, line: line)
        if let field { XCTAssertEqual(response.error?.field, field, response.text, file: file, line: line) }
    }

    // MARK: the OpenAPI file

    /// Every route of the OpenAPI file is a route of the server and the other way round;
    /// each answers on the real server (not `no_route`).
    func testOpenAPIMatchesServerRoutes() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let text = try String(contentsOfFile: root.path + "/Sources/SafeSpaceDaemon/openapi.yaml", encoding: .utf8)
        let document = try XCTUnwrap(try Yams.load(yaml: text) as? [String: Any])
        XCTAssertTrue((document["openapi"] as? String)?.hasPrefix("3.") == true)
        let paths = try XCTUnwrap(document["paths"] as? [String: Any])
        var documented: Set<String> = []
        for (path, item) in paths {
            for method in (item as? [String: Any] ?? [:]).keys
            where ["get", "put", "post", "delete", "patch"].contains(method) {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        XCTAssertEqual(documented, Set(DaemonAPI.routes))

        let h = try start()
        for route in DaemonAPI.routes {
            let parts = route.split(separator: " ")
            let path = String(parts[1]).replacingOccurrences(of: "{name}", with: "no-such-sandbox")
                .replacingOccurrences(of: "{path}", with: "workspace/x")
            let response = try h.client.request(
                String(parts[0]), path, body: parts[0] == "GET" || parts[0] == "DELETE" ? nil : Array("{}".utf8))
            XCTAssertNotEqual(response.error?.code, "no_route", "\(route): \(response.text)")
        }
        XCTAssertEqual(try h.client.request("GET", "/v1/nowhere").error?.code, "no_route")
    }

    // MARK: the sandbox lifecycle

    func testLifecycleExecFilesDelete() throws {
        let h = try start()
        XCTAssertEqual(try h.client.request("GET", "/v1/healthz").json?["status"] as? String, "ok")
        let name = h.name("life")
        let created = try h.create(name, spec: ["timeoutSeconds": 600])
        let status = try XCTUnwrap(created.json?["status"] as? [String: Any])
        XCTAssertEqual(status["phase"] as? String, "Running")
        XCTAssertEqual(status["level"] as? String, "standard")
        XCTAssertEqual(((created.json?["spec"] as? [String: Any])?["timeoutSeconds"] as? Int), 600)

        // A generated name.
        let generated = try h.client.request(
            "POST", "/v1/sandboxes", json: ["spec": ["resources": ["cpu": "100m", "memory": "64Mi"]]])
        XCTAssertEqual(generated.status, 201, generated.text)
        let generatedName = try XCTUnwrap((generated.json?["metadata"] as? [String: Any])?["name"] as? String)
        XCTAssertTrue(generatedName.hasPrefix("sandbox-"))
        XCTAssertEqual(try h.delete(generatedName).status, 200)

        let list = try h.client.request("GET", "/v1/sandboxes")
        XCTAssertEqual(
            (list.json?["items"] as? [[String: Any]])?.compactMap {
                ($0["metadata"] as? [String: Any])?["name"] as? String
            }, [name])

        // exec: stdout, stderr, exit code, stdin, env, cwd.
        let run = try h.exec(
            name, ["sh", "-c", "cat; echo \"$GREETING\" >&2; pwd; exit 7"], stdin: "in-bytes\n",
            extra: ["env": ["GREETING": "héllo"], "cwd": "/tmp"])
        XCTAssertEqual(run.status, 200, run.text)
        XCTAssertEqual(run.json?["stdout"] as? String, "in-bytes\n/tmp\n")
        XCTAssertEqual(run.json?["stderr"] as? String, "héllo\n")
        XCTAssertEqual(run.json?["exitCode"] as? Int, 7)
        XCTAssertEqual(run.json?["timedOut"] as? Bool, false)
        XCTAssertEqual(run.json?["oomKilled"] as? Bool, false)
        XCTAssertNotNil(run.json?["durationMs"] as? Int)
        // The sandbox's user, not root.
        XCTAssertEqual(try h.exec(name, ["id", "-u"]).json?["stdout"] as? String, "1000\n")

        // Timeout: killed, timedOut.
        let slow = try h.exec(name, ["sleep", "30"], extra: ["timeoutSeconds": 1])
        XCTAssertEqual(slow.json?["timedOut"] as? Bool, true, slow.text)
        XCTAssertEqual(slow.json?["exitCode"] as? Int, 137)
        XCTAssertLessThan(slow.json?["durationMs"] as? Int ?? 99999, 10000)

        // Streaming: chunks as they come, then the exit object.
        var lines: [[String: Any]] = []
        var pending: [UInt8] = []
        let streamed = try h.client.send(
            "POST", "/v1/sandboxes/\(name)/exec",
            body: Array(#"{"command":["sh","-c","echo one; sleep 0.3; echo two >&2; exit 3"]}"#.utf8),
            headers: ["Accept": "application/x-ndjson", "Content-Type": "application/json"]
        ) { chunk in
            pending += chunk
            while let newline = pending.firstIndex(of: 0x0A) {
                if let object = try? JSONSerialization.jsonObject(with: Data(pending[..<newline])) as? [String: Any] {
                    lines.append(object)
                }
                pending.removeSubrange(...newline)
            }
        }
        XCTAssertEqual(streamed.status, 200)
        XCTAssertEqual(streamed.headers["content-type"], "application/x-ndjson")
        XCTAssertEqual(lines.compactMap { $0["stdout"] as? String }.joined(), "one\n")
        XCTAssertEqual(lines.compactMap { $0["stderr"] as? String }.joined(), "two\n")
        XCTAssertEqual(lines.last?["exitCode"] as? Int, 3)

        // A large stream arrives whole (the exec waits for a slow reader, nothing is dropped).
        var streamedBytes = 0
        var tail: [UInt8] = []
        _ = try h.client.send(
            "POST", "/v1/sandboxes/\(name)/exec",
            body: Array(#"{"command":["sh","-c","head -c 20000000 /dev/zero | tr '\\0' a"]}"#.utf8),
            headers: ["Accept": "application/x-ndjson"]
        ) { chunk in
            tail += chunk
            while let newline = tail.firstIndex(of: 0x0A) {
                if let object = try? JSONSerialization.jsonObject(with: Data(tail[..<newline])) as? [String: Any],
                    let text = object["stdout"] as? String
                {
                    streamedBytes += text.utf8.count
                }
                tail.removeSubrange(...newline)
            }
            usleep(200)
        }
        XCTAssertEqual(streamedBytes, 20_000_000)
        // A client that goes away: its exec is killed at its next output (a silent one runs
        // on to its timeout: nothing tells the server of a half-closed connection).
        struct Gone: Error {}
        XCTAssertThrowsError(
            try h.client.send(
                "POST", "/v1/sandboxes/\(name)/exec",
                body: Array(#"{"command":["sh","-c","while :; do echo tick; sleep 0.2; done"]}"#.utf8),
                headers: ["Accept": "application/x-ndjson"]
            ) { _ in throw Gone() })
        var execs = -1
        for _ in 0..<100 where execs != 0 {
            usleep(100_000)
            execs =
                ((try h.client.request("GET", "/v1/sandboxes/\(name)").json?["status"] as? [String: Any])?["execs"]
                    as? Int) ?? -1
        }
        XCTAssertEqual(execs, 0, "the exec of a client that left still runs")

        // Files: in, out, owned by the sandbox's user, missing directories made.
        var payload = [UInt8]()
        for i in 0..<300_000 { payload.append(UInt8(truncatingIfNeeded: i &* 31 &+ 7)) }
        let put = try h.client.request("PUT", "/v1/sandboxes/\(name)/files/workspace/dir/in.bin", body: payload)
        XCTAssertEqual(put.status, 200, put.text)
        XCTAssertEqual(put.json?["bytes"] as? Int, payload.count)
        let got = try h.client.request("GET", "/v1/sandboxes/\(name)/files/workspace/dir/in.bin")
        XCTAssertEqual(got.status, 200)
        XCTAssertEqual(got.body, payload)
        let owner = try h.exec(name, ["stat", "-c", "%u:%g %s", "/workspace/dir/in.bin", "/workspace/dir"])
        XCTAssertEqual(
            (owner.json?["stdout"] as? String)?.split(separator: "\n").map { $0.prefix(9) },
            ["1000:1000", "1000:1000"], owner.text)
        XCTAssertTrue((owner.json?["stdout"] as? String)?.hasPrefix("1000:1000 300000\n") == true, owner.text)
        // What the sandbox writes comes out.
        _ = try h.exec(name, ["sh", "-c", "printf out > /tmp/o.txt"])
        XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(name)/files/tmp/o.txt").text, "out")

        // Usage from the cgroup.
        let detail = try h.client.request("GET", "/v1/sandboxes/\(name)")
        let usage = try XCTUnwrap((detail.json?["status"] as? [String: Any])?["usage"] as? [String: Any], detail.text)
        XCTAssertNotNil(usage["cpuSeconds"] as? Double)
        XCTAssertGreaterThan(usage["memoryBytes"] as? Int ?? 0, 0)
        XCTAssertGreaterThan(usage["memoryPeakBytes"] as? Int ?? 0, 0)
        XCTAssertGreaterThanOrEqual(usage["pids"] as? Int ?? 0, 1)

        let metrics = try h.client.request("GET", "/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.text.contains("safespaced_execs_total"), metrics.text)

        // A syscall the profile denies: counted, audited when the sandbox ends.
        XCTAssertNotEqual(try h.exec(name, ["unshare", "-U", "true"]).json?["exitCode"] as? Int, 0)

        XCTAssertEqual(try h.delete(name).status, 200)
        assertError(try h.delete(name), 404, "not_found", field: "name")
        assertError(try h.exec(name, ["true"]), 404, "not_found", field: "name")
        assertNothingLeft(h)
        let seccomp = h.auditRecords().first {
            $0["type"] as? String == "seccomp.denied" && $0["sandbox"] as? String == name
        }
        XCTAssertEqual(seccomp?["syscall"] as? String, "unshare", "\(h.auditRecords().map { $0["type"] ?? "" })")
        XCTAssertEqual(seccomp?["count"] as? Int, 1)

        // The audit log: every event, a valid chain.
        let types = h.auditRecords().compactMap { $0["type"] as? String }
        for type in [
            "sandbox.created", "exec.started", "exec.finished", "file.written", "file.read", "sandbox.deleted",
        ] {
            XCTAssertTrue(types.contains(type), "no \(type) in \(types)")
        }
        let deleted = h.auditRecords().first {
            $0["type"] as? String == "sandbox.deleted" && $0["sandbox"] as? String == name
        }
        XCTAssertEqual(deleted?["reason"] as? String, "request")
        let started = h.auditRecords().first { $0["type"] as? String == "exec.started" }
        XCTAssertEqual((started?["stdinSHA256"] as? String)?.count, 64)
        XCTAssertNoThrow(try AuditLog.verify(path: h.auditPath))
        XCTAssertEqual(h.stop(), 0)
    }

    // MARK: bad input

    func testBadInputGetsClearErrorsAndLeavesNothing() throws {
        let h = try start("limits:\n  maxRequestBytes: 4096\n  maxFileBytes: 65536\n")
        let c = h.client
        // Malformed JSON, unknown fields, wrong types.
        assertError(try c.request("POST", "/v1/sandboxes", body: Array("{\"spec\": ".utf8)), 400, "malformed_json")
        assertError(try c.request("POST", "/v1/sandboxes", body: Array("[1]".utf8)), 400, "malformed_json")
        assertError(
            try c.request("POST", "/v1/sandboxes", json: ["spec": ["bogus": 1]]), 400, "unknown_field",
            field: "spec.bogus")
        assertError(
            try c.request("POST", "/v1/sandboxes", json: ["spec": ["timeoutSeconds": -1]]), 400, "invalid_value",
            field: "spec.timeoutSeconds")
        assertError(
            try c.request("POST", "/v1/sandboxes", json: ["spec": ["timeoutSeconds": "x"]]), 400, "wrong_type",
            field: "spec.timeoutSeconds")
        assertError(
            try c.request("POST", "/v1/sandboxes", json: ["metadata": ["name": "Bad_Name"]]), 400, "invalid_value",
            field: "metadata.name")
        assertError(
            try c.request("POST", "/v1/sandboxes", json: ["spec": ["runtime": "cobol:1"]]), 400, "invalid_value",
            field: "spec.runtime")
        // Oversized body.
        assertError(
            try c.request("POST", "/v1/sandboxes", body: Array(repeating: 0x20, count: 100_000)), 413, "too_large")
        // Unknown names.
        assertError(try c.request("GET", "/v1/sandboxes/nope"), 404, "not_found", field: "name")
        assertError(try c.request("DELETE", "/v1/sandboxes/nope"), 404, "not_found", field: "name")
        assertError(try c.request("GET", "/v1/sandboxes/nope/files/workspace/x"), 404, "not_found")

        let name = h.name("bad")
        try h.create(name)
        assertError(
            try c.request("POST", "/v1/sandboxes", json: ["metadata": ["name": name]]), 409, "exists",
            field: "metadata.name")
        // Exec requests.
        assertError(
            try c.request("POST", "/v1/sandboxes/\(name)/exec", json: ["command": []]), 400, "invalid_value",
            field: "command")
        assertError(
            try c.request("POST", "/v1/sandboxes/\(name)/exec", json: ["cmd": ["ls"]]), 400, "unknown_field",
            field: "cmd")
        assertError(
            try c.request("POST", "/v1/sandboxes/\(name)/exec", json: ["command": "ls"]), 400, "wrong_type",
            field: "command")
        assertError(
            try c.request("POST", "/v1/sandboxes/\(name)/exec", json: ["command": ["ls"], "cwd": "rel"]), 400,
            "invalid_value", field: "cwd")
        assertError(
            try c.request("POST", "/v1/sandboxes/\(name)/exec", json: ["command": ["/no/such/program"]]), 400,
            "exec_failed", field: "command")
        assertError(try c.request("POST", "/v1/sandboxes/\(name)/exec", body: Array("{".utf8)), 400, "malformed_json")

        // File paths: `..`, encoded `..`, outside the writable paths, symlinks the sandbox planted.
        let hostFile = h.dir + "/host-secret"
        try "host".write(toFile: hostFile, atomically: true, encoding: .utf8)
        let plant = try h.exec(
            name,
            [
                "sh", "-c",
                "ln -s /etc /workspace/etcdir; ln -s /etc/hostname /workspace/link; ln -s \(hostFile) /workspace/hostlink; ln -s ../../.. /workspace/up; mkfifo /workspace/fifo",
            ])
        XCTAssertEqual(plant.json?["exitCode"] as? Int, 0, plant.text)
        for path in ["workspace/../etc/passwd", "workspace/%2e%2e/etc/passwd", "workspace/./x"] {
            assertError(try c.request("GET", "/v1/sandboxes/\(name)/files/\(path)"), 400, "path_escape", field: "path")
            assertError(
                try c.request("PUT", "/v1/sandboxes/\(name)/files/\(path)", body: Array("x".utf8)), 400, "path_escape",
                field: "path")
        }
        assertError(try c.request("GET", "/v1/sandboxes/\(name)/files/etc/passwd"), 403, "not_writable", field: "path")
        assertError(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace", body: Array("x".utf8)), 403, "not_writable",
            field: "path")
        for path in ["workspace/etcdir/passwd", "workspace/link", "workspace/hostlink", "workspace/up\(hostFile)"] {
            assertError(try c.request("GET", "/v1/sandboxes/\(name)/files/\(path)"), 400, "path_escape", field: "path")
            assertError(
                try c.request("PUT", "/v1/sandboxes/\(name)/files/\(path)", body: Array("pwned".utf8)), 400,
                "path_escape", field: "path")
        }
        XCTAssertEqual(try String(contentsOfFile: hostFile, encoding: .utf8), "host")
        assertError(
            try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/fifo"), 409, "not_a_file", field: "path")
        assertError(
            try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/missing"), 404, "file_not_found", field: "path")
        assertError(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace/big", body: Array(repeating: 1, count: 70_000)),
            413, "too_large")
        XCTAssertEqual(try h.exec(name, ["ls", "/workspace/big"]).json?["exitCode"] as? Int, 2)

        XCTAssertEqual(try h.delete(name).status, 200)
        assertError(try h.exec(name, ["true"]), 404, "not_found")
        assertError(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace/x", body: Array("x".utf8)), 404, "not_found")
        assertNothingLeft(h)
    }

    /// Regression: the exec helper used to let the exec'd child run before it told the runtime
    /// the child's pid, so a child whose execve failed could report first; the daemon then never
    /// reaped that child (its own, CLONE_PARENT), and the zombie, in the sandbox's PID
    /// namespace, held the sandbox's killed init in zap_pid_ns_processes: the delete stalled
    /// and two processes stayed in the deleted cgroup (about one failing exec in 30 lost it).
    func testFailingExecsLeaveNoZombieOfTheDaemon() throws {
        let h = try start()
        let name = h.name("zombie")
        try h.create(name)
        let client = h.client
        let failures = LockedCounter()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<30 {
                let r = try? client.request(
                    "POST", "/v1/sandboxes/\(name)/exec", json: ["command": ["/no/such/program"]])
                if r?.status == 400, r?.error?.code == "exec_failed" { failures.add() }
            }
        }
        XCTAssertEqual(failures.value, 120)
        XCTAssertEqual(h.zombieChildren(), [], "children of the daemon nobody reaped")
        XCTAssertEqual(try h.delete(name).status, 200)
        assertNothingLeft(h)
    }

    // MARK: admission, lifetime

    func testAdmissionRefusesOvercommitAndLifetimeRemoves() throws {
        let h = try start("node:\n  allocatableCPU: \"1\"\n  allocatableMemory: 1Gi\n")
        let a = h.name("a")
        let b = h.name("b")
        let short = h.name("short")
        try h.create(a, spec: ["resources": ["cpu": "600m", "memory": "256Mi"]])
        let refused = try h.client.request(
            "POST", "/v1/sandboxes",
            json: ["metadata": ["name": b], "spec": ["resources": ["cpu": "600m", "memory": "256Mi"]]])
        assertError(refused, 429, "overcommitted", field: "spec.resources.cpu")
        XCTAssertTrue(refused.error?.message.contains("allocatable") == true, refused.text)
        let memory = try h.client.request(
            "POST", "/v1/sandboxes",
            json: ["metadata": ["name": b], "spec": ["resources": ["cpu": "100m", "memory": "900Mi"]]])
        assertError(memory, 429, "overcommitted", field: "spec.resources.memory")
        XCTAssertEqual(try h.delete(a).status, 200)
        try h.create(b, spec: ["resources": ["cpu": "600m", "memory": "256Mi"]])
        XCTAssertEqual(try h.delete(b).status, 200)

        try h.create(short, spec: ["timeoutSeconds": 2, "resources": ["cpu": "100m", "memory": "64Mi"]])
        var gone = false
        for _ in 0..<100 where !gone {
            usleep(100_000)
            gone = try h.client.request("GET", "/v1/sandboxes/\(short)").status == 404
        }
        XCTAssertTrue(gone, "the sandbox outlived its lifetime")
        let record = h.auditRecords().first {
            $0["type"] as? String == "sandbox.deleted" && $0["sandbox"] as? String == short
        }
        XCTAssertEqual(record?["reason"] as? String, "timeout")
        assertNothingLeft(h)
    }

    // MARK: who may call

    /// A process in the safespace group (primary gid) may call and sees only its own
    /// sandboxes; one that reaches the socket without being in the group is refused (403,
    /// audited); root sees everything.
    func testPeerCredentials() throws {
        let h = try start()
        guard let group = getgrnam("safespace") else { return XCTFail("no safespace group") }
        let gid = group.pointee.gr_gid
        func call(uid: Int, gid: UInt32, groups: String, _ method: String, _ path: String, _ body: String = "") throws
            -> (Int, String)
        {
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
                "--reuid=\(uid)", "--regid=\(gid)", "--groups=\(groups)", "/usr/bin/python3", "-c", script, h.socket,
                method, path, body,
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let text = String(decoding: data, as: UTF8.self)
            let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? -1
            return (status, text)
        }
        try XCTSkipUnless(
            access("/usr/bin/setpriv", X_OK) == 0 && access("/usr/bin/python3", X_OK) == 0, "needs setpriv and python3")
        let mine = h.name("mine")
        let roots = h.name("roots")
        let created = try call(
            uid: 65534, gid: gid, groups: "\(gid)", "POST", "/v1/sandboxes",
            #"{"metadata":{"name":"\#(mine)"},"spec":{"resources":{"cpu":"100m","memory":"64Mi"}}}"#)
        XCTAssertEqual(created.0, 201, created.1)
        try h.create(roots)
        // A file of the node as a seccomp profile: root's privilege only.
        let profile = try call(
            uid: 65534, gid: gid, groups: "\(gid)", "POST", "/v1/sandboxes",
            #"{"spec":{"securityContext":{"seccompProfile":{"type":"Localhost","localhostProfile":"/etc/shadow"}}}}"#)
        XCTAssertEqual(profile.0, 400, profile.1)
        XCTAssertTrue(profile.1.contains("spec.securityContext.seccompProfile.localhostProfile"), profile.1)
        let listed = try call(uid: 65534, gid: gid, groups: "\(gid)", "GET", "/v1/sandboxes")
        XCTAssertTrue(listed.1.contains(mine) && !listed.1.contains(roots), listed.1)
        let other = try call(
            uid: 65534, gid: gid, groups: "\(gid)", "POST", "/v1/sandboxes/\(roots)/exec", #"{"command":["id"]}"#)
        XCTAssertEqual(other.0, 403, other.1)
        let otherUser = try call(uid: 65533, gid: gid, groups: "\(gid)", "DELETE", "/v1/sandboxes/\(mine)")
        XCTAssertEqual(otherUser.0, 403, otherUser.1)
        // In the group only by a supplementary gid the user database does not give it: it
        // reaches the socket, and the daemon refuses it.
        let outsider = try call(uid: 65534, gid: 65534, groups: "\(gid)", "GET", "/v1/sandboxes")
        XCTAssertEqual(outsider.0, 403, outsider.1)
        XCTAssertTrue(outsider.1.contains("forbidden"), outsider.1)
        let denied = h.auditRecords().filter { $0["type"] as? String == "api.denied" }
        XCTAssertGreaterThanOrEqual(denied.count, 3, "\(denied)")
        XCTAssertTrue(denied.contains { ($0["caller"] as? [String: Any])?["uid"] as? Int == 65534 })
        let own = try call(uid: 65534, gid: gid, groups: "\(gid)", "DELETE", "/v1/sandboxes/\(mine)")
        XCTAssertEqual(own.0, 200, own.1)
        XCTAssertEqual(try h.delete(roots).status, 200)
        assertNothingLeft(h)
    }

    // MARK: load

    /// 20 sandboxes x 10 concurrent execs (200 in flight), each output checked byte for byte.
    func testLoad20SandboxesTimes10ConcurrentExecs() throws {
        let h = try start("node:\n  allocatableCPU: \"100\"\n  allocatableMemory: 100Gi\n")
        let names = (0..<20).map { h.name("load\($0)") }
        let createFailures = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: names.count) { i in
            do {
                let response = try h.client.request(
                    "POST", "/v1/sandboxes",
                    json: [
                        "metadata": ["name": names[i]],
                        "spec": ["resources": ["cpu": "100m", "memory": "96Mi", "ephemeralStorage": "32Mi"]],
                    ])
                if response.status != 201 { createFailures.mutate { $0.append(response.text) } }
            } catch { createFailures.mutate { $0.append("\(error)") } }
        }
        XCTAssertEqual(createFailures.value, [])

        let failures = Locked<[String]>([])
        let group = DispatchGroup()
        let clock = ContinuousClock()
        let started = clock.now
        for (s, name) in names.enumerated() {
            for e in 0..<10 {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    // stdin in, stdout out (cat), plus a line on stderr: all unique per exec.
                    var input = "\(name)/\(e)\n"
                    for k in 0..<(2000 + s * 97 + e * 13) { input += "line \(k) of exec \(e) in \(name)\n" }
                    do {
                        let response = try h.exec(
                            name, ["sh", "-c", "cat; echo done-$0 >&2", "\(s)-\(e)"], stdin: input)
                        let json = response.json
                        if response.status != 200 || json?["stdout"] as? String != input
                            || json?["stderr"] as? String != "done-\(s)-\(e)\n" || json?["exitCode"] as? Int != 0
                        {
                            failures.mutate {
                                $0.append("\(name) #\(e): \(response.status) \(response.text.prefix(300))")
                            }
                        }
                    } catch { failures.mutate { $0.append("\(name) #\(e): \(error)") } }
                }
            }
        }
        group.wait()
        let elapsed = clock.now - started
        print("load: 200 execs in \(elapsed)")
        XCTAssertEqual(failures.value, [])

        DispatchQueue.concurrentPerform(iterations: names.count) { i in
            let response = try? h.delete(names[i])
            if response?.status != 200 {
                failures.mutate { $0.append("delete \(names[i]): \(response?.text ?? "no answer")") }
            }
        }
        XCTAssertEqual(failures.value, [])
        assertNothingLeft(h)
        XCTAssertNoThrow(try AuditLog.verify(path: h.auditPath))
    }

    // MARK: crash recovery

    /// kill -9 of the daemon while sandboxes are being created and execs run, then a restart:
    /// the finished sandboxes are adopted (and still serve), the half-made ones removed, and
    /// once all are deleted nothing is left on the node.
    func testKill9DuringCreatesAndExecsThenRestartLeaksNothing() throws {
        let h = try start("node:\n  allocatableCPU: \"100\"\n  allocatableMemory: 100Gi\n")
        let ready = (0..<3).map { h.name("ready\($0)") }
        for name in ready { try h.create(name) }
        _ = try h.client.request("PUT", "/v1/sandboxes/\(ready[0])/files/workspace/kept.txt", body: Array("kept".utf8))
        let group = DispatchGroup()
        for name in ready {
            for _ in 0..<3 {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    _ = try? h.exec(name, ["sh", "-c", "sleep 20"])
                }
            }
        }
        // The execs run before the kill...
        var running = 0
        for _ in 0..<100 where running < 3 {
            usleep(50_000)
            running =
                ((try h.client.request("GET", "/v1/sandboxes/\(ready[2])").json?["status"] as? [String: Any])?["execs"]
                    as? Int) ?? 0
        }
        XCTAssertEqual(running, 3)
        for i in 0..<6 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                _ = try? h.create(h.name("racing\(i)"))
            }
        }
        // ... and so does a create: the kill comes while a record says Creating.
        var creating = false
        for _ in 0..<2000 where !creating {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: h.stateDir + "/sandboxes")) ?? []
            where entry.hasSuffix(".json") {
                if let text = try? String(contentsOfFile: h.stateDir + "/sandboxes/" + entry, encoding: .utf8),
                    text.contains("\"phase\":\"Creating\"")
                {
                    creating = true
                }
            }
            if !creating { usleep(2_000) }
        }
        XCTAssertTrue(creating, "no create in flight to kill")
        // Somewhere in the create: its lease, volume, mounts, container, the hand-over.
        usleep(UInt32.random(in: 0...300_000))
        h.kill9()
        group.wait()

        try h.start()
        for name in ready {
            let run = try h.exec(name, ["echo", "alive"])
            XCTAssertEqual(run.json?["stdout"] as? String, "alive\n", "\(name) after restart: \(run.text)")
        }
        XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(ready[0])/files/workspace/kept.txt").text, "kept")
        let items = try h.client.request("GET", "/v1/sandboxes").json?["items"] as? [[String: Any]] ?? []
        let names = items.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
        for name in ready { XCTAssertTrue(names.contains(name), "\(name) not adopted: \(names)") }
        for name in names { XCTAssertEqual(try h.delete(name).status, 200, name) }
        XCTAssertEqual(h.stop(), 0)
        assertNothingLeft(h)
        XCTAssertTrue(h.auditRecords().contains { $0["type"] as? String == "sandbox.adopted" })
        // What the restart found half-made was removed (audited with reason error).
        let removed = h.auditRecords().filter {
            $0["type"] as? String == "sandbox.deleted"
                && ($0["detail"] as? String)?.contains("after a daemon restart") == true
        }
        XCTAssertFalse(removed.isEmpty, "nothing half-made was found: \(h.log)")
        print("kill -9 recovery: \(h.log.split(separator: "\n").filter { $0.contains("recovery done") })")
    }

    // MARK: shutdown

    /// SIGTERM: a running exec is killed after the grace period and answered; with
    /// `shutdown.sandboxes: remove` the sandboxes are removed (audited, daemon shutdown).
    func testGracefulShutdownKillsExecsAfterGraceAndRemovesSandboxes() throws {
        let h = try start("shutdown:\n  gracePeriodSeconds: 1\n  sandboxes: remove\n")
        let name = h.name("shut")
        try h.create(name)
        let answered = Locked<DaemonClient.Response?>(nil)
        let group = DispatchGroup()
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            answered.mutate { $0 = try? h.exec(name, ["sleep", "60"]) }
        }
        usleep(500_000)
        let clock = ContinuousClock()
        let started = clock.now
        XCTAssertEqual(h.stop(), 0)
        XCTAssertLessThan(clock.now - started, .seconds(20))
        group.wait()
        XCTAssertEqual(answered.value?.json?["exitCode"] as? Int, 137, answered.value?.text ?? "no answer")
        XCTAssertEqual(answered.value?.json?["killedBy"] as? String, "daemon shutdown")
        let deleted = h.auditRecords().first {
            $0["type"] as? String == "sandbox.deleted" && $0["sandbox"] as? String == name
        }
        XCTAssertEqual(deleted?["reason"] as? String, "daemon shutdown")
        assertNothingLeft(h)
    }
}

/// A value shared between threads.
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ value: T) { _value = value }
    var value: T { lock.withLock { _value } }
    func mutate(_ body: (inout T) -> Void) { lock.withLock { body(&_value) } }
}

/// The CLI's daemon verbs against the real daemon (`SAFESPACE_SOCKET`).
final class DaemonCLITests: XCTestCase {
    func testRunPsExecCpRmThroughTheDaemon() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        let cli = URL(fileURLWithPath: DaemonHarness.binary).deletingLastPathComponent().path + "/safespace"
        try XCTSkipUnless(
            access(DaemonHarness.binary, X_OK) == 0 && access(cli, X_OK) == 0, "build safespace and safespaced first")
        let h = try DaemonHarness()
        defer { h.tearDown() }
        try h.start()
        func safespace(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: cli)
            process.arguments = args
            process.environment = ["SAFESPACE_SOCKET": h.socket, "PATH": "/usr/bin:/bin"]
            let out = Pipe()
            let err = Pipe()
            let input = Pipe()
            process.standardOutput = out
            process.standardError = err
            process.standardInput = input
            try process.run()
            if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
            try input.fileHandleForWriting.close()
            let o = out.fileHandleForReading.readDataToEndOfFile()
            let e = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
        let run = try safespace(["run", "--name", h.name("run"), "--", "sh", "-c", "echo out; echo err >&2; exit 5"])
        XCTAssertEqual(run.status, 5, run.err)
        XCTAssertEqual(run.out, "out\n")
        XCTAssertEqual(run.err, "err\n")
        XCTAssertEqual(try safespace(["run", "--timeout", "1", "--", "sleep", "30"]).status, 124)
        XCTAssertEqual(h.leftovers()["runtime state"], nil, "run leaves its sandbox")

        let name = h.name("cli")
        try h.create(name)
        XCTAssertTrue(try safespace(["ps"]).out.contains(name))
        let local = h.dir + "/local.txt"
        try "über\n".write(toFile: local, atomically: true, encoding: .utf8)
        XCTAssertEqual(try safespace(["cp", local, "\(name):/workspace/a b.txt"]).status, 0)
        XCTAssertEqual(try safespace(["exec", name, "--", "cat", "/workspace/a b.txt"]).out, "über\n")
        XCTAssertEqual(try safespace(["cp", "\(name):/workspace/a b.txt", "-"]).out, "über\n")
        let piped = try safespace(["exec", "-i", name, "--", "sh", "-c", "cat; exit 3"], stdin: "in\n")
        XCTAssertEqual(piped.status, 3)
        XCTAssertEqual(piped.out, "in\n")
        let refused = try safespace(["cp", "\(name):/etc/passwd", "-"])
        XCTAssertEqual(refused.status, 125)
        XCTAssertTrue(refused.err.contains("not below a writable path"), refused.err)
        XCTAssertEqual(try safespace(["rm", name]).status, 0)
        XCTAssertEqual(try safespace(["rm", name]).status, 1)
        XCTAssertEqual(h.stop(), 0)
        XCTAssertEqual(h.leftovers(), [:])
    }
}

/// A sandbox with pinned CPUs: once it runs, its CPU lease (in the node's lease store), its
/// volume and its bundle lease belong to its init, so a kill -9 of the daemon frees nothing
/// of it; the restarted daemon adopts it and its delete frees all.
final class DaemonPinnedCPUTests: XCTestCase {
    func testPinnedCPUsBelongToTheInitAndSurviveTheDaemon() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first")
        let h = try DaemonHarness()
        defer { h.tearDown() }
        try h.start()
        let name = h.name("pinned")
        let created = try h.client.request(
            "POST", "/v1/sandboxes",
            json: [
                "metadata": ["name": name], "spec": ["resources": ["cpu": "1", "memory": "64Mi", "cpuPinning": true]],
            ])
        XCTAssertEqual(created.status, 201, created.text)
        func leaseHolder(_ path: String) -> Int? {
            guard let data = FileManager.default.contents(atPath: path),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            else { return nil }
            return ((object["holder"] ?? object["owner"]) as? [String: Any])?["pid"] as? Int ?? object["pid"] as? Int
        }
        let cpuLease = LeaseDirectory.path + "/cpus/\(name).json"
        let initPid = try XCTUnwrap(leaseHolder(cpuLease), "no CPU lease at \(cpuLease)")
        XCTAssertNotEqual(Int32(initPid), h.pid, "the CPUs still belong to the daemon")
        XCTAssertEqual(leaseHolder(h.bundleRoot + "/\(name)/lease.json"), initPid)
        XCTAssertEqual(leaseHolder(h.ephemeral + "/\(name)/owner.json"), initPid)
        let cpus = try h.exec(name, ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"])
        XCTAssertEqual(
            (cpus.json?["stdout"] as? String)?.split(separator: ":").last?.trimmingCharacters(
                in: .whitespacesAndNewlines
            ).count, 1, cpus.text)

        h.kill9()
        XCTAssertNotNil(leaseHolder(cpuLease), "the CPU lease went with the daemon")
        try h.start()
        XCTAssertEqual(try h.exec(name, ["true"]).json?["exitCode"] as? Int, 0)
        XCTAssertEqual(try h.delete(name).status, 200)
        XCTAssertNil(leaseHolder(cpuLease))
        XCTAssertEqual(h.stop(), 0)
        // The adopted init's parent was the daemon that died: its zombie is reaped by PID 1.
        var left = h.leftovers()
        for _ in 0..<30 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:])
    }
}
