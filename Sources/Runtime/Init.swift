import CSafeSpace
import Glibc
import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `safespace-runtime init`: the container's first process, started by `spawnInit` in its new
/// namespaces. Single-threaded, never awaits; reports failures to the parent on the init
/// socket and exits non-zero.
public enum ContainerInit {
    public static func main() -> Never {
        // Non-dumpable, the container cannot open /proc/PID/{exe,root,cwd,fd,mem} of this
        // process nor ptrace it while it works in the container's namespaces (the exec helper
        // before it joins the mount namespace still has the host's root). The exec that
        // started it was already non-dumpable when stage 1 gave it a real gid other than its
        // effective one (spawn.c); that gid is restored here, the flag set explicitly. The
        // workload's execve(2) makes it dumpable again, as a process of the container.
        if ss_set_dumpable(0) != 0 {
            writeStderr("safespace-runtime init: prctl(PR_SET_DUMPABLE, 0): \(String(cString: strerror(errno)))\n")
            exit(1)
        }
        let gid = getegid()
        if getgid() != gid && ss_setresgid(gid, gid, gid) != 0 {
            writeStderr("safespace-runtime init: setresgid(\(gid)): \(String(cString: strerror(errno)))\n")
            exit(1)
        }
        guard let fdText = getenv("_SAFESPACE_INITPIPE"), let fd = Int32(String(cString: fdText)) else {
            writeStderr("safespace-runtime init: not started by the runtime\n")
            exit(1)
        }
        unsetenv("_SAFESPACE_INITPIPE")
        _ = ss_set_cloexec(fd, 1)
        let channel = InitChannel(fd: fd)
        do {
            guard let (config, fds) = try channel.receiveConfig() else { exit(1) }
            if let soft = config.stackSoftLimit { restoreStackLimit(soft) }
            switch config.mode {
            case .create: try runCreate(config, fds: fds, channel: channel)
            case .exec: try runExec(config, fds: fds, channel: channel)
            }
        } catch {
            try? channel.send(InitMessage(reporting: error))
            exit(1)
        }
    }

    /// The state JSON `stateJSON` (runtime.md#state) for a hook run in the container's
    /// namespaces (createContainer, startContainer): at `status`, with the pid "as seen by the
    /// container" — this init's getpid(2), 1 in a PID namespace of its own.
    static func containerState(_ stateJSON: String, status: String) -> String {
        guard var state = try? JSONDecoder().decode(State.self, from: Data(stateJSON.utf8)) else { return stateJSON }
        state.status = status
        state.pid = getpid()
        guard let data = try? JSONEncoder().encode(state) else { return stateJSON }
        return String(decoding: data, as: UTF8.self)
    }

