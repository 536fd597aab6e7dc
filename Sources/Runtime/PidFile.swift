import CSafeSpace
import Glibc
import LinuxKernel

/// `--pid-file`, written as runc writes it (runc utils_linux.go `createPidFile`): the pid in
/// decimal without a newline, to `.<name>` beside the target (O_CREAT|O_EXCL|O_SYNC, mode
/// 0666 less the umask), then renamed over the target, so a reader never sees half a pid.
enum PidFile {
    /// - Parameter path: the file to write, relative to the current directory or absolute.
    /// - Throws: `RuntimeError` (`.invalidSpec`, with the errno) worded as runc's Go error:
    ///   `open /run/x/.pid: no such file or directory` for a missing directory.
    static func write(_ path: String, pid: Int32) throws {
        let target = try absolute(path)
        let slash = target.lastIndex(of: "/")!
        let dir = target[..<slash].isEmpty ? "/" : String(target[..<slash])
        let temporary = (dir == "/" ? "" : dir) + "/." + target[target.index(after: slash)...]
        let fd = ss_open(temporary, O_RDWR | O_CREAT | O_EXCL | O_SYNC | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw failure("open", temporary, errno) }
        let bytes = Array(String(pid).utf8)
        let written = bytes.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count) }
        let writeErrno = errno
        close(fd)
        guard written == bytes.count else {
            unlink(temporary)
            throw failure("write", temporary, written < 0 ? writeErrno : EIO)
        }
        guard rename(temporary, target) == 0 else {
            let e = errno
            unlink(temporary)
            throw RuntimeError(
                .invalidSpec, "rename \(temporary) \(target): \(goErrnoText(e))", operation: "rename", errno: e)
        }
    }

    static func failure(_ operation: String, _ path: String, _ code: Int32) -> RuntimeError {
        RuntimeError(.invalidSpec, "\(operation) \(path): \(goErrnoText(code))", operation: operation, errno: code)
    }
}

/// An errno as Go's `syscall.Errno.Error()` words it: strerror(3) with a lower-case first
/// letter (`no such file or directory`), for messages that match runc's.
func goErrnoText(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
}
