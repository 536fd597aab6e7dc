import CSafeSpace
import Glibc
import LinuxKernel
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runc's foreground terminal (runc tty.go and utils_linux.go `setupIO`, docs/terminals.md
/// "new terminal, foreground"): `run` without `--detach` and `exec` without `--detach` of a
/// process with `terminal: true`, when no `--console-socket` is given.
///
/// The container's pty is made where it always is (Console.swift, inside the container); its
/// master comes back over a console socket this process listens on (a private directory,
/// mode 0700, removed once the master is here) instead of the caller's. Then, as runc:
/// - the host console (the first of stderr, stdout, stdin that is a terminal, else
///   /dev/tty) goes into raw mode, restored on every way out of `relay` (`finish`);
/// - its window size is copied to the pty at once and on every SIGWINCH;
/// - bytes from our stdin go to the pty, bytes from the pty to our stdout (the container's
///   stdout and stderr are the one pty);
/// - the exit status is the container process's (128+N for signal N).
/// Other signals keep the forwarding the verb sets up (`forwardSignals`).
///
/// Differences from runc 1.1, deliberate: with no terminal among our stdio and no
/// controlling terminal, runc fails (`open /dev/tty`); this relays without raw mode.
final class ForegroundTerminal {
    /// The console socket to hand to `create`/`exec` (`--console-socket`'s path).
    let socketPath: String
    private let directory: String
    private var listener: Int32
    private var master: Int32 = -1
    /// The host console and its termios before raw mode, once raw mode is on.
    private var host: (fd: Int32, saved: termios)?
    /// The host console whose size the pty copies; -1 without one.
    private var hostSizeSource: Int32 = -1
    /// /dev/tty when this opened it.
    private var ownedHostFd: Int32 = -1

    /// Makes the private directory and the listening socket.
    /// - Throws: `SysError` from mkdtemp(3), socket(2), bind(2) or listen(2).
    init() throws {
        var template = Array("/tmp/safespace-tty.XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw SysError("mkdtemp", path: "/tmp/safespace-tty.XXXXXX")
        }
        directory = String(cString: made)
        socketPath = directory + "/console.sock"
        do {
            listener = try Self.listen(socketPath)
        } catch {
            rmdir(directory)
            throw error
        }
    }

    deinit { finish() }

    /// Restores the host console and closes and removes everything this made. Idempotent.
    func finish() {
        if let host {
            var saved = host.saved
            _ = tcsetattr(host.fd, TCSANOW, &saved)
            self.host = nil
        }
        if ownedHostFd >= 0 {
            close(ownedHostFd)
            ownedHostFd = -1
        }
        hostSizeSource = -1
        closeListener()
        if master >= 0 {
            close(master)
            master = -1
        }
    }

    private func closeListener() {
        guard listener >= 0 else { return }
        close(listener)
        listener = -1
        unlink(socketPath)
        rmdir(directory)
    }

    /// Relays between our stdio and the container's pty while `body` (which waits for the
    /// container process: `wait` or a foreground `exec`) runs on a thread of its own.
    /// - Returns: what `body` returns, the process's exit status.
    /// - Throws: what `body` throws; `SysError` when the relay itself cannot go on.
    func relay(while body: @escaping @Sendable () throws -> Int32) throws -> Int32 {
        defer { finish() }
        // Blocked before the thread starts, so in every thread: SIGWINCH only ever reaches
        // the signalfd (never `forwardSignals`' handler), and a closed stdout is EPIPE, not
        // death with the terminal left raw. The container's processes start with an empty
        // mask (ProcessSetup.finalizeAndExec).
        let signals = try [SIGWINCH, SIGPIPE].withUnsafeBufferPointer { buf in
            try sys("signalfd") { ss_signalfd_block(buf.baseAddress, Int32(buf.count)) }
        }
        defer { close(signals) }
        let waiter = try BackgroundCall(body)
        // A relay that fails leaves the waiter running: the caller ends the container (run
        // deletes it) or exits, as runc terminates the process then.
        try loop(signals: signals, done: waiter.doneFd)
        drain()
        finish()
        return try waiter.join()
    }

    // MARK: runc's checks

