import CSeccomp
import Glibc
import OCI

/// Syscall events: which syscalls a sandbox was denied, counted by a NOTIFY agent (the
/// runtime's caller, `safespace run` today, the daemon later) instead of the kernel's audit
/// log. seccomp/README.md, "Syscall events", says why NOTIFY and not SCMP_ACT_LOG.
///
/// `notifying` rewrites a profile so that its EPERM denials notify; the agent answers every
/// notification with EPERM, so the workload sees what the profile says, and counts it.
public enum SeccompEvents {
    /// The errno the agent answers with; only denials with this errno become events (other
    /// errnos, ENOSYS above all, are compatibility answers, not denials).
    public static let errno: UInt32 = 1  // EPERM
    /// `listenerMetadata` of a rewritten profile: tells the agent what to answer.
    public static let metadata = "safespace-events errno=1"

    /// `seccomp` with SCMP_ACT_ERRNO(EPERM), as the default action and in rules, turned into
    /// SCMP_ACT_NOTIFY, and `listenerPath` set.
    ///
    /// - Returns: nil with the reason when events cannot be had: the profile has its own
    ///   listener, denies nothing with EPERM, or does not allow sendmsg(2) unconditionally
    ///   (the runtime hands the agent its fd with it after loading the filter).
    public static func notifying(_ seccomp: Seccomp, listenerPath: String) -> (Seccomp?, reason: String?) {
        if let path = seccomp.listenerPath, !path.isEmpty {
            return (nil, "the profile has a listener of its own (\(path))")
        }
        func isDenial(_ action: String, _ errnoRet: UInt32?) -> Bool {
            action == "SCMP_ACT_ERRNO" && (errnoRet ?? 1) == errno
        }
        let syscalls = seccomp.syscalls ?? []
        let sendmsgRule = syscalls.first { $0.names.contains("sendmsg") && ($0.args ?? []).isEmpty }
        let sendmsgAction = sendmsgRule?.action ?? seccomp.defaultAction
        guard sendmsgAction == "SCMP_ACT_ALLOW" || sendmsgAction == "SCMP_ACT_LOG" else {
            return (
                nil, "the profile does not allow sendmsg(2), with which the runtime hands the event listener its fd"
            )
        }
        var out = seccomp
        var changed = false
        if isDenial(seccomp.defaultAction, seccomp.defaultErrnoRet) {
            out.defaultAction = "SCMP_ACT_NOTIFY"
            out.defaultErrnoRet = nil
            changed = true
        }
        out.syscalls = syscalls.flatMap { entry -> [Seccomp.Syscall] in
            guard isDenial(entry.action, entry.errnoRet) else { return [entry] }
            // sendmsg keeps its own answer: it may not notify (SeccompCompiler.checkNotify).
            let others = entry.names.filter { $0 != "sendmsg" }
            guard !others.isEmpty else { return [entry] }
            var e = entry
            e.names = others
            e.action = "SCMP_ACT_NOTIFY"
            e.errnoRet = nil
            changed = true
            guard entry.names.contains("sendmsg") else { return [e] }
            var kept = entry
            kept.names = ["sendmsg"]
            return [e, kept]
        }
        guard changed else { return (nil, "the profile denies nothing with EPERM") }
        out.listenerPath = listenerPath
        out.listenerMetadata = metadata
        return (out, nil)
    }

    /// The errno an agent answers with for a profile's `listenerMetadata` (`errno=N`), EPERM
    /// when it names none.
    public static func answer(forMetadata metadata: String?) -> Int32 {
        for word in (metadata ?? "").split(separator: " ") where word.hasPrefix("errno=") {
            if let n = Int32(word.dropFirst(6)), n > 0, n <= Int32(SeccompNames.maxErrno) { return n }
        }
        return Int32(errno)
    }
}

/// One seccomp user notification (SECCOMP_IOCTL_NOTIF_RECV), through libseccomp.
public struct SeccompNotification: Sendable {
    public var id: UInt64
    /// The caller's pid in the agent's PID namespace.
    public var pid: UInt32
    public var nr: Int32
    /// AUDIT_ARCH_* of the call.
    public var arch: UInt32

    /// The syscall's name on its architecture.
    public var syscallName: String { SeccompNames.syscallName(nr, arch: arch) }

    /// Waits for the next notification on `fd` (blocking).
    /// - Returns: nil when the calling thread died before it could be read (ENOENT).
    /// - Throws: `SeccompError` with the errno of the ioctl.
    public static func receive(fd: Int32) throws -> SeccompNotification? {
        var req: UnsafeMutablePointer<seccomp_notif>?
        var resp: UnsafeMutablePointer<seccomp_notif_resp>?
        guard seccomp_notify_alloc(&req, &resp) == 0, let req, let resp else {
            throw SeccompError(.libseccompFailed, "seccomp_notify_alloc failed", operation: "seccomp_notify_alloc")
        }
        defer { seccomp_notify_free(req, resp) }
        while true {
            // The kernel wants a zeroed struct (EINVAL otherwise).
            memset(req, 0, MemoryLayout<seccomp_notif>.size)
            let rc = seccomp_notify_receive(fd, req)
            if rc == -EINTR { continue }
            if rc == -ENOENT { return nil }
            if rc != 0 {
                throw SeccompError(
                    .libseccompFailed, "seccomp_notify_receive: \(String(cString: strerror(-rc)))",
                    operation: "seccomp_notify_receive", errno: -rc)
            }
            return SeccompNotification(
                id: req.pointee.id, pid: req.pointee.pid, nr: req.pointee.data.nr, arch: req.pointee.data.arch)
        }
    }

    /// Answers the notification: the syscall fails with `errno` and is never run.
    /// A caller that died meanwhile (ENOENT) is not an error.
    public func deny(fd: Int32, errno: Int32) throws {
        var req: UnsafeMutablePointer<seccomp_notif>?
        var resp: UnsafeMutablePointer<seccomp_notif_resp>?
        guard seccomp_notify_alloc(&req, &resp) == 0, let req, let resp else {
            throw SeccompError(.libseccompFailed, "seccomp_notify_alloc failed", operation: "seccomp_notify_alloc")
        }
        defer { seccomp_notify_free(req, resp) }
        memset(resp, 0, MemoryLayout<seccomp_notif_resp>.size)
        resp.pointee.id = id
        resp.pointee.error = -errno
        while true {
            let rc = seccomp_notify_respond(fd, resp)
            if rc == -EINTR { continue }
            if rc == 0 || rc == -ENOENT { return }
            throw SeccompError(
                .libseccompFailed, "seccomp_notify_respond: \(String(cString: strerror(-rc)))",
                operation: "seccomp_notify_respond", errno: -rc)
        }
    }
}
