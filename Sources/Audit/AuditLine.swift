import Crypto
import Glibc

/// The JSON line of a record: keys in a fixed order (`time`, `seq`, `type`, `sandbox`,
/// `caller`, `outcome`, the fields sorted by name, `prev`), no spaces, so that the bytes, and
/// with them the chain, depend only on the record.
enum AuditLine {
    /// 64 zeros: the `prev` of a log's first line.
    static let genesis = String(repeating: "0", count: 64)

    static func encode(_ record: AuditRecord, time: String, seq: Int64, prev: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        out += Array("{\"time\":".utf8)
        appendString(time, to: &out)
        out += Array(",\"seq\":\(seq),\"type\":".utf8)
        appendString(record.type, to: &out)
        out += Array(",\"sandbox\":".utf8)
        if let sandbox = record.sandbox { appendString(sandbox, to: &out) } else { out += Array("null".utf8) }
        out += Array(",\"caller\":".utf8)
        if record.callerUID == nil && record.callerPID == nil {
            out += Array("null".utf8)
        } else {
            let uid = record.callerUID.map { String($0) } ?? "null"
            let pid = record.callerPID.map { String($0) } ?? "null"
            out += Array("{\"uid\":\(uid),\"pid\":\(pid)}".utf8)
        }
        out += Array(",\"outcome\":".utf8)
        appendString(record.outcome, to: &out)
        for name in record.fields.keys.sorted() {
            out.append(UInt8(ascii: ","))
            appendString(name, to: &out)
            out.append(UInt8(ascii: ":"))
            appendValue(record.fields[name]!, to: &out)
        }
        out += Array(",\"prev\":\"\(prev)\"}".utf8)
        return out
    }

    static func appendValue(_ value: AuditValue, to out: inout [UInt8]) {
        switch value {
        case .string(let s): appendString(s, to: &out)
        case .int(let i): out += Array(String(i).utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .strings(let list):
            out.append(UInt8(ascii: "["))
            for (i, s) in list.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendString(s, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
    }

    /// A JSON string (RFC 8259 section 7): quote, backslash and control characters escaped; the
    /// rest as UTF-8. Swift strings are valid Unicode, so the line is valid UTF-8.
    static func appendString(_ s: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out += [0x5C, 0x22]
            case UInt8(ascii: "\\"): out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, UInt8(ascii: "n")]
            case 0x0D: out += [0x5C, UInt8(ascii: "r")]
            case 0x09: out += [0x5C, UInt8(ascii: "t")]
            case 0..<0x20, 0x7F:
                out += Array("\\u00".utf8)
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 0xF)])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Lowercase hex SHA-256 of `bytes`.
    static func sha256Hex<B: Sequence>(_ bytes: B) -> String where B.Element == UInt8 {
        hex(SHA256.hash(data: Array(bytes)))
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Now as RFC 3339 UTC with milliseconds: `2026-11-20T09:41:07.123Z` (CLOCK_REALTIME).
    static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let ms = Int32(ts.tv_nsec / 1_000_000)
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(ms, 3))Z"
    }
}
