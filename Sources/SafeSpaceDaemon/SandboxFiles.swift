/// Files in and out of a sandbox (`PUT`/`GET /v1/sandboxes/{name}/files/{path}`), resolved in
/// the tree the sandbox itself sees: its init's root (`/proc/<init>/root`, the root of its
/// mount namespace, with its writable paths mounted), never a host path.
///
/// The path must lie strictly below one of the sandbox's writable paths, without `.` or `..`
/// components. Each step is opened with openat2(2): the writable path from the sandbox's root
/// with RESOLVE_IN_ROOT, then every component below it with RESOLVE_BENEATH, and all with
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS — a symlink anywhere on the way, one the sandbox
/// planted included, is refused rather than followed — and RESOLVE_NO_XDEV below the writable
/// path (no mount the sandbox made under it). The file is written as the sandbox's user.
import CDaemon
import CSafeSpace
import Crypto
import Foundation
import Glibc
import LinuxKernel

struct SandboxFiles {
    /// The sandbox's init (its root is the sandbox's view) and when it started, to refuse a
    /// reused pid.
    let initPid: Int32
    let initStartTime: UInt64
    let writablePaths: [String]
    /// Host uid/gid of the sandbox's user: owner of what is written.
    let uid: UInt32
    let gid: UInt32
    /// At the gVisor level: the file is moved by a process inside the sandbox
    /// (`InSandboxFiles`); the host's view of its root does not hold what it wrote.
    var inSandbox: InSandboxFiles? = nil

    /// A checked path: the writable path it is under (relative, e.g. `workspace`) and the
    /// components below it (at least one).
    struct Target {
        var writable: String
        var below: [String]
        var absolute: String { "/" + writable + "/" + below.joined(separator: "/") }
    }

    /// Checks the raw URL path after `/files/` (percent-encoded components).
    /// - Throws: `APIError` 400 (field `path`) for an empty, `.`/`..` or NUL component, or a
    ///   path outside every writable path.
    func target(rawPath: Substring) throws -> Target {
        var components: [String] = []
        for part in rawPath.split(separator: "/", omittingEmptySubsequences: false) {
            guard let decoded = String(part).removingPercentEncoding else {
                throw APIError.badRequest("invalid percent-encoding in \(part)", field: "path")
            }
            if decoded.isEmpty {
                throw APIError.badRequest("empty path component (a doubled or trailing '/')", field: "path")
            }
            if decoded == "." || decoded == ".." {
                throw APIError.badRequest(
                    "'\(decoded)' is not allowed in a file path", field: "path", code: "path_escape")
            }
            if decoded.contains("/") || decoded.utf8.contains(0) {
                throw APIError.badRequest("a path component contains '/' or NUL", field: "path")
            }
            components.append(decoded)
        }
        let candidates = writablePaths.map { $0.split(separator: "/").map(String.init) }
            .filter { !$0.isEmpty && components.count > $0.count && Array(components.prefix($0.count)) == $0 }
            .sorted { $0.count > $1.count }
        guard let writable = candidates.first else {
            throw APIError(
                .forbidden, "not_writable",
                "/\(components.joined(separator: "/")) is not below a writable path of the sandbox (\(writablePaths.joined(separator: ", ")))",
                field: "path")
        }
        return Target(writable: writable.joined(separator: "/"), below: Array(components.dropFirst(writable.count)))
    }

    private static let beneath = UInt64(
        SD_RESOLVE_BENEATH | SD_RESOLVE_NO_SYMLINKS | SD_RESOLVE_NO_MAGICLINKS | SD_RESOLVE_NO_XDEV)

