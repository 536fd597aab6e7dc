/// The JSON answer of a non-streamed exec (`POST /v1/sandboxes/{name}/exec`, openapi.yaml
/// `ExecResult`), written directly: the same bytes as `JSON.encode` of the same object
/// (JSONSerialization with sorted keys, slashes not escaped), without JSONSerialization's
/// boxing, key sorting and locale-aware comparisons on every exec's answer.
import Foundation

enum ExecResultJSON {
    /// The fields of the answer by name: `durationMs`, `encoding` (only when not utf8),
    /// `exitCode`, `killedBy` (when killed by the daemon), `oomKilled`, `stderr`, `stdout`,
    /// `timedOut`, `truncated` (only when true); output as `encoding` gives it.
    static func object(_ result: ExecResult, encoding: ExecEncoding) -> [String: Any] {
        var body: [String: Any] = [
            "exitCode": Int(result.exitCode), "stdout": encoding.string(result.stdout),
            "stderr": encoding.string(result.stderr), "durationMs": result.durationMs,
            "timedOut": result.timedOut, "oomKilled": result.oomKilled,
        ]
        if encoding != .utf8 { body["encoding"] = encoding.rawValue }
        if result.truncated { body["truncated"] = true }
        if let killed = result.killedBy { body["killedBy"] = killed }
        return body
    }

    /// `object(result, encoding:)` as JSON bytes (no trailing newline). The keys are written in
    /// the order JSONSerialization's `.sortedKeys` gives them (all lowercase-first ASCII names,
    /// so plain byte order); strings are escaped as it escapes them (RFC 8259 section 7: `"`,
    /// `\`, \b \f \n \r \t by name, other controls as \u00xx, everything else as UTF-8).
    /// A string holding U+0000 takes `JSON.encode` itself (its writer walks C strings), so the
    /// bytes stay JSONSerialization's in every case.
    static func encode(_ result: ExecResult, encoding: ExecEncoding) -> [UInt8] {
        let stdout = encoding.string(result.stdout)
        let stderr = encoding.string(result.stderr)
        if stdout.utf8.contains(0) || stderr.utf8.contains(0) || result.killedBy?.utf8.contains(0) == true {
            return JSON.encode(object(result, encoding: encoding))
        }
        var out: [UInt8] = []
        out.reserveCapacity(stdout.utf8.count + stderr.utf8.count + 128)
        func key(_ name: StaticString, first: Bool = false) {
            if !first { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            name.withUTF8Buffer { out.append(contentsOf: $0) }
            out.append(contentsOf: Array("\":".utf8))
        }
        func bool(_ value: Bool) { out.append(contentsOf: Array((value ? "true" : "false").utf8)) }
        out.append(UInt8(ascii: "{"))
        key("durationMs", first: true)
        out.append(contentsOf: Array(String(result.durationMs).utf8))
        if encoding != .utf8 {
            key("encoding")
            string(encoding.rawValue, into: &out)
        }
        key("exitCode")
        out.append(contentsOf: Array(String(Int(result.exitCode)).utf8))
        if let killed = result.killedBy {
            key("killedBy")
            string(killed, into: &out)
        }
        key("oomKilled")
        bool(result.oomKilled)
        key("stderr")
        string(stderr, into: &out)
        key("stdout")
        string(stdout, into: &out)
        key("timedOut")
        bool(result.timedOut)
        if result.truncated {
            key("truncated")
            bool(true)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// `text` as a JSON string, escaped as JSONSerialization escapes it (slashes not escaped).
    static func string(_ text: String, into out: inout [UInt8]) {
        let digits = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x00...0x1F:
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
