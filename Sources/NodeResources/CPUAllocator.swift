#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import LinuxKernel

/// Whole CPUs given to one pinned sandbox alone (`cpuPinning: true`), recorded in a JSON file
/// under an exclusive flock(2), so two pinned sandboxes never share a CPU, whichever process
/// (the CLI, the daemon) creates them.
///
/// The file lives in /run (default `/run/safespace-cpus.json`): it goes with a reboot, as the
/// sandboxes do. An allocation belongs to the process that made it (the holder: `safespace
/// run`, later the daemon; pid + start time, so a reused pid does not count). It is released
/// by `release` (on delete) or, once the holder is dead, reclaimed: the holder's sandbox is
/// torn down first (`GarbageCollector.reclaimCPUHolders` in Runtime, which `safespace run`
/// calls before it allocates, and `safespace gc`), since its workload may still run on the
/// CPUs; `allocate` itself drops an allocation of a dead holder only once no container
/// directory `<runtimeRoot>/<id>` is left.
public struct CPUAllocator: Sendable {
    public static let defaultPath = "/run/safespace-cpus.json"

    /// One sandbox's CPUs and who holds them.
    public struct Allocation: Codable, Sendable, Equatable {
        public var cpus: [Int]
        /// The runtime's `--root`: the sandbox's container is `<runtimeRoot>/<id>`.
        public var runtimeRoot: String
        public var holderPid: Int32
        /// /proc/<pid>/stat field 22 of the holder when it allocated.
        public var holderStartTime: UInt64
        /// The holder's record of the sandbox (`safespace run`'s bundle directory, which holds
        /// its lease), to tear the whole sandbox down once the holder is dead.
        public var lease: String?

        public var holder: ProcessIdentity { ProcessIdentity(pid: holderPid, startTime: holderStartTime) }
    }

    struct File: Codable {
        var allocations: [String: Allocation] = [:]
    }

    public let path: String
    /// The CPUs that may be pinned, ascending.
    public let pool: [Int]

    /// - Parameters:
    ///   - path: the allocation file (its lock is `path + ".lock"`).
    ///   - pool: CPUs that may be pinned; default: the online CPUs
    ///     (/sys/devices/system/cpu/online) less `reserved`.
    ///   - reserved: CPUs never pinned (e.g. `[0]` for the node's own work).
    public init(path: String = defaultPath, pool: [Int]? = nil, reserved: Set<Int> = []) {
        self.path = path
        let online = pool ?? CPUList.parse((try? Self.readText("/sys/devices/system/cpu/online")) ?? "0") ?? [0]
        self.pool = online.filter { !reserved.contains($0) }.sorted()
    }

    /// Allocates `count` CPUs to sandbox `id`, the lowest free ones; the same `id` allocating
    /// again gets what it holds when the count matches and its holder lives.
    /// - Throws: `ResourceError` naming `spec.resources.cpu` when fewer than `count` CPUs are
    ///   free (the message lists who holds them), or an I/O error on the file.
    ///   `lease`: see `Allocation.lease`.
    public func allocate(sandbox id: String, count: Int, runtimeRoot: String, lease: String? = nil, field: String = "spec.resources.cpu") throws(ResourceError) -> [Int] {
        try withLockedFile { file throws(ResourceError) in
            prune(&file)
            if let mine = file.allocations[id] {
                if mine.cpus.count == count, mine.holder.isAlive { return mine.cpus }
                // A dead holder's CPUs are not handed on under its record: the new holder's own.
                file.allocations[id] = nil
            }
            let taken = Set(file.allocations.values.flatMap(\.cpus))
            let free = pool.filter { !taken.contains($0) }
            guard count > 0, free.count >= count else {
                let holders = file.allocations.sorted { $0.key < $1.key }.map { "\($0.key): \(CPUList.format($0.value.cpus))" }
                throw ResourceError(
                    .exhausted, field: field,
                    "cpuPinning: \(count) whole CPU(s) asked for, \(free.count) free of \(pool.count) pinnable (\(CPUList.format(pool)))\(holders.isEmpty ? "" : "; pinned: " + holders.joined(separator: ", "))")
            }
            let cpus = Array(free.prefix(count))
            let me = ProcessIdentity.current()
            file.allocations[id] = Allocation(
                cpus: cpus, runtimeRoot: runtimeRoot, holderPid: me.pid, holderStartTime: me.startTime, lease: lease)
            return cpus
        }
    }

