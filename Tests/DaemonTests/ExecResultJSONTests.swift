/// The exec answer's direct JSON writer (ExecResultJSON) against JSONSerialization's bytes for
/// the same object, and the stdin digest of the exec's audit record. No root needed.
import Foundation
import XCTest

@testable import SafeSpaceDaemon

final class ExecResultJSONTests: XCTestCase {
    func testSameBytesAsJSONSerialization() throws {
        var texts = [
            "", "1\n", "plain text", "quote \" backslash \\ slash / done", "tab\tcr\rlf\nff\u{0C}bs\u{08}",
            "héllo wörld ✓ 🙂", "\u{7F} del", "\u{2028}\u{2029}", "{\"json\": [1, 2]}",
        ]
        // Every control character but U+0000 (see testZeroByteTakesJSONSerialization).
        texts.append(String(decoding: (1...0x1F).map { UInt8($0) }, as: UTF8.self))
        // Invalid UTF-8 (decoded with U+FFFD) as the utf8 encoding gives it.
        let rawOutputs: [[UInt8]] = texts.map { Array($0.utf8) } + [[0xFF, 0xFE, 0x41], [0xC3]]
        for stdout in rawOutputs {
            for encoding in [ExecEncoding.utf8, .base64] {
                for (killedBy, truncated) in [(nil, false), ("sandbox deleted", true) as (String?, Bool)] {
                    var result = ExecResult(exitCode: 137)
                    result.stdout = stdout
                    result.stderr = Array("err \(stdout.count)\n".utf8)
                    result.durationMs = 1234
                    result.timedOut = truncated
                    result.oomKilled = !truncated
                    result.truncated = truncated
                    result.killedBy = killedBy
                    let expected = JSON.encode(ExecResultJSON.object(result, encoding: encoding))
                    let got = ExecResultJSON.encode(result, encoding: encoding)
                    XCTAssertEqual(
                        String(decoding: got, as: UTF8.self), String(decoding: expected, as: UTF8.self),
                        "stdout \(stdout), \(encoding)")
                    let decoded = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(got)) as? [String: Any])
                    XCTAssertEqual(decoded["stdout"] as? String, encoding.string(stdout))
                    XCTAssertEqual(decoded["exitCode"] as? Int, 137)
                }
            }
        }
    }

    func testZeroByteTakesJSONSerialization() {
        var result = ExecResult(exitCode: 0)
        result.stdout = [0x61, 0x00, 0x62]
        XCTAssertEqual(
            ExecResultJSON.encode(result, encoding: .utf8), JSON.encode(ExecResultJSON.object(result, encoding: .utf8)))
    }

    func testStdinDigestIsLowercaseHexSHA256() {
        // FIPS 180-4 examples (NIST CSRC "SHA256.pdf"): "abc" and the empty message.
        XCTAssertEqual(
            SandboxFiles.sha256(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SandboxFiles.sha256([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }
}
