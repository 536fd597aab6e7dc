import Foundation

/// An offline vulnerability database in the OSV format (Open Source Vulnerability schema,
/// https://ossf.github.io/osv-schema/): a directory of OSV JSON files, one advisory each, as
/// osv.dev exports them (`PyPI/all.zip` unpacked), which the operator updates.
///
/// Only what matches PyPI packages is kept: `affected[]` entries whose `package.ecosystem`
/// is `PyPI`, by `package.name` (PEP 503 normalized). A version is affected when it is in
/// the entry's `versions` list, or within one of its `ranges` of type `ECOSYSTEM` (events
/// `introduced`, `fixed`, `last_affected`, `limit`, evaluated as the schema's "Evaluation"
/// section says, with PEP 440 ordering). Ranges of other types (`GIT`, `SEMVER`) are not
/// PyPI version ranges and are not used. A `withdrawn` advisory is skipped.
public struct OSVDatabase: Sendable {
    public static let defaultDirectory = "/var/lib/safespace/osv"

    /// One advisory as far as PyPI packages go.
    public struct Advisory: Sendable, Equatable {
        public var id: String
        public var aliases: [String]
        public var summary: String
        /// The file it came from.
        public var file: String
        var affected: [Affected]
    }

    struct Affected: Sendable, Equatable {
        /// PEP 503 normalized.
        var name: String
        var versions: [String]
        /// Each range's events in file order: (kind, version text).
        var ranges: [[(String, String)]]

        static func == (a: Affected, b: Affected) -> Bool {
            a.name == b.name && a.versions == b.versions
                && a.ranges.map { $0.map { "\($0.0)=\($0.1)" } } == b.ranges.map { $0.map { "\($0.0)=\($0.1)" } }
        }
    }

    /// Advisories by the normalized names of the packages they affect.
    var byPackage: [String: [Advisory]] = [:]
    /// Files read.
    public private(set) var fileCount = 0

    public init() {}

    /// Reads every `*.json` file under `directory` (subdirectories included).
    /// - Throws: `OSVError` naming a missing directory, or a file that cannot be read or is
    ///   not an OSV advisory (a database that cannot be read entirely gives no assurance).
    public static func load(directory: String) throws(OSVError) -> OSVDatabase {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
        else {
            throw OSVError("\(directory): no advisory database (a directory of OSV JSON files) is there")
        }
        var database = OSVDatabase()
        let files =
            (FileManager.default.enumerator(atPath: directory)?.compactMap { $0 as? String } ?? [])
            .filter { $0.hasSuffix(".json") }.sorted()
        for relative in files {
            let path = directory + "/" + relative
            guard let data = FileManager.default.contents(atPath: path) else {
                throw OSVError("\(path): cannot read")
            }
            try database.add(data: data, file: path)
        }
        return database
    }

