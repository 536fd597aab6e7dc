import Glibc

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The limits every sandbox gets where its `spec.resources` names none: node configuration,
/// the `sandboxDefaults` object of `/etc/safespace/runtime.json` (or `$SAFESPACE_RUNTIME_CONFIG`,
/// the file the runtime reads; the runtime ignores this key), every key optional:
///
/// ```json
/// {"sandboxDefaults": {"cpu": "1", "memory": "1Gi", "ephemeralStorage": "1Gi", "pids": 512, "nofile": 512}}
/// ```
///
/// | key | unit | becomes | built-in |
/// |---|---|---|---|
/// | `cpu` | quantity (`"500m"`, `"2"`) | `spec.resources.cpu` when absent: cpu.max | `"1"` |
/// | `memory` | bytes (`"512Mi"`) | `spec.resources.memory` when absent: memory limit, no swap | `"1Gi"` |
/// | `ephemeralStorage` | bytes | `spec.resources.ephemeralStorage` when absent: the one volume holding every writable path and /dev/shm | `"1Gi"` |
/// | `pids` | processes (threads count) | `linux.resources.pids.limit` (pids.max) of every sandbox | 512 |
/// | `nofile` | descriptors | `process.rlimits` RLIMIT_NOFILE soft = hard of every sandbox | 512 |
///
/// pids.max bounds the processes, RLIMIT_NOFILE the descriptors of each: an fd bomb holds at
/// most pids × nofile open files of the host's table (`/proc/sys/fs/file-max`). The memory
/// limit does not bound it (a million files cost a few hundred MiB): with 1024 × 1024 a bomb
/// took 1.04 M of a 2.47 M file table; 512 × 512 bounds it at 262 144.
/// There is no "unlimited": every sandbox has every limit (README, "strict resource limits").
public struct SandboxDefaults: Sendable, Equatable {
    /// `$SAFESPACE_RUNTIME_CONFIG`, else this file: the runtime's configuration file
    /// (Runtime's `RuntimeConfiguration.defaultPath`; Resources does not depend on Runtime).
    public static let defaultPath = "/etc/safespace/runtime.json"
    public static let pathVariable = "SAFESPACE_RUNTIME_CONFIG"
    /// The key of the configuration file this type reads.
    public static let key = "sandboxDefaults"

    /// CPU in thousandths of a CPU (`"1"` = 1000).
    public var cpuMillis: Int64
    public var memoryBytes: Int64
    public var ephemeralStorageBytes: Int64
    /// pids.max.
    public var pidsLimit: Int64
    /// RLIMIT_NOFILE, soft and hard.
    public var nofile: UInt64

    /// The built-in defaults (a node without `sandboxDefaults`).
    public init(
        cpuMillis: Int64 = 1000, memoryBytes: Int64 = 1 << 30, ephemeralStorageBytes: Int64 = 1 << 30,
        pidsLimit: Int64 = SandboxLimits.defaultPidsLimit, nofile: UInt64 = 512
    ) {
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.ephemeralStorageBytes = ephemeralStorageBytes
        self.pidsLimit = pidsLimit
        self.nofile = nofile
    }

    /// The smallest pids.max and RLIMIT_NOFILE a sandbox's init and a shell can work with.
    public static let minimumPids: Int64 = 8
    public static let minimumNofile: UInt64 = 64

