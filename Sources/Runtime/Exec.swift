import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

extension ContainerRuntime {
    /// The process `exec` starts when only args are given: the container's own process
    /// settings (env, user, capabilities, rlimits, no_new_privs) with these args (runc exec).
    public func defaultExecProcess(id: String) throws -> Process {
        var p = try store.load(id).spec.process!
        p.terminal = false
        p.consoleSize = nil
        return p
    }

    /// Runs another process in a running container's namespaces and cgroup (runc exec).
    ///
    /// - Returns: the process's pid (detached) or its exit status (128+N for signal N).
    /// - Throws: "container not running" when the container is not created or running.
    /// - Throws: also `RuntimeError` (`.unsupported`, `--cgroup`) for `subCgroups` on a
    ///   backend whose processes are not host processes (gVisor).
    public func exec(id: String, options: ExecOptions) throws -> Int32 {
        let state = try store.load(id)
        let backend = try backends.backend(for: state)
        if !options.subCgroups.isEmpty && backend.kind != .native {
            throw RuntimeError(
                .unsupported, field: "--cgroup",
                "the container runs under \(backend.kind.rawValue); its processes live in the sandbox's kernel, not in host sub-cgroups"
            )
        }
        // Captured stdio (the daemon's pipes): gVisor's runsc exec needs a file for the
        // process's pid inside the sandbox, or nothing could signal that process.
        if options.stdio != nil && backend.kind != .native && options.internalPidFile == nil {
            throw RuntimeError(
                .unsupported, field: "internalPidFile",
                "exec with its own stdio in a \(backend.kind.rawValue) sandbox needs a file for the process's pid inside the sandbox"
            )
        }
        return try backend.exec(state, options: options, in: self)
    }

    /// Sends `signal` to a process `exec` started with captured stdio and to the processes it
    /// started (`RuntimeBackend.signalExec`): the timeout or the end of a daemon's exec.
    /// - Parameters:
    ///   - hostPid: the pid `exec` returned (a child of this process).
    ///   - internalPid: the pid inside the sandbox (`ExecOptions.internalPidFile`), for a
    ///     backend whose processes are not host processes.
    /// - Throws: `RuntimeError` when the container is gone or the backend cannot signal it.
    public func signalExec(id: String, hostPid: Int32, internalPid: Int32?, signal: Int32) throws {
        let state = try store.load(id)
        try backends.backend(for: state).signalExec(
            state, hostPid: hostPid, internalPid: internalPid, signal: signal, in: self)
    }

