#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CSeccomp
import Glibc
import Linux
import OCI

/// Compiled filters kept on disk, so that a container whose `linux.seccomp` was compiled
/// before skips libseccomp (the compile is most of the cost of seccomp at start).
///
/// One file per filter, named by a 64-bit FNV-1a hash of its key; the file holds the whole key
/// and a hit needs the key to match byte for byte, so a hash collision is a miss, never
/// another profile's filter. The key is the profile as canonical JSON plus what else shapes
/// the BPF: the libseccomp version, the native architecture and this compiler's format.
/// The directory must be writable by root only (the runtime's `--root` is 0700); at most
/// `capacity` files are kept, the least recently written go first.
public struct SeccompCache: Sendable {
    public let directory: String
    public var capacity = 64
    /// Raised when the compiler's output for the same profile changes.
    static let format = "safespace-seccomp-1"

    public init(directory: String) {
        self.directory = directory
    }

    struct Entry: Codable {
        var key: String
        var program: SeccompProgram
    }

    /// The cached program of `seccomp`, or a fresh compile that is then cached. A cache that
    /// cannot be read or written is skipped: the result is always a correct compile.
    /// - Throws: what `SeccompCompiler.compile` throws.
    public func program(for seccomp: Seccomp) throws -> SeccompProgram {
        guard let key = Self.key(seccomp) else { return try SeccompCompiler.compile(seccomp) }
        let path = directory + "/" + Self.fnv1a(key) + ".json"
        if let bytes = try? Files.read(path), let entry = try? JSONDecoder().decode(Entry.self, from: Data(bytes)), entry.key == key {
            return entry.program
        }
        let program = try SeccompCompiler.compile(seccomp)
        store(Entry(key: key, program: program), at: path)
        return program
    }

    static func key(_ seccomp: Seccomp) -> String? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let json = try? encoder.encode(seccomp) else { return nil }
        let v = seccomp_version().pointee
        return "\(format) libseccomp-\(v.major).\(v.minor).\(v.micro) arch-\(seccomp_arch_native()) " + String(decoding: json, as: UTF8.self)
    }

    private func store(_ entry: Entry, at path: String) {
        guard (try? Files.makeDirectories(directory, mode: 0o700)) != nil, let bytes = try? JSONEncoder().encode(entry) else { return }
        try? Files.writeAtomically(path, Array(bytes), mode: 0o600)
        evict()
    }

    /// Removes the oldest files beyond `capacity`.
    private func evict() {
        guard let dir = opendir(directory) else { return }
        var files: [(name: String, mtime: Int)] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard name.hasSuffix(".json") else { continue }
            var st = stat()
            if stat(directory + "/" + name, &st) == 0 { files.append((name, st.st_mtim.tv_sec)) }
        }
        closedir(dir)
        guard files.count > capacity else { return }
        for file in files.sorted(by: { $0.mtime < $1.mtime }).prefix(files.count - capacity) {
            unlink(directory + "/" + file.name)
        }
    }

    static func fnv1a(_ s: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
