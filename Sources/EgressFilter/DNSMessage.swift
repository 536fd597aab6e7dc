/// A DNS message in wire format (RFC 1035 §4.1): the header, the questions and the resource
/// records of the three sections. Parsing is strict: every length is checked against the
/// message, a name is at most 255 octets with labels of at most 63 (RFC 1035 §2.3.4),
/// compression pointers (§4.1.4) must point strictly backwards and at most 64 are followed
/// per name, so a message cannot loop or expand without bound; trailing bytes are an error.
public struct DNSMessage: Equatable, Sendable {
    /// The 16-bit header fields of RFC 1035 §4.1.1.
    public var id: UInt16
    /// QR (bit 15), Opcode (bits 11-14), AA, TC, RD, RA, Z, RCODE (bits 0-3) as on the wire.
    public var flags: UInt16
    public var questions: [Question]
    public var answers: [Record]
    public var authorities: [Record]
    public var additionals: [Record]

    /// A question (RFC 1035 §4.1.2): a name in presentation form without the final dot,
    /// lower-cased as received (matching is case-insensitive, RFC 4343).
    public struct Question: Equatable, Sendable {
        public var name: String
        public var type: UInt16
        public var qclass: UInt16

        public init(name: String, type: UInt16, qclass: UInt16 = DNSMessage.classIN) {
            self.name = name
            self.type = type
            self.qclass = qclass
        }
    }

    /// A resource record (RFC 1035 §4.1.3). `data` is RDATA as received, except for the types
    /// whose RDATA holds a name (CNAME, NS, PTR), whose name is decompressed into `target`
    /// so the record can be re-encoded in another message.
    public struct Record: Equatable, Sendable {
        public var name: String
        public var type: UInt16
        public var rclass: UInt16
        /// Seconds (RFC 1035 §3.2.1).
        public var ttl: UInt32
        public var data: [UInt8]
        public var target: String?

        public init(
            name: String, type: UInt16, rclass: UInt16 = DNSMessage.classIN, ttl: UInt32, data: [UInt8],
            target: String? = nil
        ) {
            self.name = name
            self.type = type
            self.rclass = rclass
            self.ttl = ttl
            self.data = data
            self.target = target
        }
    }

    public static let typeA: UInt16 = 1
    public static let typeNS: UInt16 = 2
    public static let typeCNAME: UInt16 = 5
    public static let typePTR: UInt16 = 12
    public static let typeAAAA: UInt16 = 28
    public static let typeOPT: UInt16 = 41
    public static let classIN: UInt16 = 1

    /// RCODE values (RFC 1035 §4.1.1).
    public enum ResponseCode: UInt16, Sendable {
        case noError = 0, formatError = 1, serverFailure = 2, nameError = 3, notImplemented = 4, refused = 5
    }

    public init(
        id: UInt16, flags: UInt16, questions: [Question] = [], answers: [Record] = [], authorities: [Record] = [],
        additionals: [Record] = []
    ) {
        self.id = id
        self.flags = flags
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    public var isResponse: Bool { flags & 0x8000 != 0 }
    public var opcode: UInt16 { (flags >> 11) & 0xF }
    public var isTruncated: Bool { flags & 0x0200 != 0 }
    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var responseCode: UInt16 { flags & 0xF }

    /// Why a message was refused by `parse`.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public var description: String
        /// The byte offset in the message where parsing stopped.
        public var offset: Int
    }

    /// The longest name in wire form (RFC 1035 §2.3.4), octets.
    public static let maxNameLength = 255
    /// Compression pointers followed per name at most.
    public static let maxPointers = 64

