import CSafeSpace
import Errors
import Glibc
import LinuxKernel
import OCI
import SeccompFilters

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// What the parent sends the init helper (`safespace-runtime init`) over the init socket.
///
/// Protocol (one SOCK_STREAM socketpair, each message a 4-byte little-endian length then JSON,
/// fds with SCM_RIGHTS on the first byte):
///   parent → init: `InitConfig` (+ fds: exec FIFO, console socket, mount namespace)
///   init → parent: `hooks` (create only, when prestart/createRuntime hooks exist), parent runs
///                  them and answers `continue`; then `created`; or `error` at any point
///                  (the failure's text and code, rethrown by the parent: `InitMessage.reportedError`).
///   exec mode: EOF without `error` means execve(2) succeeded (the socket is close-on-exec).
struct InitConfig: Codable {
    enum Mode: String, Codable { case create, exec }
    var mode: Mode
    var id: String
    var bundle: String
    var rootfs: String
    var spec: Spec
    var process: Process
    var noPivot: Bool
    var noNewKeyring: Bool
    /// Fds 3..3+preserveFds-1 reach the workload (`--preserve-fds`, LISTEN_FDS).
    var preserveFds: Int
    var fifoFdIndex: Int?
    var consoleSocketFdIndex: Int?
    var mountNamespaceFdIndex: Int?
    /// exec: the container's PID namespace, joined last (after the mount namespace) so that
    /// no process of ours is in it while its root is the host's (`ContainerInit.runExec`).
    var pidNamespaceFdIndex: Int? = nil
    var newNamespaces: [String]
    var stateJSON: String
    /// The compiled linux.seccomp filter, loaded last before execve(2).
    var seccomp: SeccompProgram?
    /// For a notifying filter: the socket to the agent and what to send it (SeccompNotify.swift).
    var seccompHandoff: SeccompHandoff? = nil
    /// Index in the fds of an idmapped tree of the rootfs (user namespace): moved into place
    /// instead of the self bind mount (IDMappedMount.swift).
    var rootfsMountFdIndex: Int? = nil
    /// The caller's RLIMIT_STACK soft limit, restored by the init (its non-dumpable exec is a
    /// secure exec, which lowers it; spawn.c).
    var stackSoftLimit: UInt64? = callerStackSoftLimit()
}

/// getrlimit(2) RLIMIT_STACK of this process: the soft limit.
func callerStackSoftLimit() -> UInt64? {
    var lim = rlimit()
    guard getrlimit(__rlimit_resource_t(UInt32(Rlimits.resources["RLIMIT_STACK"]!)), &lim) == 0 else { return nil }
    return UInt64(lim.rlim_cur)
}

struct InitMessage: Codable {
    var type: String
    /// `error`: the failure's description, whole (`field: message`); `pid`: the pid.
    var message: String?
    /// `error`: the failure's domain and code (`runtime`, `invalidSpec`) when it is a
    /// `CodedError`, with its field, operation and errno, so that the parent rethrows the
    /// same code (`reportedError`); nil for any other error.
    var domain: String? = nil
    var code: String? = nil
    var field: String? = nil
    var operation: String? = nil
    var errno: Int32? = nil

    init(type: String, message: String? = nil) {
        self.type = type
        self.message = message
    }

    /// The `error` message reporting `error`: its description and, for a `CodedError`, its
    /// code, field, operation and errno.
    init(reporting error: any Error) {
        self.init(type: "error", message: "\(error)")
        if let coded = error as? any CodedError {
            domain = Swift.type(of: coded).domain
            code = coded.code.rawValue
            field = coded.field
            operation = coded.operation
            errno = coded.errno
        }
    }

    /// The error an `error` message reports, rethrown by the parent with the same text: a
    /// `RuntimeError` or `SysError` of the code the init threw; any other error as
    /// `RuntimeError` `.initFailed`. `text` stands in for a missing message, `operation`
    /// for a missing operation of an `.initFailed` one.
    func reportedError(default text: String, operation: String? = nil) -> any Error {
        let text = message ?? text
        // A CodedError's description starts with its field: the rest is the message.
        let field = self.field.flatMap { text.hasPrefix($0 + ": ") ? $0 : nil }
        let rest = field.map { String(text.dropFirst($0.count + 2)) } ?? text
        if domain == RuntimeError.domain, let code = code.flatMap(RuntimeError.Code.init(rawValue:)) {
            return RuntimeError(code, field: field, rest, operation: self.operation, errno: errno)
        }
        if domain == SysError.domain, let code = code.flatMap(SysError.Code.init(rawValue:)) {
            return SysError(code, field: field, rest, operation: self.operation, errno: errno)
        }
        return RuntimeError(.initFailed, field: field, rest, operation: self.operation ?? operation, errno: errno)
    }
}

/// One end of the init socket.
struct InitChannel {
    let fd: Int32

