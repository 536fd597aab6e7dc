/// A digest of a directory tree, entry by entry, to tell later whether anything below it was
/// added, removed or changed (warm pool recycling: a sandbox's package trees and writable
/// paths against the digests taken when it was made; kept small and standalone so a
/// preloaded-packages manifest can use it too).
///
/// The walk never follows a symlink and never leaves the tree's filesystem: the root is opened
/// with openat2(2) from a directory fd (RESOLVE_IN_ROOT with the sandbox's root as that fd, or
/// an absolute host path with RESOLVE_NO_SYMLINKS), every directory and file below it with
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, relative to
/// its parent's fd (openat2(2)). A symlink is recorded by its target (readlinkat(2)), never
/// opened. A file is hashed through the fd that was opened, checked to be the inode that
/// fstatat(2) listed, so a rename between the listing and the open is seen as a change.
import CDaemon
import CSafeSpace
import Crypto
import Foundation
import Glibc

struct TreeDigest: Equatable, Sendable {
    /// Relative path (`""` for the root itself, else `a/b`) -> what it is:
    /// `d <mode> <uid>:<gid> x=<xattr names>` for a directory,
    /// `f <mode> <uid>:<gid> <size> <sha256 hex> x=<xattr names>` for a regular file,
    /// `l <target>` for a symlink, `s|p|c|b <mode> <uid>:<gid> <rdev>` for the others.
    /// Times are not recorded (the content is).
    var entries: [String: String]

    /// Limits of one walk: past them the walk throws (a tree that large is not verified).
    static let maxEntries = 200_000
    static let maxBytes: Int64 = 2 << 30

    struct WalkError: Error, CustomStringConvertible {
        var description: String
    }

    /// What differs from `baseline`, sorted: paths added, removed and changed.
    func differences(from baseline: TreeDigest) -> (added: [String], removed: [String], changed: [String]) {
        let added = entries.keys.filter { baseline.entries[$0] == nil }.sorted()
        let removed = baseline.entries.keys.filter { entries[$0] == nil }.sorted()
        let changed = entries.keys.filter { baseline.entries[$0] != nil && baseline.entries[$0] != entries[$0] }
            .sorted()
        return (added, removed, changed)
    }

    /// One line for an audit detail: counts and the first 8 paths of each kind.
    func describeDifferences(from baseline: TreeDigest, prefix: String) -> String? {
        let (added, removed, changed) = differences(from: baseline)
        if added.isEmpty && removed.isEmpty && changed.isEmpty { return nil }
        func list(_ name: String, _ paths: [String]) -> String? {
            guard !paths.isEmpty else { return nil }
            let shown = paths.prefix(8).map { $0.isEmpty ? prefix : prefix + "/" + $0 }
            return "\(name) \(paths.count) (\(shown.joined(separator: ", "))\(paths.count > 8 ? ", …" : ""))"
        }
        return [list("added", added), list("removed", removed), list("changed", changed)].compactMap { $0 }
            .joined(separator: "; ")
    }