    /// Parses a whole message. - Throws: `ParseError` naming the offset for a short, malformed
    /// or looping message, or trailing bytes.
    public static func parse(_ bytes: [UInt8]) throws(ParseError) -> DNSMessage {
        var reader = Reader(bytes: bytes)
        guard bytes.count >= 12 else {
            throw ParseError(description: "message shorter than the 12-byte header", offset: 0)
        }
        let id = try reader.u16()
        let flags = try reader.u16()
        let qd = try reader.u16()
        let an = try reader.u16()
        let ns = try reader.u16()
        let ar = try reader.u16()
        var message = DNSMessage(id: id, flags: flags)
        for _ in 0..<qd {
            let name = try reader.name()
            let type = try reader.u16()
            let qclass = try reader.u16()
            message.questions.append(Question(name: name, type: type, qclass: qclass))
        }
        for section in 0..<3 {
            let count = [an, ns, ar][section]
            var records: [Record] = []
            for _ in 0..<count { records.append(try reader.record()) }
            switch section {
            case 0: message.answers = records
            case 1: message.authorities = records
            default: message.additionals = records
            }
        }
        guard reader.offset == bytes.count else {
            throw ParseError(
                description: "\(bytes.count - reader.offset) trailing bytes after the last record",
                offset: reader.offset)
        }
        return message
    }

