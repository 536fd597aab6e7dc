import CLibcap
import CSafeSpace
import Glibc
import LinuxKernel
import OCI
import SeccompFilters

/// The last steps before execve(2), in runc's order (standard_init_linux.go / finalizeNamespace):
/// rlimits, keyring, umask, bounding set, groups and ids (keeping capabilities across setuid),
/// capability sets, cwd, no_new_privs, fds, exec.
struct ProcessSetup {
    let process: Process
    let noNewKeyring: Bool
    let preserveFds: Int

    /// Resolves `args[0]` through the process's PATH (execvp semantics) inside the container.
    func resolveExecutable() throws -> String {
        let name = process.args![0]
        if name.contains("/") {
            guard access(name, X_OK) == 0 else { throw SysError("exec", path: name, field: "process.args[0]") }
            return name
        }
        let path =
            (process.env ?? []).first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) }
            ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            var st = stat()
            if stat(candidate, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw RuntimeError.executableNotFound(name)
    }

    /// Checks that `process.user` names only ids mapped in the caller's user namespace
    /// (`/proc/self/uid_map`, `/proc/self/gid_map`; user_namespaces(7)): setresuid(2),
    /// setresgid(2) and setgroups(2) fail with EINVAL for an unmapped id, and they run only
    /// after `start`, where no error can reach the caller. Called before `created` (and
    /// before an exec'd process is reported started), while /proc is the host's.
    /// - Throws: `RuntimeError` `.invalidSpec` naming the field and the id.
    func checkIDsMapped() throws {
        func ranges(_ path: String) throws -> [(UInt64, UInt64)] {
            let text: String
            do { text = try Files.readString(path) } catch var e as SysError {
                e.field = "process.user"
                throw e
            }
            return text.split(separator: "\n").compactMap { line in
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count == 3, let inside = UInt64(f[0]), let count = UInt64(f[2]) else { return nil }
                return (inside, inside + count)
            }
        }
        func mapped(_ id: UInt32, _ r: [(UInt64, UInt64)]) -> Bool {
            r.contains { UInt64(id) >= $0.0 && UInt64(id) < $0.1 }
        }
        let uids = try ranges("/proc/self/uid_map")
        let gids = try ranges("/proc/self/gid_map")
        let user = process.user
        if !mapped(user.uid, uids) {
            throw RuntimeError(
                .invalidSpec, field: "process.user.uid",
                "uid \(user.uid) is not mapped in the container's user namespace (linux.uidMappings)")
        }
        if !mapped(user.gid, gids) {
            throw RuntimeError(
                .invalidSpec, field: "process.user.gid",
                "gid \(user.gid) is not mapped in the container's user namespace (linux.gidMappings)")
        }
        for (i, gid) in (user.additionalGids ?? []).enumerated() where !mapped(gid, gids) {
            throw RuntimeError(
                .invalidSpec, field: "process.user.additionalGids[\(i)]",
                "gid \(gid) is not mapped in the container's user namespace (linux.gidMappings)")
        }
    }

    /// config-linux.md#personality: personality(2) with the domain's PER_* value; it holds
    /// across execve(2). Validated by `SpecValidation.validate(personality:)`.
    static func applyPersonality(_ personality: Personality?) throws {
        guard let personality else { return }
        guard let value = Personality.domains[personality.domain] else {
            throw RuntimeError(
                .invalidSpec, field: "linux.personality.domain",
                "\"\(personality.domain)\" is not one of LINUX, LINUX32")
        }
        if ss_personality(value) < 0 {
            throw SysError("personality(\(personality.domain))", field: "linux.personality")
        }
    }

    func applyRlimits() throws {
        for (i, r) in (process.rlimits ?? []).enumerated() {
            try Rlimits.set(type: r.type, soft: r.soft, hard: r.hard, field: "process.rlimits[\(i)]")
        }
    }

    /// Drops to the configured user with exactly the configured capabilities.
    func applyIdentity() throws {
        if !noNewKeyring {
            // A fresh session keyring so the host's keys are not reachable (runc does the same).
            if ss_join_session_keyring("_ses.safespace") < 0 && errno != ENOSYS && errno != EDQUOT && errno != EPERM {
                throw SysError("keyctl(KEYCTL_JOIN_SESSION_KEYRING)")
            }
        }
        if let mask = process.user.umask { umask(mode_t(mask)) }
        let caps = process.capabilities
        let bounding = try Capability.values(caps?.bounding, field: "process.capabilities.bounding")
        try Capability.limitBoundingSet(to: bounding)

        try sys("prctl(PR_SET_KEEPCAPS)") { ss_prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) }
        let groups = (process.user.additionalGids ?? []).map { gid_t($0) }
        do {
            try sys("setgroups") { groups.withUnsafeBufferPointer { ss_setgroups(groups.count, $0.baseAddress) } }
            try sys("setresgid(\(process.user.gid))") {
                ss_setresgid(process.user.gid, process.user.gid, process.user.gid)
            }
            try sys("setresuid(\(process.user.uid))") {
                ss_setresuid(process.user.uid, process.user.uid, process.user.uid)
            }
        } catch var e as SysError {
            e.field = "process.user"
            throw e
        }
        try sys("prctl(PR_SET_KEEPCAPS)") { ss_prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) }
        try Capability.setProcessSets(
            effective: try Capability.values(caps?.effective, field: "process.capabilities.effective"),
            permitted: try Capability.values(caps?.permitted, field: "process.capabilities.permitted"),
            inheritable: try Capability.values(caps?.inheritable, field: "process.capabilities.inheritable"))
        _ = Capability.setAmbient(try Capability.values(caps?.ambient, field: "process.capabilities.ambient"))
    }

    /// chdir to `cwd` and prove it is inside the root: a cwd reached through a leaked fd
    /// (`/proc/self/fd/N`, CVE-2024-21626) makes getcwd(3) fail or report "(unreachable)".
    /// A cwd that names a file descriptor (`/proc/self/fd/N`, `/proc/PID/fd/N`,
    /// `/proc/thread-self/fd/N`) is refused outright: it could point outside the root.
    static func checkCwdPath(_ cwd: String, field: String) throws {
        let parts = cleanPath(cwd).split(separator: "/")
        if parts.count >= 3, parts[0] == "proc",
            parts[2] == "fd" || (parts.count >= 5 && parts[2] == "task" && parts[4] == "fd")
        {
            throw RuntimeError(
                .refused, field: field,
                "\(cwd) is refused: a working directory through a file descriptor could leave the container's root")
        }
    }

    /// chdir(2) to `process.cwd`, checked as above. runc's order (libcontainer/init_linux.go
    /// `finalizeNamespace`): the first attempt comes before the switch to the process's user,
    /// with the runtime's privileges; only a permission error (EACCES, EPERM) is tried again
    /// as that user (`retryAsUser`: then this returns false and the caller calls again later).
    /// - Returns: whether the working directory is set.
    /// - Throws: `RuntimeError` (`.invalidSpec`, field `process.cwd`, the errno) worded as
    ///   runc's: `chdir to cwd ("/data") set in config.json failed: permission denied`;
    ///   `.refused` for a cwd that resolves outside the root.
    @discardableResult
    func changeDirectory(retryAsUser: Bool = false) throws -> Bool {
        let cwd = process.cwd
        try Self.checkCwdPath(cwd, field: "process.cwd")
        if chdir(cwd) != 0 {
            let e = errno
            if retryAsUser && (e == EACCES || e == EPERM) { return false }
            throw RuntimeError(
                .invalidSpec, field: "process.cwd",
                "chdir to cwd (\"\(cwd)\") set in config.json failed: \(goErrnoText(e))",
                operation: "chdir", errno: e)
        }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else {
            throw SysError("getcwd after chdir", path: cwd, field: "process.cwd")
        }
        let actual = String(nulTerminated: buf)
        guard actual.hasPrefix("/") else {
            throw RuntimeError(
                .refused, field: "process.cwd", "\(cwd) resolves outside the container's root (\(actual))",
                operation: "chdir")
        }
        return true
    }

    /// seccomp(2) with the filter compiled by the parent. For a notifying filter the listener fd
    /// goes to the agent right away (`PreparedHandoff`), before any syscall the filter may notify.
    func loadSeccomp(_ program: SeccompProgram?, handoff: PreparedHandoff?) throws {
        guard let program else { return }
        let fd = try sys("seccomp(SECCOMP_SET_MODE_FILTER)") {
            program.bpf.withUnsafeBytes { ss_seccomp_load($0.baseAddress, $0.count, program.flags) }
        }
        if program.notifies {
            guard let handoff else {
                close(fd)
                throw RuntimeError(
                    .initFailed, field: "linux.seccomp", "the filter notifies but no listener connection was set up")
            }
            try handoff.send(listener: fd)
        }
    }

    /// The steps after the root is ready, in order, ending in execve(2): identity, cwd,
    /// no_new_privs, seccomp, exec. runc's order for seccomp: with no_new_privs it is the very
    /// last step; without, it must come while CAP_SYS_ADMIN is still held. Everything the exec
    /// needs (argv, envp, fds marked close-on-exec, signal mask) is done before the filter is
    /// loaded, so that only execve(2) runs under it, whatever the profile allows.
    func finalizeAndExec(_ path: String, seccomp: SeccompProgram?, handoff: PreparedHandoff?) throws -> Never {
        _ = ss_close_range_cloexec(UInt32(3 + preserveFds))
        guard let cPath = strdup(path) else { throw SysError("strdup") }
        var cArgs: [UnsafeMutablePointer<CChar>?] = process.args!.map { strdup($0) } + [nil]
        var cEnv: [UnsafeMutablePointer<CChar>?] = (process.env ?? []).map { strdup($0) } + [nil]
        try applyAppArmor()
        if process.noNewPrivileges != true { try loadSeccomp(seccomp, handoff: handoff) }
        let inCwd = try changeDirectory(retryAsUser: true)
        try applyIdentity()
        if !inCwd { try changeDirectory() }
        try applyNoNewPrivileges()
        _ = ss_sigmask_all(0)
        if process.noNewPrivileges == true { try loadSeccomp(seccomp, handoff: handoff) }
        execve(cPath, &cArgs, &cEnv)
        throw SysError("exec", path: path, field: "process.args[0]")
    }

    /// Confines the next execve(2) to `process.apparmorProfile` (runc's ApplyProfile: write
    /// `exec PROFILE` to the thread's AppArmor exec attribute; apparmor(7)).
    func applyAppArmor() throws {
        guard let profile = process.apparmorProfile, !profile.isEmpty else { return }
        let path =
            Files.exists("/proc/thread-self/attr/apparmor/exec")
            ? "/proc/thread-self/attr/apparmor/exec" : "/proc/thread-self/attr/exec"
        do { try Files.write(path, "exec \(profile)") } catch var e as SysError {
            e.field = "process.apparmorProfile"
            throw e
        }
    }

    func applyNoNewPrivileges() throws {
        if process.noNewPrivileges == true {
            try sys("prctl(PR_SET_NO_NEW_PRIVS)") { ss_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }
        }
    }
}
