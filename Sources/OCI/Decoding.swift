#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Range-checked integers. JSONDecoder reports an out-of-range number (`"uid": -1`) as
/// corrupt data with no coding path; decoding through Int64 first names the field instead.
extension KeyedDecodingContainer {
    func decodeUInt32(_ key: Key) throws -> UInt32 {
        let wide: Int64
        do { wide = try decode(Int64.self, forKey: key) } catch {
            // JSONDecoder throws an internal error type for 1.5 or 1e400: catch everything.
            if let e = error as? DecodingError, case .keyNotFound = e { throw e }
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "expected an integer from 0 to \(UInt32.max)")
        }
        guard let v = UInt32(exactly: wide) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "\(wide) is outside 0...\(UInt32.max)")
        }
        return v
    }

    func decodeUInt32IfPresent(_ key: Key) throws -> UInt32? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        return try decodeUInt32(key)
    }

    func decodeUInt32ArrayIfPresent(_ key: Key) throws -> [UInt32]? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        let wide: [Int64]
        do { wide = try decode([Int64].self, forKey: key) } catch {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "expected integers from 0 to \(UInt32.max)")
        }
        return try wide.map {
            guard let v = UInt32(exactly: $0) else {
                throw DecodingError.dataCorruptedError(
                    forKey: key, in: self, debugDescription: "\($0) is outside 0...\(UInt32.max)")
            }
            return v
        }
    }

    /// UInt64 fields such as rlimits, where 18446744073709551615 (RLIM_INFINITY) is valid.
    func decodeUInt64(_ key: Key) throws -> UInt64 {
        if let v = try? decode(UInt64.self, forKey: key) { return v }
        if let negative = try? decode(Int64.self, forKey: key) {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(negative) is negative")
        }
        throw DecodingError.dataCorruptedError(
            forKey: key, in: self, debugDescription: "expected an integer from 0 to \(UInt64.max)")
    }
}

extension User {
    enum CodingKeys: String, CodingKey { case uid, gid, umask, additionalGids, username }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        uid = try c.decodeUInt32(.uid)
        gid = try c.decodeUInt32(.gid)
        umask = try c.decodeUInt32IfPresent(.umask)
        additionalGids = try c.decodeUInt32ArrayIfPresent(.additionalGids)
        username = try c.decodeIfPresent(String.self, forKey: .username)
    }
}

extension Process {
    enum CodingKeys: String, CodingKey {
        case terminal, consoleSize, user, args, commandLine, env, cwd, capabilities, rlimits, noNewPrivileges
        case apparmorProfile, oomScoreAdj, selinuxLabel, ioPriority, scheduler
    }

    /// A missing `user` is uid 0, gid 0, as runc reads it (Go's zero value): config.json and
    /// `exec --process` files written for runc often leave it out. Every other field as declared.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        terminal = try c.decodeIfPresent(Bool.self, forKey: .terminal)
        consoleSize = try c.decodeIfPresent(ConsoleSize.self, forKey: .consoleSize)
        user = try c.decodeIfPresent(User.self, forKey: .user) ?? User(uid: 0, gid: 0)
        args = try c.decodeIfPresent([String].self, forKey: .args)
        commandLine = try c.decodeIfPresent(String.self, forKey: .commandLine)
        env = try c.decodeIfPresent([String].self, forKey: .env)
        cwd = try c.decode(String.self, forKey: .cwd)
        capabilities = try c.decodeIfPresent(Capabilities.self, forKey: .capabilities)
        rlimits = try c.decodeIfPresent([Rlimit].self, forKey: .rlimits)
        noNewPrivileges = try c.decodeIfPresent(Bool.self, forKey: .noNewPrivileges)
        apparmorProfile = try c.decodeIfPresent(String.self, forKey: .apparmorProfile)
        oomScoreAdj = try c.decodeIfPresent(Int.self, forKey: .oomScoreAdj)
        selinuxLabel = try c.decodeIfPresent(String.self, forKey: .selinuxLabel)
        ioPriority = try c.decodeIfPresent(IOPriority.self, forKey: .ioPriority)
        scheduler = try c.decodeIfPresent(Scheduler.self, forKey: .scheduler)
    }
}

extension IDMapping {
    enum CodingKeys: String, CodingKey { case containerID, hostID, size }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        containerID = try c.decodeUInt32(.containerID)
        hostID = try c.decodeUInt32(.hostID)
        size = try c.decodeUInt32(.size)
    }
}

extension Rlimit {
    enum CodingKeys: String, CodingKey { case type, hard, soft }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        hard = try c.decodeUInt64(.hard)
        soft = try c.decodeUInt64(.soft)
    }
}

