/// IPv4 addresses and prefixes (RFC 791 dotted quads, RFC 4632 CIDR notation), as the pool,
/// the rules and the kernel calls need them.
import Glibc

/// An IPv4 address as a host-order number.
public struct IPv4Address: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses a dotted quad (`100.64.0.1`): four decimal octets 0-255, no leading zeros
    /// (which inet_aton(3) would read as octal), nothing else.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), part.allSatisfy(\.isNumber),
                part == "0" || !part.hasPrefix("0"), let octet = UInt32(part), octet <= 255
            else { return nil }
            value = value << 8 | octet
        }
        self.value = value
    }

    /// Network byte order, as `struct in_addr` and rtnetlink want it.
    public var networkOrder: UInt32 { value.bigEndian }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = IPv4Address(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not IPv4"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An IPv4 prefix, `address/length` (RFC 4632), with no host bits set.
public struct IPv4Prefix: Sendable, Hashable, Codable, CustomStringConvertible {
    public var address: IPv4Address
    /// 0-32.
    public var length: Int

    /// - Throws: `NetworkError` `.invalidValue` naming `field` for anything but `a.b.c.d/n`
    ///   with n in 0...32 and no host bits set (`10.0.0.1/8` is refused, not rounded).
    public init(_ text: String, field: String? = nil) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(String(parts[0])), parts[1].allSatisfy(\.isNumber),
            !parts[1].isEmpty, parts[1].count <= 2, let length = Int(parts[1]), (0...32).contains(length)
        else {
            throw NetworkError(
                .invalidValue, field: field, "\"\(text)\" is not an IPv4 CIDR prefix like 198.18.0.0/15 (RFC 4632)")
        }
        let mask = IPv4Prefix.mask(length)
        guard address.value & ~mask == 0 else {
            throw NetworkError(
                .invalidValue, field: field,
                "\"\(text)\" has host bits set; the prefix is \(IPv4Address(address.value & mask))/\(length)")
        }
        self.address = address
        self.length = length
    }

    public init(address: IPv4Address, length: Int) {
        self.address = IPv4Address(address.value & IPv4Prefix.mask(length))
        self.length = length
    }

    static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : UInt32.max << UInt32(32 - length) }

    /// Number of addresses (2^(32-length)).
    public var size: UInt64 { UInt64(1) << UInt64(32 - length) }

    public func contains(_ a: IPv4Address) -> Bool { a.value & IPv4Prefix.mask(length) == address.value }

    public var description: String { "\(address)/\(length)" }

    public init(from decoder: any Decoder) throws {
        self = try IPv4Prefix(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
