import Foundation

// Runtime root filesystems: the read-only Debian trees a sandbox's workload runs in.
//
// `scripts/build-rootfs` builds them from the recipes in `rootfs/` (see rootfs/README.md)
// and installs each one as
//
//     <root>/<name>-<version>/rootfs/          the root filesystem
//     <root>/<name>-<version>/manifest.json    a RootfsManifest
//
// with <root> = /var/lib/safespace/rootfs by default. `RootfsStore` finds them by
// runtime name (`python:3.11`, or `python` for the newest installed python), runs the
// build script, and writes and verifies the manifest (RootfsStore+Seal.swift).

/// One Debian package installed in a runtime rootfs, as `dpkg-query -W` reports it.
///
/// JSON shape: `{"name": "python3", "version": "3.11.2-1+b1"}`.
public struct RootfsPackage: Codable, Sendable, Hashable {
    /// Debian package name, without architecture qualifier (`libc6`, not `libc6:amd64`).
    public var name: String
    /// Debian version string, epoch included when there is one (`1:2.38.1-5+deb12u3`).
    public var version: String

    public init(name: String, version: String) {
        self.name = name
        self.version = version
    }
}

/// What `RootfsStore.seal` records about a rootfs `scripts/build-rootfs` built:
/// `manifest.json`, next to (never inside) the `rootfs/` directory it describes.
///
/// JSON shape (keys other than these are ignored; `schemaVersion` and `architecture`
/// may be absent):
///
/// ```json
/// {
///   "schemaVersion": 1,
///   "name": "python", "version": "3.11", "runtime": "python:3.11",
///   "debianSuite": "bookworm", "architecture": "amd64",
///   "created": "2025-05-20T12:00:00Z",
///   "digest": "sha256:<64 lowercase hex digits>",
///   "sizeBytes": 148657835,
///   "packages": [{"name": "python3", "version": "3.11.2-1+b1"}, ...]
/// }
/// ```
///
/// `digest` is SHA-256 over a sorted listing of every path in `rootfs/` with its type,
/// mode, owner, size and content hash (regular files), link target (symlinks) or device
/// number; timestamps and extended attributes are not covered. `sizeBytes` is the sum
/// of the sizes of the regular files, counted per path. `RootfsListing` and
/// rootfs/README.md define both exactly.
///
/// Decoding does not depend on the decoder's date strategy: `created` is always an
/// RFC 3339 string, with or without fractional seconds. Decoding throws
/// `DecodingError.dataCorrupted` for a `created` that is not RFC 3339, a `digest`
/// that is not `sha256:` and 64 lowercase hex digits, or a negative `sizeBytes`.
public struct RootfsManifest: Codable, Sendable, Equatable {
    /// Manifest format version; 1 when absent.
    public var schemaVersion: Int
    /// Recipe name: `python`, `node`.
    public var name: String
    /// Runtime version: `3.11`, `18`.
    public var version: String
    /// What a Sandbox asks for: `python:3.11`.
    public var runtime: String
    /// Debian suite the packages come from: `bookworm`.
    public var debianSuite: String
    /// Debian architecture: `amd64`; nil in manifests that do not record it.
    public var architecture: String?
    /// Every installed package (dpkg status `ii`), sorted by name.
    public var packages: [RootfsPackage]
    /// When the build finished.
    public var created: Date
    /// `sha256:<hex>` over the rootfs listing described above.
    public var digest: String
    /// Sum of the sizes of the regular files in the rootfs, in bytes.
    public var sizeBytes: Int64

    public init(
        schemaVersion: Int = 1, name: String, version: String, runtime: String? = nil,
        debianSuite: String, architecture: String? = nil, packages: [RootfsPackage],
        created: Date, digest: String, sizeBytes: Int64
    ) {
        self.schemaVersion = schemaVersion
        self.name = name
        self.version = version
        self.runtime = runtime ?? "\(name):\(version)"
        self.debianSuite = debianSuite
        self.architecture = architecture
        self.packages = packages
        self.created = created
        self.digest = digest
        self.sizeBytes = sizeBytes
    }

    /// The installed package called `name`, if any.
    public func package(named name: String) -> RootfsPackage? {
        packages.first { $0.name == name }
    }

