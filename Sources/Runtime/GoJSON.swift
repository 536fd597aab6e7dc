/// JSON written the way runc's Go code writes it (`encoding/json`), for output that people and
/// scripts compare with runc's: `spec`'s config.json, `list --format json`, `events`, the
/// `--log-format json` lines.
///
/// Go's rules, as this encoder follows them: struct members in declaration order (here: the
/// order a type's `encode(to:)` encodes them, which for a synthesized one is the declaration
/// order); map keys sorted (a `[String: V]` dictionary); nil optionals left out (synthesized
/// `encodeIfPresent`); strings escaped as Go 1.19 does (`\"`, `\\`, `\n`, `\r`, `\t`, other
/// control characters and `<`, `>`, `&`, U+2028, U+2029 as `\u00XX`-style escapes; `/` as is).
public enum GoJSON {
    /// Go's `json.Marshal(v)`: compact, no final newline.
    /// - Throws: whatever `value.encode(to:)` throws.
    public static func marshal<T: Encodable>(_ value: T) throws -> [UInt8] {
        let root = Node()
        try root.set(value, codingPath: [])
        var out: [UInt8] = []
        root.write(to: &out)
        return out
    }

    /// Go's `json.MarshalIndent(v, "", "\t")`: one member per line, tab indentation,
    /// `"key": value`, empty arrays and objects as `[]` and `{}`, no final newline (the layout
    /// of `runc spec`'s config.json).
    /// - Throws: whatever `value.encode(to:)` throws.
    public static func marshalIndent<T: Encodable>(_ value: T) throws -> [UInt8] {
        indent(try marshal(value))
    }

    /// Go's `json.Indent(dst, src, "", "\t")` of the JSON text `src` (whitespace outside
    /// strings is dropped first).
    public static func indent(_ src: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(src.count * 2)
        var depth = 0
        var inString = false
        var escaped = false
        // After `{` or `[` the newline waits for the first member: an empty one stays `{}`.
        var pendingOpen = false
        func newline() {
            out.append(UInt8(ascii: "\n"))
            out.append(contentsOf: repeatElement(UInt8(ascii: "\t"), count: depth))
        }
        for byte in src {
            if inString {
                out.append(byte)
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n")
                || byte == UInt8(ascii: "\r")
            {
                continue
            }
            let closing = byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]")
            if pendingOpen {
                pendingOpen = false
                if closing {
                    out.append(byte)
                    continue
                }
                depth += 1
                newline()
            }
            switch byte {
            case UInt8(ascii: "\""):
                inString = true
                out.append(byte)
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                out.append(byte)
                pendingOpen = true
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                newline()
                out.append(byte)
            case UInt8(ascii: ","):
                out.append(byte)
                newline()
            case UInt8(ascii: ":"):
                out.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")])
            default:
                out.append(byte)
            }
        }
        return out
    }

    /// A string as a Go JSON string literal, quotes included.
    public static func quote(_ s: String) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case "\\": out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case "\n": out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case "\r": out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case "\t": out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                let v = scalar.value
                out +=
                    Array("\\u".utf8) + [
                        hex[Int(v >> 12) & 15], hex[Int(v >> 8) & 15], hex[Int(v >> 4) & 15], hex[Int(v) & 15],
                    ]
            default:
                if scalar.value < 0x20 {
                    out += Array("\\u00".utf8) + [hex[Int(scalar.value >> 4)], hex[Int(scalar.value & 15)]]
                } else {
                    out += Array(String(scalar).utf8)
                }
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    /// One value of the tree an encoding builds; objects keep their members' order.
    final class Node {
        enum Kind {
            case unset
            /// JSON text of a scalar (`null`, `true`, `12`, `"s"`).
            case scalar([UInt8])
            case array([Node])
            case object(keys: [String], members: [String: Node])
        }
        var kind = Kind.unset

        func set<T: Encodable>(_ value: T, codingPath: [any CodingKey]) throws {
            switch value {
            case let v as String: kind = .scalar(GoJSON.quote(v))
            case let v as Bool: kind = .scalar(Array((v ? "true" : "false").utf8))
            case let v as any BinaryInteger: kind = .scalar(Array("\(v)".utf8))
            case let v as Double: kind = .scalar(Self.number(v))
            case let v as Float: kind = .scalar(Self.number(Double(v)))
            case let v as any GoJSONMap:
                // Go sorts map keys.
                var members: [String: Node] = [:]
                for (key, element) in v.goJSONEntries {
                    let child = Node()
                    try child.set(element, codingPath: codingPath)
                    members[key] = child
                }
                kind = .object(keys: members.keys.sorted(), members: members)
            default:
                try value.encode(to: NodeEncoder(node: self, codingPath: codingPath))
            }
        }

        static func number(_ v: Double) -> [UInt8] {
            if v == v.rounded(), abs(v) < 1e15 { return Array(String(Int64(v)).utf8) }
            return Array("\(v)".utf8)
        }

        func makeObject() {
            if case .object = kind { return }
            kind = .object(keys: [], members: [:])
        }

        func makeArray() {
            if case .array = kind { return }
            kind = .array([])
        }

        func member(_ key: String) -> Node {
            makeObject()
            guard case .object(var keys, var members) = kind else { return Node() }
            if let existing = members[key] { return existing }
            let child = Node()
            keys.append(key)
            members[key] = child
            kind = .object(keys: keys, members: members)
            return child
        }

