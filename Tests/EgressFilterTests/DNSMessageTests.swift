import Testing

@testable import EgressFilter

@Suite struct DNSMessageTests {
    /// A query for example.com A, ID 0x1234, RD.
    let query: [UInt8] = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        7, 0x65, 0x78, 0x61, 0x6D, 0x70, 0x6C, 0x65, 3, 0x63, 0x6F, 0x6D, 0, 0, 1, 0, 1,
    ]

    @Test func parsesAndReencodesAQuery() throws {
        let message = try DNSMessage.parse(query)
        #expect(message.id == 0x1234)
        #expect(message.recursionDesired)
        #expect(!message.isResponse)
        #expect(message.questions == [.init(name: "example.com", type: 1)])
        #expect(try message.encode() == query)
    }

    @Test func followsBackwardCompressionPointers() throws {
        // Response: question example.com; answer www -> pointer to offset 12 (example.com), A 1.2.3.4;
        // answer CNAME whose RDATA is a pointer.
        var bytes: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]
        bytes += query[12...]
        bytes += [3, 0x77, 0x77, 0x77, 0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]
        bytes += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, 0x77, 0x77, 0x77, 0xC0, 12]
        let message = try DNSMessage.parse(bytes)
        #expect(message.answers.count == 2)
        #expect(message.answers[0].name == "www.example.com")
        #expect(message.answers[0].data == [1, 2, 3, 4])
        #expect(message.answers[1].name == "example.com")
        #expect(message.answers[1].target == "www.example.com")
        // Re-encoded without compression, it parses to the same message.
        #expect(try DNSMessage.parse(message.encode()) == message)
    }

    @Test func refusesPointerLoopsAndForwardPointers() {
        // A pointer to itself at offset 12.
        var loop: [UInt8] = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(loop) }
        // A forward pointer.
        loop[13] = 16
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(loop) }
        // Two names pointing at each other: the second points back to the first, whose
        // label then points forward to the second.
        let mutual: [UInt8] = [
            0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
            1, 0x61, 0xC0, 20, 0, 1, 0, 1,
            0xC0, 12, 0, 1, 0, 1,
        ]
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(mutual) }
    }

    @Test func refusesPointerChainsOverTheBound() throws {
        // Header, a root name at offset 12, then 80 pointers each to the one before: a name
        // read at the last pointer would follow 80 hops, all backwards.
        var bytes: [UInt8] = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        var target = 12
        for _ in 0..<80 {
            let here = bytes.count
            bytes += [0xC0 | UInt8(target >> 8), UInt8(target & 0xFF)]
            target = here
        }
        var deep = DNSMessage.Reader(bytes: bytes, offset: target)
        let error = #expect(throws: DNSMessage.ParseError.self) { _ = try deep.name() }
        #expect(error?.description.contains("compression pointers") == true)
        // 60 hops are within the bound.
        var shallow = DNSMessage.Reader(bytes: bytes, offset: 12 + 1 + 2 * 59)
        #expect(try shallow.name() == "")
    }

    @Test func refusesTruncatedAndTrailing() {
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(Array(query.prefix(11))) }
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(Array(query.dropLast())) }
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(query + [0]) }
        // A label length running past the end.
        var long = query
        long[12] = 60
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(long) }
        // QDCOUNT larger than present.
        var count = query
        count[5] = 2
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(count) }
    }

    @Test func refusesBadLabelsAndLengths() {
        // Extended label type 0x40.
        var ext = query
        ext[12] = 0x47
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(ext) }
        // A dot inside a label would change the name's meaning in presentation form.
        var dot = query
        dot[14] = UInt8(ascii: ".")
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(dot) }
        // A name over 255 octets: 5 labels of 63.
        var big: [UInt8] = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        for _ in 0..<5 { big += [63] + [UInt8](repeating: 0x61, count: 63) }
        big += [0, 0, 1, 0, 1]
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(big) }
        // An A record with 5 bytes of RDATA.
        var a: [UInt8] = [0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0]
        a += [1, 0x61, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 5, 1, 2, 3, 4, 5]
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(a) }
        // RDATA length past the end.
        var rd: [UInt8] = [0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0]
        rd += [1, 0x61, 0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 50, 1, 2]
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.parse(rd) }
        // Encoding a 64-octet label or an empty label fails.
        #expect(throws: DNSMessage.ParseError.self) {
            try DNSMessage.wireName(String(repeating: "a", count: 64) + ".com")
        }
        #expect(throws: DNSMessage.ParseError.self) { try DNSMessage.wireName("a..com") }
    }

    @Test func everyPrefixAndEveryByteFlipOfAResponseIsHandled() throws {
        // No crash and no hang on any truncation or single-byte corruption.
        var bytes: [UInt8] = [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]
        bytes += query[12...]
        bytes += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]
        _ = try DNSMessage.parse(bytes)
        for n in 0..<bytes.count { _ = try? DNSMessage.parse(Array(bytes.prefix(n))) }
        for i in 0..<bytes.count {
            for value: UInt8 in [0, 0x3F, 0x40, 0xC0, 0xFF] {
                var copy = bytes
                copy[i] = value
                _ = try? DNSMessage.parse(copy)
            }
        }
    }
}
