import Crypto
import Glibc

// The listing a rootfs digest is computed over: one line per file system object of the
// tree, sorted bytewise. rootfs/README.md ("What the digest covers") defines it; manifests
// written by the bash build script before `safespace rootfs seal` existed use the same
// listing, so their digests verify unchanged.

/// The digest listing of a root filesystem tree.
///
/// Each line (no newline kept) is seven tab-separated fields,
/// `PATH TYPE MODE UID GID SIZE DATA`:
///
/// | field | value |
/// |---|---|
/// | PATH | from the top of the tree, starting with `/` (`/` for the top itself) |
/// | TYPE | `f` `d` `l` `c` `b` `p` `s` (find(1) `-printf %y`) |
/// | MODE | permission bits in octal, four digits (`0755`, `4755`, `1777`) |
/// | UID, GID | numeric owner and group |
/// | SIZE | bytes for a regular file; `-` otherwise |
/// | DATA | regular file: SHA-256 of its content (lowercase hex); symlink: its target; device: `major:minor` (decimal); otherwise `-` |
///
/// Timestamps, extended attributes (file capabilities, ACLs) and hard-link identity are not
/// covered. The digest is `sha256:` + SHA-256 (lowercase hex) of the lines, each followed
/// by `\n`, in order.
public struct RootfsListing: Sendable, Equatable {
    /// The lines, sorted bytewise (as `LC_ALL=C sort` does), without newlines. Raw bytes:
    /// a path need not be UTF-8.
    public var lines: [[UInt8]]

    public init(lines: [[UInt8]]) {
        self.lines = lines
    }

    /// The listing as a file holds it: every line followed by `\n`.
    public var text: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(lines.reduce(0) { $0 + $1.count + 1 })
        for line in lines {
            out += line
            out.append(0x0a)
        }
        return out
    }

    /// `sha256:<64 lowercase hex digits>` of `text`.
    public var digest: String { "sha256:" + sha256Hex(text) }

    /// The sum of the SIZE fields of the regular files, in bytes (a hard-linked file counts
    /// once per path).
    public var sizeBytes: Int64 {
        lines.reduce(0) { sum, line in
            let fields = line.split(separator: 0x09, omittingEmptySubsequences: false)
            guard fields.count == 7, fields[1].elementsEqual("f".utf8) else { return sum }
            return sum + (Int64(String(decoding: fields[5], as: UTF8.self)) ?? 0)
        }
    }

    /// A listing as `text` holds it (a recorded `rootfs.listing`); empty lines are dropped.
    public init(text: [UInt8]) {
        lines = text.split(separator: 0x0a).map(Array.init)
    }

    /// Lists the tree at `path`, without following symbolic links below it, and reads every
    /// regular file to hash it (about 1.5 s for 150 MB). A tree holding files only root may
    /// read (`/etc/shadow`, 0640) needs root.
    ///
    /// - Throws: `RootfsError.unreadableTree` naming the path that could not be opened,
    ///   listed, stat'ed, read or followed (with the errno's text); `RootfsError.unlistableName`
    ///   for a name holding a newline or a tab, which a line cannot represent.
    public static func scan(_ path: String) throws -> RootfsListing {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw RootfsError.unreadableTree(path: path, reason: errnoText()) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = errnoText()
            close(fd)
            throw RootfsError.unreadableTree(path: path, reason: reason)
        }
        var scanner = Scanner(top: path)
        scanner.add(relative: Array("/".utf8), st, data: Array("-".utf8))
        try scanner.walk(fd: fd, relative: [])
        scanner.lines.sort { $0.lexicographicallyPrecedes($1) }
        return RootfsListing(lines: scanner.lines)
    }

    /// The first path, in listing order, whose line differs between `recorded` and `actual`;
    /// nil when the two are equal.
    public static func firstDifference(recorded: RootfsListing, actual: RootfsListing) -> RootfsDifference? {
        // Lines sort by PATH then TAB (no path holds a tab), so PATH+TAB orders both sides.
        func key(_ line: [UInt8]) -> ArraySlice<UInt8> {
            line[...(line.firstIndex(of: 0x09) ?? line.endIndex - 1)]
        }
        func path(_ line: [UInt8]) -> String {
            String(decoding: line.prefix { $0 != 0x09 }, as: UTF8.self)
        }
        func fields(_ line: [UInt8]) -> String {
            String(decoding: line.drop { $0 != 0x09 }.dropFirst(), as: UTF8.self)
                .replacingTabs()
        }
        var i = 0
        var j = 0
        let a = recorded.lines
        let b = actual.lines
        while i < a.count || j < b.count {
            guard i < a.count else { return RootfsDifference(path: path(b[j]), recorded: nil, actual: fields(b[j])) }
            guard j < b.count else { return RootfsDifference(path: path(a[i]), recorded: fields(a[i]), actual: nil) }
            let ka = key(a[i])
            let kb = key(b[j])
            if ka.elementsEqual(kb) {
                if a[i] != b[j] {
                    return RootfsDifference(path: path(a[i]), recorded: fields(a[i]), actual: fields(b[j]))
                }
                i += 1
                j += 1
            } else if ka.lexicographicallyPrecedes(kb) {
                return RootfsDifference(path: path(a[i]), recorded: fields(a[i]), actual: nil)
            } else {
                return RootfsDifference(path: path(b[j]), recorded: nil, actual: fields(b[j]))
            }
        }
        return nil
    }
}

