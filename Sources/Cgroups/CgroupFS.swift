import Glibc
import LinuxKernel

/// The few file operations cgroupfs needs, each retrying EINTR and throwing `CgroupError`
/// with the errno and the path.
enum CgroupFS {
    /// Reads a whole (small) file.
    /// - Throws: `CgroupError` (`read`) with the errno from open(2) or read(2).
    static func read(_ path: String) throws -> String {
        do { return try Files.readString(path) } catch let error as SysError {
            throw CgroupError(operation: "read", path: path, errno: error.errno)
        }
    }

    /// Writes `value` to a cgroup file in one write(2), as the kernel parses each write separately.
    /// - Throws: `CgroupError` (`write`) with the errno, e.g. EINVAL for a value the kernel rejects.
    static func write(_ path: String, _ value: String, field: String = "") throws {
        let fd = try openFile(path, O_WRONLY, operation: "write", field: field)
        defer { close(fd) }
        let bytes = Array(value.utf8)
        while true {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CgroupError(operation: "write", path: path, errno: errno, field: field.isEmpty ? nil : field)
            }
            if n != bytes.count {
                throw CgroupError(operation: "write", path: path, errno: EIO, field: field.isEmpty ? nil : field)
            }
            return
        }
    }

    private static func openFile(_ path: String, _ flags: Int32, operation: String, field: String = "") throws -> Int32
    {
        while true {
            let fd = open(path, flags | O_CLOEXEC)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw CgroupError(operation: operation, path: path, errno: errno, field: field.isEmpty ? nil : field)
        }
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates one directory level. Returns false when it already existed.
    /// - Throws: `CgroupError` (`mkdir`) for any errno but EEXIST.
    static func mkdirIfMissing(_ path: String) throws -> Bool {
        if mkdir(path, 0o755) == 0 { return true }
        let code = errno
        if code == EEXIST && isDirectory(path) { return false }
        throw CgroupError(operation: "mkdir", path: path, errno: code)
    }

    /// Removes a cgroup directory. A missing directory is success; EBUSY (tasks still exiting)
    /// is retried for about a second when `retryBusy`.
    /// - Returns: false when the directory is not empty (ENOTEMPTY, or EBUSY without retry).
    /// - Throws: `CgroupError` (`rmdir`) for other errnos, or EBUSY after the retries.
    static func rmdirCgroup(_ path: String, retryBusy: Bool) throws -> Bool {
        var delay: UInt32 = 10_000  // µs
        var attempts = 0
        while true {
            if rmdir(path) == 0 { return true }
            let code = errno
            switch code {
            case ENOENT:
                return true
            case EINTR:
                continue
            case ENOTEMPTY:
                if retryBusy {
                    throw CgroupError(operation: "rmdir", path: path, errno: code, message: "cgroup has child cgroups")
                }
                return false
            case EBUSY where retryBusy && attempts < 10:
                attempts += 1
                usleep(delay)
                delay = min(delay * 2, 200_000)
            case EBUSY where !retryBusy:
                return false
            default:
                throw CgroupError(operation: "rmdir", path: path, errno: code)
            }
        }
    }

    /// The pids listed in `dir/cgroup.procs`, in the caller's pid namespace.
    static func procs(in dir: String) throws -> [Int32] {
        try read(dir + "/cgroup.procs").split(whereSeparator: { $0 == "\n" || $0 == " " }).compactMap { Int32($0) }
    }

    static func trimmed(_ s: String) -> String {
        var sub = Substring(s)
        while let c = sub.first, c == " " || c == "\n" || c == "\t" { sub = sub.dropFirst() }
        while let c = sub.last, c == " " || c == "\n" || c == "\t" { sub = sub.dropLast() }
        return String(sub)
    }
}