    /// `exec` of the native backend: a helper (this binary's `init`) joins the container's
    /// namespaces and cgroup and execs the process.
    func execNative(_ state: ContainerState, options: ExecOptions) throws -> Int32 {
        let id = state.id
        let status = store.status(of: state)
        // runc 1.1: a paused container only with --ignore-paused; the process then joins the
        // frozen cgroup and runs once the container is resumed.
        if status == .paused && !options.ignorePaused {
            throw RuntimeError(.paused, "cannot exec in a paused container (use --ignore-paused to override)")
        }
        guard status == .running || status == .created || status == .paused else {
            throw RuntimeError.notRunning("cannot exec in a stopped container")
        }
        try SpecValidation.validate(process: options.process, field: "process")
        var join: [JoinNamespace] = []
        defer { join.forEach { close($0.fd) } }
        // The mount and PID namespaces are joined by the helper after its re-exec, in that
        // order (ContainerInit.runExec): never in the container's PID namespace with the
        // host's root.
        var mntFd: Int32 = -1
        var pidFd: Int32 = -1
        defer { for fd in [mntFd, pidFd] where fd >= 0 { close(fd) } }
        let types = Set((state.spec.linux?.namespaces ?? []).map(\.type))
        for type in NamespaceKind.joinOrder where types.contains(type) {
            let path = "/proc/\(state.pid)/ns/\(NamespaceKind.procNames[type]!)"
            let fd = ss_open(path, O_RDONLY | O_CLOEXEC, 0)
            if fd < 0 { throw SysError("open namespace", path: path) }
            switch type {
            case "mount": mntFd = fd
            case "pid": pidFd = fd
            default: join.append(JoinNamespace(type: type, fd: fd))
            }
        }
        // The pid was checked against its start time after the namespace fds were opened.
        guard ProcStat.read(pid: state.pid)?.startTime == state.startTime else {
            throw RuntimeError.notRunning()
        }
        var consoleFd: Int32 = -1
        defer { if consoleFd >= 0 { close(consoleFd) } }
        if options.process.terminal == true {
            guard let path = options.consoleSocket else {
                throw RuntimeError(.invalidSpec, "--tty needs --console-socket")
            }
            consoleFd = try connectUnix(path)
        }
        let seccomp = try compileSeccomp(state.spec)
        let seccompListener = try SeccompNotify.connectListener(seccomp, spec: state.spec)
        var listenerOpen = seccompListener != nil
        defer { if listenerOpen, let seccompListener { close(seccompListener) } }
        let spawned = try spawnInit(
            join: join, unshare: 0, uidMappings: [], gidMappings: [], preserveFds: options.preserveFds,
            userNamespaceGids: state.spec.linux?.gidMappings ?? [], stdio: options.stdio,
            cgroup: try state.cgroup.selfJoin(joining: options.subCgroups))
        defer { close(spawned.channel.fd) }
        // The exec'd process: the helper itself without a PID namespace to join, else its child.
        var pid = spawned.pid
        do {
            if !spawned.joinedCgroup { try state.cgroup.attach(pid: spawned.pid, joining: options.subCgroups) }
            var fds: [Int32] = []
            var mntIndex: Int?
            if mntFd >= 0 {
                mntIndex = fds.count
                fds.append(mntFd)
            }
            var pidIndex: Int?
            if pidFd >= 0 {
                pidIndex = fds.count
                fds.append(pidFd)
            }
            var consoleIndex: Int?
            if consoleFd >= 0 {
                consoleIndex = fds.count
                fds.append(consoleFd)
            }
            var config = InitConfig(
                mode: .exec, id: id, bundle: state.bundle, rootfs: state.rootfs, spec: state.spec,
                process: options.process,
                noPivot: false, noNewKeyring: true, preserveFds: options.preserveFds, fifoFdIndex: nil,
                consoleSocketFdIndex: consoleIndex, mountNamespaceFdIndex: mntIndex, newNamespaces: [], stateJSON: "",
                seccomp: seccomp)
            config.pidNamespaceFdIndex = pidIndex
            // The init loads the compiled filter; the profile itself would only be decoded again.
            config.spec.linux?.seccomp = nil
            if let seccompListener {
                // SCMP_ACT_NOTIFY: the exec'd process hands its listener fd to the agent (SeccompNotify.swift).
                let running = State(
                    id: id, status: "running", pid: state.pid, bundle: state.bundle, annotations: state.annotations)
                let processState = try SeccompNotify.processState(spec: state.spec, pid: spawned.pid, state: running)
                config.seccompHandoff = SeccompHandoff(socketFdIndex: fds.count, processState: processState)
                fds.append(seccompListener)
            }
            try spawned.channel.send(config, specBytes: nil, fds: fds)
            if let seccompListener {
                // Only the init's copy may stay: the agent reads the state up to the end of the stream.
                close(seccompListener)
                listenerOpen = false
            }
            while let (message, _) = try spawned.channel.receive(InitMessage.self) {
                // The helper forked the process in the PID namespace and exited: that child
                // (ours, CLONE_PARENT) is the exec'd process from here on.
                if message.type == "pid", pid == spawned.pid, let child = message.message.flatMap({ Int32($0) }),
                    child > 0
                {
                    pid = child
                    var st: Int32 = 0
                    while waitpid(spawned.pid, &st, 0) < 0 && errno == EINTR {}
                    continue
                }
                throw message.reportedError(default: "exec failed", operation: "exec")
            }
        } catch {
            for p in Set([spawned.pid, pid]) {
                Glibc.kill(p, SIGKILL)
                var st: Int32 = 0
                _ = waitpid(p, &st, 0)
            }
            throw error
        }
        log.log(
            .debug, "exec in container \(id): process \(pid) started",
            fields: ["args": .text((options.process.args ?? []).joined(separator: " "))])
        if let pidFile = options.pidFile {
            do { try PidFile.write(pidFile, pid: pid) } catch {
                // As runc: a process whose pid nobody can learn is not left running.
                Glibc.kill(pid, SIGKILL)
                var st: Int32 = 0
                while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
                throw error
            }
        }
        if options.detach { return pid }
        _ = ss_forward_signals(pid)
        defer { _ = ss_forward_signals(0) }
        let exitStatus = try waitChild(pid)
        log.log(.debug, "process exited", fields: ["pid": .int(pid), "status": .int(exitStatus)])
        return exitStatus
    }
}
