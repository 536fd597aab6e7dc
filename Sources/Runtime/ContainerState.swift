import Cgroups
import Glibc
import LinuxKernel
import OCI
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// What the runtime keeps on disk for one container: `<root>/<id>/state.json`.
///
/// Status is never stored: it is derived from the live process (`pid` + `startTime`, which
/// together name one process even after pid reuse) and the exec FIFO (runtime.md#state).
public struct ContainerState: Codable, Sendable, Equatable {
    public var id: String
    public var bundle: String
    /// Absolute host path of the root file system.
    public var rootfs: String
    public var pid: Int32
    /// /proc/PID/stat field 22 of `pid` when it was created.
    public var startTime: UInt64
    /// RFC 3339 with nanoseconds, UTC.
    public var created: String
    public var annotations: [String: String]?
    public var cgroup: Cgroup
    /// The config.json the container was created from (hooks, namespaces, process defaults).
    public var spec: Spec
    /// Namespace types this container created (joined ones are not its own).
    public var ownNamespaces: [String]

    // Security levels (issue 5): which backend runs the container, and what it holds.
    /// nil in states written before backends existed: native. For gVisor `pid` is runsc's
    /// sandbox process and `exec.fifo` only marks `created` until `start`.
    public var backend: Backend? = nil
    /// The runsc invocation of a gVisor container.
    public var gvisor: GVisorState? = nil
    /// The host id range the runtime allocated for the container's user namespace; released
    /// by `delete` (see `IDAllocator`).
    public var idRange: IDRangeRecord? = nil
}

/// Where a container's host id range is recorded: the allocator directory and the range.
public struct IDRangeRecord: Codable, Sendable, Equatable {
    public var directory: String
    public var hostID: UInt32
    public var size: UInt32
}

/// How every runsc call of one gVisor container is made. runsc rereads its configuration from
/// its global flags on each call, so they are fixed at `create` and kept in the state.
public struct GVisorState: Codable, Sendable, Equatable {
    /// The runsc binary.
    public var runsc: String
    /// Global flags: `--root <state>/runsc --platform P --network N --log L --log-format json`,
    /// `--oci-seccomp` when the bundle has `linux.seccomp`, then the configured extra flags.
    public var flags: [String]
    public var platform: String
    public var network: String
    /// Whether runsc's create and start of the sandbox must not see the joined network
    /// namespace's /proc/sys/net/core (`GVisorFeatures.misreadsPodNetns`): create hides it
    /// through the checked fd, start through /proc/<sandbox pid>/ns/net. nil in states
    /// written before it existed: false.
    public var hideNetCore: Bool? = nil
    /// For a container of a gVisor pod: the pod sandbox container's id (its runsc root is
    /// shared: runsc runs the container inside that sandbox).
    public var podSandbox: String? = nil
    /// Host processes of the sandbox besides its main one (the gofer), with start times: reaped
    /// after the sandbox when they are this process's children (it is a subreaper).
    public var helpers: [HelperProcess]

    public init(
        runsc: String, flags: [String], platform: String, network: String, hideNetCore: Bool? = nil,
        podSandbox: String? = nil, helpers: [HelperProcess]
    ) {
        self.runsc = runsc
        self.flags = flags
        self.platform = platform
        self.network = network
        self.hideNetCore = hideNetCore
        self.podSandbox = podSandbox
        self.helpers = helpers
    }

    public struct HelperProcess: Codable, Sendable, Equatable {
        public var pid: Int32
        public var startTime: UInt64

        public init(pid: Int32, startTime: UInt64) {
            self.pid = pid
            self.startTime = startTime
        }
    }
}

/// `<root>/<id>/creating.json`: a container whose `create` has not finished (no `state.json`).
/// Its owner is `creator`, the process running `create`; once that is dead (pid + start time,
/// `ProcessIdentity`) the container can never be finished and anything that needs the id or
/// the state root reclaims it (`ContainerRuntime.reclaimIfAbandoned`).
public struct CreatingRecord: Codable, Sendable, Equatable {
    public var id: String
    /// nil: unknown (see `StateStore.loadCreating`), dead.
    public var creator: ProcessIdentity?
    public var bundle: String?
    /// RFC 3339, when `create` began.
    public var created: String?
    public var annotations: [String: String]?
    /// The container's cgroup; before `Cgroup.create` its `created` lists the levels that did
    /// not exist yet, so a create killed during the mkdirs leaves nothing `destroy` misses.
    public var cgroup: Cgroup?

