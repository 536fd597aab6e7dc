/// `safespace stats NAME`: a running sandbox's resource usage from its cgroup.
import ArgumentParser
import Cgroups
import Foundation
import Glibc
import SandboxHosting

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Show a sandbox's resource usage: CPU time, memory now and peak, pids, I/O bytes.")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    @Option(help: "State directory of the runtime.")
    var root: String = "/run/safespace"

    @Option(help: "table or json.")
    var format: Format = .table

    @Argument(help: "The sandbox's name.")
    var name: String

    /// The numbers shown, as JSON keys (bytes, nanoseconds).
    struct Summary: Codable, Equatable {
        var name: String
        var cpuNanoseconds: UInt64?
        var memoryBytes: UInt64?
        var memoryPeakBytes: UInt64?
        var memoryLimitBytes: UInt64?
        var pids: UInt64?
        var pidsLimit: UInt64?
        var ioReadBytes: UInt64
        var ioWriteBytes: UInt64
        var oomKills: UInt64?

        init(name: String, stats s: CgroupStats) {
            self.name = name
            cpuNanoseconds = s.cpu.usage.total
            memoryBytes = s.memory.usage.usage
            memoryPeakBytes = s.memory.usage.max
            let limit = s.memory.usage.limit
            memoryLimitBytes = limit == 0 || limit >= UInt64(Int64.max) ? nil : limit
            pids = s.pids.current
            pidsLimit = s.pids.limit
            let io = s.blkio.ioServiceBytesRecursive ?? []
            func sum(_ op: String) -> UInt64 {
                io.filter { $0.op?.lowercased() == op }.reduce(0) { $0 + ($1.value ?? 0) }
            }
            ioReadBytes = sum("read")
            ioWriteBytes = sum("write")
            oomKills = s.memory.eventCount?.oomKill
        }
    }

    func run() throws {
        let stats: CgroupStats
        do {
            stats = try SandboxHost(configuration: .init(stateRoot: root)).stats(id: name)
        } catch {
            Diagnostics.error("stats \(name): \(error)")
            throw ExitCode(Diagnostics.setupFailure)
        }
        let summary = Summary(name: name, stats: stats)
        switch format {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        case .table:
            func opt(_ v: UInt64?, _ f: (UInt64) -> String) -> String { v.map(f) ?? "-" }
            let rows: [(String, String)] = [
                ("NAME", name),
                ("CPU", opt(summary.cpuNanoseconds) { String(format: "%.3fs", Double($0) / 1e9) }),
                ("MEMORY", opt(summary.memoryBytes, Self.bytes) + " / " + opt(summary.memoryLimitBytes, Self.bytes)),
                ("MEMORY PEAK", opt(summary.memoryPeakBytes, Self.bytes)),
                ("PIDS", opt(summary.pids, String.init) + " / " + opt(summary.pidsLimit, String.init)),
                ("IO READ", Self.bytes(summary.ioReadBytes)),
                ("IO WRITE", Self.bytes(summary.ioWriteBytes)),
                ("OOM KILLS", opt(summary.oomKills, String.init)),
            ]
            for (key, value) in rows { print(key.padding(toLength: 12, withPad: " ", startingAt: 0) + value) }
        }
    }

    /// 1.5MiB, 12.0KiB, 512B.
    static func bytes(_ n: UInt64) -> String {
        var v = Double(n)
        var unit = 0
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        while v >= 1024 && unit < units.count - 1 {
            v /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n)B" : String(format: "%.1f%@", v, units[unit])
    }
}
