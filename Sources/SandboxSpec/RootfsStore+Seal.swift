import Foundation

// Sealing and verifying a rootfs: the manifest, its digest and the recorded listing are
// written here, never by the build script (which only runs debootstrap, apt and chroot).
//
//     <dir>/rootfs/            the tree
//     <dir>/manifest.json      RootfsManifest (`manifestText`)
//     <dir>/rootfs.listing     the RootfsListing the digest was computed over, so that a
//                              mismatch names a path; absent for rootfs sealed before it
//                              existed, whose mismatch names none

extension RootfsStore {
    /// The recorded listing of an installed rootfs: `<directory>/rootfs.listing`.
    public static let listingFile = "rootfs.listing"

    /// Writes `<directory>/manifest.json` and `<directory>/rootfs.listing` for the tree
    /// `<directory>/rootfs`, as `scripts/build-rootfs` does after its check passed (before
    /// it renames the build directory into place). The packages are those dpkg's status
    /// database in the tree (`var/lib/dpkg/status`) has installed.
    ///
    /// - Parameters:
    ///   - name: recipe name, `[a-z0-9][a-z0-9+_-]*` (`python`).
    ///   - version: `[0-9A-Za-z][0-9A-Za-z.+_-]*` (`3.11`).
    ///   - runtime: what a Sandbox names (`python:3.11`); nil for `name:version`.
    ///   - debianSuite: `bookworm`. - architecture: dpkg's architecture (`amd64`).
    ///   - created: the manifest's `created`, whole seconds.
    /// - Returns: the manifest written.
    /// - Throws: `RootfsError.invalidRuntime` for a malformed name, version or runtime;
    ///   what `RootfsListing.scan` throws; `RootfsError.invalidManifest` when the dpkg
    ///   status cannot be read or lists no installed package; `RootfsError.cannotWrite`.
    @discardableResult
    public static func seal(
        directory: String, name: String, version: String, runtime: String? = nil,
        debianSuite: String, architecture: String, created: Date = Date()
    ) throws -> RootfsManifest {
        let runtime = runtime ?? "\(name):\(version)"
        guard let parsed = parseRuntime("\(name):\(version)"), parsed.name == name, parsed.version == version else {
            throw RootfsError.invalidRuntime("\(name):\(version)")
        }
        guard parseRuntime(runtime)?.version != nil else { throw RootfsError.invalidRuntime(runtime) }
        let tree = directory + "/rootfs"
        let listing = try RootfsListing.scan(tree)
        let statusPath = tree + "/var/lib/dpkg/status"
        let status: Data
        do { status = try Data(contentsOf: URL(fileURLWithPath: statusPath)) } catch {
            throw RootfsError.invalidManifest(
                path: statusPath, reason: "cannot read dpkg's status: \(error.localizedDescription)")
        }
        let packages = RootfsPackage.installed(dpkgStatus: String(decoding: status, as: UTF8.self))
        guard !packages.isEmpty else {
            throw RootfsError.invalidManifest(path: statusPath, reason: "dpkg's status lists no installed package")
        }
        let manifest = RootfsManifest(
            name: name, version: version, runtime: runtime, debianSuite: debianSuite,
            architecture: architecture, packages: packages,
            created: Date(timeIntervalSince1970: created.timeIntervalSince1970.rounded(.down)),
            digest: listing.digest, sizeBytes: listing.sizeBytes)
        // The listing first: a manifest is what makes a directory an installed rootfs.
        try write(listing.text, to: directory + "/" + listingFile)
        try write(Array(manifest.manifestText.utf8), to: directory + "/manifest.json")
        return manifest
    }

