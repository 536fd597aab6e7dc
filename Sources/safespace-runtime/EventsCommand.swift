import ArgumentParser
import Glibc
import Runtime

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// runc's `events`: one JSON object per line, `{"type":"stats","id":…,"data":{…}}` every
/// --interval and `{"type":"oom","id":…}` when the OOM killer strikes, until the container stops.
struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Display container events: OOM kills and resource stats.")
    @OptionGroup var globals: GlobalOptions
    @Option(help: "Stats interval, e.g. 5s, 500ms, 1m.") var interval: String = "5s"
    @Flag(help: "Print the stats once and exit.") var stats = false
    @Argument var id: String

    func run() throws {
        let seconds = try Self.duration(interval)
        try perform(globals) { rt in
            try rt.events(id: id, interval: seconds, statsOnce: stats) { event in
                // One write(2) per line, unbuffered: a consumer sees each event as it happens.
                // runc's layout: members in its order, Go's escaping (GoJSON).
                let line = try GoJSON.marshal(event) + [UInt8(ascii: "\n")]
                _ = line.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress, $0.count) }
            }
        }
    }

    /// A Go-style duration: a number with ms, s, m or h.
    static func duration(_ text: String) throws -> Double {
        for (suffix, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where text.hasSuffix(suffix) {
            if let v = Double(text.dropLast(suffix.count)), v > 0 { return v * scale }
        }
        throw ValidationError("--interval: \"\(text)\" is not a duration such as 5s or 500ms")
    }
}
