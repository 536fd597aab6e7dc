import CSafeSpace
import Cgroups
import Glibc
import LinuxKernel
import OCI
import SeccompFilters

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Options of `create` (runc's flags of the same names).
public struct CreateOptions: Sendable {
    public var pidFile: String?
    public var consoleSocket: String?
    public var noPivot: Bool
    public var noNewKeyring: Bool
    /// Extra fds (3…3+N-1) passed to the workload (`--preserve-fds`).
    public var preserveFds: Int
    /// Set by `createAndStart` (runc's `run`): the backend may start the workload as part of
    /// the create (`ContainerCreation.startedWithCreate`; gVisor: one `runsc run --detach`
    /// instead of `runsc create` then `runsc start`). Default false.
    public var startWithCreate = false

    public init(
        pidFile: String? = nil, consoleSocket: String? = nil, noPivot: Bool = false, noNewKeyring: Bool = false,
        preserveFds: Int = 0
    ) {
        self.pidFile = pidFile
        self.consoleSocket = consoleSocket
        self.noPivot = noPivot
        self.noNewKeyring = noNewKeyring
        self.preserveFds = preserveFds
    }
}

/// Options of `exec` (runc's flags of the same names).
public struct ExecOptions: Sendable {
    public var process: Process
    public var detach: Bool
    public var pidFile: String?
    public var consoleSocket: String?
    public var preserveFds: Int
    /// The exec'd process's fds 0, 1, 2 (each above 2, e.g. pipes); nil: the caller's own.
    /// Native backend: the process is the caller's child. gVisor backend: `runsc exec` (not
    /// detached) is the caller's child with these as its stdio, and it needs `internalPidFile`.
    public var stdio: [Int32]? = nil
    /// gVisor, with `stdio`: the file runsc writes the process's pid inside the sandbox to
    /// (`runsc exec --internal-pid-file`), for `ContainerRuntime.signalExec`. The caller
    /// removes it.
    public var internalPidFile: String? = nil
    /// `--cgroup`: sub-cgroups of the container's cgroup to run the process in (runc 1.1).
    public var subCgroups = SubCgroups()
    /// `--ignore-paused`: exec into a paused container (the process is frozen with it).
    public var ignorePaused = false

    public init(
        process: Process, detach: Bool = false, pidFile: String? = nil, consoleSocket: String? = nil,
        preserveFds: Int = 0
    ) {
        self.process = process
        self.detach = detach
        self.pidFile = pidFile
        self.consoleSocket = consoleSocket
        self.preserveFds = preserveFds
    }
}

/// The container lifecycle of runtime.md (create, start, state, kill, delete) plus runc's
/// run, exec, list and ps, over a state directory (`root`, default /run/safespace).
///
/// Every verb runs here once for all backends and goes to the container's backend
/// (`RuntimeBackend`, given by the front end in `backends`) for what is the backend's own.
public struct ContainerRuntime: Sendable {
    public let store: StateStore
    public let log: RuntimeLog
    /// The backends containers of this root can run on (`RuntimeBackends`).
    public let backends: RuntimeBackends

    public init(
        root: String = "/run/safespace", log: RuntimeLog = RuntimeLog(path: nil, format: .text, debug: false),
        backends: RuntimeBackends
    ) {
        self.store = StateStore(root: root)
        self.log = log
        self.backends = backends
    }

    // MARK: create

    /// Creates the container: namespaces, cgroup, mounts and root are ready and the init waits
    /// on the exec FIFO for `start` (runtime.md#create). The one create transaction of every
    /// backend: the bundle is validated, the security level picks the backend
    /// (`RuntimeBackend.prepareCreate` checks what it cannot enforce), then under the store
    /// lock the id is claimed and the state directory, `creating.json`, the exec FIFO, the host
    /// id range and the cgroup are taken, each recorded before it is taken; the backend's
    /// steps (`ContainerCreation`) run between them; the state and the pid file are written
    /// once the container exists.
    ///
    /// - Returns: the container's pid (a child of the caller).
    /// - Throws: `RuntimeError`/`SysError` naming the field at fault; on failure nothing of the
    ///   container remains (process, cgroup, state directory, id range).
    @discardableResult
    public func create(id: String, bundle: String, options: CreateOptions = .init()) throws -> Int32 {
        try createContainer(id: id, bundle: bundle, options: options).pid
    }

    /// runc's `run` without a foreground terminal: `create`, then `start`, except that a
    /// backend that can start the workload within its create does (`CreateOptions.startWithCreate`;
    /// the gVisor backend hands runsc the whole run at once), and then only what `start` does
    /// after the backend's part follows: the exec FIFO removed, the poststart hooks.
    /// - Throws: what `create` and `start` throw; a container whose start failed is deleted
    ///   (`delete --force`) first, as runc's `run` destroys it.
    public func createAndStart(id: String, bundle: String, options: CreateOptions = .init()) throws {
        var options = options
        options.startWithCreate = true
        let made = try createContainer(id: id, bundle: bundle, options: options)
        do {
            guard made.started else { return try start(id: id) }
            log.log(.debug, "container \(id): started with its create", fields: ["pid": .int(made.pid)])
            started(try store.load(id))
        } catch {
            try? delete(id: id, force: true)
            throw error
        }
    }

    /// `create`'s transaction; `started`: the backend started the workload too
    /// (`ContainerCreation.startedWithCreate`).
    private func createContainer(id: String, bundle: String, options: CreateOptions) throws -> (
        pid: Int32, started: Bool
    ) {
        try StateStore.validate(id: id)
        let bundle = try absolute(bundle)
        let specBytes: [UInt8]
        do { specBytes = try Files.read(bundle + "/config.json") } catch {
            throw RuntimeError(
                .invalidSpec, "bundle \(bundle): cannot read config.json: \(error)", operation: "read",
                errno: (error as? SysError)?.errno, cause: error)
        }
        var spec: Spec
        do { spec = try BundleSpec.decode(specBytes) } catch {
            throw RuntimeError(
                .invalidSpec, "config.json: \(describe(decodingError: error))", operation: "decode", cause: error)
        }
        try SpecValidation.validate(spec, bundle: bundle)
        let rootPath = spec.root!.path
        let rootfs = try absolute(rootPath.hasPrefix("/") ? rootPath : bundle + "/" + rootPath)
        guard Files.isDirectory(rootfs) else {
            throw RuntimeError(.invalidSpec, field: "root.path", "\(rootfs) is not a directory")
        }
        // Security levels: the configured level, raised by the bundle's annotation, picks the
        // backend; `high` runs under runsc (the GVisor module).
        let configuration = try RuntimeConfiguration.load()
        let level = try SecurityLevel.effective(
            configured: configuration.configuredLevel(root: store.root), annotations: spec.annotations)
        let creation = try backends.backend(level.backend).prepareCreate(
            CreateRequest(
                id: id, bundle: bundle, rootfs: rootfs, spec: spec, options: options, configuration: configuration),
            in: self)

        // Held from the id check to the recorded cgroup, released before the container is
        // started (unless the backend needs it to the saved state), so a create that hangs or
        // dies later never blocks other creates.
        let lock = try store.lock()
        try creation.locked()
        let dir = store.directory(id)
        try claimID(id)
        try sys("mkdir", path: dir) { mkdir(dir, 0o711) }
        var cgroup: Cgroup?
        var idRange: IDRangeRecord?
        do {
            // Recorded before anything is taken, so a create killed at any point leaves a
            // directory that says whose it was and what to undo (CreatingRecord): with the
            // cgroup levels about to be made, then (below) with those made, so `delete --force`
            // or a reclaim removes the cgroup of a create killed half-way.
            var cg = try Cgroup.resolve(cgroupsPath: spec.linux?.cgroupsPath, id: StateStore.directoryName(id))
            var record = CreatingRecord(
                id: id, creator: .current(), bundle: bundle, created: rfc3339Now(), annotations: spec.annotations)
            record.cgroup = cg.planned()
            try store.saveCreating(record)
            // The created marker: status is `created` until `start` removes it (ContainerState).
            let fifo = store.fifoPath(id)
            try sys("mkfifo", path: fifo) { mkfifo(fifo, creation.fifoMode) }
            // Not masked by umask: an init in a user namespace is "other" to host root.
            try sys("chmod", path: fifo) { chmod(fifo, creation.fifoMode) }
            // A user namespace whose host range the runtime picks (IDAllocator.swift).
            if UserNamespaceRange.wantsAllocation(spec) {
                let allocator = configuration.idAllocator
                let allocation = try allocator.allocate(owner: dir)
                idRange = IDRangeRecord(
                    directory: allocator.directory, hostID: allocation.hostID, size: allocation.size)
                spec.linux?.uidMappings = allocation.mappings
                spec.linux?.gidMappings = allocation.mappings
            }
            try creation.reserve(directory: dir)
            for warning in try cg.create() { log.warn(warning) }
            cgroup = cg
            record.cgroup = cg
            try store.saveCreating(record)
            try creation.configure(cg, spec: spec)
            if !creation.holdsLockUntilSaved { lock.release() }
            let spec = spec
            let idRange = idRange
            log.log(
                .debug, "container \(id): cgroup ready", fields: ["cgroup": .text(cg.path), "bundle": .text(bundle)])
            let pid = try creation.launch(spec: spec, cgroup: cg) { pid, startTime in
                var state = ContainerState(
                    id: id, bundle: bundle, rootfs: rootfs, pid: pid, startTime: startTime, created: rfc3339Now(),
                    annotations: spec.annotations, cgroup: cg, spec: spec,
                    ownNamespaces: (spec.linux?.namespaces ?? []).filter { ($0.path ?? "").isEmpty }.map(\.type),
                    idRange: idRange)
                creation.record(&state)
                try store.save(state)
                try creation.saved(state)
                lock.release()
                if let pidFile = options.pidFile { try PidFile.write(pidFile, pid: pid) }
            }
            return (pid, options.startWithCreate && creation.startedWithCreate)
        } catch {
            let failure = creation.abort(error, cgroup: cgroup)
            if let cgroup {
                _ = try? cgroup.killAll(signal: SIGKILL)
                try? cgroup.destroy()
            }
            try? Files.removeTree(dir)
            if let idRange { try? IDAllocator(directory: idRange.directory).release(owner: dir) }
            creation.rolledBack()
            throw failure
        }
    }

    /// Compiles linux.seccomp in the parent (DESIGN: never in the container's init), through
    /// the cache of compiled filters under the state root (SeccompCache.swift).
    func compileSeccomp(_ spec: Spec) throws -> SeccompProgram? {
        guard let seccomp = spec.linux?.seccomp else { return nil }
        let program = try SeccompCache(directory: store.root + "/.seccomp-cache").program(for: seccomp)
        if !program.unknownSyscalls.isEmpty {
            log.warn(
                "linux.seccomp: syscalls unknown to libseccomp were skipped (they return ENOSYS when newer than every named one): \(program.unknownSyscalls.joined(separator: ", "))"
            )
        }
        program.warnings.forEach { log.warn($0) }
        return program
    }

    // MARK: start

    /// Releases a created container to exec the workload (runtime.md#start: the backend's
    /// `start`), then runs the poststart hooks (a failing one is a warning).
    public func start(id: String) throws {
        let state = try store.load(id)
        let backend = try backends.backend(for: state)
        switch backend.status(of: state, in: self) {
        case .created: break
        case .stopped: throw RuntimeError.startStopped()
        default: throw RuntimeError.startRunning()
        }
        try backend.start(state, in: self)
        log.log(.debug, "container \(id): started", fields: ["pid": .int(state.pid)])
        started(state)
    }

    /// What `start` does once the backend has started the workload: the exec FIFO (the
    /// `created` marker) goes, then the poststart hooks run (a failing one is a warning).
    private func started(_ state: ContainerState) {
        let id = state.id
        unlink(store.fifoPath(id))
        let running = State(
            id: id, status: "running", pid: state.pid, bundle: state.bundle, annotations: state.annotations)
        let poststart = state.spec.hooks?.poststart ?? []
        let json =
            poststart.isEmpty ? "" : String(decoding: (try? JSONEncoder().encode(running)) ?? Data(), as: UTF8.self)
        for (i, hook) in poststart.enumerated() {
            do { try Hooks.run(hook, field: "hooks.poststart[\(i)]", state: json) } catch { log.warn("\(error)") }
        }
    }

    // MARK: state

    /// runc's `state` JSON for the container. A half-made container (see `CreatingRecord`) is
    /// `creating` while its creator lives and `stopped` once it is dead, with pid 0 and the
    /// creator's pid in `creator`.
    public func state(id: String) throws -> RuncState {
        try StateStore.validate(id: id)
        if let record = store.loadCreating(id: id) {
            var state = RuncState(
                id: id, pid: 0, status: record.creatorAlive ? Status.creating.rawValue : Status.stopped.rawValue,
                bundle: record.bundle ?? "", rootfs: "", created: record.created ?? "", annotations: record.annotations)
            state.creator = record.creator?.pid
            return state
        }
        let state = try store.load(id)
        let status = self.status(of: state)
        return RuncState(
            id: id, pid: status == .stopped ? 0 : state.pid, status: status.rawValue, bundle: state.bundle,
            rootfs: state.rootfs, created: state.created, annotations: state.annotations)
    }

    /// Every container of the root, half-made ones included (`creating`/`stopped`), with
    /// `owner` the name of the user owning its state directory (`#UID` without a passwd entry),
    /// as runc's `list` gives it.
    public func list() -> [RuncState] {
        store.entries().compactMap { id in
            guard var entry = try? state(id: id) else { return nil }
            var st = stat()
            if stat(store.directory(id), &st) == 0 {
                entry.owner = Self.passwdName(uid: st.st_uid) ?? "#\(st.st_uid)"
            }
            return entry
        }
    }

    /// The name of `uid` in `passwd` (passwd(5): `name:password:UID:GID:...`, the first entry
    /// with that UID), nil without one or when the file cannot be read. Read directly, not
    /// through getpwuid(3): the release binary is linked statically, and glibc's NSS in a
    /// static binary needs the shared libraries of the glibc it was built with.
    static func passwdName(uid: uid_t, passwd: String = "/etc/passwd") -> String? {
        guard let text = try? Files.readString(passwd) else { return nil }
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false)
            guard fields.count >= 3, !fields[0].isEmpty, let id = uid_t(fields[2]), id == uid else { continue }
            return String(fields[0])
        }
        return nil
    }

    /// The container's status (runtime.md#state) as its backend derives it
    /// (`RuntimeBackend.status`); a container of a backend this program lacks: as
    /// `StateStore.status(of:)` derives it.
    public func status(of state: ContainerState) -> Status {
        guard let backend = try? backends.backend(for: state) else { return store.status(of: state) }
        return backend.status(of: state, in: self)
    }

    // MARK: kill

    /// Sends `signal` to the container's process (runtime.md#kill), or with `all` to every
    /// process of the container (the backend's `kill`); `all` works after the init has exited.
    /// - Throws: "container not running" when the init is gone and `all` is false.
    public func kill(id: String, signal: Int32, all: Bool) throws {
        let state = try store.load(id)
        log.log(.debug, "container \(id): signal \(signal)\(all ? " to every process" : "")")
        try backends.backend(for: state).kill(state, signal: signal, all: all, in: self)
    }

    // MARK: delete

    /// Removes the container (runtime.md#delete): its processes (the backend's `stop`), its
    /// cgroup, state directory and host id range; poststop hooks run (a failing one is a
    /// warning). Without `force` a running container is an error.
    public func delete(id: String, force: Bool) throws {
        // Before any file access: an id like ".." must never name a directory to remove.
        try StateStore.validate(id: id)
        if store.loadCreating(id: id) != nil {
            let lock = try store.lock()
            defer { withExtendedLifetime(lock) {} }
            // Again under the lock: the create may have finished (or another delete won) meanwhile.
            if let record = store.loadCreating(id: id) {
                if record.creatorAlive && !force {
                    throw RuntimeError.deleteNotStopped(
                        id,
                        status: "creating (create by \(record.creator.map { "\($0)" } ?? "a live process") still runs)")
                }
                try removeHalfMade(record)
                return
            }
        }
        let state: ContainerState
        do { state = try store.load(id) } catch {
            if force, !Files.exists(store.directory(id)) { return }
            throw error
        }
        let backend = try backends.backend(for: state)
        try backend.stop(state, status: backend.status(of: state, in: self), force: force, in: self)
        var cgroupError: Error?
        do { try state.cgroup.destroyKillingStragglers() } catch { cgroupError = error }
        try Files.removeTree(store.directory(id))
        if let range = state.idRange { try IDAllocator(directory: range.directory).release(owner: store.directory(id)) }
        try backend.removed(state, in: self)
        // runtime.md#state: pid is the container process's, required while created or running;
        // stopped, there is none (the number may name another process now), so none is given, as
        // runc does and as `state` reports 0.
        let stopped = State(id: id, status: "stopped", pid: nil, bundle: state.bundle, annotations: state.annotations)
        let poststop = state.spec.hooks?.poststop ?? []
        let json =
            poststop.isEmpty ? "" : String(decoding: (try? JSONEncoder().encode(stopped)) ?? Data(), as: UTF8.self)
        for (i, hook) in poststop.enumerated() {
            do { try Hooks.run(hook, field: "hooks.poststop[\(i)]", state: json) } catch { log.warn("\(error)") }
        }
        if let cgroupError { throw cgroupError }
        log.log(.debug, "container \(id): deleted")
    }

    /// Refuses to delete a container that is not stopped (running or paused) without `force`.
    /// - Throws: `RuntimeError` "cannot delete container <id> that is not stopped: <status>".
    package static func checkDeletable(_ state: ContainerState, status: Status, force: Bool) throws {
        if (status == .running || status == .paused) && !force {
            throw RuntimeError.deleteNotStopped(state.id, status: status.rawValue)
        }
    }

    // MARK: half-made containers

    /// Makes `id` free for a new create, under the store lock: nothing there, or a half-made
    /// container whose creator is dead, which is reclaimed first.
    /// - Throws: `RuntimeError` "already exists" for a created container or one whose create
    ///   still runs.
    func claimID(_ id: String) throws {
        guard Files.exists(store.directory(id)) else { return }
        guard let record = store.loadCreating(id: id) else {
            throw RuntimeError.containerExists(id)
        }
        if record.creatorAlive {
            throw RuntimeError.containerExists(id, beingCreatedBy: record.creator.map { "\($0)" } ?? "a live process")
        }
        log.log(
            .debug,
            "reclaiming container \(id): its create (\(record.creator.map { "\($0)" } ?? "unknown process")) died half-way"
        )
        try removeHalfMade(record)
    }

    /// Undoes a half-made container: kills what is in its cgroup and removes the cgroup
    /// (`destroyKillingStragglers`, Cgroup+Teardown.swift), the state directory, and its host
    /// id range when the range's holder is gone too (a `safespace run` that reserved the range
    /// for this create keeps it). Its init, if one was spawned, exits by itself: it was never
    /// told `saved`, and its creator's end of the channel is closed.
    func removeHalfMade(_ record: CreatingRecord) throws {
        if let cgroup = record.cgroup { try cgroup.destroyKillingStragglers() }
        try Files.removeTree(store.directory(record.id))
        if let allocator = try? RuntimeConfiguration.load().idAllocator {
            try allocator.releaseIfStale(owner: store.directory(record.id))
        }
    }

    /// Reclaims every half-made container of this root whose creator is dead (what
    /// `safespace gc` and a daemon's start do; a create of the same id does it for its id).
    /// - Returns: the ids reclaimed.
    @discardableResult
    public func reclaimAbandoned() throws -> [String] {
        let lock = try store.lock()
        defer { withExtendedLifetime(lock) {} }
        var reclaimed: [String] = []
        for id in store.entries() {
            guard let record = store.loadCreating(id: id), !record.creatorAlive else { continue }
            try removeHalfMade(record)
            reclaimed.append(id)
        }
        return reclaimed
    }

    // MARK: wait

    /// Waits for the process of a container this process created (it is our child).
    /// - Returns: the exit code, 128+N when killed by signal N.
    public func wait(id: String) throws -> Int32 {
        let state = try store.load(id)
        let status = try backends.backend(for: state).wait(state, in: self)
        log.log(.debug, "process exited", fields: ["pid": .int(state.pid), "status": .int(status)])
        return status
    }

    // MARK: ps

    /// The pids of the container's processes: host pids of every process in its cgroup, or
    /// what its backend numbers them by.
    public func processes(id: String) throws -> [Int32] {
        let state = try store.load(id)
        return try backends.backend(for: state).processes(state, in: self)
    }

    /// `ps`'s table from the backend when the host's ps(1) cannot show the container's
    /// processes (gVisor: they live in the sandbox's kernel); nil when it can.
    public func processTable(id: String) throws -> String? {
        let state = try store.load(id)
        return try backends.backend(for: state).processTable(state, in: self)
    }
}