    /// Reads and decodes a `manifest.json`.
    ///
    /// - Throws: `RootfsError.invalidManifest` naming `path` when the file cannot be
    ///   read or decoded.
    public static func load(from path: String) throws -> RootfsManifest {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw RootfsError.invalidManifest(path: path, reason: "cannot read: \(error.localizedDescription)")
        }
        do {
            return try JSONDecoder().decode(RootfsManifest.self, from: data)
        } catch {
            throw RootfsError.invalidManifest(path: path, reason: Self.describe(error))
        }
    }

    private enum CodingKeys: String, CodingKey {
        case schemaVersion, name, version, runtime, debianSuite, architecture, packages, created,
            digest, sizeBytes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schemaVersion = try c.decodeIfPresent(Int.self, forKey: .schemaVersion) ?? 1
        name = try c.decode(String.self, forKey: .name)
        version = try c.decode(String.self, forKey: .version)
        runtime = try c.decode(String.self, forKey: .runtime)
        debianSuite = try c.decode(String.self, forKey: .debianSuite)
        architecture = try c.decodeIfPresent(String.self, forKey: .architecture)
        packages = try c.decode([RootfsPackage].self, forKey: .packages)
        let createdText = try c.decode(String.self, forKey: .created)
        guard let created = Self.parseRFC3339(createdText) else {
            throw DecodingError.dataCorruptedError(
                forKey: .created, in: c,
                debugDescription: "\"\(createdText)\" is not an RFC 3339 time such as 2025-05-20T12:00:00Z")
        }
        self.created = created
        digest = try c.decode(String.self, forKey: .digest)
        guard Self.isSHA256Digest(digest) else {
            throw DecodingError.dataCorruptedError(
                forKey: .digest, in: c,
                debugDescription: "\"\(digest)\" is not sha256: followed by 64 lowercase hex digits")
        }
        sizeBytes = try c.decode(Int64.self, forKey: .sizeBytes)
        guard sizeBytes >= 0 else {
            throw DecodingError.dataCorruptedError(
                forKey: .sizeBytes, in: c, debugDescription: "sizeBytes is negative")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(schemaVersion, forKey: .schemaVersion)
        try c.encode(name, forKey: .name)
        try c.encode(version, forKey: .version)
        try c.encode(runtime, forKey: .runtime)
        try c.encode(debianSuite, forKey: .debianSuite)
        try c.encodeIfPresent(architecture, forKey: .architecture)
        try c.encode(created.formatted(Date.ISO8601FormatStyle()), forKey: .created)
        try c.encode(digest, forKey: .digest)
        try c.encode(sizeBytes, forKey: .sizeBytes)
        try c.encode(packages, forKey: .packages)
    }

    static func parseRFC3339(_ text: String) -> Date? {
        if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
        return try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)
    }

    static func isSHA256Digest(_ s: String) -> Bool {
        guard s.hasPrefix("sha256:") else { return false }
        let hex = s.utf8.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let ctx):
            return "missing field \(path(ctx.codingPath + [key]))"
        case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx):
            return "field \(path(ctx.codingPath)): \(ctx.debugDescription)"
        case DecodingError.dataCorrupted(let ctx):
            return ctx.codingPath.isEmpty
                ? "not valid JSON: \(ctx.debugDescription)"
                : "field \(path(ctx.codingPath)): \(ctx.debugDescription)"
        default:
            return "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            .trimmingPrefix(".").description
    }
}

