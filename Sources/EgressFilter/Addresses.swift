#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// An IPv4 or IPv6 address as bytes (4 or 16), parsed with inet_pton(3).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d, RFC 4291 §2.5.5.2).
    public var unmappedIPv4: IPAddress? {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else {
            return nil
        }
        return IPAddress(bytes: Array(bytes[12..<16]))
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = isIPv4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A CIDR prefix "a.b.c.d/n" or "x::/n" (RFC 4632 §3.1; RFC 4291 §2.3). Host bits must be zero.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int

    /// - Throws: `EgressFilterError.invalidCIDR` naming the text.
    public init(_ text: String) throws(EgressFilterError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress(String(parts[0])), let length = Int(parts[1]),
            length >= 0, length <= address.bytes.count * 8
        else { throw .invalidCIDR(text, "not an address/prefix-length") }
        self.address = address
        self.prefixLength = length
        for bit in length..<(address.bytes.count * 8) where address.bytes[bit / 8] & (0x80 >> UInt8(bit % 8)) != 0 {
            throw .invalidCIDR(text, "host bits set past /\(length)")
        }
    }

    public func contains(_ other: IPAddress) -> Bool {
        let candidate = (address.isIPv4 && !other.isIPv4) ? (other.unmappedIPv4 ?? other) : other
        guard candidate.bytes.count == address.bytes.count else { return false }
        for bit in 0..<prefixLength {
            let mask: UInt8 = 0x80 >> UInt8(bit % 8)
            if candidate.bytes[bit / 8] & mask != address.bytes[bit / 8] & mask { return false }
        }
        return true
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// Which addresses the filter refuses to dial unless the node allows their range explicitly:
/// every special-purpose block of the IANA IPv4 and IPv6 Special-Purpose Address Registries
/// (RFC 6890) that is not globally reachable, and multicast.
public enum AddressPolicy {
    /// (prefix, reason) pairs; the reason goes into `network.denied` records.
    public static let nonGlobal: [(CIDR, String)] = {
        let table: [(String, String)] = [
            ("0.0.0.0/8", "unspecified/this network (RFC 1122)"),
            ("10.0.0.0/8", "private (RFC 1918)"),
            ("100.64.0.0/10", "shared address space, CGNAT (RFC 6598)"),
            ("127.0.0.0/8", "loopback (RFC 1122)"),
            ("169.254.0.0/16", "link-local, cloud metadata (RFC 3927)"),
            ("172.16.0.0/12", "private (RFC 1918)"),
            ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
            ("192.0.2.0/24", "documentation (RFC 5737)"),
            ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
            ("192.168.0.0/16", "private (RFC 1918)"),
            ("198.18.0.0/15", "benchmarking (RFC 2544)"),
            ("198.51.100.0/24", "documentation (RFC 5737)"),
            ("203.0.113.0/24", "documentation (RFC 5737)"),
            ("224.0.0.0/4", "multicast (RFC 5771)"),
            ("240.0.0.0/4", "reserved, broadcast (RFC 1112)"),
            ("::/128", "unspecified (RFC 4291)"),
            ("::1/128", "loopback (RFC 4291)"),
            ("::ffff:0:0/96", "IPv4-mapped (RFC 4291)"),
            ("64:ff9b::/96", "NAT64 (RFC 6052)"),
            ("64:ff9b:1::/48", "local NAT64 (RFC 8215)"),
            ("100::/64", "discard-only (RFC 6666)"),
            ("2001::/23", "IETF protocol assignments (RFC 2928)"),
            ("2001:db8::/32", "documentation (RFC 3849)"),
            ("2002::/16", "6to4 (RFC 3056)"),
            ("3fff::/20", "documentation (RFC 9637)"),
            ("fc00::/7", "unique local, ULA (RFC 4193)"),
            ("fe80::/10", "link-local (RFC 4291)"),
            ("fec0::/10", "site-local, deprecated (RFC 3879)"),
            ("ff00::/8", "multicast (RFC 4291)"),
        ]
        return table.map { (try! CIDR($0.0), $0.1) }
    }()

    /// Nil when `address` may be dialled: global, or inside one of `allowed`. Otherwise the
    /// reason. An IPv4-mapped IPv6 address is judged as its IPv4 address.
    public static func refusal(for address: IPAddress, allowed: [CIDR]) -> String? {
        let judged = address.unmappedIPv4 ?? address
        if allowed.contains(where: { $0.contains(judged) }) { return nil }
        // Only 2000::/3 is allocated as global unicast (RFC 4291 §2.4); the rest is reserved.
        if !judged.isIPv4, judged.bytes[0] & 0xE0 != 0x20, !nonGlobal.contains(where: { $0.0.contains(judged) }) {
            return "\(judged) is not global: outside 2000::/3 (RFC 4291)"
        }
        for (prefix, reason) in nonGlobal where prefix.contains(judged) {
            return "\(judged) is not global: \(prefix) \(reason)"
        }
        return nil
    }
}
