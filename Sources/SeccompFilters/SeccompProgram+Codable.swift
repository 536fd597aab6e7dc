/// `SeccompProgram` travels to the init in the init protocol's JSON and sits in the filter
/// cache: the BPF is written as one hex string, which is 2 bytes a byte instead of the 2-4 of
/// a JSON array of numbers, and far cheaper for the init to decode.
extension SeccompProgram: Codable {
    enum CodingKeys: String, CodingKey {
        case bpf, flags, unknownSyscalls, warnings
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let hex = try c.decode(String.self, forKey: .bpf)
        guard let bytes = Self.bytes(hex: hex) else {
            throw DecodingError.dataCorruptedError(
                forKey: .bpf, in: c, debugDescription: "not an even-length hex string")
        }
        self.init(
            bpf: bytes, flags: try c.decode(UInt32.self, forKey: .flags),
            unknownSyscalls: try c.decodeIfPresent([String].self, forKey: .unknownSyscalls) ?? [],
            warnings: try c.decodeIfPresent([String].self, forKey: .warnings) ?? [])
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.hex(bpf), forKey: .bpf)
        try c.encode(flags, forKey: .flags)
        try c.encode(unknownSyscalls, forKey: .unknownSyscalls)
        try c.encode(warnings, forKey: .warnings)
    }

    private static let digits = Array("0123456789abcdef".utf8)

    static func hex(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let utf8 = Array(hex.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
