import Glibc
import LinuxKernel
import OCI
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A bundle's config.json decoded once per process: `run` and `create` read it up to three
/// times (the sealed-binary decision in main.swift, the foreground terminal check, the create
/// itself), and the spec's linux.seccomp rules make each decode cost about a millisecond.
/// The file is read every time; equal bytes give the spec decoded from them, other bytes are
/// decoded anew, so a config.json rewritten in between is never missed.
public enum BundleSpec {
    private static let last = Mutex<(bytes: [UInt8], spec: Spec)?>(nil)

    /// The spec in the config.json at `path` (the bytes as read, and their decode).
    /// - Throws: `SysError` when the file cannot be read; the decoder's error
    ///   (`JSONDecoding.decode`) when it is not a valid spec.
    public static func load(_ path: String) throws -> (bytes: [UInt8], spec: Spec) {
        let bytes = try Files.read(path)
        return (bytes, try decode(bytes))
    }

    /// The config.json bytes `spec` was decoded from in this process, when `spec` is still
    /// exactly that decode (the create did not change it): `StateStore.save` writes them into
    /// state.json as they are instead of encoding the spec again.
    static func bytes(decodingTo spec: Spec) -> [UInt8]? {
        last.withLock { $0?.spec == spec ? $0?.bytes : nil }
    }

    /// `bytes` (a config.json) decoded, or the spec decoded earlier from equal bytes.
    /// - Throws: the decoder's error (`JSONDecoding.decode`).
    static func decode(_ bytes: [UInt8]) throws -> Spec {
        // Keyed by the bytes alone: `bundle/config.json` and its absolute path are one file.
        if let spec = last.withLock({ $0?.bytes == bytes ? $0?.spec : nil }) { return spec }
        let spec = try JSONDecoding.decode(Spec.self, from: Data(bytes))
        last.withLock { $0 = (bytes, spec) }
        return spec
    }
}

extension BundleSpec {
    /// `value` JSON-encoded, with the encoding of its spec (at `spec`) replaced by `raw`, the
    /// config.json that spec was decoded from (`bytes(decodingTo:)`): `value` is encoded with a
    /// placeholder spec whose encoding is then replaced by `raw`. A
    /// decoder reads the same spec from the result (with `Linux.skippingSeccomp`, the same spec
    /// without linux.seccomp). `raw` must be a JSON object with nothing before it but JSON
    /// whitespace (RFC 8259 section 2): not a byte order mark, which a decoder may skip at the
    /// start of a document but which is no JSON inside one. Without usable `raw` (nil, or not
    /// such an object) `value` is encoded as it is.
    /// - Throws: the encoder's error.
    static func encode<T: Encodable>(_ value: T, spec: WritableKeyPath<T, Spec>, raw: [UInt8]?) throws -> Data {
        guard let raw, raw.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") else {
            return try JSONEncoder().encode(value)
        }
        // The shell's one Spec object: no other can be this one, and a JSON string cannot hold
        // an object's bytes (its quotes come escaped), so the placeholder occurs once.
        var shell = value
        shell[keyPath: spec] = Spec(ociVersion: "safespace-spliced-spec")
        let placeholder = Array(try JSONEncoder().encode(shell[keyPath: spec]))
        let encoded = Array(try JSONEncoder().encode(shell))
        guard let start = firstIndex(of: placeholder, in: encoded) else { return try JSONEncoder().encode(value) }
        var out = Data(capacity: encoded.count - placeholder.count + raw.count)
        out.append(contentsOf: encoded[..<start])
        out.append(contentsOf: raw)
        out.append(contentsOf: encoded[(start + placeholder.count)...])
        return out
    }

    /// Where `needle` first starts in `haystack`, nil when it does not occur: memchr(3) for its
    /// first byte, memcmp(3) for the rest. The generic `firstRange(of:)` that [UInt8] gets
    /// through Foundation's DataProtocol compares byte by byte through witness tables: ~0.4 ms
    /// on the init config's ~10 KB (its BPF in hex).
    static func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard let first = needle.first else { return 0 }
        guard haystack.count >= needle.count else { return nil }
        return haystack.withUnsafeBytes { h in
            needle.withUnsafeBytes { n in
                let base = h.baseAddress!
                var at = 0
                let last = h.count - n.count
                while at <= last {
                    guard let hit = memchr(base + at, Int32(first), last - at + 1) else { return nil }
                    let offset = UnsafeRawPointer(hit) - base
                    if memcmp(base + offset, n.baseAddress!, n.count) == 0 { return offset }
                    at = offset + 1
                }
                return nil
            }
        }
    }
}
