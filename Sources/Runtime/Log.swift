#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import CSafeSpace
import LinuxKernel

/// runc-compatible logging: `--log FILE` and `--log-format text|json`.
///
/// JSON lines are `{"level":"error","msg":"…","time":"…"}`; containerd's runc shim reads the
/// last `error` line of the log when a command fails.
public final class RuntimeLog: @unchecked Sendable {
    public enum Format: String, Sendable { case text, json }
    public enum Level: String, Sendable { case debug, info, warning, error }

    let fd: Int32
    let format: Format
    let debug: Bool

    public init(path: String?, format: Format, debug: Bool) {
        if let path, !path.isEmpty, path != "/dev/stderr" {
            fd = ss_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        } else {
            fd = -1
        }
        self.format = format
        self.debug = debug
    }

    deinit { if fd >= 0 { close(fd) } }

    public func log(_ level: Level, _ message: String) {
        if level == .debug && !debug { return }
        let time = rfc3339Now()
        let line: String
        switch format {
        case .json:
            let obj = ["level": level.rawValue, "msg": message, "time": time]
            let data = (try? JSONEncoder().encode(obj)) ?? Data()
            line = String(decoding: data, as: UTF8.self) + "\n"
        case .text:
            line = "time=\"\(time)\" level=\(level.rawValue) msg=\"\(message)\"\n"
        }
        let target = fd >= 0 ? fd : STDERR_FILENO
        _ = line.withCString { Glibc.write(target, $0, strlen($0)) }
    }

    public func warn(_ message: String) { log(.warning, message) }
}
