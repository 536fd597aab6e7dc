/// `securityLevel: high` through the daemon: a gVisor sandbox (runsc) with execs whose stdio
/// is captured and streamed, their exit codes, env, cwd, timeouts (the process and what it
/// started killed inside the sandbox), concurrent execs, files moved from inside the sandbox,
/// usage from its cgroup, and a delete that leaves nothing (runsc's state, cgroups, mounts,
/// processes).
import DaemonClient
import Foundation
import XCTest

extension DaemonAPITests {
    /// Processes of the node whose command line names this daemon's runtime root: runsc's
    /// sandbox, gofer and exec processes run with `--root <runtimeRoot>/<id>/runsc`.
    func runscProcesses(_ h: DaemonHarness) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard Int32(entry) != nil,
                let data = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(entry)/cmdline"))
            else { return nil }
            let argv = String(decoding: data, as: UTF8.self).split(separator: "\0").joined(separator: " ")
            return argv.contains(h.runtimeRoot) ? "\(entry) \(argv)" : nil
        }
    }

    func skipUnlessRunsc() throws {
        try XCTSkipUnless(
            access("/usr/bin/runsc", X_OK) == 0 || access("/usr/local/bin/runsc", X_OK) == 0, "runsc is not installed")
    }

    func testHighLevelSandboxRunsExecsUnderGVisor() throws {
        try skipUnlessRunsc()
        let h = try start()
        let name = h.name("high")
        let created = try h.create(name, spec: ["securityLevel": "high"])
        XCTAssertEqual((created.json?["status"] as? [String: Any])?["level"] as? String, "high", created.text)

        // The sandbox's kernel is gVisor's sentry.
        let kernel = try h.exec(name, ["dmesg"])
        XCTAssertEqual(kernel.json?["exitCode"] as? Int, 0, kernel.text)
        XCTAssertTrue((kernel.json?["stdout"] as? String ?? "").contains("gVisor"), kernel.text)

        // stdin, stdout, stderr, exit code.
        let script = "import sys; d = sys.stdin.read(); print(d.upper()); print('to err', file=sys.stderr); sys.exit(3)"
        let run = try h.exec(name, ["python3", "-c", script], stdin: "hello gvisor")
        XCTAssertEqual(run.status, 200, run.text)
        XCTAssertEqual(run.json?["exitCode"] as? Int, 3, run.text)
        XCTAssertEqual(run.json?["stdout"] as? String, "HELLO GVISOR\n", run.text)
        XCTAssertEqual(run.json?["stderr"] as? String, "to err\n", run.text)
        XCTAssertEqual(run.json?["timedOut"] as? Bool, false)

        // env and cwd.
        let envCwd = try h.exec(
            name, ["sh", "-c", "echo \"$GREETING\"; pwd"], extra: ["env": ["GREETING": "hi there"], "cwd": "/tmp"])
        XCTAssertEqual(envCwd.json?["stdout"] as? String, "hi there\n/tmp\n", envCwd.text)

        // A program that does not exist: refused as at the standard level.
        let missing = try h.exec(name, ["/no/such/program"])
        XCTAssertEqual(missing.status, 400, missing.text)
        XCTAssertEqual(missing.error?.code, "exec_failed", missing.text)

        // Eight at once, each with its own output.
        let results = LockedResults()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let r = try? h.exec(name, ["sh", "-c", "sleep 0.2; echo exec-\(i)"])
            results.set(i, r?.json?["stdout"] as? String)
        }
        for i in 0..<8 { XCTAssertEqual(results.get(i), "exec-\(i)\n") }

        // Streamed (NDJSON): the chunks in order, then the exit object.
        var pending: [UInt8] = []
        var streamed = ""
        var exit: [String: Any]?
        let body = try JSONSerialization.data(withJSONObject: [
            "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done; echo done >&2; exit 5"]
        ])
        let response = try h.client.send(
            "POST", "/v1/sandboxes/\(name)/exec", body: [UInt8](body),
            headers: ["Accept": "application/x-ndjson", "Content-Type": "application/json"]
        ) { chunk in
            pending += chunk
            while let newline = pending.firstIndex(of: 0x0A) {
                let object = (try? JSONSerialization.jsonObject(with: Data(pending[..<newline]))) as? [String: Any]
                pending.removeSubrange(...newline)
                if let part = object?["stdout"] as? String { streamed += part }
                if object?["exitCode"] != nil { exit = object }
            }
        }
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(streamed, "line 1\nline 2\nline 3\n")
        XCTAssertEqual(exit?["exitCode"] as? Int, 5, "\(exit ?? [:])")

        // Usage from the sandbox's cgroup (the sentry's and gofer's host processes).
        let described = try h.client.request("GET", "/v1/sandboxes/\(name)")
        let usage = (described.json?["status"] as? [String: Any])?["usage"] as? [String: Any]
        XCTAssertNotNil(usage?["cpuSeconds"] as? Double, described.text)
        XCTAssertGreaterThan(usage?["memoryBytes"] as? Int ?? 0, 0, described.text)

        XCTAssertTrue([200, 204].contains(try h.delete(name).status))
        assertNothingLeft(h)
        XCTAssertEqual(runscProcesses(h), [])
        XCTAssertEqual(h.zombieChildren().map(Self.statLine), [])
    }

    /// /proc/PID/stat of `pid` (its command name names a zombie).
    static func statLine(_ pid: String) -> String {
        (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? pid
    }

    /// The timeout kills the exec'd process inside the sandbox and what it started (the
    /// sentry has no host process to signal; a kill of runsc exec alone would leave both
    /// running); a delete during a running exec ends it.
    func testHighLevelExecTimeoutKillsTheProcessAndItsChildrenInTheSandbox() throws {
        try skipUnlessRunsc()
        let h = try start()
        let name = h.name("hightime")
        try h.create(name, spec: ["securityLevel": "high"])
        let timed = try h.exec(
            name, ["sh", "-c", "sleep 301 & sleep 302; echo never"], extra: ["timeoutSeconds": 1])
        XCTAssertEqual(timed.status, 200, timed.text)
        XCTAssertEqual(timed.json?["timedOut"] as? Bool, true, timed.text)
        XCTAssertEqual(timed.json?["exitCode"] as? Int, 137, timed.text)
        XCTAssertEqual(timed.json?["stdout"] as? String, "", timed.text)

        // Inside the sandbox: neither sleep is left (read from its /proc).
        let list = """
            import os
            for p in os.listdir('/proc'):
                if p.isdigit():
                    try:
                        print(open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\\0', b' ').decode())
                    except OSError:
                        pass
            """
        var left = ""
        for _ in 0..<50 {
            left = try h.exec(name, ["python3", "-c", list]).json?["stdout"] as? String ?? ""
            if !left.contains("sleep 30") { break }
            usleep(100_000)
        }
        XCTAssertFalse(left.contains("sleep 301"), left)
        XCTAssertFalse(left.contains("sleep 302"), left)

        // A delete while an exec runs: the exec ends, killed by the delete.
        let ended = LockedResults()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            let r = try? h.exec(name, ["sleep", "300"])
            ended.set(0, r?.json?["killedBy"] as? String ?? r?.text ?? "no answer")
        }
        usleep(1_500_000)
        XCTAssertTrue([200, 204].contains(try h.delete(name).status))
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(ended.get(0), "sandbox deleted")
        assertNothingLeft(h)
        XCTAssertEqual(runscProcesses(h), [])
        XCTAssertEqual(h.zombieChildren(), [])
    }

    /// Files at the high level are moved by a process inside the sandbox (runsc's overlay
    /// hides the sandbox's writes from the host), with the rules of the standard level.
    func testHighLevelFilesRoundTripWithTheStandardRules() throws {
        try skipUnlessRunsc()
        let h = try start("limits:\n  maxFileBytes: 65536\n")
        let name = h.name("highfiles")
        try h.create(name, spec: ["securityLevel": "high"])
        let c = h.client
        let payload: [UInt8] = Array(repeating: Array(0...255), count: 200).flatMap { $0 }
        let put = try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace/dir/in.bin", body: payload)
        XCTAssertEqual(put.status, 200, put.text)
        XCTAssertEqual(put.json?["bytes"] as? Int, payload.count, put.text)
        let got = try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/dir/in.bin")
        XCTAssertEqual(got.status, 200, got.text)
        XCTAssertTrue(got.body == payload, "read back \(got.body.count) bytes, different")

        // The sandbox sees it, owned by its user, 0644; the directory made is its user's.
        // (python's os.stat: this runsc answers coreutils' statx(2) on /workspace with EINVAL)
        let owner = try h.exec(
            name,
            [
                "python3", "-c",
                "import os; print(os.getuid()); s = os.stat('/workspace/dir/in.bin'); print(s.st_uid, oct(s.st_mode & 0o777)[2:], s.st_size); d = os.stat('/workspace/dir'); print(d.st_uid, oct(d.st_mode & 0o777)[2:])",
            ])
        let lines = (owner.json?["stdout"] as? String ?? "").split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, owner.text)
        if lines.count == 3 {
            XCTAssertEqual(lines[1], "\(lines[0]) 644 \(payload.count)", owner.text)
            XCTAssertEqual(lines[2], "\(lines[0]) 755", owner.text)
        }
        // What the sandbox wrote comes out.
        _ = try h.exec(name, ["sh", "-c", "printf out > /tmp/o.txt"])
        XCTAssertEqual(try c.request("GET", "/v1/sandboxes/\(name)/files/tmp/o.txt").text, "out")
        // Overwritten: truncated, not appended.
        XCTAssertEqual(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/tmp/o.txt", body: Array("2".utf8)).status, 200)
        XCTAssertEqual(try c.request("GET", "/v1/sandboxes/\(name)/files/tmp/o.txt").text, "2")

        // A path with shell characters is a path, never shell text: the file has the name as
        // given (interpolated, $(id) would have become "uid=...").
        let odd = "workspace/%24%28id%29%3B%60id%60%27%22%20-n"
        let oddPut = try c.request("PUT", "/v1/sandboxes/\(name)/files/\(odd)", body: Array("x".utf8))
        XCTAssertEqual(oddPut.status, 200, oddPut.text)
        let listing = try h.exec(
            name, ["python3", "-c", "import os; print('\\n'.join(sorted(os.listdir('/workspace'))))"])
        let names = listing.json?["stdout"] as? String ?? ""
        XCTAssertTrue(names.split(separator: "\n").contains("$(id);`id`'\" -n"), listing.text)
        XCTAssertFalse(names.contains("uid="), listing.text)
        XCTAssertEqual(try c.request("GET", "/v1/sandboxes/\(name)/files/\(odd)").text, "x")

        // Symbolic links the sandbox planted, a fifo, a missing file, outside the writable paths.
        _ = try h.exec(
            name,
            [
                "sh", "-c",
                "ln -s /etc /workspace/etcdir; ln -s /etc/hostname /workspace/link; ln -s ../.. /workspace/up; mkfifo /workspace/fifo",
            ])
        for path in ["workspace/etcdir/passwd", "workspace/link", "workspace/up/etc/passwd"] {
            assertError(try c.request("GET", "/v1/sandboxes/\(name)/files/\(path)"), 400, "path_escape", field: "path")
            assertError(
                try c.request("PUT", "/v1/sandboxes/\(name)/files/\(path)", body: Array("pwned".utf8)), 400,
                "path_escape", field: "path")
        }
        XCTAssertNotEqual(try h.exec(name, ["cat", "/etc/hostname"]).json?["stdout"] as? String, "pwned")
        assertError(try c.request("GET", "/v1/sandboxes/\(name)/files/etc/passwd"), 403, "not_writable", field: "path")
        assertError(
            try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/fifo"), 409, "not_a_file", field: "path")
        assertError(
            try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/missing"), 404, "file_not_found", field: "path")
        assertError(
            try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/nodir/x"), 404, "file_not_found", field: "path")
        // Above the size limit: refused on the way in and on the way out.
        assertError(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace/big", body: Array(repeating: 1, count: 70_000)),
            413, "too_large")
        _ = try h.exec(name, ["sh", "-c", "head -c 70000 /dev/zero > /workspace/big2"])
        assertError(try c.request("GET", "/v1/sandboxes/\(name)/files/workspace/big2"), 413, "too_large", field: "path")

        XCTAssertTrue([200, 204].contains(try h.delete(name).status))
        assertNothingLeft(h)
        XCTAssertEqual(runscProcesses(h), [])
    }
}

extension DaemonAPITests {
    /// kill -9 of the daemon while a gVisor sandbox runs: the restarted daemon adopts it
    /// (execs, files, timeout kill through runsc), and its delete leaves nothing.
    func testHighLevelSandboxIsAdoptedAfterKill9() throws {
        try skipUnlessRunsc()
        let h = try start()
        let name = h.name("highadopt")
        try h.create(name, spec: ["securityLevel": "high"])
        XCTAssertEqual(
            try h.client.request("PUT", "/v1/sandboxes/\(name)/files/workspace/kept.txt", body: Array("kept".utf8))
                .status, 200)
        h.kill9()
        try h.start()
        let listed = try h.client.request("GET", "/v1/sandboxes/\(name)")
        XCTAssertEqual(
            (listed.json?["status"] as? [String: Any])?["phase"] as? String, "Running", listed.text)
        XCTAssertEqual(try h.client.request("GET", "/v1/sandboxes/\(name)/files/workspace/kept.txt").text, "kept")
        let run = try h.exec(name, ["sh", "-c", "cat /workspace/kept.txt; echo; dmesg | head -1"])
        XCTAssertEqual(run.json?["exitCode"] as? Int, 0, run.text)
        XCTAssertTrue((run.json?["stdout"] as? String ?? "").hasPrefix("kept\n"), run.text)
        let timed = try h.exec(name, ["sleep", "300"], extra: ["timeoutSeconds": 1])
        XCTAssertEqual(timed.json?["timedOut"] as? Bool, true, timed.text)
        XCTAssertEqual(try h.delete(name).status, 200)
        XCTAssertEqual(h.stop(), 0)
        // The adopted sandbox's processes had the killed daemon as parent: PID 1 reaps them.
        var left = h.leftovers()
        for _ in 0..<50 where !left.isEmpty || !runscProcesses(h).isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:])
        XCTAssertEqual(runscProcesses(h), [])
    }
}

/// Results of concurrent requests, by index.
final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int: String] = [:]
    func set(_ index: Int, _ value: String?) { lock.withLock { values[index] = value } }
    func get(_ index: Int) -> String? { lock.withLock { values[index] } }
}
