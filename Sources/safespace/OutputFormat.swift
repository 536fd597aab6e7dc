/// `--format table|json` of the listing verbs (ps, audit tail, create) and the one table
/// printer they share: a header row, columns two spaces apart, the last column unpadded.
import ArgumentParser

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    /// Aligned columns for people.
    case table
    /// JSON for programs: the API's answer (ps, create) or JSON lines (audit tail).
    case json
}

/// Prints `rows` (the first is the header) as aligned columns.
func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    let widths = header.indices.map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
    for row in rows {
        let cells = row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}