/// Errors of the rootfs store. `description` is a complete sentence for a person.
public enum RootfsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The runtime string is not `name` or `name:version` (`python`, `python:3.11`).
    case invalidRuntime(String)
    /// No installed rootfs provides `runtime`; `installed` lists the runtimes that are.
    case notInstalled(runtime: String, installed: [String])
    /// A `manifest.json` could not be read or decoded, or does not match its directory.
    case invalidManifest(path: String, reason: String)
    /// The manifest exists but its `rootfs/` directory does not.
    case rootfsMissing(runtime: String, path: String)
    /// The store directory exists but cannot be listed.
    case unreadableStore(path: String, reason: String)
    /// `build-rootfs` was not found at any of `searched` (see `locateBuildScript()`).
    case buildScriptNotFound(searched: [String])
    /// The build script could not be started, or exited with a nonzero status or a signal.
    case buildFailed(name: String, script: String, reason: String)
    /// A path of a rootfs tree (or its recorded listing) could not be opened, listed,
    /// stat'ed or read; `reason` is the errno's text.
    case unreadableTree(path: String, reason: String)
    /// A name in a rootfs tree holds a newline or a tab, which the digest listing cannot hold.
    case unlistableName(path: String)
    /// `manifest.json` or `rootfs.listing` could not be written.
    case cannotWrite(path: String, reason: String)
    /// The tree's digest is not its manifest's; `difference` is the first differing path
    /// when the rootfs has a recorded listing (rootfs sealed before listings were recorded
    /// have none).
    case digestMismatch(runtime: String, manifestDigest: String, actualDigest: String, difference: RootfsDifference?)

    public var description: String {
        switch self {
        case .invalidRuntime(let r):
            return "invalid runtime \"\(r)\": expected NAME or NAME:VERSION, such as python or python:3.11"
        case .notInstalled(let runtime, let installed):
            let list = installed.isEmpty ? "none" : installed.joined(separator: ", ")
            return "runtime \"\(runtime)\" is not installed on this node; installed: \(list); "
                + "build one with: safespace rootfs build NAME"
        case .invalidManifest(let path, let reason):
            return "invalid rootfs manifest \(path): \(reason)"
        case .rootfsMissing(let runtime, let path):
            return "runtime \"\(runtime)\" has a manifest but no root filesystem at \(path); "
                + "rebuild it with: safespace rootfs build \(runtime.split(separator: ":").first ?? "") --force"
        case .unreadableStore(let path, let reason):
            return "cannot list the rootfs store \(path): \(reason)"
        case .buildScriptNotFound(let searched):
            return "build-rootfs script not found; looked at: \(searched.joined(separator: ", ")); "
                + "set SAFESPACE_BUILD_ROOTFS to its path (scripts/build-rootfs of a source tree), "
                + "or install safespace with scripts/setup or scripts/install-node"
        case .buildFailed(let name, let script, let reason):
            return "building rootfs \"\(name)\" with \(script) failed: \(reason)"
        case .unreadableTree(let path, let reason):
            return "cannot read \(path): \(reason)"
        case .unlistableName(let path):
            return "\(path): a name with a newline or tab cannot be listed for the digest"
        case .cannotWrite(let path, let reason):
            return "cannot write \(path): \(reason)"
        case .digestMismatch(let runtime, let manifestDigest, let actualDigest, let difference):
            let what =
                difference.map { "first difference: \($0)" }
                ?? "no listing was recorded with this rootfs to name the path (rebuild it to record one)"
            return "runtime \"\(runtime)\" does not match its manifest: \(what); "
                + "manifest digest \(manifestDigest), tree digest \(actualDigest)"
        }
    }
}

/// The runtime root filesystems installed on this node, and the way to build more.
///
/// Layout under `root`: one directory `<name>-<version>` per rootfs holding `rootfs/`
/// and `manifest.json`. Entries whose name starts with `.` (build temporaries, locks)
/// and directories without a `manifest.json` are not installed runtimes and are skipped.
public struct RootfsStore: Sendable {
    /// The store directory, `/var/lib/safespace/rootfs` by default.
    public let root: String
    /// Path of `build-rootfs` to use; nil to search (see `locateBuildScript()`).
    public let buildScript: String?

    public static let defaultRoot = "/var/lib/safespace/rootfs"

    public init(root: String = RootfsStore.defaultRoot) {
        self.init(root: root, buildScript: nil)
    }

    public init(root: String, buildScript: String?) {
        self.root = root
        self.buildScript = buildScript
    }

    /// The directory of an installed rootfs: `<root>/<name>-<version>`.
    public func directory(for manifest: RootfsManifest) -> String {
        "\(root)/\(manifest.name)-\(manifest.version)"
    }

