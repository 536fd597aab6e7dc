/// The daemon's side of the agent protocol (AgentExec) against fake agents on a temporary
/// socket: every answer of the agent is untrusted. And the `code`/`language` fields of an
/// exec request. No root needed.
import Foundation
import Glibc
import XCTest

@testable import SafeSpaceDaemon

final class AgentProtocolTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = "/tmp/ssa-proto-" + String(UInt32.random(in: 0x1000_0000...0xFFFF_FFFF), radix: 16)
        mkdir(directory, 0o700)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func record(_ type: UInt32, _ value: Int32, _ detail: Int32 = 0) -> [UInt8] {
        var out: [UInt8] = []
        for v in [AgentExec.recordMagic, type, UInt32(bitPattern: value), UInt32(bitPattern: detail)] {
            withUnsafeBytes(of: v.littleEndian) { out += $0 }
        }
        return out
    }

    /// A fake agent on `<directory>/agent.sock`: takes one connection, reads the request (the
    /// fds are dropped), writes `reply`, then holds the connection until `hold` seconds pass.
    func fakeAgent(reply: [UInt8], hold: Double = 0) throws -> Thread {
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) {
            $0.copyBytes(from: Array((directory + "/agent.sock").utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(bound, 0)
        listen(listener, 4)
        let thread = Thread {
            let fd = accept(listener, nil, nil)
            close(listener)
            var buffer = [UInt8](repeating: 0, count: 65536)
            _ = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            var sent = 0
            while sent < reply.count {
                let n = reply[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break }
                sent += n
            }
            if hold > 0 { usleep(UInt32(hold * 1_000_000)) }
            close(fd)
        }
        thread.start()
        return thread
    }

    func runExec(_ command: [String] = ["true"], timeout: Int? = nil) throws -> ExecResult {
        var request = ExecRequest(command: command)
        request.timeoutSeconds = timeout
        return try AgentExec.run(
            endpoint: AgentEndpoint(directory: directory, initPid: 0), socket: AgentExec.agentSocket,
            handle: ExecHandle(id: 1, request: request), maxOutput: 1 << 20, oomKills: { nil }, emit: nil)
    }

    func testStartedThenExitedIsTheResult() throws {
        _ = try fakeAgent(reply: Self.record(1, 42) + Self.record(2, 3 << 8))
        let result = try runExec()
        XCTAssertEqual(result.exitCode, 3)
        XCTAssertFalse(result.timedOut)
        // A signal: 128 + its number.
        unlink(directory + "/agent.sock")
        _ = try fakeAgent(reply: Self.record(1, 42) + Self.record(2, SIGSEGV))
        XCTAssertEqual(try runExec().exitCode, 128 + SIGSEGV)
    }

    func testFailedNamesTheField() throws {
        _ = try fakeAgent(reply: Self.record(3, ENOENT, 2))
        XCTAssertThrowsError(try runExec(["no-such"])) { error in
            XCTAssertEqual((error as? APIError)?.code, "exec_failed")
            XCTAssertEqual((error as? APIError)?.field, "command")
        }
        unlink(directory + "/agent.sock")
        _ = try fakeAgent(reply: Self.record(3, ENOENT, 1))
        XCTAssertThrowsError(try runExec()) { XCTAssertEqual(($0 as? APIError)?.field, "cwd") }
    }

    /// Before STARTED, garbage, a refusal, a closed connection or no socket: unavailable (the
    /// daemon runs the exec another way); nothing was started.
    func testGarbageBeforeStartedIsUnavailable() throws {
        for reply in [Array("HTTP/1.1 200 OK\r\n\r\n".utf8), Self.record(4, 0), [], Self.record(9, 1)] {
            unlink(directory + "/agent.sock")
            _ = try fakeAgent(reply: reply)
            XCTAssertThrowsError(try runExec(), "\(reply.prefix(20))") {
                XCTAssertTrue($0 is AgentUnavailable, "\($0)")
            }
        }
        unlink(directory + "/agent.sock")
        XCTAssertThrowsError(try runExec()) { XCTAssertTrue($0 is AgentUnavailable) }
    }

    /// A huge malformed reply after STARTED: read 16 bytes at a time, refused at the first
    /// malformed record, the exec ends with 502 agent_unavailable.
    func testHugeReplyAfterStartedIsAnError() throws {
        let huge = Self.record(1, 42) + [UInt8](repeating: 0x41, count: 8 << 20)
        _ = try fakeAgent(reply: huge, hold: 2)
        XCTAssertThrowsError(try runExec()) { error in
            XCTAssertEqual((error as? APIError)?.code, "agent_unavailable", "\(error)")
        }
    }

    /// The agent's socket replaced by a symlink to another socket: never followed.
    func testSymlinkIsNotFollowed() throws {
        let other = directory + "/other"
        mkdir(other, 0o700)
        let saved = directory
        directory = other
        _ = try fakeAgent(reply: Self.record(1, 42) + Self.record(2, 0))
        directory = saved
        XCTAssertEqual(symlink(other + "/agent.sock", directory + "/agent.sock"), 0)
        XCTAssertThrowsError(try runExec()) { XCTAssertTrue($0 is AgentUnavailable, "\($0)") }
    }

    /// A fake agent that never accepts, its backlog full: connect gives up (SO_SNDTIMEO)
    /// instead of holding the exec's thread forever.
    func testFullBacklogIsUnavailable() throws {
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) {
            $0.copyBytes(from: Array((directory + "/agent.sock").utf8) + [0])
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(listener, 0), 0)
        // Fill the backlog with connections nobody accepts.
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<4 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            fillers.append(fd)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
            }
        }
        XCTAssertThrowsError(try runExec()) { XCTAssertTrue($0 is AgentUnavailable, "\($0)") }
    }

    /// A killed exec whose agent never says EXITED ends after the grace period as SIGKILL.
    func testTimeoutWithASilentAgentEnds() throws {
        _ = try fakeAgent(reply: Self.record(1, 42), hold: 8)
        let result = try runExec(timeout: 1)
        XCTAssertTrue(result.timedOut)
        XCTAssertEqual(result.exitCode, 128 + SIGKILL)
    }

    func testRequestEncoding() throws {
        let bytes = AgentExec.encode(kind: .command, argv: ["a", "bc"], env: ["K": "v"], cwd: "/t")
        // magic, kind, length; argc 2, "a", "bc"; envc 1, "K=v"; cwd "/t"; 0 rlimits.
        XCTAssertEqual(Array(bytes[0..<4]), [0x53, 0x53, 0x41, 0x51])
        XCTAssertEqual(bytes.count, 12 + 4 + 5 + 6 + 4 + 7 + 6 + 4)
    }

    func testCodeAndLanguageValidation() throws {
        func parse(_ object: [String: Any]) throws -> ExecRequest {
            try ExecRequest.parse(Array(try JSONSerialization.data(withJSONObject: object)))
        }
        let python = try parse(["code": "print(1)", "language": "python"])
        XCTAssertEqual(python.command, ["python3", "-c", "print(1)"])
        XCTAssertEqual(python.code, "print(1)")
        XCTAssertEqual(try parse(["code": "print(1)"]).language, .python)
        XCTAssertEqual(try parse(["code": "1", "language": "node"]).command, ["node", "-e", "1"])
        for (object, field) in [
            (["code": "1", "command": ["true"]] as [String: Any], "code"),
            (["code": "1", "language": "ruby"], "language"),
            (["language": "python"], "language"),
            (["code": "a\u{0}b"], "code"),
            ([:], "command"),
        ] {
            XCTAssertThrowsError(try parse(object)) { XCTAssertEqual(($0 as? APIError)?.field, field, "\(object)") }
        }
    }
}

extension AgentProtocolTests {
    /// forkserver.h is forkserver.py as scripts/embed-forkserver writes it.
    func testEmbeddedForkServerIsTheSource() throws {
        let root =
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/Sources/SafeSpaceAgent/"
        let source = try String(contentsOfFile: root + "forkserver.py", encoding: .utf8)
        let header = try String(contentsOfFile: root + "forkserver.h", encoding: .utf8)
        var embedded = ""
        for line in header.split(separator: "\n", omittingEmptySubsequences: false)
        where line.hasPrefix("    \"") {
            var body = line.dropFirst(5)
            if body.hasSuffix("\";") { body = body.dropLast(2) } else { body = body.dropLast(1) }
            var out = ""
            var escaped = false
            for c in body {
                if escaped {
                    out.append(c == "n" ? "\n" : c)
                    escaped = false
                } else if c == "\\" {
                    escaped = true
                } else {
                    out.append(c)
                }
            }
            embedded += out
        }
        XCTAssertEqual(embedded, source, "run scripts/embed-forkserver")
    }
}
