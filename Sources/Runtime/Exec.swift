#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import CSafeSpace
import Linux
import OCI

extension ContainerRuntime {
    /// The process `exec` starts when only args are given: the container's own process
    /// settings (env, user, capabilities, rlimits, no_new_privs) with these args (runc exec).
    public func defaultExecProcess(id: String) throws -> Process {
        var p = try store.load(id).spec.process!
        p.terminal = false
        p.consoleSize = nil
        return p
    }

    /// Refuses an exec whose helper the container could trace. The helper is in the
    /// container's PID namespace from its clone on but joins the mount namespace only after
    /// re-executing (the dynamic loader must read the host's libraries, not the container's);
    /// until then its root is the host's. Non-dumpable keeps it from the container, except
    /// from a process holding CAP_SYS_PTRACE in the host's user namespace: one of a container
    /// without a user namespace whose bounding set has it could open /proc/PID/root of the
    /// helper and reach the host's files.
    /// - Throws: `RuntimeError` naming `process.capabilities.bounding`.
    static func checkExecHelperHidden(_ spec: Spec) throws {
        let ownsUserNamespace = (spec.linux?.namespaces ?? []).contains { $0.type == "user" }
        guard !ownsUserNamespace, (spec.process?.capabilities?.bounding ?? []).contains("CAP_SYS_PTRACE") else { return }
        throw RuntimeError(
            "exec refused: the container holds CAP_SYS_PTRACE (process.capabilities.bounding) without a user namespace, so it could trace the exec helper, whose root is the host's until it joins the container's mount namespace; give the container a user namespace or drop CAP_SYS_PTRACE")
    }

    /// Runs another process in a running container's namespaces and cgroup (runc exec).
    ///
    /// - Returns: the process's pid (detached) or its exit status (128+N for signal N).
    /// - Throws: "container not running" when the container is not created or running.
    public func exec(id: String, options: ExecOptions) throws -> Int32 {
        let state = try store.load(id)
        if state.backend == .gvisor { return try GVisorBackend(runtime: self).exec(state, options: options) }
        let status = store.status(of: state)
        guard status == .running || status == .created else {
            throw RuntimeError("cannot exec in a stopped container: container not running")
        }
        try SpecValidation.validate(process: options.process, field: "process")
        try Self.checkExecHelperHidden(state.spec)
        var join: [JoinNamespace] = []
        defer { join.forEach { close($0.fd) } }
        var mntFd: Int32 = -1
        defer { if mntFd >= 0 { close(mntFd) } }
        let types = Set((state.spec.linux?.namespaces ?? []).map(\.type))
        for type in NamespaceKind.joinOrder where types.contains(type) {
            let path = "/proc/\(state.pid)/ns/\(NamespaceKind.procNames[type]!)"
            let fd = ss_open(path, O_RDONLY | O_CLOEXEC, 0)
            if fd < 0 { throw SysError("open namespace", path: path) }
            if type == "mount" { mntFd = fd } else { join.append(JoinNamespace(type: type, fd: fd)) }
        }
        // The pid was checked against its start time after the namespace fds were opened.
        guard ProcStat.read(pid: state.pid)?.startTime == state.startTime else {
            throw RuntimeError("container not running")
        }
        var consoleFd: Int32 = -1
        defer { if consoleFd >= 0 { close(consoleFd) } }
        if options.process.terminal == true {
            guard let path = options.consoleSocket else { throw RuntimeError("--tty needs --console-socket") }
            consoleFd = try connectUnix(path)
        }
        let seccomp = try compileSeccomp(state.spec)
        let seccompListener = try SeccompNotify.connectListener(seccomp, spec: state.spec)
        var listenerOpen = seccompListener != nil
        defer { if listenerOpen, let seccompListener { close(seccompListener) } }
        let spawned = try spawnInit(
            join: join, unshare: 0, uidMappings: [], gidMappings: [], preserveFds: options.preserveFds,
            userNamespaceGids: state.spec.linux?.gidMappings ?? [])
        defer { close(spawned.channel.fd) }
        do {
            try state.cgroup.attach(pid: spawned.pid)
            var fds: [Int32] = []
            var mntIndex: Int?
            if mntFd >= 0 {
                mntIndex = fds.count
                fds.append(mntFd)
            }
            var consoleIndex: Int?
            if consoleFd >= 0 {
                consoleIndex = fds.count
                fds.append(consoleFd)
            }
            var config = InitConfig(
                mode: .exec, id: id, bundle: state.bundle, rootfs: state.rootfs, spec: state.spec, process: options.process,
                noPivot: false, noNewKeyring: true, preserveFds: options.preserveFds, fifoFdIndex: nil,
                consoleSocketFdIndex: consoleIndex, mountNamespaceFdIndex: mntIndex, newNamespaces: [], stateJSON: "", seccomp: seccomp)
            // The init loads the compiled filter; the profile itself would only be decoded again.
            config.spec.linux?.seccomp = nil
            if let seccompListener {
                // SCMP_ACT_NOTIFY: the exec'd process hands its listener fd to the agent (SeccompNotify.swift).
                let running = State(id: id, status: "running", pid: state.pid, bundle: state.bundle, annotations: state.annotations)
                let processState = try SeccompNotify.processState(spec: state.spec, pid: spawned.pid, state: running)
                config.seccompHandoff = SeccompHandoff(socketFdIndex: fds.count, processState: processState)
                fds.append(seccompListener)
            }
            try spawned.channel.send(config, fds: fds)
            if let seccompListener {
                // Only the init's copy may stay: the agent reads the state up to the end of the stream.
                close(seccompListener)
                listenerOpen = false
            }
            if let (message, _) = try spawned.channel.receive(InitMessage.self) {
                throw RuntimeError(message.message ?? "exec failed")
            }
        } catch {
            Glibc.kill(spawned.pid, SIGKILL)
            var st: Int32 = 0
            _ = waitpid(spawned.pid, &st, 0)
            throw error
        }
        if let pidFile = options.pidFile {
            try Files.writeAtomically(try absolute(pidFile), Array("\(spawned.pid)".utf8), mode: 0o644)
        }
        if options.detach { return spawned.pid }
        _ = ss_forward_signals(spawned.pid)
        defer { _ = ss_forward_signals(0) }
        return try waitChild(spawned.pid)
    }
}
