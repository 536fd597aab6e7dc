/// `safespace audit tail`: the last records of safespaced's audit log, and with --follow the
/// records as they are appended. Reads the log file itself (root, or whoever may read it):
/// the log holds every user's actions, so it is not served to the daemon's other callers.
import ArgumentParser
import Foundation
import Glibc

struct AuditTailCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Print the last records of an audit log (--follow: and new ones as they come).",
        discussion: """
            Reads the file (mode 0600 root: run as root). --format table prints TIME, SEQ, TYPE, \
            SANDBOX, UID, OUTCOME and the record's own fields as name=value; --format json prints \
            the lines as written (JSON lines, one record each). --follow keeps reading until \
            interrupted, and starts over at the top of a new file when the log is replaced or \
            truncated (logrotate). The chain is not checked here: `safespace audit verify` does.
            """)

    @Argument(help: "The audit log (default /var/log/safespace/audit.jsonl, the daemon's audit.path).")
    var file: String = "/var/log/safespace/audit.jsonl"

    @Option(name: [.customShort("n"), .long], help: "How many of the last records to print first.")
    var lines: Int = 10

    @Flag(name: [.customShort("f"), .long], help: "Keep printing records as they are appended.")
    var follow = false

    @Option(help: "table, or json (the log's lines as written).")
    var format: OutputFormat = .table

    func validate() throws {
        if lines < 0 { throw ValidationError("--lines: expected 0 or more, got \(lines)") }
    }

    func run() throws {
        var log = try LogFile(path: file)
        let last = try log.lastLines(lines)
        var printer = RecordPrinter(format: format)
        printer.print(last)
        guard follow else { return }
        while true {
            // Out as soon as printed, also into a pipe (fflush(NULL): every output stream).
            fflush(nil)
            let new = try log.appendedLines()
            printer.print(new)
            if new.isEmpty { usleep(200_000) }
        }
    }

    /// An open log: reading its end, then what is appended after.
    struct LogFile {
        let path: String
        var fd: Int32
        var inode: ino_t
        /// Where the next unread byte is.
        var offset: off_t = 0
        /// A line whose newline has not been written yet.
        var partial: [UInt8] = []

        init(path: String) throws {
            self.path = path
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw CLIError(.localFile, "\(path): cannot open: \(lastError())") }
            var st = stat()
            fstat(fd, &st)
            inode = st.st_ino
        }

        /// The last `count` complete lines (a line still being written, without its newline,
        /// is not a record yet), found by reading backwards from the end in 64 KiB blocks; the
        /// offset is left after the last complete line.
        mutating func lastLines(_ count: Int) throws -> [[UInt8]] {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw CLIError(.localFile, "\(path): fstat: \(lastError())") }
            var end: off_t = 0
            var start: off_t = 0
            var endFound = false
            var newlines = 0
            var position = st.st_size
            scan: while position > 0 {
                let from = max(0, position - 65536)
                let block = try read(from, Int(position - from))
                for i in stride(from: block.count - 1, through: 0, by: -1) where block[i] == 0x0A {
                    let at = from + off_t(i)
                    if !endFound {
                        end = at + 1
                        endFound = true
                        if count == 0 { break scan }
                        continue
                    }
                    newlines += 1
                    if newlines == count {
                        start = at + 1
                        break scan
                    }
                }
                position = from
            }
            offset = end
            partial = []
            guard count > 0, end > start else { return [] }
            let text = try read(start, Int(end - start))
            return Array(text.split(separator: 0x0A).map(Array.init).suffix(count))
        }

        private func read(_ from: off_t, _ count: Int) throws -> [UInt8] {
            var block = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = block.withUnsafeMutableBytes {
                    pread(fd, $0.baseAddress! + done, count - done, from + off_t(done))
                }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw CLIError(.localFile, "\(path): read: \(lastError())") }
                done += n
            }
            return block
        }

        /// The complete lines appended since the last read; a replaced or truncated file is
        /// read again from its start.
        mutating func appendedLines() throws -> [[UInt8]] {
            var now = stat()
            if stat(path, &now) == 0, now.st_ino != inode {
                let reopened = open(path, O_RDONLY | O_CLOEXEC)
                if reopened >= 0 {
                    // What the old file still had after the last read first.
                    var out = try readAppended()
                    close(fd)
                    fd = reopened
                    inode = now.st_ino
                    offset = 0
                    partial = []
                    out += try readAppended()
                    return out
                }
            }
            var st = stat()
            if fstat(fd, &st) == 0, st.st_size < offset {
                offset = 0
                partial = []
            }
            return try readAppended()
        }

        private mutating func readAppended() throws -> [[UInt8]] {
            var out: [[UInt8]] = []
            var block = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw CLIError(.localFile, "\(path): read: \(lastError())") }
                if n == 0 { return out }
                offset += off_t(n)
                partial += block[..<n]
                while let newline = partial.firstIndex(of: 0x0A) {
                    let line = Array(partial[..<newline])
                    partial.removeSubrange(...newline)
                    if !line.isEmpty { out.append(line) }
                }
            }
        }
    }

    /// Prints records as table rows (the header once) or as their lines.
    struct RecordPrinter {
        let format: OutputFormat
        var headerPrinted = false

        init(format: OutputFormat) { self.format = format }

        static let header = ["TIME", "SEQ", "TYPE", "SANDBOX", "UID", "OUTCOME", "FIELDS"]
        /// Column widths of the table, fixed so that followed rows line up with the first.
        static let widths = [24, 6, 16, 20, 5, 7]

        mutating func print(_ lines: [[UInt8]]) {
            switch format {
            case .json:
                for line in lines { Swift.print(String(decoding: line, as: UTF8.self)) }
            case .table:
                if !headerPrinted {
                    Swift.print(Self.row(Self.header))
                    headerPrinted = true
                }
                for line in lines { Swift.print(Self.row(Self.cells(line))) }
            }
        }

        static func row(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                column < widths.count
                    ? cell.padding(toLength: max(widths[column], cell.count), withPad: " ", startingAt: 0)
                    : cell
            }.joined(separator: "  ")
        }

        /// A record's cells; a line that is not a JSON object is shown as it is, marked.
        static func cells(_ line: [UInt8]) -> [String] {
            guard let record = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                return ["?", "?", "(not a record)", "", "", "", String(decoding: line, as: UTF8.self)]
            }
            let caller = record["caller"] as? [String: Any]
            let own: Set<String> = ["time", "seq", "type", "sandbox", "caller", "outcome", "prev"]
            let fields = record.keys.filter { !own.contains($0) }.sorted().map { name -> String in
                let value = record[name]!
                if let text = value as? String { return "\(name)=\(text)" }
                if let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]) {
                    return "\(name)=\(String(decoding: data, as: UTF8.self))"
                }
                return "\(name)=?"
            }
            return [
                record["time"] as? String ?? "", (record["seq"] as? NSNumber).map { "\($0)" } ?? "",
                record["type"] as? String ?? "", record["sandbox"] as? String ?? "-",
                (caller?["uid"] as? NSNumber).map { "\($0)" } ?? "-", record["outcome"] as? String ?? "",
                fields.joined(separator: " "),
            ]
        }
    }
}
