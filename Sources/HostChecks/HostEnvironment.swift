import CSeccomp
import Foundation
import LinuxKernel

/// What the host checks read: files under a root directory, programs on a search path, and
/// the libseccomp this process links. `current()` is this host; a test points `root` at a
/// directory tree of its own (`<root>/proc/self/mountinfo`, `<root>/usr/bin/containerd`, …).
public struct HostEnvironment: Sendable {
    /// Prefix of every absolute path read: `""` for this host.
    public var root: String
    /// Directories searched for programs (containerd, runsc, systemctl, unshare), under `root`.
    public var searchPath: [String]
    /// libseccomp's version (`2.5.4`); nil when it is not installed.
    public var libseccompVersion: String?
    /// Longest a program may run before it is killed, in seconds.
    public var commandTimeout: Double

    public init(root: String, searchPath: [String], libseccompVersion: String?, commandTimeout: Double = 10) {
        self.root = root
        self.searchPath = searchPath
        self.libseccompVersion = libseccompVersion
        self.commandTimeout = commandTimeout
    }

    /// This host: `/`, `$PATH` (or the usual directories when unset), the libseccomp
    /// linked into this program (seccomp_version(3)).
    public static func current() -> HostEnvironment {
        let path =
            ProcessInfo.processInfo.environment["PATH"]
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        let v = seccomp_version().pointee
        return HostEnvironment(
            root: "", searchPath: path.split(separator: ":").map(String.init),
            libseccompVersion: "\(v.major).\(v.minor).\(v.micro)")
    }

    /// The contents of the host file `path` (absolute), nil when it cannot be read.
    public func read(_ path: String) -> String? {
        try? Files.readString(root + path)
    }

    /// True when the host path `path` is a directory.
    public func isDirectory(_ path: String) -> Bool {
        Files.isDirectory(root + path)
    }

    /// The first executable `name` on `searchPath`, as a path this process can run.
    public func program(_ name: String) -> String? {
        for dir in searchPath where !dir.isEmpty {
            let candidate = root + dir + "/" + name
            if access(candidate, X_OK) == 0, !Files.isDirectory(candidate) { return candidate }
        }
        return nil
    }

    /// Runs `argv` (a path from `program(_:)` first) with standard input and error on
    /// /dev/null, killing it after `commandTimeout` seconds.
    ///
    /// - Returns: its exit status (128+N for signal N) and standard output; nil when it
    ///   could not be started or timed out.
    public func run(_ argv: [String]) -> (status: Int32, output: String)? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        do { try process.run() } catch { return nil }
        // Reads while it runs, so that a program writing more than a pipe holds still ends.
        let reader = OutputReader(output.fileHandleForReading)
        guard exited.wait(timeout: .now() + commandTimeout) == .success else {
            // SIGKILL: a SIGTERM the caller ignores is ignored by the child too.
            kill(process.processIdentifier, SIGKILL)
            exited.wait()
            return nil
        }
        let status =
            process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return (status, reader.wait())
    }
}

/// Reads a pipe to its end on a thread of its own.
private final class OutputReader: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var data = Data()

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func wait() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}
