import Glibc

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The node's leases: which process holds which piece of a shared node resource (pinned CPUs,
/// host uid/gid ranges), recorded on disk under one lock so that every process of the node
/// (`safespace-runtime`, `safespace run`, the daemon) sees the same, and so that what a crashed
/// holder took can be recovered.
///
/// On disk:
/// ```
/// <directory>/.lock                 flock(2), held exclusively for each `withLock`
/// <directory>/<kind>/<key>.json     one lease: {"key", "holder": {"pid", "startTime"}, "created", "record"}
/// ```
/// Records are written atomically (`Files.writeAtomically`: temp file, fsync, rename(2)); the
/// directories are 0700, the records 0600. The default directory is on /run: leases end at
/// reboot, as the sandboxes holding them do.
///
/// The one rule of crash recovery: every lease names its holder (`ProcessIdentity`, pid + start
/// time, so a reused pid is not the holder). A lease whose holder is dead is reclaimable once
/// nothing uses the resource any more; what "uses" means is the kind's (`reclaim(_:keeping:)`):
/// a CPU is used while its container directory exists, a uid range while its container has state.
public struct LeaseStore: Sendable, Equatable {
    public static let defaultDirectory = "/run/safespace-leases"

    /// A kind of resource: the records of a kind live in `<directory>/<name>/`.
    public struct Kind<Record: Codable & Sendable & Equatable>: Sendable {
        /// The subdirectory; a file name (no `/`, not starting with `.`).
        public let name: String
        public init(_ name: String) { self.name = name }
    }

    /// One lease of a resource of some kind.
    public struct Lease<Record: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
        /// The resource's name in its kind (a sandbox id, a range index); the file's name.
        public var key: String
        /// The process that took it.
        public var holder: ProcessIdentity
        /// RFC 3339, when it was taken.
        public var created: String
        /// What the kind records about the resource.
        public var record: Record

        public init(key: String, holder: ProcessIdentity = .current(), created: String = rfc3339Now(), record: Record) {
            self.key = key
            self.holder = holder
            self.created = created
            self.record = record
        }
    }

    public let directory: String

    /// - Parameter directory: created (0700) by the first `withLock`.
    public init(directory: String = LeaseStore.defaultDirectory) {
        self.directory = directory
    }

    var lockPath: String { directory + "/.lock" }

    /// Runs `body` with the store locked (flock(2) on `<directory>/.lock`, EINTR retried), so
    /// that no other process or thread reads or changes a lease meanwhile.
    /// - Throws: `SysError` when the directory or the lock cannot be made; what `body` throws.
    public func withLock<T>(_ body: (Transaction) throws -> T) throws -> T {
        try Files.makeDirectories(directory, mode: 0o700)
        let lock = try FileLock(path: lockPath)
        defer { lock.release() }
        return try body(Transaction(store: self))
    }

    /// Like `withLock`, but does nothing and returns nil when the store does not exist (a read
    /// or a release that must not create it).
    public func withLockIfExists<T>(_ body: (Transaction) throws -> T) throws -> T? {
        guard Files.exists(directory) else { return nil }
        return try withLock(body)
    }

    /// The leases of the store, read and written while its lock is held: valid only inside the
    /// `withLock` that made it.
    public struct Transaction {
        public let store: LeaseStore

        func directory<R>(_ kind: Kind<R>) -> String { store.directory + "/" + kind.name }

        func path<R>(_ kind: Kind<R>, _ key: String) -> String { directory(kind) + "/" + key + ".json" }

        /// Every lease of `kind`, by key. A `.json.tmp` left by a writer killed before its rename
        /// is removed (writers hold the lock this transaction holds, so its writer is gone).
        /// - Throws: `SysError` when the directory cannot be read; `SysError` `.corruptFile` naming a file
        ///   that is not a lease of `kind` (it is left in place: it may stand for a resource in
        ///   use, so remove it by hand once nothing uses that).
        public func leases<R>(_ kind: Kind<R>) throws -> [Lease<R>] {
            let dir = directory(kind)
            guard let names = Files.entries(dir) else {
                if errno == ENOENT { return [] }
                throw SysError("opendir", path: dir)
            }
            var out: [Lease<R>] = []
            for name in names {
                if name.hasSuffix(".json.tmp") {
                    unlink(dir + "/" + name)
                    continue
                }
                guard name.hasSuffix(".json"), !name.hasPrefix(".") else { continue }
                out.append(try read(kind, path: dir + "/" + name, key: String(name.dropLast(5))))
            }
            return out.sorted { $0.key < $1.key }
        }

        /// The lease of `key`, if there is one.
        /// - Throws: as `leases`.
        public func lease<R>(_ kind: Kind<R>, key: String) throws -> Lease<R>? {
            try LeaseStore.validate(key: key)
            let file = path(kind, key)
            guard Files.exists(file) else { return nil }
            return try read(kind, path: file, key: key)
        }

        private func read<R>(_ kind: Kind<R>, path: String, key: String) throws -> Lease<R> {
            let bytes = try Files.read(path)
            guard let lease = try? JSONDecoder().decode(Lease<R>.self, from: Data(bytes)), lease.key == key else {
                throw SysError(
                    .corruptFile, "\(path) is not a \(kind.name) lease; remove it once no sandbox uses what it held",
                    operation: "read lease", path: path)
            }
            return lease
        }

        /// Records `lease` (replacing the lease of its key).
        /// - Throws: `SysError` `.invalidValue` for a key that cannot be a file name; `SysError` from the write.
        public func write<R>(_ kind: Kind<R>, _ lease: Lease<R>) throws {
            try LeaseStore.validate(key: lease.key)
            try Files.makeDirectories(directory(kind), mode: 0o700)
            try Files.writeAtomically(path(kind, lease.key), Array(try JSONEncoder().encode(lease)), mode: 0o600)
        }

        /// Removes the lease of `key`; nothing when there is none.
        public func remove<R>(_ kind: Kind<R>, key: String) throws {
            try LeaseStore.validate(key: key)
            let file = path(kind, key)
            if unlink(file) != 0 && errno != ENOENT { throw SysError("unlink", path: file) }
        }

        /// Removes the leases of `kind` whose holder is dead (`ProcessIdentity.isAlive`) and that
        /// `inUse` does not keep: what a crashed holder left behind.
        /// - Returns: the leases removed.
        @discardableResult
        public func reclaim<R>(_ kind: Kind<R>, keeping inUse: (Lease<R>) -> Bool) throws -> [Lease<R>] {
            var reclaimed: [Lease<R>] = []
            for lease in try leases(kind) where !lease.holder.isAlive && !inUse(lease) {
                try remove(kind, key: lease.key)
                reclaimed.append(lease)
            }
            return reclaimed
        }
    }

    /// A key names a file in the kind's directory: not empty, no `/` or NUL, no leading `.`.
    static func validate(key: String) throws {
        if key.isEmpty || key.hasPrefix(".") || key.contains("/") || key.contains("\0") {
            throw SysError(.invalidValue, "lease key \"\(key)\" cannot name a file")
        }
    }
}
