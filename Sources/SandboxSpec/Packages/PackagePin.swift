import Foundation

/// One pinned Python package of a pool's `spec.preloadPackages`: `name==version`, exactly.
///
/// Names follow PEP 508 ("Names": ASCII letters, digits, `.`, `-`, `_`, starting and ending
/// with a letter or digit) and are compared in their PEP 503 normalized form ("Normalized
/// Names": lowercase, runs of `-`, `_`, `.` as one `-`). The version is a PEP 440 version
/// without a local segment (a package index does not serve local versions).
public struct PackagePin: Hashable, Sendable, CustomStringConvertible {
    /// The PEP 503 normalized name (`Foo_Bar` is `foo-bar`).
    public var name: String
    public var version: PEP440Version

    public init(name: String, version: PEP440Version) {
        self.name = PackagePin.normalize(name)
        self.version = version
    }

    /// Parses `name==version` (spaces around `==` allowed; nothing else: no extras, markers,
    /// ranges or URLs).
    /// - Returns: the pin, or the reason it is not one.
    public static func parse(_ text: String) -> Result<PackagePin, PinError> {
        let parts = text.components(separatedBy: "==")
        guard parts.count == 2 else {
            return .failure(PinError("\"\(text)\" is not pinned: write name==version (e.g. numpy==2.1.3)"))
        }
        let name = parts[0].trimmingCharacters(in: .whitespaces)
        let versionText = parts[1].trimmingCharacters(in: .whitespaces)
        guard isValidName(name) else {
            return .failure(
                PinError("\"\(name)\" is not a package name (PEP 508: letters, digits, '.', '-', '_')"))
        }
        guard let version = PEP440Version(versionText), !versionText.contains("*") else {
            return .failure(PinError("\"\(versionText)\" is not a PEP 440 version"))
        }
        guard version.local.isEmpty else {
            return .failure(PinError("\"\(versionText)\": a local version (+...) is not served by a package index"))
        }
        return .success(PackagePin(name: name, version: version))
    }

    /// PEP 503 normalization: `re.sub(r"[-_.]+", "-", name).lower()`.
    public static func normalize(_ name: String) -> String {
        var out = ""
        var lastWasSeparator = false
        for c in name.lowercased() {
            if "-_.".contains(c) {
                if !lastWasSeparator { out.append("-") }
                lastWasSeparator = true
            } else {
                out.append(c)
                lastWasSeparator = false
            }
        }
        return out
    }

    /// PEP 508 "Names": `^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`, case-insensitive.
    public static func isValidName(_ name: String) -> Bool {
        func alnum(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }
        guard let first = name.first, let last = name.last, alnum(first), alnum(last) else { return false }
        return name.allSatisfy { alnum($0) || "._-".contains($0) }
    }

    /// `name==version`, normalized.
    public var description: String { "\(name)==\(version)" }

    /// The distribution name and version of a wheel file name (PEP 427 "File name
    /// convention": `{distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform
    /// tag}.whl`); nil for a name that is not a wheel's.
    public static func ofWheel(fileName: String) -> PackagePin? {
        guard fileName.hasSuffix(".whl") else { return nil }
        let parts = fileName.dropLast(4).split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 5 || parts.count == 6, let version = PEP440Version(String(parts[1])) else { return nil }
        return PackagePin(name: String(parts[0]), version: version)
    }
}

/// Why a `spec.preloadPackages` entry is not a pin.
public struct PinError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The operator's list of Python packages a pool may preload
/// (`/etc/safespace/package-allowlist.txt`): one name a line, compared PEP 503 normalized;
/// `#` starts a comment; blank lines are ignored.
public struct PackageAllowlist: Sendable, Equatable {
    public static let defaultPath = "/etc/safespace/package-allowlist.txt"
    /// Normalized names.
    public var names: Set<String>

    public init(names: Set<String>) { self.names = Set(names.map(PackagePin.normalize)) }

    /// Parses the text of an allowlist file.
    /// - Throws: `PinError` naming the line of an entry that is not a package name.
    public init(text: String) throws(PinError) {
        var names = Set<String>()
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.prefix { $0 != "#" }.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            guard PackagePin.isValidName(line) else {
                throw PinError("line \(number + 1): \"\(line)\" is not a package name")
            }
            names.insert(PackagePin.normalize(line))
        }
        self.names = names
    }

    /// Whether `name` (any spelling) is allowed.
    public func allows(_ name: String) -> Bool { names.contains(PackagePin.normalize(name)) }
}