/// waitpid(2) for a child, EINTR retried; shell-style status.
package func waitChild(_ pid: Int32) throws -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno == EINTR { continue }
        throw SysError("waitpid", path: "\(pid)")
    }
    return ss_exit_status(status)
}

package func absolute(_ path: String) throws -> String {
    if path.hasPrefix("/") { return cleanPath(path) }
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { throw SysError("getcwd") }
    return cleanPath(String(nulTerminated: buf) + "/" + path)
}

/// Connects a SOCK_STREAM unix socket (close-on-exec) to `path`.
/// - Parameter field: the flag or field that named the path, for errors.
/// - Throws: `RuntimeError` for a path longer than `sun_path`, `SysError` from connect(2).
func connectUnix(_ path: String, field: String = "--console-socket") throws -> Int32 {
    let fd = try sys("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
        close(fd)
        throw RuntimeError(.invalidSpec, field: field, "path too long for a unix socket: \(path)", operation: "connect")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
    }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    if rc != 0 {
        let e = errno
        close(fd)
        throw SysError("connect", path: path, errno: e, field: field)
    }
    return fd
}

/// A decoding error as a sentence naming the JSON path (`process.user.uid: expected a number`).
public func describe(decodingError error: Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ ctx: DecodingError.Context) -> String {
        ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop { $0 == "." }
            .description
    }
    switch e {
    case .typeMismatch(let type, let ctx): return "\(path(ctx)): expected \(type): \(ctx.debugDescription)"
    case .valueNotFound(_, let ctx): return "\(path(ctx)): missing value"
    case .keyNotFound(let key, let ctx):
        let p = path(ctx)
        return "\(p.isEmpty ? "" : p + ".")\(key.stringValue): missing"
    case .dataCorrupted(let ctx): return "\(path(ctx).isEmpty ? "malformed JSON" : path(ctx)): \(ctx.debugDescription)"
    @unknown default: return "\(error)"
    }
}
