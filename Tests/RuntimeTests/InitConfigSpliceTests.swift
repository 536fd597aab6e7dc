import Foundation
import Glibc
import OCI
import SeccompFilters
import Testing

@testable import Runtime

/// The init's config carries the spec as the config.json bytes the create decoded it from
/// (not encoded again), and the init decodes it without linux.seccomp, whose rules it never
/// uses: it loads the BPF the runtime compiled.
@Suite struct InitConfigSpliceTests {
    /// A config.json with the repository's default seccomp profile (the ~350 rules that made
    /// encoding the spec again cost), in `runc spec` layout with extra whitespace.
    static func configBytes() throws -> [UInt8] {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let profile = try Data(contentsOf: repo.appendingPathComponent("seccomp/default.json"))
        var object = try #require(try JSONSerialization.jsonObject(with: profile) as? [String: Any])
        object.removeValue(forKey: "archMap")
        let seccomp = try JSONSerialization.data(withJSONObject: object)
        let text = """
              {
              "ociVersion": "1.0.2", "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
              "root": {"path": "rootfs", "readonly": true}, "hostname": "splice",
              "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
              "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], "maskedPaths": ["/proc/kcore"],
                        "seccomp": \(String(decoding: seccomp, as: UTF8.self)), "readonlyPaths": ["/proc/sys"]}
            }
            """
        return Array(text.utf8)
    }

    static func config(_ spec: Spec) -> InitConfig {
        var config = InitConfig(
            mode: .create, id: "splice", bundle: "/b", rootfs: "/b/rootfs", spec: spec, process: spec.process!,
            noPivot: false, noNewKeyring: false, preserveFds: 0, fifoFdIndex: 0, consoleSocketFdIndex: nil,
            mountNamespaceFdIndex: nil, newNamespaces: ["pid", "mount"], stateJSON: "{\"id\":\"splice\"}",
            seccomp: SeccompProgram(bpf: (0..<4096).map { UInt8($0 % 251) }, flags: 0, warnings: ["w"]))
        config.spec.linux?.seccomp = nil
        return config
    }

