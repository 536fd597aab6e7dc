/// Signals to `safespace run` become bytes on a pipe that a watcher thread reads.
///
/// A handler (not SIG_IGN, not a blocked mask) is used on purpose: dispositions set to a
/// handler are reset by execve(2), so the workload, which the runtime forks from this
/// process, starts with default signal handling and an empty mask.
import Errors
import Glibc

/// Write end of the self-pipe; set once before any handler is installed.
nonisolated(unsafe) private var signalPipeWriteEnd: Int32 = -1

private let signalHandler: @convention(c) (Int32) -> Void = { signo in
    let saved = errno
    var byte = UInt8(truncatingIfNeeded: signo)
    _ = write(signalPipeWriteEnd, &byte, 1)
    errno = saved
}

/// The signals that stop a sandbox run: each is forwarded to the workload, and the run
/// exits 128+N after cleanup.
let stopSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP]

/// Installs the handlers; returns the pipe's read end (non-blocking, close-on-exec).
func installSignalPipe() throws -> Int32 {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { throw CLIError(.signalSetup, "pipe: \(lastError())", operation: "pipe", errno: errno) }
    for fd in fds {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(fd, F_SETFL, O_NONBLOCK)
    }
    signalPipeWriteEnd = fds[1]
    // A parent may have started us with these blocked (Foundation's Process inherits the
    // spawning thread's mask): unblock them in this thread, and so in the threads it starts.
    var set = sigset_t()
    sigemptyset(&set)
    for signo in stopSignals { sigaddset(&set, signo) }
    _ = pthread_sigmask(SIG_UNBLOCK, &set, nil)
    for signo in stopSignals {
        let previous = signal(signo, signalHandler)
        if let previous, unsafeBitCast(previous, to: Int.self) == -1 {  // SIG_ERR
            throw CLIError(.signalSetup, "signal(\(signo)): \(lastError())", operation: "signal", errno: errno)
        }
    }
    return fds[0]
}

/// Puts the default dispositions back (after the run, before exiting).
func restoreDefaultSignals() {
    for signo in stopSignals { _ = signal(signo, SIG_DFL) }
}

/// Reads the next signal number from the pipe, waiting at most `milliseconds`; nil if none.
func nextSignal(from fd: Int32, waitingAtMost milliseconds: Int32) -> Int32? {
    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&pfd, 1, milliseconds) > 0 else { return nil }
    var byte: UInt8 = 0
    return read(fd, &byte, 1) == 1 ? Int32(byte) : nil
}

func lastError() -> String { String(cString: strerror(errno)) }

/// The error of the `safespace` front end itself, reported as `safespace: error: <message>`,
/// exit 125.
struct CLIError: CodedError {
    enum Code: String, ErrorCode {
        /// The command needs root.
        case needsRoot
        /// The signal handlers or their pipe could not be set up.
        case signalSetup
        /// `audit verify --journal`: journalctl could not be run or has no records of the log.
        case journal
        /// safespaced answered with an error (its code and field are in the message).
        case daemonRefused
        /// safespaced's answer was not what its API says (no exit status, bad JSON).
        case daemonProtocol
        /// A local file of `safespace cp` could not be read or written.
        case localFile
        /// An option that works only embedded (`--embedded`), not through safespaced.
        case embeddedOnly

        var category: ErrorCategory {
            switch self {
            case .needsRoot: .permissionDenied
            case .embeddedOnly: .unsupported
            case .daemonRefused: .failedPrecondition
            case .localFile: .invalidArgument
            case .signalSetup, .journal, .daemonProtocol: .internal
            }
        }
    }

    static let domain = "cli"
    var code: Code
    var message: String
    var operation: String?
    var errno: Int32?
    var field: String? { nil }

    init(_ code: Code, _ message: String, operation: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.operation = operation
        self.errno = errno
    }

    var description: String { message }
}
