/// The in-sandbox exec agent (PID 1 of the daemon's sandboxes) and the warm Python
/// interpreter, against the real daemon (root only), with the sandbox attacking its agent.
import DaemonClient
import Foundation
import Glibc
import XCTest

final class DaemonAgentTests: XCTestCase {
    var harness: DaemonHarness!

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "safespaced needs root")
        try XCTSkipUnless(access(DaemonHarness.binary, X_OK) == 0, "build safespaced first (\(DaemonHarness.binary))")
        let agent = URL(fileURLWithPath: DaemonHarness.binary).deletingLastPathComponent().path + "/safespace-agent"
        try XCTSkipUnless(access(agent, X_OK) == 0, "build safespace-agent first (\(agent))")
    }

    override func tearDown() {
        harness?.tearDown()
        harness = nil
    }

    func start() throws -> DaemonHarness {
        let h = try DaemonHarness(extraConfig: "node:\n  allocatableCPU: \"100\"\n  allocatableMemory: 100Gi\n")
        harness = h
        try h.start()
        return h
    }

    func assertNothingLeft(_ h: DaemonHarness, file: StaticString = #filePath, line: UInt = #line) {
        var left = h.leftovers()
        for _ in 0..<20 where !left.isEmpty {
            usleep(100_000)
            left = h.leftovers()
        }
        XCTAssertEqual(left, [:], "leaked; the daemon's log:\n\(left.isEmpty ? "" : h.log)", file: file, line: line)
    }

    static func code(_ h: DaemonHarness, _ name: String, _ source: String, extra: [String: Any] = [:]) throws
        -> DaemonClient.Response
    {
        var body: [String: Any] = ["code": source, "language": "python"]
        for (k, v) in extra { body[k] = v }
        return try h.client.request("POST", "/v1/sandboxes/\(name)/exec", json: body)
    }

    func code(_ h: DaemonHarness, _ name: String, _ source: String, extra: [String: Any] = [:]) throws
        -> DaemonClient.Response
    { try Self.code(h, name, source, extra: extra) }

    /// `safespaced_exec_agent_fallbacks_total` of /metrics (0 when never incremented).
    func fallbacks(_ h: DaemonHarness) throws -> Int {
        let text = try h.client.request("GET", "/metrics").text
        for line in text.split(separator: "\n") where line.hasPrefix("safespaced_exec_agent_fallbacks_total") {
            return Int(Double(line.split(separator: " ").last ?? "0") ?? 0)
        }
        return 0
    }

    /// PID 1 is the agent; execs are its children (PPID 1, where a runtime exec's parent is
    /// outside the namespace: 0); stdio, env, cwd, exit codes, signals, failures to start, a
    /// timeout that kills the whole process group; code through the warm interpreter.
    func testExecsThroughTheAgent() throws {
        let h = try start()
        let name = h.name("agent")
        XCTAssertEqual(try h.create(name).status, 201)

        let init1 = try h.exec(name, ["cat", "/proc/1/cmdline"])
        XCTAssertTrue((init1.json?["stdout"] as? String ?? "").hasPrefix("/dev/.safespace-agent\u{0}"), init1.text)
        XCTAssertEqual(try h.exec(name, ["sh", "-c", "echo $PPID"]).json?["stdout"] as? String, "1\n")
        // The sandbox's user, not root; no capabilities.
        XCTAssertEqual(try h.exec(name, ["id", "-u"]).json?["stdout"] as? String, "1000\n")
        let caps = try h.exec(name, ["sh", "-c", "grep CapEff /proc/self/status"])
        XCTAssertEqual(caps.json?["stdout"] as? String, "CapEff:\t0000000000000000\n")
        // Only its stdio: no other fd of the agent or the daemon.
        XCTAssertEqual(try h.exec(name, ["ls", "/proc/self/fd"]).json?["stdout"] as? String, "0\n1\n2\n3\n")

        let run = try h.exec(
            name, ["sh", "-c", "cat; echo \"$GREETING\" >&2; pwd; exit 7"], stdin: "in-bytes\n",
            extra: ["env": ["GREETING": "héllo"], "cwd": "/tmp"])
        XCTAssertEqual(run.status, 200, run.text)
        XCTAssertEqual(run.json?["stdout"] as? String, "in-bytes\n/tmp\n")
        XCTAssertEqual(run.json?["stderr"] as? String, "héllo\n")
        XCTAssertEqual(run.json?["exitCode"] as? Int, 7)
        XCTAssertEqual(run.json?["timedOut"] as? Bool, false)
        XCTAssertEqual(run.json?["oomKilled"] as? Bool, false)
        // The sandbox's environment is kept, a variable of the request replaces its own.
        let env = try h.exec(name, ["sh", "-c", "echo $PATH; echo $HOME"], extra: ["env": ["HOME": "/x"]])
        XCTAssertEqual(
            env.json?["stdout"] as? String, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/x\n")
        // Killed by a signal: 128 + its number.
        XCTAssertEqual(try h.exec(name, ["sh", "-c", "kill -TERM $$"]).json?["exitCode"] as? Int, 143)
        // Cannot start: the field at fault.
        let missing = try h.exec(name, ["no-such-program"])
        XCTAssertEqual(missing.status, 400, missing.text)
        XCTAssertEqual(missing.error?.code, "exec_failed")
        XCTAssertEqual(missing.error?.field, "command")
        let badCwd = try h.exec(name, ["true"], extra: ["cwd": "/no/such/dir"])
        XCTAssertEqual(badCwd.error?.field, "cwd", badCwd.text)

        // A timeout kills the process group: the background children too.
        let slow = try h.exec(
            name, ["sh", "-c", "sleep 301 & sleep 302 & echo started; wait"], extra: ["timeoutSeconds": 1])
        XCTAssertEqual(slow.json?["timedOut"] as? Bool, true, slow.text)
        XCTAssertEqual(slow.json?["exitCode"] as? Int, 137)
        XCTAssertEqual(slow.json?["stdout"] as? String, "started\n")
        var left = ""
        for _ in 0..<50 {
            left =
                try h.exec(name, ["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]).json?["stdout"]
                as? String ?? ""
            if !left.contains("sleep 30") { break }
            usleep(100_000)
        }
        XCTAssertFalse(left.contains("sleep 30"), left)

        // Streaming works the same way.
        var lines: [[String: Any]] = []
        var pending: [UInt8] = []
        let streamed = try h.client.send(
            "POST", "/v1/sandboxes/\(name)/exec",
            body: Array(#"{"command":["sh","-c","echo one; echo two >&2; exit 3"]}"#.utf8),
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
        XCTAssertEqual(lines.compactMap { $0["stdout"] as? String }.joined(), "one\n")
        XCTAssertEqual(lines.last?["exitCode"] as? Int, 3)

        // code: the warm interpreter (its child's parent is `python3 -c <server>`).
        let warm = try code(
            h, name,
            "import os, sys\nprint(open('/proc/%d/cmdline' % os.getppid()).read().split('\\0')[:2])\nprint(os.getcwd(), os.environ['X'], sys.stdin.read())\nsys.exit(5)",
            extra: ["env": ["X": "y"], "cwd": "/tmp", "stdin": "input"])
        XCTAssertEqual(warm.json?["stdout"] as? String, "['python3', '-c']\n/tmp y input\n", warm.text)
        XCTAssertEqual(warm.json?["exitCode"] as? Int, 5)
        let raised = try Self.code(h, name, "raise ValueError('boom')")
        XCTAssertEqual(raised.json?["exitCode"] as? Int, 1)
        XCTAssertEqual(
            raised.json?["stderr"] as? String,
            "Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nValueError: boom\n")
        // Re-seeded after the fork: two children do not draw the same numbers.
        let first = try Self.code(h, name, "import random; print(random.random())").json?["stdout"] as? String
        let second = try Self.code(h, name, "import random; print(random.random())").json?["stdout"] as? String
        XCTAssertNotNil(first)
        XCTAssertNotEqual(first, second)
        // Its fds: only stdio (the server's sockets are closed in the child).
        XCTAssertEqual(
            try Self.code(h, name, "import os; print(sorted(os.listdir('/proc/self/fd')))").json?["stdout"] as? String,
            "['0', '1', '2', '3']\n")
        // As `python3 -c` ends: atexit functions run, then the streams are flushed.
        let exits = try Self.code(
            h, name, "import atexit, sys\natexit.register(lambda: print('atexit'))\nsys.stdout.write('body ')")
        XCTAssertEqual(exits.json?["stdout"] as? String, "body atexit\n", exits.text)
        // The child forked ahead of the request (the spare) is the one that runs it, in a
        // session of its own; one killed from inside the sandbox is replaced: the next code runs.
        let spare = try Self.code(
            h, name,
            """
            import os, signal, time
            print(os.getsid(0) == os.getpid())
            server = os.getppid()
            for _ in range(100):
                spares = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()
                          and open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()[1] == str(server)]
                if spares:
                    break
                time.sleep(0.02)
            print(len(spares))
            os.kill(spares[0], signal.SIGKILL)
            """)
        XCTAssertEqual(spare.json?["stdout"] as? String, "True\n1\n", spare.text)
        for _ in 0..<3 {
            let after = try Self.code(h, name, "print(6 * 7)")
            XCTAssertEqual(after.json?["stdout"] as? String, "42\n", after.text)
            XCTAssertEqual(after.json?["exitCode"] as? Int, 0, after.text)
        }
        // A timeout kills the child's group.
        let loop = try Self.code(h, name, "while True: pass", extra: ["timeoutSeconds": 1])
        XCTAssertEqual(loop.json?["timedOut"] as? Bool, true, loop.text)
        XCTAssertEqual(loop.json?["exitCode"] as? Int, 137)
        // No runtime runs node here: `node -e` cannot start.
        let node = try h.client.request(
            "POST", "/v1/sandboxes/\(name)/exec", json: ["code": "console.log(1)", "language": "node"])
        XCTAssertEqual(node.error?.code, "exec_failed", node.text)

        // Validation names the field.
        for (body, field) in [
            (["code": "1", "command": ["true"]] as [String: Any], "code"),
            (["code": "1", "language": "ruby"], "language"),
            (["language": "python"], "language"),
            (["code": 5], "code"),
        ] {
            let response = try h.client.request("POST", "/v1/sandboxes/\(name)/exec", json: body)
            XCTAssertEqual(response.status, 400, response.text)
            XCTAssertEqual(response.error?.field, field, response.text)
        }

        XCTAssertEqual(try fallbacks(h), 0, "every exec went through the agent")
        XCTAssertEqual(try h.delete(name).status, 200)
        assertNothingLeft(h)
    }

    /// The warm interpreter's child says its exit status itself, before its exit's teardown
    /// (forkserver.py, kind EXITING): the exec ends when the child says it, even if the child
    /// runs on (as a process it started in the background would); a report from any other
    /// process of the sandbox (here a child of the exec's child) is not believed. The child's
    /// environment is the server's with the request's variables.
    func testWarmChildSaysItsExitItselfAndOnlyItself() throws {
        let h = try start()
        let name = h.name("exit")
        XCTAssertEqual(try h.create(name).status, 201)

        // Said by the child itself (the fork server's own function, found through the frame
        // that runs the code), then it sleeps past the exec's timeout: the exec is over at once
        // with the said status; without the report it would time out (137).
        let said = try code(
            h, name, "import sys, time\nsys._getframe(1).f_globals['say_exit'](4)\ntime.sleep(3)",
            extra: ["timeoutSeconds": 1])
        XCTAssertEqual(said.json?["exitCode"] as? Int, 4, said.text)
        XCTAssertEqual(said.json?["timedOut"] as? Bool, false, said.text)

        // Forged by another process (a child of the exec's child, another pid): ignored, the
        // exec runs to its own end.
        let forged = try code(
            h, name,
            """
            import os, socket, struct, time
            pid = os.fork()
            if pid == 0:
                s = socket.socket(socket.AF_UNIX)
                s.connect('/dev/.safespace/python.sock')
                s.sendall(struct.pack('<IIIi', 0x51415353, 5, 4, 7 << 8))
                s.close()
                os._exit(0)
            os.waitpid(pid, 0)
            time.sleep(0.3)
            print('ran to its end')
            """)
        XCTAssertEqual(forged.json?["exitCode"] as? Int, 0, forged.text)
        XCTAssertEqual(forged.json?["stdout"] as? String, "ran to its end\n", forged.text)

        // Malformed reports (a status that is no exit status, a short one) change nothing either.
        let malformed = try code(
            h, name,
            """
            import os, socket, struct
            for body in (struct.pack('<IIIi', 0x51415353, 5, 4, 0x7F), struct.pack('<III', 0x51415353, 5, 4)):
                s = socket.socket(socket.AF_UNIX)
                s.connect('/dev/.safespace/python.sock')
                s.sendall(body)
                s.close()
            print('ok')
            """)
        XCTAssertEqual(malformed.json?["exitCode"] as? Int, 0, malformed.text)
        XCTAssertEqual(malformed.json?["stdout"] as? String, "ok\n", malformed.text)

        // The environment: the server's (PATH) and the request's variable.
        let env = try code(
            h, name, "import os\nprint(os.environ['PATH'], os.environ['X'])\nraise SystemExit(3)",
            extra: ["env": ["X": "y"]])
        XCTAssertEqual(
            env.json?["stdout"] as? String, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin y\n", env.text
        )
        XCTAssertEqual(env.json?["exitCode"] as? Int, 3, env.text)
        for _ in 0..<3 {
            let after = try code(h, name, "print(6 * 7)")
            XCTAssertEqual(after.json?["stdout"] as? String, "42\n", after.text)
            XCTAssertEqual(after.json?["exitCode"] as? Int, 0, after.text)
        }
        XCTAssertEqual(try fallbacks(h), 0, "every exec went through the agent")
        XCTAssertEqual(try h.delete(name).status, 200)
        assertNothingLeft(h)
    }

    /// The sandbox's code against its agent: signals to PID 1, garbage on its socket, a fake
    /// agent with a huge reply, a symlink to a host socket; the agent killed from the host.
    /// Each breaks at most that sandbox's own execs.
    func testSandboxAttacksItsAgent() throws {
        let h = try start()
        let name = h.name("attack")
        let other = h.name("other")
        XCTAssertEqual(try h.create(name).status, 201)
        XCTAssertEqual(try h.create(other).status, 201)

        // SIGTERM/SIGKILL to PID 1 from inside: ignored (pid_namespaces(7)); execs go on.
        _ = try h.exec(name, ["sh", "-c", "kill -TERM 1; kill -KILL 1; kill -INT 1; true"])
        XCTAssertEqual(try h.exec(name, ["sh", "-c", "echo $PPID"]).json?["stdout"] as? String, "1\n")

        // Garbage on the agent's socket: refused (a REFUSED record), the agent serves on.
        let garbage = try code(
            h, name,
            "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/dev/.safespace/agent.sock')\ntry:\n    s.sendall(b'\\xff' * 100000)\nexcept OSError:\n    pass\nprint(len(s.recv(16)))"
        )
        XCTAssertEqual(garbage.json?["stdout"] as? String, "16\n", garbage.text)
        XCTAssertEqual(try h.exec(name, ["sh", "-c", "echo $PPID"]).json?["stdout"] as? String, "1\n")

        // A fake agent in place of the socket, answering a huge malformed reply: the daemon
        // reads 16 bytes, finds no record, and runs the exec through the runtime instead (its
        // parent is outside the sandbox's PID namespace: 0).
        let fake = """
            import os, socket, sys
            os.unlink('/dev/.safespace/agent.sock')
            s = socket.socket(socket.AF_UNIX)
            s.bind('/dev/.safespace/agent.sock')
            s.listen(8)
            if os.fork() == 0:
                os.setsid()
                for fd in (0, 1, 2):
                    os.close(fd)
                while True:
                    c, _ = s.accept()
                    try:
                        c.sendall(b'\\x00garbage' * 1000000)
                    except OSError:
                        pass
                    c.close()
            print('ready')
            """
        XCTAssertEqual(try Self.code(h, name, fake).json?["stdout"] as? String, "ready\n")
        let before = try fallbacks(h)
        let fallback = try h.exec(name, ["sh", "-c", "echo $PPID; exit 4"])
        XCTAssertEqual(fallback.json?["stdout"] as? String, "0\n", fallback.text)
        XCTAssertEqual(fallback.json?["exitCode"] as? Int, 4)
        XCTAssertGreaterThan(try fallbacks(h), before)
        // The other sandbox is untouched.
        XCTAssertEqual(try h.exec(other, ["sh", "-c", "echo $PPID"]).json?["stdout"] as? String, "1\n")

        // A symlink to a host socket: never followed (the daemon opens the socket O_NOFOLLOW).
        let bait = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        defer { close(bait) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let baitPath = h.dir + "/bait.sock"
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(baitPath.utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(bait, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(bait, 8), 0)
        let link = try code(
            h, name,
            "import os\nos.unlink('/dev/.safespace/agent.sock')\nos.symlink('\(baitPath)', '/dev/.safespace/agent.sock')"
        )
        XCTAssertEqual(link.json?["exitCode"] as? Int, 0, link.text)
        XCTAssertEqual(try h.exec(name, ["true"]).json?["exitCode"] as? Int, 0)
        XCTAssertEqual(accept(bait, nil, nil), -1, "the daemon connected to the symlink's host target")

        // The agent killed from the host (the sandbox dies with its PID 1): a clear error.
        let record = try XCTUnwrap(
            JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: h.stateDir + "/sandboxes/\(other).json"))) as? [String: Any]
        )
        let pid = try XCTUnwrap(record["initPid"] as? Int)
        kill(Int32(pid), SIGKILL)
        usleep(300_000)
        let dead = try h.exec(other, ["true"])
        XCTAssertTrue([404, 409].contains(dead.status), dead.text)

        XCTAssertEqual(try h.delete(name).status, 200)
        _ = try? h.delete(other)
        assertNothingLeft(h)
    }

    /// 50 concurrent execs (and 10 of code) in one sandbox, each with its own stdin and output.
    func testFiftyConcurrentExecs() throws {
        let h = try start()
        let name = h.name("many")
        XCTAssertEqual(try h.create(name).status, 201)
        let failures = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 60) { e in
            do {
                if e >= 50 {
                    let response = try DaemonAgentTests.code(h, name, "print(\(e) * 2)")
                    if response.json?["stdout"] as? String != "\(e * 2)\n" {
                        failures.mutate { $0.append("code #\(e): \(response.text.prefix(300))") }
                    }
                    return
                }
                var input = ""
                for k in 0..<(500 + e * 31) { input += "line \(k) of exec \(e)\n" }
                let response = try h.exec(name, ["sh", "-c", "cat; echo done-$0 >&2; exit $0", "\(e)"], stdin: input)
                let json = response.json
                if response.status != 200 || json?["stdout"] as? String != input
                    || json?["stderr"] as? String != "done-\(e)\n" || json?["exitCode"] as? Int != e
                {
                    failures.mutate { $0.append("#\(e): \(response.status) \(response.text.prefix(300))") }
                }
            } catch { failures.mutate { $0.append("#\(e): \(error)") } }
        }
        XCTAssertEqual(failures.value, [])
        XCTAssertEqual(try fallbacks(h), 0)
        XCTAssertEqual(try h.delete(name).status, 200)
        assertNothingLeft(h)
    }
}