    /// Sends `config` over a socketpair as the create does and receives it as the init does.
    static func roundTrip(_ config: InitConfig, specBytes: [UInt8]?) throws -> (InitConfig, Int) {
        var sv: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0)
        defer { sv.forEach { close($0) } }
        // Big enough for the whole message: the send does not block on the reader.
        var size: Int32 = 1 << 20
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        try InitChannel(fd: sv[0]).send(config, specBytes: specBytes, fds: [])
        var available: Int32 = 0
        _ = ioctl(sv[1], UInt(FIONREAD), &available)
        let received = try #require(try InitChannel(fd: sv[1]).receiveConfig())
        return (received.0, Int(available))
    }

    @Test("the spec goes as the config.json bytes; the init reads the same config, without linux.seccomp")
    func splicedSpec() throws {
        let bytes = try Self.configBytes()
        let spec = try JSONDecoding.decode(Spec.self, from: Data(bytes))
        #expect((spec.linux?.seccomp?.syscalls?.count ?? 0) > 50)
        let config = Self.config(spec)
        let (spliced, splicedSize) = try Self.roundTrip(config, specBytes: bytes)
        let (encoded, encodedSize) = try Self.roundTrip(config, specBytes: nil)
        #expect(spliced.spec == config.spec)
        #expect(encoded.spec == config.spec)
        #expect(spliced.spec.linux?.seccomp == nil && spliced.spec.linux?.readonlyPaths == ["/proc/sys"])
        #expect(spliced.stateJSON == config.stateJSON && spliced.newNamespaces == config.newNamespaces)
        #expect(spliced.seccomp == config.seccomp && encoded.seccomp == config.seccomp)
        // The rules did travel (the bytes as they are), and were not decoded.
        #expect(splicedSize > encodedSize + 10_000, "\(splicedSize) vs \(encodedSize)")
    }

    @Test("bytes that are not a bare JSON object (a byte order mark first) are not spliced in")
    func byteOrderMark() throws {
        let bytes = [0xEF, 0xBB, 0xBF] + (try Self.configBytes())
        let spec = try JSONDecoding.decode(Spec.self, from: Data(bytes))
        let config = Self.config(spec)
        let (received, size) = try Self.roundTrip(config, specBytes: bytes)
        #expect(received.spec == config.spec)
        #expect(size < 10_000, "\(size): the rules were sent")
    }

    @Test("Linux.skippingSeccomp leaves linux.seccomp nil and every other member as decoded")
    func skippingSeccomp() throws {
        let bytes = Data(try Self.configBytes())
        let full = try JSONDecoder().decode(Spec.self, from: bytes)
        let decoder = JSONDecoder()
        decoder.userInfo = [Linux.skippingSeccomp: true]
        let skipped = try decoder.decode(Spec.self, from: bytes)
        var expected = full
        expected.linux?.seccomp = nil
        #expect(full.linux?.seccomp != nil)
        #expect(skipped == expected)
        // A wrong type elsewhere in linux is still an error.
        let bad = String(decoding: bytes, as: UTF8.self).replacingOccurrences(
            of: "\"readonlyPaths\": [\"/proc/sys\"]", with: "\"readonlyPaths\": 7")
        #expect(throws: DecodingError.self) { try decoder.decode(Spec.self, from: Data(bad.utf8)) }
    }

    @Test("the placeholder search finds the first occurrence, at either end, and nothing where there is none")
    func firstIndex() {
        let hay = Array("{{\"a\":{\"b\"}}{\"a\":{".utf8)
        #expect(BundleSpec.firstIndex(of: Array("{\"a\"".utf8), in: hay) == 1)
        #expect(BundleSpec.firstIndex(of: Array("{{".utf8), in: hay) == 0)
        #expect(BundleSpec.firstIndex(of: Array(":{".utf8), in: hay) == 5)
        #expect(BundleSpec.firstIndex(of: Array("}{".utf8), in: hay) == 11)
        #expect(BundleSpec.firstIndex(of: Array(":{\"c".utf8), in: hay) == nil)
        #expect(BundleSpec.firstIndex(of: hay + [0x7D], in: hay) == nil)
        #expect(BundleSpec.firstIndex(of: Array("{".utf8), in: []) == nil)
        #expect(BundleSpec.firstIndex(of: hay, in: hay) == 0)
        let tail = Array(repeating: UInt8(ascii: "x"), count: 5000) + Array("xy".utf8)
        #expect(BundleSpec.firstIndex(of: Array("xy".utf8), in: tail) == 5000)
    }

    /// Writes `body` as one frame (the channel's 4-byte little-endian length, then the bytes).
    static func writeFrame(_ fd: Int32, _ body: [UInt8]) {
        var len = UInt32(body.count).littleEndian
        let frame = withUnsafeBytes(of: &len) { Array($0) } + body
        #expect(write(fd, frame, frame.count) == frame.count)
    }

    @Test("the compiled filter travels as its own frame: a missing or ragged one fails the init's receive")
    func filterFrame() throws {
        var config = Self.config(try JSONDecoding.decode(Spec.self, from: Data(try Self.configBytes())))
        config.seccomp?.bpf = []
        let json = Array(try JSONEncoder().encode(config))
        #expect(json.count < 12_000, "the BPF should not be in the JSON")
        for (name, next) in [("missing", nil), ("ragged", [UInt8](repeating: 1, count: 12)), ("empty", [])]
            as [(String, [UInt8]?)]
        {
            var sv: [Int32] = [-1, -1]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0)
            defer { close(sv[1]) }
            var size: Int32 = 1 << 20
            setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            Self.writeFrame(sv[0], json)
            if let next { Self.writeFrame(sv[0], next) }
            close(sv[0])
            let error = #expect(throws: RuntimeError.self, "\(name)") { try InitChannel(fd: sv[1]).receiveConfig() }
            #expect("\(error.map { "\($0)" } ?? "")".contains("seccomp"), "\(name): \(String(describing: error))")
        }
    }
}