    static func runCreate(_ config: InitConfig, fds: [Int32], channel: InitChannel) throws -> Never {
        let spec = config.spec
        // Before anything is mounted: an unmapped id is bad input, reported as the create's error.
        try ProcessSetup(process: config.process, noNewKeyring: config.noNewKeyring, preserveFds: config.preserveFds)
            .checkIDsMapped()
        if config.newNamespaces.contains("cgroup") {
            // After the parent moved us into the container's cgroup: that cgroup becomes the root.
            try sys("unshare(CLONE_NEWCGROUP)") { ss_unshare(CLONE_NEWCGROUP) }
        }
        var rootfs = RootfsSetup(config: config)
        if let idx = config.rootfsMountFdIndex, idx < fds.count { rootfs.rootfsTreeFd = fds[idx] }
        try rootfs.prepare()
        let hooks = spec.hooks
        if !(hooks?.prestart ?? []).isEmpty || !(hooks?.createRuntime ?? []).isEmpty {
            try channel.send(InitMessage(type: "hooks"))
            guard let (reply, _) = try channel.receive(InitMessage.self), reply.type == "continue" else {
                exit(1)
            }
        }
        // runtime.md#createcontainer-hooks: in the container's namespaces, before pivot_root.
        // The state JSON only when there is a hook to read it (a decode and an encode).
        if let createContainer = hooks?.createContainer, !createContainer.isEmpty {
            try Hooks.run(
                createContainer, kind: "createContainer", state: containerState(config.stateJSON, status: "creating"))
        }
        let process = config.process
        var consoleFd: Int32 = -1
        try rootfs.pivotRoot()
        if process.terminal == true {
            guard let idx = config.consoleSocketFdIndex, idx < fds.count else {
                throw RuntimeError(.invalidSpec, field: "process.terminal", "true needs --console-socket")
            }
            consoleFd = try Console.setup(socket: fds[idx], size: process.consoleSize, bindConsole: true)
        }
        if let host = spec.hostname {
            try sys("sethostname", path: host) { sethostname(host, host.utf8.count) }
        }
        if let domain = spec.domainname {
            try sys("setdomainname", path: domain) { setdomainname(domain, domain.utf8.count) }
        }
        for (key, value) in spec.linux?.sysctl ?? [:] {
            do { try Files.write("/proc/sys/" + key.split(separator: ".").joined(separator: "/"), value) } catch var e
                as SysError
            {
                e.field = "linux.sysctl[\(key)]"
                throw e
            }
        }
        if config.newNamespaces.contains("network") {
            // A new network namespace starts with lo down; loopback is part of the sandbox.
            try sys("bring up lo") { ss_loopback_up() }
        }
        // Inherited by the workload across execve(2); set here so a failure fails the create.
        try ProcessSetup.applyPersonality(spec.linux?.personality)
        try rootfs.finish()
        let setup = ProcessSetup(process: process, noNewKeyring: config.noNewKeyring, preserveFds: config.preserveFds)
        try setup.applyRlimits()
        let executable = try setup.resolveExecutable()
        // Refuse a bad cwd at create, not only when the workload starts; the real chdir comes
        // last (ProcessSetup.finalizeAndExec), where a permission error is tried again as the
        // workload's user.
        try setup.changeDirectory(retryAsUser: true)
        try sys("chdir", path: "/") { chdir("/") }
        guard let fifoIndex = config.fifoFdIndex, fifoIndex < fds.count else {
            throw RuntimeError(.initFailed, "init: no exec FIFO")
        }
        let fifoPath = "/proc/self/fd/\(fds[fifoIndex])"
        try channel.send(InitMessage(type: "created"))
        if consoleFd >= 0 { close(consoleFd) }
        // Wait until the creator has recorded the state: if it died first, nobody could ever
        // start or delete this container, so exit rather than block on the FIFO.
        guard let (saved, _) = try channel.receive(InitMessage.self), saved.type == "saved" else { exit(1) }

        do {
            // Block until `start` opens the FIFO for reading (runc's exec FIFO).
            let w = try sys("open exec fifo") { ss_open(fifoPath, O_WRONLY | O_CLOEXEC, 0) }
            var zero = UInt8(ascii: "0")
            _ = Glibc.write(w, &zero, 1)
            close(w)
            close(fds[fifoIndex])
            // The create is over, the workload not yet executed: `created` (runtime.md#state).
            if let startContainer = hooks?.startContainer, !startContainer.isEmpty {
                try Hooks.run(
                    startContainer, kind: "startContainer", state: containerState(config.stateJSON, status: "created"))
            }
            try setup.finalizeAndExec(
                executable, seccomp: config.seccomp, handoff: PreparedHandoff(config.seccompHandoff, fds: fds))
        } catch {
            // The parent is gone; the workload's stderr is where a person looks.
            writeStderr("safespace-runtime: \(error)\n")
            exit(127)
        }
    }

    static func runExec(_ config: InitConfig, fds: [Int32], channel: InitChannel) throws -> Never {
        // Joined the container's user namespace already (stage 1); /proc is still the host's.
        try ProcessSetup(process: config.process, noNewKeyring: true, preserveFds: config.preserveFds).checkIDsMapped()
        if let idx = config.mountNamespaceFdIndex, idx < fds.count {
            // setns into the mount namespace moves our root and cwd to the container's root.
            try sys("setns(mnt)") { ss_setns(fds[idx], CLONE_NEWNS) }
            close(fds[idx])
        }
        var config = config
        if let idx = config.pidNamespaceFdIndex, idx < fds.count {
            try sys("setns(pid)") { ss_setns(fds[idx], CLONE_NEWPID) }
            close(fds[idx])
            config.seccompHandoff = try enterPIDNamespace(config.seccompHandoff, channel: channel)
        }
        let process = config.process
        if process.terminal == true {
            guard let idx = config.consoleSocketFdIndex, idx < fds.count else {
                throw RuntimeError(.invalidSpec, "--tty needs --console-socket")
            }
            let master = try Console.setup(socket: fds[idx], size: process.consoleSize, bindConsole: false)
            close(master)
        }
        // The container's execution domain, as its init had it.
        try ProcessSetup.applyPersonality(config.spec.linux?.personality)
        let setup = ProcessSetup(process: process, noNewKeyring: true, preserveFds: config.preserveFds)
        try setup.applyRlimits()
        let executable = try setup.resolveExecutable()
        try setup.finalizeAndExec(
            executable, seccomp: config.seccomp, handoff: PreparedHandoff(config.seccompHandoff, fds: fds))
    }
}