    /// Adds the advisory in `data` (one OSV JSON object).
    /// - Throws: `OSVError` naming `file` and what is wrong.
    public mutating func add(data: Data, file: String) throws(OSVError) {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw OSVError("\(file): not a JSON object")
        }
        guard let id = object["id"] as? String, !id.isEmpty else { throw OSVError("\(file): id: missing") }
        fileCount += 1
        if object["withdrawn"] != nil { return }
        var affected: [Affected] = []
        for (i, entry) in ((object["affected"] as? [[String: Any]]) ?? []).enumerated() {
            let package = entry["package"] as? [String: Any] ?? [:]
            guard package["ecosystem"] as? String == "PyPI" else { continue }
            guard let name = package["name"] as? String else {
                throw OSVError("\(file): affected[\(i)].package.name: missing")
            }
            var ranges: [[(String, String)]] = []
            for (j, range) in ((entry["ranges"] as? [[String: Any]]) ?? []).enumerated()
            where range["type"] as? String == "ECOSYSTEM" {
                var events: [(String, String)] = []
                for event in (range["events"] as? [[String: Any]]) ?? [] {
                    for kind in ["introduced", "fixed", "last_affected", "limit"] {
                        if let v = event[kind] as? String { events.append((kind, v)) }
                    }
                }
                if events.isEmpty { throw OSVError("\(file): affected[\(i)].ranges[\(j)].events: none") }
                ranges.append(events)
            }
            affected.append(
                Affected(
                    name: PackagePin.normalize(name), versions: entry["versions"] as? [String] ?? [], ranges: ranges))
        }
        guard !affected.isEmpty else { return }
        let advisory = Advisory(
            id: id, aliases: object["aliases"] as? [String] ?? [], summary: object["summary"] as? String ?? "",
            file: file, affected: affected)
        for name in Set(affected.map(\.name)) { byPackage[name, default: []].append(advisory) }
    }

    /// The advisories affecting `pin`, by id.
    public func advisories(for pin: PackagePin) -> [Advisory] {
        (byPackage[pin.name] ?? []).filter { advisory in
            advisory.affected.contains { $0.name == pin.name && Self.affects($0, pin.version) }
        }.sorted { $0.id < $1.id }
    }

    static func affects(_ entry: Affected, _ version: PEP440Version) -> Bool {
        if entry.versions.contains(where: { PEP440Version($0) == version }) { return true }
        return entry.ranges.contains { inRange($0, version) }
    }

    /// OSV schema "Evaluation": events sorted by version (`introduced: "0"` first); the
    /// version is affected when the last event at or below it is an `introduced` (or it is
    /// equal to a `last_affected`), and it is below every `limit`.
    static func inRange(_ events: [(String, String)], _ version: PEP440Version) -> Bool {
        var limits: [PEP440Version] = []
        var ordered: [(kind: String, at: PEP440Version?)] = []
        for (kind, text) in events {
            if kind == "limit" {
                if text != "*", let v = PEP440Version(text) { limits.append(v) }
                continue
            }
            // "0" is "from the first version": below every version.
            if kind == "introduced" && text == "0" {
                ordered.append((kind, nil))
            } else if let v = PEP440Version(text) {
                ordered.append((kind, v))
            }
        }
        if limits.contains(where: { version >= $0 }) { return false }
        ordered.sort { a, b in
            switch (a.at, b.at) {
            case (nil, _?): return true
            case (_?, nil): return false
            case let (x?, y?): return x < y
            case (nil, nil): return false
            }
        }
        var affected = false
        for event in ordered {
            guard let at = event.at else {
                affected = true  // introduced: "0"
                continue
            }
            switch event.kind {
            case "introduced": if version >= at { affected = true }
            case "fixed": if version >= at { affected = false }
            case "last_affected": if version > at { affected = false }
            default: break
            }
        }
        return affected
    }

    /// The findings for `pins`: each pin's advisories, `waived` when the advisory's id or
    /// one of its aliases is in `waivers`.
    public func scan(_ pins: [PackagePin], waivers: [String]) -> [OSVFinding] {
        let waived = Set(waivers)
        return pins.flatMap { pin in
            advisories(for: pin).map { advisory in
                OSVFinding(
                    package: pin, id: advisory.id, aliases: advisory.aliases, summary: advisory.summary,
                    waived: waived.contains(advisory.id) || advisory.aliases.contains { waived.contains($0) })
            }
        }
    }
}

/// One advisory that affects one package of a pool.
public struct OSVFinding: Sendable, Equatable, CustomStringConvertible {
    public var package: PackagePin
    public var id: String
    public var aliases: [String]
    public var summary: String
    /// Waived by the pool's `spec.waiveAdvisories`.
    public var waived: Bool

    public var description: String {
        "\(package): \(id)\(aliases.isEmpty ? "" : " (\(aliases.joined(separator: ", ")))")"
            + (summary.isEmpty ? "" : ": \(summary)") + (waived ? " [waived]" : "")
    }

    /// The JSON object of the API and the CLI.
    public var json: [String: Any] {
        [
            "package": package.name, "version": package.version.description, "id": id, "aliases": aliases,
            "summary": summary, "waived": waived,
        ]
    }
}

/// An advisory database that cannot be read.
public struct OSVError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