    /// The sandbox's root directory (O_PATH), checked to belong to its init still.
    private func openRoot() throws -> Int32 {
        let fd = ss_open("/proc/\(initPid)/root", O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
        guard fd >= 0, ProcStat.read(pid: initPid)?.startTime == initStartTime else {
            if fd >= 0 { close(fd) }
            throw APIError(.conflict, "not_running", "the sandbox's init is gone")
        }
        return fd
    }

    /// The directory holding `target`'s last component, opened O_PATH; with `create`, missing
    /// directories on the way are made (0755, the sandbox user's).
    private func openParent(_ target: Target, create: Bool) throws -> Int32 {
        let root = try openRoot()
        defer { close(root) }
        var dir = sd_openat2(
            root, target.writable, UInt64(O_PATH | O_DIRECTORY | O_CLOEXEC), 0,
            UInt64(SD_RESOLVE_IN_ROOT | SD_RESOLVE_NO_SYMLINKS | SD_RESOLVE_NO_MAGICLINKS))
        if dir < 0 { throw Self.error(errno, "/" + target.writable) }
        var walked = "/" + target.writable
        for component in target.below.dropLast() {
            walked += "/" + component
            var next = sd_openat2(
                dir, component, UInt64(O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), 0, Self.beneath)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(dir, component, 0o755) == 0 {
                    next = sd_openat2(
                        dir, component, UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), 0, Self.beneath)
                    // fchmod too: another thread may have narrowed the process umask for a moment.
                    if next >= 0 {
                        _ = fchown(next, uid, gid)
                        _ = fchmod(next, 0o755)
                    }
                } else if errno == EEXIST {
                    next = sd_openat2(
                        dir, component, UInt64(O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), 0, Self.beneath)
                }
            }
            var saved = errno
            if next < 0 && saved == ENOTDIR, Self.isSymlink(dir, component) { saved = ELOOP }
            close(dir)
            if next < 0 { throw Self.error(saved, walked) }
            dir = next
        }
        return dir
    }

    /// Writes `bytes` to `target` (created 0644 or truncated), owned by the sandbox's user.
    /// - Returns: the SHA-256 of the bytes, hex.
    /// - Throws: `APIError`: 400 `path_escape` for a symlink or mount on the way, 404 for a
    ///   missing directory, 409 for a non-regular file, 507 when the sandbox's storage is full.
    func write(_ target: Target, bytes: [UInt8]) throws -> String {
        if let inSandbox { return try inSandbox.write(target, bytes: bytes) }
        let dir = try openParent(target, create: true)
        defer { close(dir) }
        let flags = O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY
        var fd = sd_openat2(dir, target.below.last!, UInt64(flags | O_CREAT | O_EXCL), 0o644, Self.beneath)
        if fd >= 0 {
            _ = fchmod(fd, 0o644)  // whatever the umask of the moment
        } else if errno == EEXIST {
            fd = sd_openat2(dir, target.below.last!, UInt64(flags), 0, Self.beneath)
        }
        if fd < 0 { throw Self.error(errno, target.absolute) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw APIError(
                .conflict, "not_a_file", "\(target.absolute) exists and is not a regular file", field: "path")
        }
        guard fchown(fd, uid, gid) == 0, ftruncate(fd, 0) == 0 else { throw Self.error(errno, target.absolute) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw Self.error(n < 0 ? errno : EIO, target.absolute) }
            offset += n
        }
        return Self.sha256(bytes)
    }

    /// Reads `target`, at most `limit` bytes.
    /// - Throws: `APIError` as `write`, and 413 for a file above `limit`.
    func read(_ target: Target, limit: Int) throws -> [UInt8] {
        if let inSandbox { return try inSandbox.read(target, limit: limit) }
        let dir = try openParent(target, create: false)
        defer { close(dir) }
        let fd = sd_openat2(
            dir, target.below.last!, UInt64(O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY), 0, Self.beneath)
        if fd < 0 { throw Self.error(errno, target.absolute) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw APIError(.conflict, "not_a_file", "\(target.absolute) is not a regular file", field: "path")
        }
        if Int(status.st_size) > limit {
            throw APIError(
                .contentTooLarge, "too_large",
                "\(target.absolute) is \(status.st_size) bytes, above the limit of \(limit) (limits.maxFileBytes)",
                field: "path")
        }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw Self.error(errno, target.absolute) }
            if n == 0 { break }
            out += buffer[..<n]
            if out.count > limit {
                throw APIError(
                    .contentTooLarge, "too_large",
                    "\(target.absolute) grew above the limit of \(limit) bytes while read", field: "path")
            }
        }
        return out
    }

    /// Whether `name` in `dir` is a symbolic link (fstatat(2), not followed).
    static func isSymlink(_ dir: Int32, _ name: String) -> Bool {
        var status = stat()
        return fstatat(dir, name, &status, AT_SYMLINK_NOFOLLOW) == 0 && status.st_mode & S_IFMT == S_IFLNK
    }

    /// Lowercase hex SHA-256 (FIPS 180-4) of `bytes`: 64 characters. Hex digits from a table,
    /// not `String(format:)` (each exec's audit record hashes its stdin).
    static func sha256(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in SHA256.hash(data: bytes) {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The API error of errno `code` on `path`.
    static func error(_ code: Int32, _ path: String) -> APIError {
        let text = String(cString: strerror(code))
        switch code {
        case ELOOP, EXDEV:
            return APIError(
                .badRequest, "path_escape", "\(path): a symbolic link or mount point on the way; refused (\(text))",
                field: "path")
        case ENOENT:
            return APIError(
                .notFound, "file_not_found", "\(path): no such file or directory in the sandbox", field: "path")
        case ENOTDIR, EISDIR:
            return APIError(.conflict, "not_a_file", "\(path): \(text)", field: "path")
        case ENOSPC, EDQUOT:
            return APIError(
                .init(code: 507, reasonPhrase: "Insufficient Storage"), "no_space",
                "\(path): the sandbox's storage is full (\(text))", field: "path")
        case EROFS, EACCES, EPERM:
            return APIError(.forbidden, "not_writable", "\(path): \(text)", field: "path")
        default:
            return APIError(.internalServerError, "internal", "\(path): \(text)", field: "path")
        }
    }
}