    func send<T: Encodable>(_ value: T, fds: [Int32] = []) throws {
        try send(body: Array(try JSONEncoder().encode(value)), fds: fds)
    }

    /// `config` with its spec written as `specBytes`, the config.json the create decoded that
    /// spec from (`BundleSpec.bytes(decodingTo:)`, nil when the create changed it), instead of
    /// being encoded again (`BundleSpec.encode`). Those bytes may hold linux.seccomp, which
    /// `config.spec` lacks: the init decodes its config without it (`receiveConfig`).
    /// The compiled filter's BPF (`config.seccomp`) follows as a frame of its own, its bytes as
    /// they are: in the JSON it would be ~8 KB of hex (the default profile) that the encoder and
    /// the decoder each go through byte by byte.
    func send(_ config: InitConfig, specBytes: [UInt8]?, fds: [Int32]) throws {
        var shell = config
        shell.seccomp?.bpf = []
        try send(body: Array(try BundleSpec.encode(shell, spec: \.spec, raw: specBytes)), fds: fds)
        if let program = config.seccomp { try send(body: program.bpf, fds: []) }
    }

    /// An init config goes only through `send(_:specBytes:fds:)`, which sends its BPF as the
    /// frame `receiveConfig` waits for.
    @available(*, unavailable, message: "use send(_:specBytes:fds:)")
    func send(_ config: InitConfig, fds: [Int32] = []) throws {}

    /// The init's config (`receive`), decoded with `Linux.skippingSeccomp`: the init loads the
    /// filter compiled by the runtime (`InitConfig.seccomp`, its BPF the frame after the
    /// config), never the profile's rules.
    /// - Throws: `RuntimeError` (`initFailed`) when the filter's frame is missing or is not a
    ///   whole number of BPF instructions (8 bytes each, linux/filter.h); the decoder's error.
    func receiveConfig() throws -> (InitConfig, [Int32])? {
        guard let (body, fds) = try receiveFrame() else { return nil }
        let decoder = JSONDecoder()
        decoder.userInfo = [Linux.skippingSeccomp: true]
        var config = try decoder.decode(InitConfig.self, from: Data(body))
        if config.seccomp != nil {
            guard let (bpf, _) = try receiveFrame() else {
                throw RuntimeError(.initFailed, "init socket closed before the compiled seccomp filter")
            }
            guard !bpf.isEmpty, bpf.count % 8 == 0 else {
                throw RuntimeError(
                    .initFailed, field: "linux.seccomp", "the compiled filter came as \(bpf.count) bytes")
            }
            config.seccomp?.bpf = bpf
        }
        return (config, fds)
    }

    private func send(body: [UInt8], fds: [Int32]) throws {
        var len = UInt32(body.count).littleEndian
        var frame = withUnsafeBytes(of: &len) { Array($0) }
        frame += body
        var sent = 0
        while sent < frame.count {
            let n: Int32 = frame[sent...].withUnsafeBytes { buf in
                sent == 0
                    ? ss_send_fds(fd, buf.baseAddress, buf.count, fds, Int32(fds.count))
                    : ss_send_fds(fd, buf.baseAddress, buf.count, nil, 0)
            }
            if n < 0 { throw SysError("send on init socket") }
            sent += Int(n)
        }
    }

    /// Reads one message; nil at EOF.
    func receive<T: Decodable>(_ type: T.Type) throws -> (T, [Int32])? {
        guard let (body, fds) = try receiveFrame() else { return nil }
        return (try JSONDecoder().decode(T.self, from: Data(body)), fds)
    }

    /// One frame's bytes and the fds that came with them; nil at EOF.
    private func receiveFrame() throws -> ([UInt8], [Int32])? {
        var header = [UInt8](repeating: 0, count: 4)
        var fds = [Int32](repeating: -1, count: 8)
        var nfds: Int32 = 0
        var got = 0
        var received: [Int32] = []
        while got < 4 {
            let n = header[got...].withUnsafeMutableBytes { buf in
                ss_recv_fds(fd, buf.baseAddress, buf.count, &fds, 8, &nfds)
            }
            if n < 0 { throw SysError("receive on init socket") }
            received += fds.prefix(Int(nfds))
            if n == 0 { return nil }
            got += n
        }
        let len = Int(UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24)
        guard len < 64 << 20 else { throw RuntimeError(.initFailed, "init socket: message of \(len) bytes") }
        var body = [UInt8](repeating: 0, count: len)
        got = 0
        while got < len {
            let n = body[got...].withUnsafeMutableBytes { buf in
                ss_recv_fds(fd, buf.baseAddress, buf.count, &fds, 8, &nfds)
            }
            if n < 0 { throw SysError("receive on init socket") }
            if n == 0 { throw RuntimeError(.initFailed, "init socket closed in the middle of a message") }
            received += fds.prefix(Int(nfds))
            got += n
        }
        return (body, received)
    }
}
