import CSafeSpace
import Glibc
import LinuxKernel

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runc-compatible logging: `--log FILE`, `--log-format text|json`, `--debug`, in the line
/// formats of logrus as runc configures it (runc libcontainer/logs, sirupsen/logrus
/// `TextFormatter` and `JSONFormatter`):
///
/// - text: `time="2026-01-02T03:04:05Z" level=debug msg="process exited" pid=12 status=0`,
///   a value quoted (Go `%q`) unless it is made only of letters, digits and `-._/@^+`;
/// - json: `{"level":"error","msg":"…","time":"…"}` plus any fields, keys sorted.
///
/// `time` is RFC 3339 in UTC to the second. Lines at `debug` are written only with `--debug`.
/// containerd's runc shim reads the last `error` line of the log when a command fails.
public final class RuntimeLog: @unchecked Sendable {
    public enum Format: String, Sendable { case text, json }
    public enum Level: String, Sendable { case debug, info, warning, error }

    let fd: Int32
    let format: Format
    /// Whether `debug` lines are written (`--debug`).
    public let debug: Bool

    public init(path: String?, format: Format, debug: Bool) {
        if let path, !path.isEmpty, path != "/dev/stderr" {
            fd = ss_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        } else {
            fd = -1
        }
        self.format = format
        self.debug = debug
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The value of a field of a log line: text, or a number (bare in JSON, as logrus writes
    /// an int).
    public enum Field: Sendable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
        case text(String)
        case number(Int64)

        public init(stringLiteral value: String) { self = .text(value) }
        public static func int<I: BinaryInteger>(_ value: I) -> Field { .number(Int64(value)) }

        var text: String {
            switch self {
            case .text(let s): return s
            case .number(let n): return String(n)
            }
        }
    }

    /// Writes one line at `level` with `message` and extra `fields` (written after `msg` in
    /// the given order as text, sorted in JSON), in one write(2).
    public func log(_ level: Level, _ message: String, fields: KeyValuePairs<String, Field> = [:]) {
        if level == .debug && !debug { return }
        let line = Self.line(level, message, fields: Array(fields), format: format, time: Self.now())
        let target = fd >= 0 ? fd : STDERR_FILENO
        _ = line.withUnsafeBufferPointer { Glibc.write(target, $0.baseAddress, $0.count) }
    }

    public func warn(_ message: String) { log(.warning, message) }

    /// One log line, newline included (pure; tests feed it a fixed time).
    static func line(_ level: Level, _ message: String, fields: [(String, Field)], format: Format, time: String)
        -> [UInt8]
    {
        switch format {
        case .json:
            var object: [String: Field] = ["level": .text(level.rawValue), "msg": .text(message), "time": .text(time)]
            for (key, value) in fields { object[key] = value }
            var out: [UInt8] = [UInt8(ascii: "{")]
            for (i, key) in object.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out += GoJSON.quote(key) + [UInt8(ascii: ":")]
                switch object[key]! {
                case .text(let s): out += GoJSON.quote(s)
                case .number(let n): out += Array(String(n).utf8)
                }
            }
            return out + Array("}\n".utf8)
        case .text:
            var text = "time=\(textValue(time)) level=\(level.rawValue) msg=\(textValue(message))"
            for (key, value) in fields { text += " \(key)=\(textValue(value.text))" }
            return Array((text + "\n").utf8)
        }
    }

    /// logrus's `needsQuoting`: a value of letters, digits and `-._/@^+` stands bare, any other
    /// (an empty one included) is quoted as Go's `%q` does it.
    static func textValue(_ value: String) -> String {
        let bare =
            !value.isEmpty
            && value.unicodeScalars.allSatisfy { c in
                (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9")
                    || "-._/@^+".unicodeScalars.contains(c)
            }
        return bare ? value : goQuote(value)
    }

    /// Go's `strconv.Quote`: `"` and `\` escaped, `\n` `\r` `\t` and the other control
    /// characters as escapes, printable characters as they are.
    static func goQuote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{07}": out += "\\a"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\u{0B}": out += "\\v"
            default:
                if c.value < 0x20 || c.value == 0x7F {
                    let hex = String(c.value, radix: 16)
                    out += "\\x" + (hex.count < 2 ? "0" : "") + hex
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out + "\""
    }

    /// Now as Go's `time.RFC3339` in UTC: `2026-01-02T03:04:05Z`.
    static func now() -> String {
        var t = time(nil)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 32)
        let n = strftime(&buf, buf.count, "%Y-%m-%dT%H:%M:%SZ", &tmv)
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