    /// runc's `checkTerminal` (utils_linux.go): a process that gets a terminal while the
    /// runtime does not wait for it (`create`, `--detach`) needs `--console-socket`, and
    /// `--console-socket` is for exactly that case. `terminal` nil (config.json unreadable):
    /// no check here; create reports the config.
    /// - Throws: `RuntimeError` (`.invalidSpec`) naming `process.terminal` or `--console-socket`.
    static func check(detach: Bool, terminal: Bool?, consoleSocket: String?) throws {
        guard let terminal else { return }
        if detach && terminal && consoleSocket == nil {
            throw RuntimeError(
                .invalidSpec, field: "process.terminal",
                "cannot allocate tty if the runtime will detach without setting console socket (--console-socket)")
        }
        if (!detach || !terminal) && consoleSocket != nil {
            throw RuntimeError(
                .invalidSpec, field: "--console-socket",
                "cannot use console socket if the runtime will not detach or allocate tty")
        }
    }

    /// `process.terminal` of `<bundle>/config.json`; nil when the file cannot be read or is no
    /// valid spec (the create that follows says why).
    static func terminal(inBundle bundle: String) -> Bool? {
        // The whole spec, decoded once for the create that follows (BundleSpec).
        guard let (_, spec) = try? BundleSpec.load(bundle + "/config.json") else { return nil }
        return spec.process?.terminal ?? false
    }

    // MARK: the relay loop

    private func loop(signals: Int32, done: Int32) throws {
        var pending: [UInt8] = []  // from our stdin, not yet taken by the pty
        var stdinOpen = true
        var masterOpen = true
        var buffer = [UInt8](repeating: 0, count: 32 * 1024)
        while true {
            var fds = [
                pollfd(fd: done, events: Int16(POLLIN), revents: 0),
                pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
            ]
            if listener >= 0 { fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0)) }
            let masterIndex = fds.count
            if master >= 0 && masterOpen {
                fds.append(
                    pollfd(fd: master, events: Int16(POLLIN) | (pending.isEmpty ? 0 : Int16(POLLOUT)), revents: 0))
            }
            let stdinIndex = fds.count
            if master >= 0 && masterOpen && stdinOpen && pending.isEmpty {
                fds.append(pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0))
            }
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }  // a forwarded signal's handler ran
                throw SysError("poll")
            }
            // Signals before stdin: a resize that came before a keystroke is seen first.
            if fds[1].revents != 0 {
                while case let signo = ss_signalfd_next(signals), signo > 0 {
                    if signo == SIGWINCH { copyWindowSize() }
                }
            }
            if listener >= 0, fds[2].revents != 0 { try receiveMaster() }
            if masterIndex < fds.count, fds[masterIndex].fd == master {
                let ev = fds[masterIndex].revents
                if ev & Int16(POLLOUT) != 0 && !pending.isEmpty {
                    let n = write(master, pending, pending.count)
                    if n > 0 {
                        pending.removeFirst(n)
                    } else if n < 0 && errno != EAGAIN && errno != EINTR {
                        pending = []
                    }
                }
                if ev & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                    let n = read(master, &buffer, buffer.count)
                    if n > 0 {
                        Self.writeAll(STDOUT_FILENO, buffer, n)
                    } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                        masterOpen = false  // EIO: every holder of the pty's slave side is gone
                    }
                }
            }
            if stdinIndex < fds.count, fds[stdinIndex].revents != 0 {
                let n = read(STDIN_FILENO, &buffer, buffer.count)
                if n > 0 {
                    pending += buffer[0..<n]
                } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
                    stdinOpen = false  // as runc: the end of our input is not the container's
                }
            }
            if fds[0].revents != 0 { return }
        }
    }

    /// After the process exited: what the pty still holds, up to EOF/EIO, or until nothing
    /// more comes for a moment (another process of the container may keep the pty open).
    private func drain() {
        guard master >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 32 * 1024)
        while true {
            var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 100)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return }
            let n = read(master, &buffer, buffer.count)
            if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            guard n > 0 else { return }
            Self.writeAll(STDOUT_FILENO, buffer, n)
        }
    }

    // MARK: the pty master, the host console

    /// Accepts the one connection on the console socket and takes the pty master from it;
    /// then raw mode and the window size, as runc does once it has the master.
    private func receiveMaster() throws {
        let conn = ss_accept_cloexec(listener)
        guard conn >= 0 else {
            if errno == EAGAIN { return }
            throw SysError("accept", path: socketPath)
        }
        defer { close(conn) }
        var payload = [UInt8](repeating: 0, count: 256)
        var fds: [Int32] = [-1]
        var count: Int32 = 0
        let n = ss_recv_fds(conn, &payload, payload.count, &fds, 1, &count)
        guard n >= 0, count == 1 else {
            throw RuntimeError(
                .initFailed, field: "process.terminal",
                "the container's pty master did not arrive on the console socket")
        }
        closeListener()
        master = fds[0]
        _ = fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK)
        enterRawMode()
        copyWindowSize()
    }

    /// Waits for the container's pty master on the console socket (at most `timeout`
    /// seconds) and takes it: raw mode and the window size are in place before the caller
    /// lets the process run (`run` calls this between create and start, as runc receives the
    /// console during create), so its first `stty size` sees the caller's size.
    /// - Throws: `RuntimeError` (`.initFailed`, `process.terminal`) when none arrives in time;
    ///   `SysError` from accept(2)/poll(2).
    func awaitMaster(timeout seconds: Int32 = 30) throws {
        var remaining = seconds * 1000
        while master < 0 && listener >= 0 {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            let started = monotonicMilliseconds()
            let rc = poll(&fds, 1, remaining)
            if rc < 0 && errno != EINTR { throw SysError("poll") }
            if rc > 0 { try receiveMaster() }
            remaining -= Int32(clamping: monotonicMilliseconds() - started)
            if master < 0 && remaining <= 0 {
                throw RuntimeError(
                    .initFailed, field: "process.terminal",
                    "the container's pty master did not arrive on the console socket within \(seconds) s")
            }
        }
    }

    private func monotonicMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// runc's `initHostConsole`: stderr, stdout, stdin, else the controlling terminal.
    private func enterRawMode() {
        var fd: Int32 = -1
        for candidate in [STDERR_FILENO, STDOUT_FILENO, STDIN_FILENO] where isatty(candidate) == 1 {
            fd = candidate
            break
        }
        if fd < 0 {
            fd = ss_open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC, 0)
            guard fd >= 0 else { return }  // no terminal at all: relay as is
            ownedHostFd = fd
        }
        hostSizeSource = fd
        var saved = termios()
        guard tcgetattr(fd, &saved) == 0 else { return }
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return }
        host = (fd, saved)
    }

    /// runc's `resize`: the host console's size onto the pty (the kernel tells the
    /// container's foreground process group with SIGWINCH).
    private func copyWindowSize() {
        guard master >= 0, hostSizeSource >= 0 else { return }
        var rows: UInt16 = 0
        var cols: UInt16 = 0
        guard ss_get_winsize(hostSizeSource, &rows, &cols) == 0 else { return }
        _ = ss_set_winsize(master, rows, cols)
    }

    // MARK: helpers

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ count: Int) {
        var offset = 0
        while offset < count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, count - offset) }
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && errno == EAGAIN {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&pfd, 1, 1000)
            } else {
                return  // EPIPE and the like: the output has nowhere to go
            }
        }
    }

    private static func listen(_ path: String) throws -> Int32 {
        let fd = try sys("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0, Glibc.listen(fd, 1) == 0 else {
            let e = errno
            close(fd)
            throw SysError("bind", path: path, errno: e)
        }
        return fd
    }
}