    /// The digest of the tree at `path`, resolved from `dirfd` with `resolve` (openat2's
    /// RESOLVE_* flags: `SD_RESOLVE_IN_ROOT` with a sandbox's root); nil when `path` does not
    /// exist. `skip`: relative paths left out (another tree's mount point below this one).
    /// - Throws: `WalkError` naming the path for a symlink or a mount on the way, a tree past
    ///   `maxEntries`/`maxBytes`, or any other failure to read it.
    static func take(dirfd: Int32, path: String, resolve: UInt64, skip: Set<String> = []) throws -> TreeDigest? {
        let root = sd_openat2(dirfd, path, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), 0, resolve)
        if root < 0 {
            if errno == ENOENT { return nil }
            throw WalkError(description: "\(path): \(String(cString: strerror(errno)))")
        }
        defer { close(root) }
        var walk = Walk(skip: skip, top: path)
        var st = stat()
        guard fstat(root, &st) == 0 else { throw WalkError(description: "\(path): fstat failed") }
        walk.entries[""] = try walk.describeDirectory(root, st)
        try walk.directory(root, relative: "")
        return TreeDigest(entries: walk.entries)
    }

    private struct Walk {
        var entries: [String: String] = [:]
        var bytes: Int64 = 0
        let skip: Set<String>
        let top: String

        static let beneath = UInt64(
            SD_RESOLVE_BENEATH | SD_RESOLVE_NO_SYMLINKS | SD_RESOLVE_NO_MAGICLINKS | SD_RESOLVE_NO_XDEV)

        init(skip: Set<String>, top: String) {
            self.skip = skip
            self.top = top
        }

        func fail(_ relative: String, _ what: String) -> WalkError {
            WalkError(description: "\(relative.isEmpty ? top : top + "/" + relative): \(what)")
        }

        static func owner(_ st: stat) -> String {
            "\(String(st.st_mode & 0o7777, radix: 8)) \(st.st_uid):\(st.st_gid)"
        }

        /// The names of the extended attributes of `fd`, sorted (flistxattr(2)).
        static func xattrNames(_ fd: Int32) -> String {
            var buffer = [CChar](repeating: 0, count: 4096)
            let n = sd_flistxattr(fd, &buffer, buffer.count)
            if n < 0 { return errno == ENOTSUP ? "" : "?\(errno)" }
            let names = buffer[..<n].split(separator: 0).map {
                String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            return names.sorted().joined(separator: ",")
        }

        func describeDirectory(_ fd: Int32, _ st: stat) throws -> String {
            "d \(Self.owner(st)) x=\(Self.xattrNames(fd))"
        }

        /// The names in directory `fd` (not `.` and `..`).
        func names(_ fd: Int32, relative: String) throws -> [String] {
            let copy = dup(fd)
            guard copy >= 0, let dir = fdopendir(copy) else {
                if copy >= 0 { close(copy) }
                throw fail(relative, "cannot list: \(String(cString: strerror(errno)))")
            }
            defer { closedir(dir) }
            rewinddir(dir)
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            return names.sorted()
        }

        mutating func directory(_ fd: Int32, relative: String) throws {
            for name in try names(fd, relative: relative) {
                let path = relative.isEmpty ? name : relative + "/" + name
                if skip.contains(path) { continue }
                if entries.count >= TreeDigest.maxEntries {
                    throw fail(path, "more than \(TreeDigest.maxEntries) entries")
                }
                var st = stat()
                guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw fail(path, "fstatat: \(String(cString: strerror(errno)))")
                }
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    let child = sd_openat2(
                        fd, name, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), 0, Self.beneath)
                    guard child >= 0 else {
                        throw fail(path, errno == EXDEV ? "a mount point" : String(cString: strerror(errno)))
                    }
                    defer { close(child) }
                    var opened = stat()
                    guard fstat(child, &opened) == 0, opened.st_ino == st.st_ino, opened.st_dev == st.st_dev else {
                        throw fail(path, "replaced while read")
                    }
                    entries[path] = try describeDirectory(child, opened)
                    try directory(child, relative: path)
                case S_IFREG:
                    entries[path] = try file(fd, name, st, relative: path)
                case S_IFLNK:
                    var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                    let n = readlinkat(fd, name, &target, target.count - 1)
                    guard n >= 0 else { throw fail(path, "readlinkat: \(String(cString: strerror(errno)))") }
                    entries[path] = "l " + String(decoding: target[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                default:
                    let type: String
                    switch st.st_mode & S_IFMT {
                    case S_IFSOCK: type = "s"
                    case S_IFIFO: type = "p"
                    case S_IFCHR: type = "c"
                    default: type = "b"
                    }
                    entries[path] = "\(type) \(Self.owner(st)) \(st.st_rdev)"
                }
            }
        }

        mutating func file(_ dir: Int32, _ name: String, _ listed: stat, relative: String) throws -> String {
            let fd = sd_openat2(
                dir, name, UInt64(O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY), 0, Self.beneath)
            guard fd >= 0 else { throw fail(relative, "open: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_ino == listed.st_ino,
                st.st_dev == listed.st_dev
            else { throw fail(relative, "replaced while read") }
            bytes += Int64(st.st_size)
            if bytes > TreeDigest.maxBytes {
                throw fail(relative, "more than \(TreeDigest.maxBytes) bytes in the tree")
            }
            var hash = SHA256()
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var total: Int64 = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw fail(relative, "read: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                total += Int64(n)
                hash.update(data: buffer[..<n])
            }
            let hex = hash.finalize().map { String(format: "%02x", $0) }.joined()
            return "f \(Self.owner(st)) \(total) \(hex) x=\(Self.xattrNames(fd))"
        }
    }
}
