/// A streamed exec whose client goes away while the process prints nothing is killed then,
/// not at its timeout (Hummingbird notices a gone client only when it writes).
import DaemonClient
import Foundation
import XCTest

extension DaemonAPITests {
    /// Sends a streamed exec of `command` on a connection of its own, reads the response head
    /// (sent once the process runs) and closes the connection.
    /// - Returns: the head's status line.
    func streamThenHangUp(_ h: DaemonHarness, _ name: String, _ command: [String]) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in h.socket.utf8.enumerated() where i < raw.count - 1 { raw[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(connected, 0, "connect \(h.socket)")
        let body = try JSONSerialization.data(withJSONObject: ["command": command, "timeoutSeconds": 600])
        let head =
            "POST /v1/sandboxes/\(name)/exec HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-ndjson\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let request = Array(head.utf8) + [UInt8](body)
        XCTAssertEqual(send(fd, request, request.count, Int32(MSG_NOSIGNAL)), request.count)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: received, as: UTF8.self).contains("\r\n\r\n") {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            received += buffer[..<n]
        }
        return String(decoding: received, as: UTF8.self).components(separatedBy: "\r\n").first ?? ""
    }

    func testStreamedExecIsKilledWhenItsSilentClientGoesAway() throws {
        let h = try start()
        var levels = ["standard"]
        if access("/usr/bin/runsc", X_OK) == 0 { levels.append("high") }
        for level in levels {
            let name = h.name("gone-\(level)")
            try h.create(name, spec: ["securityLevel": level])
            XCTAssertEqual(try streamThenHangUp(h, name, ["sleep", "300"]), "HTTP/1.1 200 OK")
            // The exec ends soon after: killed because the client left (bounded poll).
            var finished: [String: Any]?
            for _ in 0..<300 where finished == nil {
                finished = h.auditRecords().first {
                    $0["type"] as? String == "exec.finished" && $0["sandbox"] as? String == name
                }
                if finished == nil { usleep(100_000) }
            }
            XCTAssertEqual(finished?["killedBy"] as? String, "client disconnected", "\(level): \(finished ?? [:])")
            let status = try h.client.request("GET", "/v1/sandboxes/\(name)").json?["status"] as? [String: Any]
            XCTAssertEqual(status?["execs"] as? Int, 0, "\(level)")
            // The connection's later requests are unaffected: a new one streams as before.
            let after = try h.exec(name, ["echo", "still here"])
            XCTAssertEqual(after.json?["stdout"] as? String, "still here\n")
            XCTAssertEqual(try h.delete(name).status, 200)
        }
        assertNothingLeft(h)
        XCTAssertEqual(h.zombieChildren(), [])
    }
}