    /// Every installed rootfs, sorted by name, newest version first within a name.
    /// An absent store directory means none is installed (an empty list).
    ///
    /// - Throws: `RootfsError.unreadableStore` when `root` cannot be listed;
    ///   `RootfsError.invalidManifest` when a `manifest.json` cannot be decoded or its
    ///   name and version do not match its directory's name.
    public func list() throws -> [RootfsManifest] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir) else { return [] }
        guard isDir.boolValue else {
            throw RootfsError.unreadableStore(path: root, reason: "not a directory")
        }
        let entries: [String]
        do {
            entries = try fm.contentsOfDirectory(atPath: root)
        } catch {
            throw RootfsError.unreadableStore(path: root, reason: error.localizedDescription)
        }
        var manifests: [RootfsManifest] = []
        for entry in entries where !entry.hasPrefix(".") {
            let manifestPath = "\(root)/\(entry)/manifest.json"
            guard fm.fileExists(atPath: manifestPath) else { continue }
            let manifest = try RootfsManifest.load(from: manifestPath)
            guard entry == "\(manifest.name)-\(manifest.version)" else {
                throw RootfsError.invalidManifest(
                    path: manifestPath,
                    reason: "it describes \(manifest.name)-\(manifest.version) but lies in \(entry)/")
            }
            manifests.append(manifest)
        }
        return manifests.sorted { a, b in
            a.name != b.name ? a.name < b.name : Self.compareVersions(a.version, b.version) == .orderedDescending
        }
    }

    /// Finds the installed rootfs for `runtime`:
    ///
    /// - `name:version` (`python:3.11`): the rootfs whose manifest `runtime` is exactly
    ///   that; failing that, the newest `name` whose version starts with `version` at a
    ///   component boundary (`python:3` matches 3.11, not 31).
    /// - `name` alone (`python`): the newest installed version of `name`, versions
    ///   compared component by component, numerically where both are numbers.
    ///
    /// - Returns: the manifest and the absolute path of its `rootfs/` directory.
    /// - Throws: `RootfsError.invalidRuntime` for a malformed string;
    ///   `RootfsError.notInstalled` listing the installed runtimes when none matches;
    ///   `RootfsError.rootfsMissing` when the manifest's `rootfs/` is gone; and what
    ///   `list()` throws.
    public func resolve(runtime: String) throws -> (manifest: RootfsManifest, rootfsPath: String) {
        guard let (name, version) = Self.parseRuntime(runtime) else {
            throw RootfsError.invalidRuntime(runtime)
        }
        let installed = try list()
        let match: RootfsManifest?
        if let version {
            match =
                installed.first { $0.runtime == runtime }
                ?? installed.first { $0.name == name && Self.version($0.version, hasPrefix: version) }
        } else {
            match = installed.first { $0.name == name }  // list() puts the newest first
        }
        guard let manifest = match else {
            throw RootfsError.notInstalled(runtime: runtime, installed: installed.map(\.runtime))
        }
        let path = directory(for: manifest) + "/rootfs"
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw RootfsError.rootfsMissing(runtime: manifest.runtime, path: path)
        }
        return (manifest, path)
    }

    /// Builds and installs the rootfs of recipe `name` (`python`, or a runtime such as
    /// `python:3.11`) by running `build-rootfs NAME --dest <root> [--force]`, whose
    /// output goes to this process's standard output and error as it is written.
    /// Without `force` an installed rootfs is left alone (the script says so and exits 0).
    /// Needs root; takes about a minute the first time, seconds once the download cache
    /// under /var/cache/safespace is warm.
    ///
    /// - Parameter safespace: the `safespace` program the script runs to seal the tree
    ///   (`safespace rootfs seal`), passed as `$SAFESPACE_CLI`; nil leaves the script to
    ///   take `$SAFESPACE_CLI` or `safespace` on `PATH`.
    ///   - onOutput: when given, the script's standard output and error (merged, through a
    ///     pipe) are handed over line by line (without the newline) instead of going to this
    ///     process's; `safespace rootfs build` shows them as one progress line on a terminal.
    /// - Throws: `RootfsError.buildScriptNotFound` (see `locateBuildScript()`);
    ///   `RootfsError.buildFailed` when the script cannot start or does not exit 0.
    public func build(
        name: String, force: Bool, safespace: String? = nil, onOutput: ((String) -> Void)? = nil
    ) throws {
        let script = try buildScript ?? Self.locateBuildScript()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: script)
        process.arguments = [name, "--dest", root] + (force ? ["--force"] : [])
        if let safespace {
            var environment = ProcessInfo.processInfo.environment
            environment["SAFESPACE_CLI"] = safespace
            process.environment = environment
        }
        // Without onOutput, standardInput/Output/Error are left unset: the child inherits
        // ours, so output streams.
        let pipe = onOutput.map { _ in Pipe() }
        if let pipe {
            process.standardOutput = pipe
            process.standardError = pipe
        }
        do {
            try process.run()
        } catch {
            throw RootfsError.buildFailed(
                name: name, script: script, reason: "cannot start: \(error.localizedDescription)")
        }
        if let pipe, let onOutput {
            // Our copy of the write end closed, so EOF comes when the script (and whatever it
            // started) has closed its copies.
            try? pipe.fileHandleForWriting.close()
            var pending: [UInt8] = []
            let reader = pipe.fileHandleForReading
            // availableData: what one read(2) gives (read(upToCount:) waits for the count).
            while case let chunk = reader.availableData, !chunk.isEmpty {
                pending += chunk
                while let newline = pending.firstIndex(of: 0x0A) {
                    onOutput(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            if !pending.isEmpty { onOutput(String(decoding: pending, as: UTF8.self)) }
        }
        process.waitUntilExit()
        switch process.terminationReason {
        case .exit where process.terminationStatus == 0:
            return
        case .exit:
            throw RootfsError.buildFailed(
                name: name, script: script, reason: "exit status \(process.terminationStatus)")
        case .uncaughtSignal:
            throw RootfsError.buildFailed(
                name: name, script: script, reason: "killed by signal \(process.terminationStatus)")
        @unknown default:
            throw RootfsError.buildFailed(name: name, script: script, reason: "ended abnormally")
        }
    }

    /// Where `build(name:force:)` runs `build-rootfs` from, in order (the first that is
    /// executable):
    ///
    /// 1. `$SAFESPACE_BUILD_ROOTFS`, when set (a source tree's `scripts/build-rootfs`);
    /// 2. `<prefix>/share/safespace/scripts/build-rootfs` for this program installed as
    ///    `<prefix>/bin/<program>`, where scripts/setup and scripts/install-node put it
    ///    (the script finds its recipes in `<prefix>/share/safespace/rootfs`).
    ///
    /// - Throws: `RootfsError.buildScriptNotFound` listing the paths tried.
    public static func locateBuildScript() throws -> String {
        let candidates = buildScriptCandidates(
            environment: ProcessInfo.processInfo.environment["SAFESPACE_BUILD_ROOTFS"],
            executable: currentExecutable())
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            return found
        }
        throw RootfsError.buildScriptNotFound(searched: candidates)
    }

    static func buildScriptCandidates(environment: String?, executable: String?) -> [String] {
        var out: [String] = []
        if let environment, !environment.isEmpty { out.append(environment) }
        if let executable {
            let prefix = ((executable as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
            out.append("\(prefix)/share/safespace/scripts/build-rootfs")
        }
        return out
    }

    /// The path of this process's program (`/proc/self/exe`).
    public static func currentExecutable() -> String? {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return path
        }
        return Bundle.main.executablePath
    }

    /// Splits `name[:version]`; nil when malformed.
    static func parseRuntime(_ runtime: String) -> (name: String, version: String?)? {
        let parts = runtime.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        let name = String(parts[0])
        let nameOK =
            name.utf8.first.map(isLowerAlnum) == true
            && name.utf8.allSatisfy {
                isLowerAlnum($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
            }
        guard nameOK else { return nil }
        guard parts.count == 2 else { return (name, nil) }
        let version = String(parts[1])
        let versionOK =
            version.utf8.first.map { isAlnum($0) } == true
            && version.utf8.allSatisfy { isAlnum($0) || ".+_-".utf8.contains($0) }
        return versionOK ? (name, version) : nil
    }

    private static func isLowerAlnum(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x61...0x7a).contains(c)
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        isLowerAlnum(c) || (0x41...0x5a).contains(c)
    }

    /// Compares versions component by component (split on `.`), numerically when both
    /// components are numbers, otherwise as strings; a missing component sorts first
    /// (`3.11` < `3.11.1`).
    static func compareVersions(_ a: String, _ b: String) -> ComparisonResult {
        let x = a.split(separator: ".", omittingEmptySubsequences: false)
        let y = b.split(separator: ".", omittingEmptySubsequences: false)
        for i in 0..<max(x.count, y.count) {
            guard i < x.count else { return .orderedAscending }
            guard i < y.count else { return .orderedDescending }
            if x[i] == y[i] { continue }
            if let m = Int(x[i]), let n = Int(y[i]) {
                if m != n { return m < n ? .orderedAscending : .orderedDescending }
                continue
            }
            return x[i] < y[i] ? .orderedAscending : .orderedDescending
        }
        return .orderedSame
    }

    /// True when `prefix` equals the leading components of `version` (`3` of `3.11`).
    static func version(_ version: String, hasPrefix prefix: String) -> Bool {
        let v = version.split(separator: ".", omittingEmptySubsequences: false)
        let p = prefix.split(separator: ".", omittingEmptySubsequences: false)
        return p.count <= v.count && zip(v, p).allSatisfy { $0 == $1 }
    }
}