    /// Reads `sandboxDefaults` of the node's configuration file; the built-in values for keys
    /// (or a file) that are absent.
    /// - Throws: `ResourceError` naming `sandboxDefaults.<key>` and the file, for an unknown key,
    ///   a value of the wrong type, below the minimum, or not a quantity; or naming the file when
    ///   it is unreadable or not JSON (a missing default file is not an error, a missing
    ///   `$SAFESPACE_RUNTIME_CONFIG` file is).
    public static func load(environment: [String: String] = ProcessInfo.processInfo.environment) throws(ResourceError)
        -> SandboxDefaults
    {
        let explicit = environment[pathVariable].flatMap { $0.isEmpty ? nil : $0 }
        let path = explicit ?? defaultPath
        guard access(path, F_OK) == 0 else {
            if explicit != nil {
                throw ResourceError(.invalidConfiguration, field: pathVariable, "\(path): no such file")
            }
            return SandboxDefaults()
        }
        let text: String
        do { text = try CPUAllocator.readText(path) } catch {
            throw ResourceError(
                .invalidConfiguration, field: key, "\(path): \(String(cString: strerror(error.errno ?? EIO)))",
                operation: "read", errno: error.errno)
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: Data(text.utf8)) } catch {
            throw ResourceError(
                .invalidConfiguration, field: key,
                "\(path): not JSON, or \(key) is not an object such as {\"memory\": \"1Gi\"}")
        }
        return try parse(file.sandboxDefaults?.values ?? [:], source: path)
    }

    /// A value of `sandboxDefaults` as written in JSON.
    public enum Value: Sendable, Equatable {
        case string(String), integer(Int64), other
    }

    /// `sandboxDefaults` decoded (`load` without the file).
    /// - Throws: `ResourceError` naming `sandboxDefaults.<key>` (and `source` in the message).
    public static func parse(_ object: [String: Value], source: String = defaultPath) throws(ResourceError)
        -> SandboxDefaults
    {
        var out = SandboxDefaults()
        let known = ["cpu", "memory", "ephemeralStorage", "pids", "nofile"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw ResourceError(
                .invalidConfiguration, field: "\(key).\(unknown)",
                "unknown key (in \(source)); known: \(known.joined(separator: ", "))")
        }
        func text(_ name: String) throws(ResourceError) -> String? {
            switch object[name] {
            case nil: return nil
            case .string(let s)?: return s
            default:
                throw ResourceError(
                    .invalidConfiguration, field: "\(key).\(name)",
                    "must be a quantity string such as \"1Gi\" or \"500m\" (in \(source))")
            }
        }
        func integer(_ name: String, minimum: Int64) throws(ResourceError) -> Int64? {
            switch object[name] {
            case nil: return nil
            case .integer(let n)?:
                guard n >= minimum else {
                    throw ResourceError(
                        .invalidConfiguration, field: "\(key).\(name)",
                        "\(n) is below the minimum of \(minimum) (in \(source))")
                }
                return n
            default:
                throw ResourceError(
                    .invalidConfiguration, field: "\(key).\(name)", "must be a whole number (in \(source))")
            }
        }
        // The same quantities and minimums as spec.resources (SandboxLimits.parse).
        let parsed: SandboxLimits
        do {
            parsed = try SandboxLimits.parse(
                cpu: try text("cpu"), memory: try text("memory"), ephemeralStorage: try text("ephemeralStorage"),
                cpuPinning: nil, field: key)
        } catch {
            throw ResourceError(.invalidConfiguration, field: error.field ?? key, "\(error.message) (in \(source))")
        }
        if let v = parsed.cpuMillis { out.cpuMillis = v }
        if let v = parsed.memoryBytes { out.memoryBytes = v }
        if let v = parsed.ephemeralStorageBytes { out.ephemeralStorageBytes = v }
        if let v = try integer("pids", minimum: minimumPids) { out.pidsLimit = v }
        if let v = try integer("nofile", minimum: Int64(minimumNofile)) { out.nofile = UInt64(v) }
        return out
    }

    /// The configuration file as far as this type reads it.
    struct File: Decodable {
        var sandboxDefaults: Object?
    }

    /// A JSON object whose values are kept as `Value` (every key, so unknown ones are refused).
    struct Object: Decodable {
        var values: [String: Value] = [:]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            for k in c.allKeys {
                if let s = try? c.decode(String.self, forKey: k) {
                    values[k.stringValue] = .string(s)
                } else if let n = try? c.decode(Int64.self, forKey: k) {
                    values[k.stringValue] = .integer(n)
                } else {
                    values[k.stringValue] = .other
                }
            }
        }
    }

    /// Refuses defaults the node can never give (`NodeCapacity.check`), naming
    /// `sandboxDefaults.cpu` / `.memory`.
    public func check(against capacity: NodeCapacity) throws(ResourceError) {
        try capacity.check(
            cpuMillis: cpuMillis, memoryBytes: memoryBytes, field: Self.key,
            source: " (the node's \(Self.key), or the built-in value: set it in the runtime configuration file)")
    }
}

extension SandboxLimits {
    /// These limits with every absent value taken from `defaults`: what the sandbox runs with.
    public func filled(with defaults: SandboxDefaults) -> SandboxLimits {
        var out = self
        out.cpuMillis = cpuMillis ?? defaults.cpuMillis
        out.memoryBytes = memoryBytes ?? defaults.memoryBytes
        out.ephemeralStorageBytes = ephemeralStorageBytes ?? defaults.ephemeralStorageBytes
        return out
    }
}
