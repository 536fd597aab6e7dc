/// The daemon's state on disk: one record per sandbox, `<state-dir>/sandboxes/<name>.json`,
/// written (atomically, fsync'd) before each step that takes node state, so that a daemon
/// killed at any moment is followed by one that knows what to adopt and what to remove.
import Foundation
import Glibc
import LinuxKernel

/// What the daemon knows of one sandbox.
struct SandboxRecord: Codable, Sendable, Equatable {
    enum Phase: String, Codable, Sendable {
        /// Node state is being taken: a daemon that finds this at start removes the sandbox.
        case creating = "Creating"
        /// The container runs and its init owns its node state (lease, CPUs, volume).
        case running = "Running"
        /// Being removed: a daemon that finds this at start finishes the removal.
        case deleting = "Deleting"
    }

    var name: String
    var phase: Phase
    /// The caller that created it (SO_PEERCRED).
    var creatorUID: UInt32
    var creatorPID: Int32
    /// RFC 3339.
    var created: String
    /// `spec.timeoutSeconds`: lifetime; the sandbox is removed once it has run this long.
    var timeoutSeconds: Int?
    /// Seconds since the epoch at which the lifetime ends.
    var expiresAt: Double?
    /// `spec.securityLevel` as applied (standard, high, custom).
    var level: String
    var runtime: String
    var cpuMillis: Int64?
    var memoryBytes: Int64?
    var ephemeralStorageBytes: Int64?
    var writablePaths: [String]
    /// `spec.timeout`: the default limit of one exec, seconds.
    var execTimeoutSeconds: Int?
    /// The Sandbox resource as created (JSON, with the generated name and defaults applied).
    var resource: Data
    /// The sandbox's init once it runs (its identity: a reused pid is not it).
    var initPid: Int32?
    var initStartTime: UInt64?
    /// Host directory of the sandbox's agent (`AgentInstall`); nil: its PID 1 is the idle
    /// shell and every exec is a runtime exec.
    var agentDirectory: String?
    /// Its agent runs a warm Python interpreter (`python.sock`).
    var warmPython: Bool?
    /// The warm pool that made it (WarmPools.swift); nil for a sandbox created on request.
    var pool: String?
    /// A pool sandbox handed to a caller by a claim (its owner is then `creatorUID`); a pool
    /// sandbox not claimed is ready, and no caller may see or touch it.
    var claimed: Bool?
    /// The cgroup's CPU time (ns) when the sandbox was last recycled: its usage is reported
    /// from there (nil: from zero).
    var usageBaseCPUNanoseconds: UInt64?
    /// Recycled on cgroup v2, whose memory peak cannot be reset: the peak is not reported.
    var memoryPeakUnknown: Bool?

    /// A ready sandbox of a warm pool: nobody's yet.
    var isPoolReady: Bool { pool != nil && claimed != true }
}

/// The records under `<state-dir>/sandboxes`.
struct RecordStore: Sendable {
    let directory: String

    init(stateDir: String) throws {
        directory = stateDir + "/sandboxes"
        for dir in [stateDir, directory] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw ConfigError("cannot create the state directory \(dir): \(String(cString: strerror(errno)))")
        }
    }

    func path(_ name: String) -> String { directory + "/" + name + ".json" }

    /// Writes `record` atomically (temp file, rename) and, with `durable` (the default),
    /// durably (fsync before the rename). `durable: false` is for a change that recovery after
    /// a host crash does not depend on: every sandbox's processes are gone then, and the next
    /// daemon removes each sandbox whose init is dead whatever its record says; a daemon
    /// crash (SIGKILL included) loses nothing, since the renamed file is in the page cache.
    func save(_ record: SandboxRecord, durable: Bool = true) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try Files.writeAtomically(
            path(record.name), Array(try encoder.encode(record)), mode: 0o600, durable: durable)
    }

    func remove(_ name: String) {
        unlink(path(name))
    }

    /// Every readable record; unreadable files are returned by name for removal.
    func all() -> (records: [SandboxRecord], unreadable: [String]) {
        var records: [SandboxRecord] = []
        var unreadable: [String] = []
        for entry in Files.entries(directory) ?? [] where entry.hasSuffix(".json") {
            let name = String(entry.dropLast(5))
            if let bytes = try? Files.read(directory + "/" + entry),
                let record = try? JSONDecoder().decode(SandboxRecord.self, from: Data(bytes))
            {
                records.append(record)
            } else {
                unreadable.append(name)
            }
        }
        // Temp files of a write cut short.
        for entry in Files.entries(directory) ?? [] where !entry.hasSuffix(".json") {
            unlink(directory + "/" + entry)
        }
        return (records, unreadable)
    }
}