    public init(
        id: String, creator: ProcessIdentity? = nil, bundle: String? = nil, created: String? = nil,
        annotations: [String: String]? = nil, cgroup: Cgroup? = nil
    ) {
        self.id = id
        self.creator = creator
        self.bundle = bundle
        self.created = created
        self.annotations = annotations
        self.cgroup = cgroup
    }

    /// Whether the create can still finish: its creator lives.
    public var creatorAlive: Bool { creator?.isAlive ?? false }
}

/// Container status (runtime.md#state).
public enum Status: String, Sendable {
    case creating, created, running, paused, stopped
}

/// The state directory: one directory per container under `--root`, guarded by a lock.
public struct StateStore: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    /// The longest file name, in bytes (NAME_MAX of limits.h).
    public static let nameMax = 255

    /// The name of the state directory, and of the default cgroup, of `id`: the id itself, or
    /// for an id longer than `nameMax` (mkdir(2) would fail with ENAMETOOLONG)
    /// `@sha256-<64 hex digits of SHA-256 of the id>`. `@` is not allowed in ids, so the two
    /// forms never name the same directory; the full id is in state.json.
    public static func directoryName(_ id: String) -> String {
        id.utf8.count <= nameMax ? id : "@sha256-" + sha256Hex(Array(id.utf8))
    }

    public func directory(_ id: String) -> String { root + "/" + Self.directoryName(id) }
    package func statePath(_ id: String) -> String { directory(id) + "/state.json" }
    package func fifoPath(_ id: String) -> String { directory(id) + "/exec.fifo" }

    /// Container ids: 1 to 1024 characters of `[A-Za-z0-9_.+-]`, not `.` or `..`, no `/`.
    /// Ids longer than a file name may be get a digest-named directory (`directoryName`).
    public static func validate(id: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")
        guard !id.isEmpty, id.count <= 1024, id != ".", id != "..", id.allSatisfy({ allowed.contains($0) }) else {
            throw RuntimeError(
                .invalidID,
                "invalid container id \"\(id)\": use 1-1024 characters of [A-Za-z0-9_.+-], not \".\" or \"..\"")
        }
    }

    /// Takes the store-wide lock (serialises create/delete of the same id).
    package func lock() throws -> FileLock {
        try Files.makeDirectories(root, mode: 0o700)
        return try FileLock(path: root + "/.lock")
    }

    public func load(_ id: String) throws -> ContainerState {
        try Self.validate(id: id)
        let path = statePath(id)
        guard Files.exists(path) else {
            throw RuntimeError.containerNotFound(id)
        }
        let bytes = try Files.read(path)
        if let state = Self.lastLoaded.withLock({ $0?.path == path && $0?.bytes == bytes ? $0?.state : nil }) {
            return state
        }
        do {
            let state = try JSONDecoder().decode(ContainerState.self, from: Data(bytes))
            Self.lastLoaded.withLock { $0 = (path, bytes, state) }
            return state
        } catch {
            throw RuntimeError(.corruptState, "\(path): corrupt state: \(error)", operation: "read state", cause: error)
        }
    }

    /// The last state this process decoded or saved, with the exact bytes it came from: a verb that
    /// loads the same state.json again (`run`: start, state, wait, delete) reads the file each
    /// time but decodes it once. Equal bytes decode to the same state, so a file rewritten
    /// since is decoded anew. One entry, so a long-lived process (the daemon) holds one state.
    /// The spec in it (linux.seccomp's rules above all) made these decodes ~18% of a `run`'s
    /// CPU with the default profile (issue 17).
    private static let lastLoaded = Mutex<(path: String, bytes: [UInt8], state: ContainerState)?>(nil)

    /// Records a container being created (`<dir>/creating.json`): who creates it and the
    /// cgroup it takes, so that after a create killed half-way `list`, `state`, `delete`, a
    /// new `create` of the id and `gc` know the directory and what to undo. Written as soon as
    /// the directory exists (under the store lock) and again once the cgroup is made.
    ///
    /// Like `save`, without fsync(2).
    func saveCreating(_ record: CreatingRecord) throws {
        try Files.writeAtomically(creatingPath(record.id), Array(try JSONEncoder().encode(record)), durable: false)
    }

    func creatingPath(_ id: String) -> String { directory(id) + "/creating.json" }

    /// The record of a half-made container: a directory without `state.json`. A directory with
    /// neither file (a creator killed between its mkdir and the record, or a record from before
    /// creators were recorded: only a cgroup) gives a record without creator, which counts as dead.
    public func loadCreating(id: String) -> CreatingRecord? {
        let dir = directory(id)
        guard Files.isDirectory(dir), !Files.exists(statePath(id)) else { return nil }
        guard let bytes = try? Files.read(creatingPath(id)) else { return CreatingRecord(id: id) }
        if let record = try? JSONDecoder().decode(CreatingRecord.self, from: Data(bytes)), record.id == id {
            return record
        }
        return CreatingRecord(id: id, cgroup: try? JSONDecoder().decode(Cgroup.self, from: Data(bytes)))
    }

    package func save(_ state: ContainerState) throws {
        let data = try Self.encode(state)
        // Not fsync'd (runc's saveState does not sync either): a container's state means
        // nothing after a host crash, its processes and cgroups are gone, and the default root
        // (/run) is a tmpfs. rename(2) keeps it whole for readers and a killed runtime. On a
        // disk root each fsync cost 2-50 ms of every create on this loaded host (issue 17).
        let bytes = Array(data)
        try Files.writeAtomically(statePath(state.id), bytes, durable: false)
        // This process's next load of these bytes (`run`: start, wait, delete) needs no
        // decode: the state decodes to itself. Checked on every save in debug builds, which
        // is what the tests run.
        #if DEBUG
            let decoded = try JSONDecoder().decode(ContainerState.self, from: data)
            precondition(decoded == state, "state.json of \(state.id) does not decode to the state saved")
        #endif
        Self.lastLoaded.withLock { $0 = (statePath(state.id), bytes, state) }
    }

    /// state.json's bytes. The spec, most of them (linux.seccomp's ~350 rules with the
    /// default profile), is the config.json it was decoded from, copied as it is when the
    /// create left it unchanged (`BundleSpec.bytes(decodingTo:)`): the state is encoded with a
    /// placeholder spec whose encoding is then replaced by those bytes, a JSON object that
    /// decodes to the same spec. Otherwise the spec is encoded like the rest.
    /// - Throws: the encoder's error.
    static func encode(_ state: ContainerState) throws -> Data {
        try BundleSpec.encode(state, spec: \.spec, raw: BundleSpec.bytes(decodingTo: state.spec))
    }

    /// Ids of created containers (those with `state.json`).
    public func ids() -> [String] {
        entries().filter { Files.exists(statePath($0)) }
    }

    /// Every container directory under `root`: created ones and half-made ones.
    public func entries() -> [String] {
        var out: [String] = []
        for name in Files.entries(root) ?? [] {
            if name.hasPrefix("@") {
                // A long id: its directory name is a digest; the id is in state.json, or in
                // creating.json while it is half-made.
                struct Named: Decodable { var id: String }
                for file in ["/state.json", "/creating.json"] {
                    if let bytes = try? Files.read(root + "/" + name + file),
                        let named = try? JSONDecoder().decode(Named.self, from: Data(bytes)),
                        Self.directoryName(named.id) == name
                    {
                        out.append(named.id)
                        break
                    }
                }
            } else if !name.hasPrefix("."), (try? Self.validate(id: name)) != nil, Files.isDirectory(directory(name)) {
                out.append(name)
            }
        }
        return out.sorted()
    }

    /// Derives the status from the live process, guarding against pid reuse, the exec FIFO
    /// and the container's own cgroup: what every backend's status starts from
    /// (`RuntimeBackend.status`; `ContainerRuntime.status(of:)` asks the container's backend).
    public func status(of state: ContainerState) -> Status {
        guard let stat = ProcStat.read(pid: state.pid), stat.startTime == state.startTime, stat.state != "Z",
            stat.state != "X"
        else {
            return .stopped
        }
        if Files.exists(fifoPath(state.id)) { return .created }
        return (try? state.cgroup.isFrozen()) == true ? .paused : .running
    }
}