    /// Recomputes the digest of the installed rootfs for `runtime` (resolved as
    /// `resolve(runtime:)` does) and compares it with its manifest.
    ///
    /// - Returns: the manifest, whose digest the tree has.
    /// - Throws: `RootfsError.digestMismatch`, naming the first differing path when the
    ///   rootfs has a recorded listing that matches its manifest; what `resolve(runtime:)`
    ///   and `RootfsListing.scan` throw.
    @discardableResult
    public func verify(runtime: String) throws -> RootfsManifest {
        let (manifest, path) = try resolve(runtime: runtime)
        let actual = try RootfsListing.scan(path)
        let digest = actual.digest
        guard digest != manifest.digest else { return manifest }
        var difference: RootfsDifference?
        if let recorded = try? recordedListing(for: manifest), recorded.digest == manifest.digest {
            difference = RootfsListing.firstDifference(recorded: recorded, actual: actual)
        }
        throw RootfsError.digestMismatch(
            runtime: manifest.runtime, manifestDigest: manifest.digest, actualDigest: digest, difference: difference)
    }

    /// The listing recorded when `manifest`'s rootfs was sealed; nil for a rootfs sealed
    /// before listings were recorded.
    ///
    /// - Throws: `RootfsError.unreadableTree` when the file exists but cannot be read.
    public func recordedListing(for manifest: RootfsManifest) throws -> RootfsListing? {
        let path = directory(for: manifest) + "/" + Self.listingFile
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return RootfsListing(text: Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        } catch {
            throw RootfsError.unreadableTree(path: path, reason: error.localizedDescription)
        }
    }

    /// Writes `bytes` to `path` (mode 0644) through a temporary file and rename(2).
    private static func write(_ bytes: [UInt8], to path: String) throws {
        let tmp = path + ".tmp"
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: tmp))
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: tmp)
            guard rename(tmp, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw RootfsError.cannotWrite(path: path, reason: error.localizedDescription)
        }
    }
}

extension RootfsPackage {
    /// The installed packages of a dpkg status database (`/var/lib/dpkg/status`), as
    /// `dpkg-query -W` reports those whose `${db:Status-Abbrev}` starts with `ii` (wanted
    /// `install`, state `installed`): `Package` and `Version` (epoch included), sorted
    /// bytewise by name, then version.
    public static func installed(dpkgStatus text: String) -> [RootfsPackage] {
        var out: [RootfsPackage] = []
        for stanza in text.split(separator: "\n\n", omittingEmptySubsequences: true) {
            var fields: [Substring: Substring] = [:]
            for line in stanza.split(separator: "\n") where !line.hasPrefix(" ") && !line.hasPrefix("\t") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                fields[line[..<colon]] = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
            }
            let status = fields["Status"]?.split(separator: " ") ?? []
            guard status.count == 3, status[0] == "install", status[2] == "installed",
                let name = fields["Package"], let version = fields["Version"]
            else { continue }
            out.append(RootfsPackage(name: String(name), version: String(version)))
        }
        return out.sorted { a, b in
            Array("\(a.name)\t\(a.version)".utf8).lexicographicallyPrecedes(Array("\(b.name)\t\(b.version)".utf8))
        }
    }
}

extension RootfsManifest {
    /// The manifest as `manifest.json` holds it: the layout the build script's printf wrote
    /// (two-space indent, fields in the order of the JSON shape, one package per line), so
    /// that manifests from before and after compare line by line.
    public var manifestText: String {
        func json(_ s: String) -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            return String(decoding: (try? encoder.encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
        }
        var out = "{\n"
        out += "  \"schemaVersion\": \(schemaVersion),\n"
        out += "  \"name\": \(json(name)),\n"
        out += "  \"version\": \(json(version)),\n"
        out += "  \"runtime\": \(json(runtime)),\n"
        out += "  \"debianSuite\": \(json(debianSuite)),\n"
        if let architecture { out += "  \"architecture\": \(json(architecture)),\n" }
        out += "  \"created\": \(json(created.formatted(Date.ISO8601FormatStyle()))),\n"
        out += "  \"digest\": \(json(digest)),\n"
        out += "  \"sizeBytes\": \(sizeBytes),\n"
        out += "  \"packages\": [\n"
        for (i, package) in packages.enumerated() {
            out += "    {\"name\": \(json(package.name)), \"version\": \(json(package.version))}"
            out += i < packages.count - 1 ? ",\n" : "\n"
        }
        out += "  ]\n}\n"
        return out
    }
}
