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
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "expected an integer from 0 to \(UInt32.max)")
        }
        guard let v = UInt32(exactly: wide) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(wide) is outside 0...\(UInt32.max)")
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
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "expected integers from 0 to \(UInt32.max)")
        }
        return try wide.map {
            guard let v = UInt32(exactly: $0) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\($0) is outside 0...\(UInt32.max)")
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
        throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "expected an integer from 0 to \(UInt64.max)")
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
