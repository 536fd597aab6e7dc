/// Exec's `encoding`: base64 carries stdin, stdout, stderr and streamed chunks byte for byte;
/// the default text encoding is lossy for bytes that are not UTF-8; a bad value is refused
/// naming the field.
import DaemonClient
import Foundation
import XCTest

extension DaemonAPITests {
    /// Every byte value, 512 times (128 KiB: more than a pipe holds, so it is read in pieces).
    static let allBytes: [UInt8] = Array(repeating: Array(0...255), count: 512).flatMap { $0 }

    func testExecBase64CarriesEveryByteValueExactly() throws {
        let h = try start()
        let name = h.name("bytes")
        try h.create(name)
        let expected = Self.allBytes
        let reversed = Array(expected.reversed())
        let script = """
            import sys
            data = bytes(range(256)) * 512
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(data[::-1])
            """
        let command = ["python3", "-c", script]

        // Collected: stdout and stderr are the base64 of the exact bytes.
        let exact = try h.exec(name, command, extra: ["encoding": "base64"])
        XCTAssertEqual(exact.status, 200, exact.text)
        let json = try XCTUnwrap(exact.json)
        XCTAssertEqual(json["exitCode"] as? Int, 0, exact.text)
        XCTAssertEqual(json["encoding"] as? String, "base64")
        let stdout = try XCTUnwrap(Data(base64Encoded: try XCTUnwrap(json["stdout"] as? String)))
        let stderr = try XCTUnwrap(Data(base64Encoded: try XCTUnwrap(json["stderr"] as? String)))
        XCTAssertEqual(stdout.count, expected.count)
        XCTAssertTrue([UInt8](stdout) == expected, "stdout differs from the bytes written")
        XCTAssertTrue([UInt8](stderr) == reversed, "stderr differs from the bytes written")

        // The default (text) is lossy for the same output: what base64 is for.
        let text = try h.exec(name, command)
        XCTAssertEqual(text.status, 200, text.text)
        XCTAssertNil(text.json?["encoding"])
        let lossy = try XCTUnwrap(text.json?["stdout"] as? String)
        XCTAssertTrue(lossy.contains("\u{FFFD}"))
        XCTAssertFalse(Array(lossy.utf8) == expected)

        // stdin in base64 reaches the process byte for byte (cat echoes it).
        let echoed = try h.exec(
            name, ["cat"], extra: ["encoding": "base64", "stdin": Data(expected).base64EncodedString()])
        XCTAssertEqual(echoed.status, 200, echoed.text)
        let back = try XCTUnwrap(Data(base64Encoded: try XCTUnwrap(echoed.json?["stdout"] as? String)))
        XCTAssertTrue([UInt8](back) == expected, "stdin came back different (\(back.count) bytes)")

        // Streamed: each chunk is base64 of its own bytes; joined they are the output.
        var pending: [UInt8] = []
        var streamedOut: [UInt8] = []
        var streamedErr: [UInt8] = []
        var exit: [String: Any]?
        var undecodable = 0
        let body = try JSONSerialization.data(withJSONObject: ["command": command, "encoding": "base64"])
        let streamed = try h.client.send(
            "POST", "/v1/sandboxes/\(name)/exec", body: [UInt8](body),
            headers: ["Accept": "application/x-ndjson", "Content-Type": "application/json"]
        ) { chunk in
            pending += chunk
            while let newline = pending.firstIndex(of: 0x0A) {
                let object = (try? JSONSerialization.jsonObject(with: Data(pending[..<newline]))) as? [String: Any]
                pending.removeSubrange(...newline)
                guard let object else { continue }
                if let part = object["stdout"] as? String {
                    if let bytes = Data(base64Encoded: part) { streamedOut += bytes } else { undecodable += 1 }
                } else if let part = object["stderr"] as? String {
                    if let bytes = Data(base64Encoded: part) { streamedErr += bytes } else { undecodable += 1 }
                } else if object["exitCode"] != nil {
                    exit = object
                }
            }
        }
        XCTAssertEqual(streamed.status, 200)
        XCTAssertEqual(undecodable, 0, "chunks that are not base64")
        XCTAssertTrue(streamedOut == expected, "streamed stdout differs (\(streamedOut.count) bytes)")
        XCTAssertTrue(streamedErr == reversed, "streamed stderr differs (\(streamedErr.count) bytes)")
        XCTAssertEqual(exit?["exitCode"] as? Int, 0)
        XCTAssertEqual(exit?["encoding"] as? String, "base64")

        // Bad input names the field and runs nothing.
        assertError(try h.exec(name, ["true"], extra: ["encoding": "hex"]), 400, "invalid_value", field: "encoding")
        assertError(try h.exec(name, ["true"], extra: ["encoding": 64]), 400, "wrong_type", field: "encoding")
        assertError(
            try h.exec(name, ["cat"], stdin: "not base64!", extra: ["encoding": "base64"]), 400, "invalid_value",
            field: "stdin")
        let started = h.auditRecords().filter { $0["type"] as? String == "exec.started" }.count
        XCTAssertEqual(started, 4, "the refused execs must not start")

        XCTAssertEqual(try h.delete(name).status, 200)
        assertNothingLeft(h)
    }
}
