/// What this node can give one sandbox at most: its CPUs and its RAM. A limit above them is a
/// mistake (`cpu: "100000"` on a 2-CPU node), never a limit: it is refused, naming the field.
public struct NodeCapacity: Sendable, Equatable {
    /// CPUs a sandbox can run on: the online CPUs (/sys/devices/system/cpu/online) this
    /// process may use (`Cpus_allowed_list` of /proc/self/status, its affinity and cpuset).
    public var cpus: Int
    /// Bytes of RAM: `MemTotal` of /proc/meminfo.
    public var memoryBytes: Int64

    public init(cpus: Int, memoryBytes: Int64) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
    }

    /// This node's capacity, read from /sys and /proc.
    /// - Throws: `ResourceError` (field `node`) when those files cannot be read or parsed.
    public static func read() throws(ResourceError) -> NodeCapacity {
        func text(_ path: String) throws(ResourceError) -> String {
            do { return try CPUAllocator.readText(path) } catch {
                throw ResourceError(
                    .failed, field: "node", "cannot read \(path)", operation: "read", errno: error.errno)
            }
        }
        guard let online = CPUList.parse(try text("/sys/devices/system/cpu/online").trimmingWhitespace) else {
            throw ResourceError(.failed, field: "node", "cannot parse /sys/devices/system/cpu/online")
        }
        let status = try text("/proc/self/status")
        let allowedLine = status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
        let allowed =
            allowedLine.flatMap { CPUList.parse(String($0.dropFirst("Cpus_allowed_list:".count)).trimmingWhitespace) }
            ?? online
        let cpus = Set(online).intersection(allowed).count
        let meminfo = try text("/proc/meminfo")
        // "MemTotal:       24576000 kB" (proc(5): kB are KiB).
        guard let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }),
            let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int64($0) })
        else {
            throw ResourceError(.failed, field: "node", "no MemTotal in /proc/meminfo")
        }
        return NodeCapacity(cpus: max(cpus, 1), memoryBytes: kib * 1024)
    }

    /// Refuses a CPU limit above `cpus` or a memory limit above `memoryBytes`.
    /// - Parameters:
    ///   - field: prefix of the field named (`spec.resources` -> `spec.resources.cpu`).
    ///   - source: appended to the message (where the value came from).
    /// - Throws: `ResourceError` naming `<field>.cpu` or `<field>.memory`.
    public func check(cpuMillis: Int64?, memoryBytes memory: Int64?, field: String, source: String = "")
        throws(ResourceError)
    {
        if let millis = cpuMillis, millis > Int64(cpus) * 1000 {
            throw ResourceError(
                .exceedsNode, field: "\(field).cpu",
                "\(Self.formatCPU(millis)) CPUs asked for, but this node has \(cpus) CPU(s) a sandbox can run on; a limit above them can never be given\(source)"
            )
        }
        if let bytes = memory, bytes > memoryBytes {
            throw ResourceError(
                .exceedsNode, field: "\(field).memory",
                "\(bytes) bytes asked for, but this node has \(memoryBytes) bytes of RAM (MemTotal); a limit above it can never be given\(source)"
            )
        }
    }

    /// `1500` -> `1.5`, `2000` -> `2`.
    static func formatCPU(_ millis: Int64) -> String {
        var fraction = String(String(millis % 1000 + 1000).dropFirst())
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return fraction.isEmpty ? "\(millis / 1000)" : "\(millis / 1000).\(fraction)"
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