    /// Releases sandbox `id`'s CPUs (delete). Releasing what is not held is not an error.
    public func release(sandbox id: String) throws(ResourceError) {
        try withLockedFile { file throws(ResourceError) in
            file.allocations[id] = nil
            prune(&file)
        }
    }

    /// Releases sandbox `id`'s CPUs only while `holder` holds them: reclaiming a dead holder's
    /// sandbox must not free what a new holder of the same name took since.
    public func release(sandbox id: String, heldBy holder: ProcessIdentity) throws(ResourceError) {
        try withLockedFile { file throws(ResourceError) in
            if file.allocations[id]?.holder == holder { file.allocations[id] = nil }
            prune(&file)
        }
    }

    /// Allocations whose holder is dead, by sandbox id: what `GarbageCollector` reclaims.
    public func deadHolders() throws(ResourceError) -> [String: Allocation] {
        try withLockedFile { file throws(ResourceError) in
            file.allocations.filter { !$0.value.holder.isAlive }
        }
    }

    /// The live allocations (stale ones are dropped first).
    public func allocations() throws(ResourceError) -> [String: Allocation] {
        try withLockedFile { file throws(ResourceError) in
            prune(&file)
            return file.allocations
        }
    }

    /// Drops allocations whose holder is dead and whose container is gone: no directory
    /// `<runtimeRoot>/<id>` (created or half-made) that could still run on the CPUs.
    func prune(_ file: inout File) {
        file.allocations = file.allocations.filter { id, a in
            a.holder.isAlive || access("\(a.runtimeRoot)/\(id)", F_OK) == 0
        }
    }

    /// Runs `body` on the file's contents under an exclusive lock, then writes them back
    /// atomically (temp file + rename) when they changed.
    func withLockedFile<T>(_ body: (inout File) throws(ResourceError) -> T) throws(ResourceError) -> T {
        let dir = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !dir.isEmpty { mkdir(dir, 0o755) }
        let lockFd = open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFd >= 0 else { throw ResourceError(.failed, field: "cpuPinning", "open \(path).lock: \(Self.errorText())", operation: "open", errno: errno) }
        defer { close(lockFd) }
        while flock(lockFd, LOCK_EX) != 0 {
            if errno != EINTR { throw ResourceError(.failed, field: "cpuPinning", "flock \(path).lock: \(Self.errorText())", operation: "flock", errno: errno) }
        }
        var file = File()
        if let text = try? Self.readText(path), !text.isEmpty {
            do { file = try JSONDecoder().decode(File.self, from: Data(text.utf8)) } catch {
                throw ResourceError(.failed, field: "cpuPinning", "\(path) is corrupt (\(error)); remove it only when no pinned sandbox runs")
            }
        }
        let before = file.allocations
        let result = try body(&file)
        if file.allocations != before {
            let data: Data
            do { data = try JSONEncoder().encode(file) } catch { throw ResourceError(.failed, field: "cpuPinning", "encode: \(error)") }
            let tmp = path + ".tmp"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ResourceError(.failed, field: "cpuPinning", "open \(tmp): \(Self.errorText())", operation: "open", errno: errno) }
            let ok = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count } && fsync(fd) == 0
            close(fd)
            guard ok, rename(tmp, path) == 0 else {
                throw ResourceError(.failed, field: "cpuPinning", "write \(path): \(Self.errorText())", operation: "write", errno: errno)
            }
        }
        return result
    }

    static func errorText() -> String { String(cString: strerror(errno)) }

    /// A whole file (`Files.readString`).
    /// - Throws: `ResourceError` naming `path`, with the errno of open(2) or read(2).
    static func readText(_ path: String) throws(ResourceError) -> String {
        do { return try Files.readString(path) } catch {
            let code = (error as? SysError)?.errno ?? EIO
            let operation = (error as? SysError)?.operation ?? "read"
            throw ResourceError(.failed, field: path, "\(operation): \(String(cString: strerror(code)))", operation: operation, errno: code)
        }
    }
}
