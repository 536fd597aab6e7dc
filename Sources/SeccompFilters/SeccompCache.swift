import CSeccomp
import Glibc
import LinuxKernel
import OCI

/// Compiled filters kept on disk, so that a container whose `linux.seccomp` was compiled
/// before skips libseccomp (the compile is most of the cost of seccomp at start: 1-6 ms for the
/// profiles of seccomp/, against well under 1 ms for a hit).
///
/// One file per filter, named by a 64-bit FNV-1a hash of its key; the file holds the whole key
/// and a hit needs the key to match byte for byte, so a hash collision is a miss, never
/// another profile's filter. The key is the profile written out canonically (every string
/// length-prefixed) plus what else shapes the BPF: the libseccomp version, the native
/// architecture and this compiler's format. Files are length-prefixed fields, not JSON, to keep
/// a hit cheap. The directory must be writable by root only (the runtime's `--root` is 0700);
/// at most `capacity` files are kept, the least recently written go first.
public struct SeccompCache: Sendable {
    public let directory: String
    public var capacity = 64
    /// Raised when the compiler's output for the same profile changes.
    static let format = "safespace-seccomp-2"

    public init(directory: String) {
        self.directory = directory
    }

    /// The cached program of `seccomp`, or a fresh compile that is then cached. A cache that
    /// cannot be read or written is skipped: the result is always a correct compile.
    /// - Throws: what `SeccompCompiler.compile` throws.
    public func program(for seccomp: Seccomp) throws -> SeccompProgram {
        let key = Self.key(seccomp)
        let path = directory + "/" + Self.fnv1a(key) + ".bin"
        if let bytes = try? Files.read(path), let program = Self.decode(bytes, key: key) {
            return program
        }
        let program = try SeccompCompiler.compile(seccomp)
        store(Self.encode(program, key: key), at: path)
        return program
    }

    /// Everything that decides the compiled program, unambiguously.
    static func key(_ s: Seccomp) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 << 10)
        // Appended in place (no temporary arrays): the default profile's key has ~1,500 fields.
        func put(_ string: String?) {
            guard let string else { return out.append(UInt8(ascii: "-")) }
            out.append(contentsOf: String(string.utf8.count).utf8)
            out.append(UInt8(ascii: ":"))
            out.append(contentsOf: string.utf8)
        }
        func put(_ number: UInt64?) { put(number.map { String($0) }) }
        let v = seccomp_version().pointee
        put("\(format) libseccomp-\(v.major).\(v.minor).\(v.micro) arch-\(seccomp_arch_native())")
        put(s.defaultAction)
        put(s.defaultErrnoRet.map(UInt64.init))
        for list in [s.architectures, s.flags] {
            put(list.map { String($0.count) })
            list?.forEach { put($0) }
        }
        put(s.listenerPath)
        put(s.listenerMetadata)
        put(s.syscalls.map { String($0.count) })
        for rule in s.syscalls ?? [] {
            put(String(rule.names.count))
            rule.names.forEach { put($0) }
            put(rule.action)
            put(rule.errnoRet.map(UInt64.init))
            put(rule.args.map { String($0.count) })
            for arg in rule.args ?? [] {
                put(UInt64(arg.index))
                put(arg.value)
                put(arg.valueTwo)
                put(arg.op)
            }
        }
        return out
    }

    /// `key`, flags, unknown names, warnings, then the BPF: each field `<length>:<bytes>`.
    static func encode(_ p: SeccompProgram, key: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        func field(_ bytes: [UInt8]) { out += Array("\(bytes.count):".utf8) + bytes }
        field(key)
        field(Array(String(p.flags).utf8))
        field(Array(p.unknownSyscalls.joined(separator: "\n").utf8))
        field(Array(p.warnings.joined(separator: "\n").utf8))
        field(p.bpf)
        return out
    }

    /// The program of a cache file whose key is `key`; nil for another key or a damaged file.
    static func decode(_ bytes: [UInt8], key: [UInt8]) -> SeccompProgram? {
        var i = 0
        func field() -> ArraySlice<UInt8>? {
            var length = 0
            while i < bytes.count, bytes[i] != UInt8(ascii: ":") {
                guard (48...57).contains(bytes[i]), length < 1 << 24 else { return nil }
                length = length * 10 + Int(bytes[i] - 48)
                i += 1
            }
            guard i < bytes.count, bytes.count - i - 1 >= length else { return nil }
            defer { i += 1 + length }
            return bytes[(i + 1)..<(i + 1 + length)]
        }
        guard let storedKey = field(), storedKey.elementsEqual(key),
            let flags = field().flatMap({ UInt32(String(decoding: $0, as: UTF8.self)) }),
            let unknown = field(), let warnings = field(), let bpf = field(), i == bytes.count, bpf.count % 8 == 0
        else { return nil }
        func lines(_ s: ArraySlice<UInt8>) -> [String] {
            s.isEmpty
                ? []
                : String(decoding: s, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(
                    String.init)
        }
        return SeccompProgram(bpf: Array(bpf), flags: flags, unknownSyscalls: lines(unknown), warnings: lines(warnings))
    }

    private func store(_ bytes: [UInt8], at path: String) {
        guard (try? Files.makeDirectories(directory, mode: 0o700)) != nil else { return }
        try? Files.writeAtomically(path, bytes, mode: 0o600)
        evict()
    }

    /// Removes the oldest files beyond `capacity`.
    private func evict() {
        guard let names = Files.entries(directory) else { return }
        var files: [(name: String, mtime: Int)] = []
        for name in names where name.hasSuffix(".bin") {
            var st = stat()
            if stat(directory + "/" + name, &st) == 0 { files.append((name, st.st_mtim.tv_sec)) }
        }
        guard files.count > capacity else { return }
        for file in files.sorted(by: { $0.mtime < $1.mtime }).prefix(files.count - capacity) {
            unlink(directory + "/" + file.name)
        }
    }

    static func fnv1a(_ bytes: [UInt8]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
