import CSafeSpace
import Glibc

/// Small file helpers with errno-carrying errors; every fd is opened O_CLOEXEC.
public enum Files {
    public static func read(_ path: String) throws -> [UInt8] {
        let fd = try sys("open", path: path) { ss_open(path, O_RDONLY | O_CLOEXEC, 0) }
        defer { close(fd) }
        return try readAll(fd: fd, path: path)
    }

    public static func readString(_ path: String) throws -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    public static func readAll(fd: Int32, path: String? = nil) throws -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try sys("read", path: path) {
                buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            }
            if n == 0 { return out }
            out.append(contentsOf: buf[0..<n])
        }
    }

    public static func writeAll(fd: Int32, _ bytes: [UInt8], path: String? = nil) throws {
        var off = 0
        while off < bytes.count {
            let n = try sys("write", path: path) {
                bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, bytes.count - off) }
            }
            off += n
        }
    }

    /// Writes `contents` to an existing file (sysctl, cgroup, /proc files), no truncation games.
    public static func write(_ path: String, _ contents: String) throws {
        let fd = try sys("open", path: path) { ss_open(path, O_WRONLY | O_CLOEXEC, 0) }
        defer { close(fd) }
        try writeAll(fd: fd, Array(contents.utf8), path: path)
    }

    /// Writes a file atomically: a temporary file in the same directory, fsync, rename(2).
    /// `durable: false` leaves out the fsync(2): the rename is as atomic to every reader and to
    /// a crash of the writing process, and only a host crash may lose the file, for records
    /// that mean nothing after one (a container's runtime state: its processes are gone then).
    public static func writeAtomically(
        _ path: String, _ bytes: [UInt8], mode: mode_t = 0o600, durable: Bool = true
    ) throws {
        let tmp = path + ".tmp"
        let fd = try sys("open", path: tmp) { ss_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, UInt32(mode)) }
        do {
            try writeAll(fd: fd, bytes, path: tmp)
            if durable { _ = fsync(fd) }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        try sys("rename", path: path) { rename(tmp, path) }
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// mkdir -p with `mode` for the directories it creates. Tries `path` itself first: most
    /// calls (a container's mount targets) find it there or only its last level missing, one
    /// mkdir(2) instead of one per level; any other outcome walks down from the root as before.
    /// - Throws: `SysError` (`mkdir`) naming the first level that could not be made.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if mkdir(path, mode) == 0 || errno == EEXIST { return }
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) != 0 && errno != EEXIST {
                throw SysError("mkdir", path: current)
            }
        }
    }

    /// The names in directory `path`, without `.` and `..`, in readdir(3) order; nil when it
    /// cannot be opened (opendir(3) sets errno).
    public static func entries(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// rm -rf without following symlinks, staying on one file system (never crosses a mount).
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw SysError("lstat", path: path)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            guard let names = entries(path) else { throw SysError("opendir", path: path) }
            for name in names {
                var cst = stat()
                let child = path + "/" + name
                if lstat(child, &cst) == 0 && cst.st_dev != st.st_dev {
                    throw SysError(
                        .refused, "refusing to remove \(child): a mount point", operation: "remove", path: child)
                }
                try removeTree(child)
            }
            try sys("rmdir", path: path) { rmdir(path) }
        } else {
            try sys("unlink", path: path) { unlink(path) }
        }
    }
}

/// An advisory exclusive lock (flock(2)) on a file, released by `unlock()` or process exit.
public final class FileLock {
    private var fd: Int32

    public init(path: String) throws {
        let fd = try sys("open", path: path) { ss_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let e = errno
            close(fd)
            throw SysError("flock", path: path, errno: e)
        }
        self.fd = fd
    }

    /// Unlocks now rather than when the object goes (a debug build keeps a local alive to the
    /// end of its scope). Idempotent.
    public func release() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { release() }
}

extension String {
    /// Without leading and trailing spaces, tabs and newlines.
    public var trimmed: String {
        let ws: Set<Character> = [" ", "\t", "\n", "\r"]
        guard let start = firstIndex(where: { !ws.contains($0) }),
            let end = lastIndex(where: { !ws.contains($0) })
        else { return "" }
        return String(self[start...end])
    }
}