        func appendElement() -> Node {
            makeArray()
            guard case .array(var elements) = kind else { return Node() }
            let child = Node()
            elements.append(child)
            kind = .array(elements)
            return child
        }

        var count: Int {
            if case .array(let elements) = kind { return elements.count }
            return 0
        }

        func write(to out: inout [UInt8]) {
            switch kind {
            case .unset: out += Array("null".utf8)
            case .scalar(let text): out += text
            case .array(let elements):
                out.append(UInt8(ascii: "["))
                for (i, e) in elements.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    e.write(to: &out)
                }
                out.append(UInt8(ascii: "]"))
            case .object(let keys, let members):
                out.append(UInt8(ascii: "{"))
                for (i, key) in keys.enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    out += GoJSON.quote(key)
                    out.append(UInt8(ascii: ":"))
                    members[key]!.write(to: &out)
                }
                out.append(UInt8(ascii: "}"))
            }
        }
    }

    struct NodeEncoder: Encoder {
        let node: Node
        var codingPath: [any CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            node.makeObject()
            return KeyedEncodingContainer(Keyed<Key>(node: node, codingPath: codingPath))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            node.makeArray()
            return Unkeyed(node: node, codingPath: codingPath)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            Single(node: node, codingPath: codingPath)
        }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: Node
        var codingPath: [any CodingKey]

        mutating func encodeNil(forKey key: Key) throws {
            node.member(key.stringValue).kind = .scalar(Array("null".utf8))
        }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { try put(value, key) }
        func put<T: Encodable>(_ value: T, _ key: Key) throws {
            try node.member(key.stringValue).set(value, codingPath: codingPath + [key])
        }
        mutating func encode(_ value: Bool, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: String, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Float, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Int, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { try put(value, key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { try put(value, key) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
            -> KeyedEncodingContainer<NestedKey>
        {
            let child = node.member(key.stringValue)
            child.makeObject()
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath + [key]))
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let child = node.member(key.stringValue)
            child.makeArray()
            return Unkeyed(node: child, codingPath: codingPath + [key])
        }
        mutating func superEncoder() -> any Encoder { NodeEncoder(node: node.member("super"), codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> any Encoder {
            NodeEncoder(node: node.member(key.stringValue), codingPath: codingPath + [key])
        }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let node: Node
        var codingPath: [any CodingKey]
        var count: Int { node.count }

        mutating func encodeNil() throws { node.appendElement().kind = .scalar(Array("null".utf8)) }
        mutating func encode<T: Encodable>(_ value: T) throws { try put(value) }
        func put<T: Encodable>(_ value: T) throws { try node.appendElement().set(value, codingPath: codingPath) }
        mutating func encode(_ value: Bool) throws { try put(value) }
        mutating func encode(_ value: String) throws { try put(value) }
        mutating func encode(_ value: Double) throws { try put(value) }
        mutating func encode(_ value: Float) throws { try put(value) }
        mutating func encode(_ value: Int) throws { try put(value) }
        mutating func encode(_ value: Int8) throws { try put(value) }
        mutating func encode(_ value: Int16) throws { try put(value) }
        mutating func encode(_ value: Int32) throws { try put(value) }
        mutating func encode(_ value: Int64) throws { try put(value) }
        mutating func encode(_ value: UInt) throws { try put(value) }
        mutating func encode(_ value: UInt8) throws { try put(value) }
        mutating func encode(_ value: UInt16) throws { try put(value) }
        mutating func encode(_ value: UInt32) throws { try put(value) }
        mutating func encode(_ value: UInt64) throws { try put(value) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<
            NestedKey
        > {
            let child = node.appendElement()
            child.makeObject()
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath))
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let child = node.appendElement()
            child.makeArray()
            return Unkeyed(node: child, codingPath: codingPath)
        }
        mutating func superEncoder() -> any Encoder { NodeEncoder(node: node.appendElement(), codingPath: codingPath) }
    }

    struct Single: SingleValueEncodingContainer {
        let node: Node
        var codingPath: [any CodingKey]

        mutating func encodeNil() throws { node.kind = .scalar(Array("null".utf8)) }
        mutating func encode<T: Encodable>(_ value: T) throws { try put(value) }
        func put<T: Encodable>(_ value: T) throws { try node.set(value, codingPath: codingPath) }
        mutating func encode(_ value: Bool) throws { try put(value) }
        mutating func encode(_ value: String) throws { try put(value) }
        mutating func encode(_ value: Double) throws { try put(value) }
        mutating func encode(_ value: Float) throws { try put(value) }
        mutating func encode(_ value: Int) throws { try put(value) }
        mutating func encode(_ value: Int8) throws { try put(value) }
        mutating func encode(_ value: Int16) throws { try put(value) }
        mutating func encode(_ value: Int32) throws { try put(value) }
        mutating func encode(_ value: Int64) throws { try put(value) }
        mutating func encode(_ value: UInt) throws { try put(value) }
        mutating func encode(_ value: UInt8) throws { try put(value) }
        mutating func encode(_ value: UInt16) throws { try put(value) }
        mutating func encode(_ value: UInt32) throws { try put(value) }
        mutating func encode(_ value: UInt64) throws { try put(value) }
    }
}

/// A `[String: V]` dictionary: Go writes a map's keys sorted.
protocol GoJSONMap {
    var goJSONEntries: [(String, any Encodable)] { get }
}

extension Dictionary: GoJSONMap where Key == String, Value: Encodable {
    var goJSONEntries: [(String, any Encodable)] { map { ($0.key, $0.value as any Encodable) } }
}
