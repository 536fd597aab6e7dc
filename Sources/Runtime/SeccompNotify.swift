import CSafeSpace
import Glibc
import LinuxKernel
import OCI
import SeccompFilters

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// SCMP_ACT_NOTIFY: the runtime's half (config-linux.md#seccomp `listenerPath`, and
/// #containerprocessstate) and an agent that answers notifications with an errno and counts
/// them (syscall events, seccomp/README.md).
///
/// How the listener fd reaches the agent: the parent connects to `listenerPath` while it
/// creates the container (an unreachable agent fails `create`), and passes the connected
/// socket to the init with the container process state it prepared (the init cannot know its
/// own pid outside its PID namespace). The init loads the filter as its last step, sends the
/// state and the listener fd in one sendmsg(2) (SCM_RIGHTS), closes both and execs. A send that
/// fails stops the init with the error (on the workload's stderr for `create`/`start`, as an
/// error of `exec`).
enum SeccompNotify {
    /// config-linux.md#containerprocessstate
    struct ContainerProcessState: Codable {
        var ociVersion: String = Spec.version
        var fds: [String] = ["seccompFd"]
        var pid: Int32
        var metadata: String?
        var state: State
    }

    /// Connects to the agent of a notifying filter; nil when the filter does not notify.
    /// - Throws: `SysError` naming `linux.seccomp.listenerPath`.
    static func connectListener(_ program: SeccompProgram?, spec: Spec) throws -> Int32? {
        guard let program, program.notifies, let path = spec.linux?.seccomp?.listenerPath else { return nil }
        return try connectUnix(path, field: "linux.seccomp.listenerPath")
    }

    /// The JSON the init sends with the listener fd. `pid` is the process the filter is for,
    /// as the runtime sees it; `state` the container's (`creating` for its init, `running`
    /// for an exec).
    static func processState(spec: Spec, pid: Int32, state: State) throws -> String {
        let value = ContainerProcessState(pid: pid, metadata: spec.linux?.seccomp?.listenerMetadata, state: state)
        return String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }
}

/// What the init needs to hand the listener fd over: the connected socket (an index into the
/// fds of the init message) and the container process state to send with it.
struct SeccompHandoff: Codable {
    var socketFdIndex: Int
    var processState: String
}

/// The init's side of the handoff, prepared before the filter is loaded so that nothing but
/// sendmsg(2) and close(2) runs between loading and execve(2) (no allocation).
struct PreparedHandoff {
    let socket: Int32
    let payload: [UInt8]

    init?(_ handoff: SeccompHandoff?, fds: [Int32]) {
        guard let handoff, handoff.socketFdIndex < fds.count else { return nil }
        socket = fds[handoff.socketFdIndex]
        payload = Array(handoff.processState.utf8)
    }

    /// Sends the state and `listener` in one message, then closes both fds.
    func send(listener: Int32) throws {
        defer {
            close(listener)
            close(socket)
        }
        var fd = listener
        let n = payload.withUnsafeBytes { ss_send_fds(socket, $0.baseAddress, $0.count, &fd, 1) }
        if n < 0 { throw SysError("send the seccomp listener fd to linux.seccomp.listenerPath (sendmsg)") }
        if Int(n) < payload.count {
            // The fds went with the first part; the rest follows without (config-linux.md allows it).
            try payload.withUnsafeBytes { raw in
                var off = Int(n)
                while off < raw.count {
                    let m = ss_send_fds(socket, raw.baseAddress! + off, raw.count - off, nil, 0)
                    if m < 0 { throw SysError("send the container process state to linux.seccomp.listenerPath") }
                    off += Int(m)
                }
            }
        }
    }
}
