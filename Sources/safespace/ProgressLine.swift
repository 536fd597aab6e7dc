/// One line on a terminal that shows how long work has been going and what it is doing now
/// (`safespace rootfs build`): `\r` and ESC [ K (ECMA-48 "EL", erase to the end of the line)
/// rewrite it in place; the lines behind it are kept and shown only if the work fails.
import Foundation
import Glibc

final class ProgressLine {
    let title: String
    let start = Date()
    /// The script's last lines, shown when the work fails.
    private(set) var recent: [String] = []
    private var status = ""
    private var finished = false

    init(title: String) {
        self.title = title
        draw()
    }

    /// A line of output: `build-rootfs: [  12s] apt-get update` becomes the status (the
    /// step, without the script's own prefix and clock); other lines are kept only.
    func update(_ line: String) {
        recent.append(line)
        if recent.count > 40 { recent.removeFirst(recent.count - 40) }
        if let step = Self.step(of: line) { status = step }
        draw()  // the clock moves with any output
    }

    /// The step a build-rootfs log line names (`PROG: [NNNNs] text` -> `text`); nil for
    /// another line.
    static func step(of line: String) -> String? {
        guard let open = line.range(of: ": ["),
            let close = line.range(of: "s] ", range: open.upperBound..<line.endIndex)
        else { return nil }
        guard line[open.upperBound..<close.lowerBound].allSatisfy({ $0 == " " || $0.isNumber }) else { return nil }
        return String(line[close.upperBound...])
    }

    /// The line as drawn, cut to `width` columns.
    func text(width: Int) -> String {
        let seconds = Int(Date().timeIntervalSince(start))
        let full = "safespace: \(title) [\(String(format: "%4d", seconds))s] \(status)"
        return full.count > width ? String(full.prefix(max(0, width - 1))) + "…" : full
    }

    private func draw() {
        writeStandardError("\r\u{1B}[K" + text(width: Self.columns() - 1))
    }

    /// Ends the line (once); with `showingRecent`, prints the output kept behind it.
    func finish(showingRecent: Bool = false) {
        guard !finished else { return }
        finished = true
        draw()
        writeStandardError("\n")
        if showingRecent { for line in recent { writeStandardError(line + "\n") } }
    }

    /// The terminal's width (TIOCGWINSZ on stderr), 80 when unknown.
    static func columns() -> Int {
        var size = winsize()
        guard ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }
}