    /// The header alone (id and flags), for answering FORMERR to a message whose body is bad.
    /// Nil when shorter than 12 bytes.
    public static func header(_ bytes: [UInt8]) -> (id: UInt16, flags: UInt16)? {
        guard bytes.count >= 12 else { return nil }
        return (UInt16(bytes[0]) << 8 | UInt16(bytes[1]), UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
    }

    /// The wire form, names uncompressed. - Throws: `ParseError` (offset 0) when a name is not
    /// encodable (empty label, label over 63 octets, name over 255) or RDATA exceeds 65535.
    public func encode() throws(ParseError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func u16(_ v: UInt16) {
            out.append(UInt8(v >> 8))
            out.append(UInt8(v & 0xFF))
        }
        func u32(_ v: UInt32) {
            u16(UInt16(v >> 16))
            u16(UInt16(v & 0xFFFF))
        }
        guard questions.count <= 0xFFFF, answers.count <= 0xFFFF, authorities.count <= 0xFFFF,
            additionals.count <= 0xFFFF
        else { throw ParseError(description: "too many records", offset: 0) }
        u16(id)
        u16(flags)
        u16(UInt16(questions.count))
        u16(UInt16(answers.count))
        u16(UInt16(authorities.count))
        u16(UInt16(additionals.count))
        for q in questions {
            out += try DNSMessage.wireName(q.name)
            u16(q.type)
            u16(q.qclass)
        }
        for r in answers + authorities + additionals {
            out += try DNSMessage.wireName(r.name)
            u16(r.type)
            u16(r.rclass)
            u32(r.ttl)
            let data = try r.target.map { t throws(ParseError) in try DNSMessage.wireName(t) } ?? r.data
            guard data.count <= 0xFFFF else { throw ParseError(description: "RDATA over 65535 bytes", offset: 0) }
            u16(UInt16(data.count))
            out += data
        }
        return out
    }

    /// A name in wire form (length-prefixed labels, final zero). "" and "." are the root.
    public static func wireName(_ name: String) throws(ParseError) -> [UInt8] {
        var trimmed = Substring(name)
        if trimmed.hasSuffix(".") { trimmed = trimmed.dropLast() }
        var out: [UInt8] = []
        if !trimmed.isEmpty {
            for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
                let bytes = Array(label.utf8)
                guard !bytes.isEmpty, bytes.count <= 63 else {
                    throw ParseError(description: "name \"\(name)\": label of \(bytes.count) octets (1-63)", offset: 0)
                }
                out.append(UInt8(bytes.count))
                out += bytes
            }
        }
        out.append(0)
        guard out.count <= maxNameLength else {
            throw ParseError(description: "name \"\(name)\": \(out.count) octets (at most 255)", offset: 0)
        }
        return out
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func u8() throws(ParseError) -> UInt8 {
            guard offset < bytes.count else {
                throw ParseError(description: "message ends inside a field", offset: offset)
            }
            defer { offset += 1 }
            return bytes[offset]
        }
        mutating func u16() throws(ParseError) -> UInt16 { UInt16(try u8()) << 8 | UInt16(try u8()) }
        mutating func u32() throws(ParseError) -> UInt32 { UInt32(try u16()) << 16 | UInt32(try u16()) }

        mutating func record() throws(ParseError) -> Record {
            let name = try self.name()
            let type = try u16()
            let rclass = try u16()
            let ttl = try u32()
            let length = Int(try u16())
            let start = offset
            guard start + length <= bytes.count else {
                throw ParseError(description: "RDATA of \(length) bytes runs past the message end", offset: start)
            }
            var target: String?
            switch type {
            case DNSMessage.typeA where length != 4, DNSMessage.typeAAAA where length != 16:
                throw ParseError(description: "type \(type) RDATA of \(length) bytes", offset: start)
            case DNSMessage.typeCNAME, DNSMessage.typeNS, DNSMessage.typePTR:
                var inner = self
                target = try inner.name()
                guard inner.offset == start + length else {
                    throw ParseError(description: "name in RDATA does not fill its \(length) bytes", offset: start)
                }
            default: break
            }
            offset = start + length
            // A name in RDATA is kept uncompressed, so `data` stands alone in another message.
            let data =
                try target.map { t throws(ParseError) in try DNSMessage.wireName(t) }
                ?? Array(bytes[start..<start + length])
            return Record(name: name, type: type, rclass: rclass, ttl: ttl, data: data, target: target)
        }

        /// A (possibly compressed) name at the offset; the offset moves past its in-place part.
        mutating func name() throws(ParseError) -> String {
            var labels: [String] = []
            var position = offset
            var wireLength = 0
            var pointers = 0
            var resumeAt: Int?
            while true {
                guard position < bytes.count else {
                    throw ParseError(description: "name runs past the message end", offset: position)
                }
                let length = bytes[position]
                switch length & 0xC0 {
                case 0xC0:
                    guard position + 1 < bytes.count else {
                        throw ParseError(description: "compression pointer cut short", offset: position)
                    }
                    let target = Int(length & 0x3F) << 8 | Int(bytes[position + 1])
                    // Strictly backwards: no pointer to itself or forwards, so no loops.
                    guard target < position else {
                        throw ParseError(
                            description: "compression pointer to \(target) does not point backwards", offset: position)
                    }
                    pointers += 1
                    guard pointers <= DNSMessage.maxPointers else {
                        throw ParseError(
                            description: "more than \(DNSMessage.maxPointers) compression pointers", offset: position)
                    }
                    if resumeAt == nil { resumeAt = position + 2 }
                    position = target
                case 0x00:
                    position += 1
                    wireLength += Int(length) + 1
                    guard wireLength <= DNSMessage.maxNameLength else {
                        throw ParseError(description: "name longer than 255 octets", offset: position - 1)
                    }
                    if length == 0 {
                        offset = resumeAt ?? position
                        return labels.joined(separator: ".")
                    }
                    guard position + Int(length) <= bytes.count else {
                        throw ParseError(description: "label runs past the message end", offset: position - 1)
                    }
                    let label = bytes[position..<position + Int(length)]
                    // Presentation form is dotted: a label holding "." or bytes outside
                    // printable ASCII has no safe text form here, so it is refused.
                    guard label.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ".") }) else {
                        throw ParseError(
                            description: "label with a byte outside printable ASCII or a dot", offset: position)
                    }
                    labels.append(String(decoding: label, as: UTF8.self).lowercased())
                    position += Int(length)
                default:
                    // 0x40 and 0x80: extended label types (RFC 6891 §5), not used.
                    throw ParseError(
                        description: "label type 0x\(String(length & 0xC0, radix: 16)) unknown", offset: position)
                }
            }
        }
    }
}