/// The exec helper joins the container's PID namespace only now, after its mount namespace,
/// as runc's nsexec does: until the mount namespace its root was the host's, and a process of
/// the container holding CAP_SYS_PTRACE in the host's user namespace (non-dumpable does not
/// stop it) could have reached the host's files through /proc/PID/root. setns(2) of a PID
/// namespace applies to children, so this forks (`ss_clone_parent`: the runtime's child, as
/// the helper is) and the child goes on in the namespace, in a session of its own (setsid(2):
/// not the helper's, where it could take a controlling terminal it was not given). The helper
/// tells the runtime the child's pid (an `InitMessage` "pid") and exits.
/// - Returns: `handoff` with the child's host pid in its process state (the seccomp agent's).
private func enterPIDNamespace(_ handoff: SeccompHandoff?, channel: InitChannel) throws -> SeccompHandoff? {
    var pipe: [Int32] = [-1, -1]
    try sys("pipe2") { ss_pipe2_cloexec(&pipe) }
    let child = ss_clone_parent()
    if child < 0 { throw SysError("clone(CLONE_PARENT)") }
    if child > 0 {
        // The helper: in the host's PID namespace, so `child` is the pid the runtime sees.
        // The runtime hears of the child before the child may run: the child reports its own
        // errors (an execve that fails) on the same channel, and a report that came first
        // would leave the runtime not knowing it has a child to reap; in a long-lived caller
        // (the daemon) that zombie, in the container's PID namespace, holds the container's
        // init in zap_pid_ns_processes (kernel/pid_namespace.c) once it is killed, so the delete never finishes.
        close(pipe[0])
        do { try channel.send(InitMessage(type: "pid", message: "\(child)")) } catch {
            kill(child, SIGKILL)
            _exit(1)
        }
        var pid = child
        _ = withUnsafeBytes(of: &pid) { write(pipe[1], $0.baseAddress, $0.count) }
        _exit(0)
    }
    close(pipe[1])
    var hostPid: Int32 = 0
    let n = withUnsafeMutableBytes(of: &hostPid) { read(pipe[0], $0.baseAddress, $0.count) }
    close(pipe[0])
    guard n == MemoryLayout<Int32>.size else { throw RuntimeError(.initFailed, "exec: the helper gave no pid") }
    if setsid() < 0 { throw SysError("setsid") }
    guard var handoff else { return nil }
    var state = try JSONDecoder().decode(
        SeccompNotify.ContainerProcessState.self, from: Data(handoff.processState.utf8))
    state.pid = hostPid
    handoff.processState = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
    return handoff
}

/// An exec whose real and effective gids differ is a secure exec (AT_SECURE), for which the
/// kernel lowers the RLIMIT_STACK soft limit to 8 MiB: back to the caller's, so the workload
/// inherits what it would have without the non-dumpable exec (process.rlimits still apply).
private func restoreStackLimit(_ soft: UInt64) {
    var lim = rlimit()
    guard getrlimit(__rlimit_resource_t(UInt32(Rlimits.resources["RLIMIT_STACK"]!)), &lim) == 0,
        lim.rlim_cur != rlim_t(soft)
    else { return }
    lim.rlim_cur = min(rlim_t(soft), lim.rlim_max)
    _ = setrlimit(__rlimit_resource_t(UInt32(Rlimits.resources["RLIMIT_STACK"]!)), &lim)
}

public func writeStderr(_ s: String) {
    _ = s.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
}