/// JSON decoding that names the field of an out-of-range or fractional number.
///
/// JSONDecoder reports a number its target type cannot hold (`"limit": 1e30` for an Int64,
/// `"swappiness": -1` for a UInt64, `"weight": 70000` for a UInt16) as "not valid JSON", with
/// no coding path. When that happens and the text is valid JSON, each number of the document
/// is replaced in turn by a string (the unusual ones first) and the document decoded again: the
/// one whose replacement makes the decoder stop at that same place with a type mismatch is the
/// field, and the mismatch names its type and so its range.
public enum JSONDecoding {
    /// `JSONDecoder().decode`, with an out-of-range number reported as `dataCorrupted` at its
    /// coding path: "1e+30 is outside -9223372036854775808...9223372036854775807 (Int64)".
    /// - Throws: the decoder's `DecodingError`, that one rewritten.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as DecodingError {
            guard case .dataCorrupted(let ctx) = error, ctx.codingPath.isEmpty,
                let named = numberError(type, data)
            else { throw error }
            throw named
        }
    }

    /// One step of a path in the document: an object member or an array element.
    enum Step: Equatable {
        case key(String)
        case index(Int)
    }

    /// The document as far as this search needs it; numbers keep the widest exact form.
    indirect enum Value: Codable {
        case null, bool(Bool), int(Int64), uint(UInt64), double(Double), string(String)
        case array([Value]), object([String: Value])

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() {
                self = .null
                return
            }
            if let v = try? c.decode(Bool.self) {
                self = .bool(v)
                return
            }
            if let v = try? c.decode(Int64.self) {
                self = .int(v)
                return
            }
            if let v = try? c.decode(UInt64.self) {
                self = .uint(v)
                return
            }
            if let v = try? c.decode(Double.self) {
                self = .double(v)
                return
            }
            if let v = try? c.decode(String.self) {
                self = .string(v)
                return
            }
            if let v = try? c.decode([Value].self) {
                self = .array(v)
                return
            }
            self = .object(try c.decode([String: Value].self))
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .null: try c.encodeNil()
            case .bool(let v): try c.encode(v)
            case .int(let v): try c.encode(v)
            case .uint(let v): try c.encode(v)
            case .double(let v): try c.encode(v)
            case .string(let v): try c.encode(v)
            case .array(let v): try c.encode(v)
            case .object(let v): try c.encode(v)
            }
        }

        /// Every number with its path, in no particular order.
        func numbers(_ path: [Step] = []) -> [([Step], Value)] {
            switch self {
            case .int, .uint, .double: return [(path, self)]
            case .array(let items): return items.enumerated().flatMap { $0.element.numbers(path + [.index($0.offset)]) }
            case .object(let members): return members.flatMap { $0.value.numbers(path + [.key($0.key)]) }
            default: return []
            }
        }

        func replacing(_ path: ArraySlice<Step>, with new: Value) -> Value {
            guard let first = path.first else { return new }
            switch (self, first) {
            case (.array(var items), .index(let i)) where items.indices.contains(i):
                items[i] = items[i].replacing(path.dropFirst(), with: new)
                return .array(items)
            case (.object(var members), .key(let k)) where members[k] != nil:
                members[k] = members[k]!.replacing(path.dropFirst(), with: new)
                return .object(members)
            default:
                return self
            }
        }

        var text: String {
            switch self {
            case .int(let v): return String(v)
            case .uint(let v): return String(v)
            case .double(let v): return "\(v)"
            default: return ""
            }
        }

        /// Numbers no 64-bit integer holds exactly come first: they are the likely culprits.
        var unusual: Bool {
            if case .double = self { return true }
            if case .uint = self { return true }
            if case .int(let v) = self { return v < 0 }
            return false
        }
    }

    static func numberError<T: Decodable>(_ type: T.Type, _ data: Data) -> DecodingError? {
        guard let document = try? JSONDecoder().decode(Value.self, from: data) else { return nil }
        let numbers = document.numbers().sorted { $0.1.unusual && !$1.1.unusual }
        for (path, value) in numbers.prefix(2000) {
            let probe = document.replacing(path[...], with: .string("?"))
            guard let bytes = try? JSONEncoder().encode(probe) else { continue }
            do {
                _ = try JSONDecoder().decode(type, from: bytes)
            } catch DecodingError.typeMismatch(let expected, let ctx) {
                let reached = ctx.codingPath.map { key -> Step in
                    key.intValue.map { .index($0) } ?? .key(key.stringValue)
                }
                guard reached == path, let reason = outOfRange(value, expected) else { continue }
                return .dataCorrupted(.init(codingPath: ctx.codingPath, debugDescription: reason))
            } catch {
                continue
            }
        }
        return nil
    }

    /// Why `value` does not fit the integer type `type`; nil when it fits or `type` is not one.
    static func outOfRange(_ value: Value, _ type: Any.Type) -> String? {
        func check<I: FixedWidthInteger>(_: I.Type) -> String? {
            let fits: Bool
            switch value {
            case .int(let v): fits = I(exactly: v) != nil
            case .uint(let v): fits = I(exactly: v) != nil
            case .double(let v): fits = I(exactly: v) != nil
            default: return nil
            }
            if fits { return nil }
            if case .double(let v) = value, v.rounded() != v, (Double(I.min)...Double(I.max)).contains(v) {
                return "\(value.text) is not an integer"
            }
            return "\(value.text) is outside \(I.min)...\(I.max) (\(I.self))"
        }
        switch type {
        case is Int64.Type: return check(Int64.self)
        case is UInt64.Type: return check(UInt64.self)
        case is Int.Type: return check(Int.self)
        case is UInt.Type: return check(UInt.self)
        case is Int32.Type: return check(Int32.self)
        case is UInt32.Type: return check(UInt32.self)
        case is Int16.Type: return check(Int16.self)
        case is UInt16.Type: return check(UInt16.self)
        case is Int8.Type: return check(Int8.self)
        case is UInt8.Type: return check(UInt8.self)
        default: return nil
        }
    }
}
