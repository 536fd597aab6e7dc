/// `POST /v1/sandboxes/{name}/ports/{port}`: a loopback host port relayed to a port of a
/// sandbox that has only `lo` (dialled inside its network namespace), for a sandbox with
/// `spec.networkAccess.ingress: true` only; closed on delete and on daemon stop; audited.
import DaemonClient
import Foundation
import XCTest

extension DaemonAPITests {
    /// One HTTP/1.0 GET of `path` on 127.0.0.1:`port`: the raw response, or nil when the
    /// connection is refused or ends without a byte.
    static func httpGet(port: Int, path: String) -> [UInt8]? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return nil }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8)
        guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            out += buffer[..<n]
        }
        return out.isEmpty ? nil : out
    }

    /// The body of an HTTP response (after the blank line).
    static func httpBody(_ response: [UInt8]) -> [UInt8] {
        let separator: [UInt8] = [13, 10, 13, 10]
        for i in 0..<max(0, response.count - 3) where Array(response[i..<i + 4]) == separator {
            return Array(response[(i + 4)...])
        }
        return []
    }

    /// The network namespaces of the daemon's threads (/proc/PID/task/TID/ns/net links).
    static func threadNetworkNamespaces(_ pid: Int32) -> Set<String> {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return Set(
            tasks.compactMap {
                try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/task/\($0)/ns/net")
            })
    }

    func testPortForwardReachesAServerOnTheSandboxLoopbackAndClosesOnDelete() throws {
        let h = try start()
        let name = h.name("ports")
        let closedName = h.name("noingress")
        try h.create(name, spec: ["networkAccess": ["ingress": true]])
        try h.create(closedName)
        let c = h.client
        let hostNamespaces = Self.threadNetworkNamespaces(h.pid)

        // Refused: ingress not asked for (the default), bad ports.
        assertError(
            try c.request("POST", "/v1/sandboxes/\(closedName)/ports/8000"), 403, "ingress_not_allowed",
            field: "spec.networkAccess.ingress")
        for bad in ["0", "65536", "-1", "http", "80x"] {
            assertError(
                try c.request("POST", "/v1/sandboxes/\(name)/ports/\(bad)"), 400, "invalid_value", field: "port")
        }
        assertError(try c.request("POST", "/v1/sandboxes/nope/ports/8000"), 404, "not_found")

        // A server on the sandbox's loopback (it has no other interface).
        let payload: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        XCTAssertEqual(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace/big.bin", body: payload).status, 200)
        XCTAssertEqual(
            try c.request("PUT", "/v1/sandboxes/\(name)/files/workspace/hello.txt", body: Array("hello\n".utf8)).status,
            200)
        let interfaces = try h.exec(name, ["ls", "/sys/class/net"])
        XCTAssertEqual(interfaces.json?["stdout"] as? String, "lo\n", interfaces.text)
        let server = try h.exec(
            name,
            [
                "sh", "-c",
                "cd /workspace && nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &",
            ])
        XCTAssertEqual(server.json?["exitCode"] as? Int, 0, server.text)

        let opened = try c.request("POST", "/v1/sandboxes/\(name)/ports/8000")
        XCTAssertEqual(opened.status, 201, opened.text)
        XCTAssertEqual(opened.json?["address"] as? String, "127.0.0.1")
        XCTAssertEqual(opened.json?["port"] as? Int, 8000)
        let hostPort = try XCTUnwrap(opened.json?["hostPort"] as? Int, opened.text)
        XCTAssertGreaterThan(hostPort, 0)
        let again = try c.request("POST", "/v1/sandboxes/\(name)/ports/8000")
        XCTAssertEqual(again.status, 200, again.text)
        XCTAssertEqual(again.json?["hostPort"] as? Int, hostPort)

        // The server starts in its own time: poll until it answers.
        var hello: [UInt8]?
        for _ in 0..<100 {
            hello = Self.httpGet(port: hostPort, path: "/hello.txt")
            if hello != nil { break }
            usleep(100_000)
        }
        let answer = try XCTUnwrap(hello, "no answer through 127.0.0.1:\(hostPort)")
        XCTAssertTrue(String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.0 200"))
        XCTAssertEqual(Self.httpBody(answer), Array("hello\n".utf8))
        // A MiB, byte for byte, on 4 connections at once.
        let results = LockedResults()
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            let body = Self.httpGet(port: hostPort, path: "/big.bin").map(Self.httpBody)
            results.set(i, body == payload ? "same" : "differs (\(body?.count ?? -1) bytes)")
        }
        for i in 0..<4 { XCTAssertEqual(results.get(i), "same") }
        // A port nothing listens on: the connection is accepted and closed, nothing more.
        let empty = try c.request("POST", "/v1/sandboxes/\(name)/ports/9")
        XCTAssertEqual(empty.status, 201, empty.text)
        XCTAssertNil(Self.httpGet(port: try XCTUnwrap(empty.json?["hostPort"] as? Int), path: "/"))

        // Delete: the host ports are closed, the forward's threads gone from the namespace.
        XCTAssertEqual(try h.delete(name).status, 200)
        XCTAssertNil(Self.httpGet(port: hostPort, path: "/hello.txt"), "the forward still answers after the delete")
        var namespaces = Self.threadNetworkNamespaces(h.pid)
        for _ in 0..<50 where namespaces != hostNamespaces {
            usleep(100_000)
            namespaces = Self.threadNetworkNamespaces(h.pid)
        }
        XCTAssertEqual(namespaces, hostNamespaces, "a thread of the daemon is still in a sandbox's network namespace")
        let records = h.auditRecords()
        let opens = records.filter { $0["type"] as? String == "port.opened" }
        let closes = records.filter { $0["type"] as? String == "port.closed" }
        XCTAssertEqual(opens.filter { $0["outcome"] as? String == "ok" }.count, 2, "\(opens)")
        XCTAssertEqual(opens.filter { $0["outcome"] as? String == "denied" }.count, 6, "\(opens)")
        XCTAssertEqual(closes.count, 2, "\(closes)")
        XCTAssertTrue(closes.allSatisfy { $0["reason"] as? String == "request" }, "\(closes)")
        XCTAssertEqual(try h.delete(closedName).status, 200)
        assertNothingLeft(h)

        // Daemon stop closes the forwards of the sandboxes it keeps.
        let kept = h.name("kept")
        try h.create(kept, spec: ["networkAccess": ["ingress": true]])
        _ = try h.exec(
            kept, ["sh", "-c", "nohup python3 -m http.server 8001 --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &"])
        let keptPort = try XCTUnwrap(
            try c.request("POST", "/v1/sandboxes/\(kept)/ports/8001").json?["hostPort"] as? Int)
        var listed: [UInt8]?
        for _ in 0..<100 {
            listed = Self.httpGet(port: keptPort, path: "/")
            if listed != nil { break }
            usleep(100_000)
        }
        XCTAssertNotNil(listed)
        XCTAssertNotNil(h.stop())
        XCTAssertNil(Self.httpGet(port: keptPort, path: "/"), "the forward outlived the daemon")
        XCTAssertTrue(
            h.auditRecords().contains {
                $0["type"] as? String == "port.closed" && $0["reason"] as? String == "daemon shutdown"
            })
    }

    /// At `high` the sandbox's loopback is gVisor's own: `ingress: true` without egress
    /// rules is refused at create, naming the field, and leaves nothing.
    func testPortForwardIngressIsRefusedAtTheHighLevel() throws {
        let h = try start()
        let refused = try h.client.request(
            "POST", "/v1/sandboxes",
            json: [
                "metadata": ["name": h.name("highports")],
                "spec": ["securityLevel": "high", "networkAccess": ["ingress": true]],
            ])
        assertError(refused, 400, "not_enforceable", field: "spec.networkAccess.ingress")
        XCTAssertTrue(refused.error?.message.contains("high") ?? false, refused.text)
        assertNothingLeft(h)
    }
}