/// A call on a thread of its own: `doneFd` turns readable when it has returned, `join`
/// gives its result. Used for the blocking wait of a foreground container process while
/// the calling thread relays its terminal.
final class BackgroundCall: @unchecked Sendable {
    /// Readable once the call has returned.
    let doneFd: Int32
    private let writeFd: Int32
    private let body: @Sendable () throws -> Int32
    private var result: Result<Int32, Error>?
    private var thread: pthread_t?

    init(_ body: @escaping @Sendable () throws -> Int32) throws {
        var fds: [Int32] = [-1, -1]
        try sys("pipe2") { ss_pipe2_cloexec(&fds) }
        doneFd = fds[0]
        writeFd = fds[1]
        self.body = body
        var tid = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(
            &tid, nil,
            { raw in
                let call = Unmanaged<BackgroundCall>.fromOpaque(raw!).takeRetainedValue()
                call.result = Result { try call.body() }
                var byte: UInt8 = 1
                _ = write(call.writeFd, &byte, 1)
                return nil
            }, context)
        guard rc == 0 else {
            Unmanaged<BackgroundCall>.fromOpaque(context).release()
            close(fds[0])
            close(fds[1])
            throw SysError("pthread_create", errno: rc)
        }
        thread = tid
    }

    /// Waits for the call and returns its result (once; later calls rethrow or return it again).
    func join() throws -> Int32 {
        if let tid = thread {
            pthread_join(tid, nil)
            thread = nil
            close(doneFd)
            close(writeFd)
        }
        return try result!.get()
    }
}