/// One path whose listing line differs: added (`recorded` nil), removed (`actual` nil) or
/// changed. `recorded` and `actual` are the line's fields after PATH, separated by spaces.
public struct RootfsDifference: Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var recorded: String?
    public var actual: String?

    public init(path: String, recorded: String?, actual: String?) {
        self.path = path
        self.recorded = recorded
        self.actual = actual
    }

    public var description: String {
        switch (recorded, actual) {
        case (nil, let now?): return "\(path) was added (\(now))"
        case (let was?, nil): return "\(path) was removed (was \(was))"
        case (let was?, let now?): return "\(path) changed: recorded \(was), now \(now)"
        case (nil, nil): return "\(path)"
        }
    }
}

/// SHA-256 of `bytes`, as 64 lowercase hex digits.
func sha256Hex(_ bytes: some Sequence<UInt8>) -> String {
    var hasher = SHA256()
    hasher.update(data: Array(bytes))
    return hex(hasher.finalize())
}

private func hex(_ digest: SHA256.Digest) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(64)
    for byte in digest {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0xf)])
    }
    return String(decoding: out, as: UTF8.self)
}

private func errnoText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}

extension String {
    fileprivate func replacingTabs() -> String {
        String(map { $0 == "\t" ? " " : $0 })
    }
}

/// The walk behind `RootfsListing.scan`: directory fds (openat/fstatat, never following a
/// symlink below the top), one content hash per inode.
private struct Scanner {
    let top: String
    var lines: [[UInt8]] = []
    /// Content hashes of files already read, by (device, inode): hard links are read once.
    var hashes: [FileID: [UInt8]] = [:]
    var buffer = [UInt8](repeating: 0, count: 1 << 18)

    struct FileID: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    init(top: String) {
        self.top = top
    }

    func display(_ relative: [UInt8]) -> String {
        top + String(decoding: relative, as: UTF8.self)
    }

    mutating func add(relative: [UInt8], _ st: stat, data: [UInt8]) {
        let type: UInt8
        switch st.st_mode & S_IFMT {
        case S_IFREG: type = UInt8(ascii: "f")
        case S_IFDIR: type = UInt8(ascii: "d")
        case S_IFLNK: type = UInt8(ascii: "l")
        case S_IFCHR: type = UInt8(ascii: "c")
        case S_IFBLK: type = UInt8(ascii: "b")
        case S_IFIFO: type = UInt8(ascii: "p")
        case S_IFSOCK: type = UInt8(ascii: "s")
        default: type = UInt8(ascii: "U")
        }
        var mode = String(st.st_mode & 0o7777, radix: 8)
        mode = String(repeating: "0", count: max(0, 4 - mode.count)) + mode
        let size = type == UInt8(ascii: "f") ? String(st.st_size) : "-"
        var line = relative
        for field in [
            [type], Array(mode.utf8), Array(String(st.st_uid).utf8), Array(String(st.st_gid).utf8), Array(size.utf8),
            data,
        ] {
            line.append(0x09)
            line += field
        }
        lines.append(line)
    }

    /// Adds every entry of the directory open at `fd` (which it closes), recursively.
    mutating func walk(fd: Int32, relative: [UInt8]) throws {
        guard let dir = fdopendir(fd) else {
            let reason = errnoText()
            close(fd)
            throw RootfsError.unreadableTree(path: display(relative), reason: reason)
        }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw RootfsError.unreadableTree(path: display(relative), reason: errnoText()) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Array(raw.prefix { $0 != 0 })
            }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            names.append(name)
        }
        for name in names {
            let child = relative + [0x2f] + name
            if name.contains(0x0a) || name.contains(0x09) {
                throw RootfsError.unlistableName(path: display(child))
            }
            let cName = name.map { CChar(bitPattern: $0) } + [0]
            var st = stat()
            guard fstatat(dirfd(dir), cName, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw RootfsError.unreadableTree(path: display(child), reason: errnoText())
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                add(relative: child, st, data: Array("-".utf8))
                let sub = openat(dirfd(dir), cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw RootfsError.unreadableTree(path: display(child), reason: errnoText()) }
                try walk(fd: sub, relative: child)
            case S_IFREG:
                let id = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
                let digest: [UInt8]
                if let known = hashes[id] {
                    digest = known
                } else {
                    digest = try hashFile(dirFd: dirfd(dir), name: cName, path: child)
                    if st.st_nlink > 1 { hashes[id] = digest }
                }
                add(relative: child, st, data: digest)
            case S_IFLNK:
                var target = [UInt8](repeating: 0, count: Int(max(st.st_size, 255)) + 1)
                let n = target.withUnsafeMutableBufferPointer {
                    readlinkat(
                        dirfd(dir), cName, UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self),
                        $0.count)
                }
                guard n >= 0 else { throw RootfsError.unreadableTree(path: display(child), reason: errnoText()) }
                add(relative: child, st, data: Array(target[..<n]))
            case S_IFCHR, S_IFBLK:
                let dev = UInt64(st.st_rdev)
                // glibc's gnu_dev_major/minor (sys/sysmacros.h)
                let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)
                let minor = (dev & 0xff) | ((dev >> 12) & ~0xff)
                add(relative: child, st, data: Array("\(major):\(minor)".utf8))
            default:
                add(relative: child, st, data: Array("-".utf8))
            }
        }
    }

    /// SHA-256 of the regular file `name` in the directory `dirFd`, as lowercase hex bytes.
    mutating func hashFile(dirFd: Int32, name: [CChar], path: [UInt8]) throws -> [UInt8] {
        let fd = openat(dirFd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw RootfsError.unreadableTree(path: display(path), reason: errnoText()) }
        defer { close(fd) }
        var hasher = SHA256()
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw RootfsError.unreadableTree(path: display(path), reason: errnoText())
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
        return Array(hex(hasher.finalize()).utf8)
    }
}
