/// Preloaded packages of a warm pool (issue 14, deliverable 5): the pool's `preloadPackages`
/// installed once into a layer, a directory under `packages.layers`
/// (`<layers>/<pool>-<digest>/`), bound read-only into each sandbox of the pool at
/// `/dev/.safespace-packages` (on the sandbox's own /dev tmpfs: no mountpoint is made in the
/// rootfs) and put on the interpreter's path (`PYTHONPATH`); the warm interpreter imports the
/// requested packages before its first fork.
///
/// A layer holds:
/// - `site-packages/`: what `pip install --target` wrote;
/// - `requirements.lock`: every package (the requested ones and what they pulled in), each
///   `name==version --hash=sha256:<hex>` of the wheel installed (pip's hash-checking mode);
/// - `manifest.listing`: every file of `site-packages/` with its SHA-256, mode and owner
///   (`RootfsListing`'s format, paths from the top of `site-packages/`);
/// - `layer.json`: the packages, the modules the warm interpreter imports, the source.
///
/// The build (`PackageLayerBuilder.build`), in order, refusing at the first failure with an
/// error naming the package (nothing is left but what a failed build removes):
/// 1. every requested name is in the allowlist (`packages.allowlist`; no file: refused);
/// 2. `pip download` of the pins with their dependencies into a temporary directory, wheels
///    only, for the rootfs's interpreter (`--python-version 3.11 --implementation cp --abi
///    cp311 --platform manylinux…`), from PyPI or, with `packages.wheelhouse`, only from
///    that directory (`--no-index --find-links`);
/// 3. every downloaded package is in the allowlist, and none has an advisory of the OSV
///    database (`packages.advisoryDatabase`) that the pool does not waive;
/// 4. `requirements.lock` with the wheels' SHA-256, then `pip install --require-hashes
///    --no-deps --no-index --target` from the downloaded wheels only;
/// 5. the manifest; the directory is renamed into place.
/// A layer already built for the same inputs (pins, interpreter, platform, source) is
/// reused, with steps 1 and 3 run again on its recorded packages (the allowlist and the
/// database may have changed since) and its files checked against its manifest (a
/// difference is refused, `layer_tampered`).
import Crypto
import Foundation
import Glibc
import OCI
import SandboxSpec

/// A built layer.
struct PackageLayer: Sendable {
    /// Where a sandbox sees the layer's `site-packages/`.
    static let sandboxPath = "/dev/.safespace-packages"

    /// `<layers>/<pool>-<digest>`.
    let path: String
    /// Every package installed, sorted by name.
    let packages: [PackagePin]
    /// Top-level modules of the requested packages, imported by the warm interpreter.
    let modules: [String]
    /// The manifest (`manifest.listing`).
    let listing: RootfsListing

    var sitePackages: String { path + "/site-packages" }

    /// The read-only bind of `site-packages/` (no `noexec`: extension modules are mapped
    /// executable).
    var mount: Mount {
        Mount(
            destination: Self.sandboxPath, type: "bind", source: sitePackages,
            options: ["bind", "ro", "nosuid", "nodev"])
    }

    /// The environment entry that puts the layer on the interpreter's path.
    var environment: String { "PYTHONPATH=" + Self.sandboxPath }

    /// Compares the layer as the sandbox whose init is `initPid` sees it
    /// (`/proc/<pid>/root/dev/.safespace-packages`, never following a symlink in it) with the
    /// manifest.
    /// - Returns: the first difference (a file changed, added or removed), nil when equal.
    /// - Throws: `RootfsError` when the tree cannot be read.
    func verify(initPid: Int32) throws -> RootfsDifference? {
        let actual = try RootfsListing.scan("/proc/\(initPid)/root" + Self.sandboxPath)
        return RootfsListing.firstDifference(recorded: listing, actual: actual)
    }

    /// `status.packages` of the pool's JSON.
    var json: [String: Any] {
        [
            "layer": path, "packages": packages.map(\.description), "modules": modules,
            "files": listing.lines.count, "manifestDigest": listing.digest,
        ]
    }
}

/// Why a layer was not built: `field` is the pool's field it is about.
struct PackageLayerError: Error, CustomStringConvertible {
    var code: String
    var field: String
    var message: String
    var description: String { "\(field): \(message)" }
}

/// The node's package settings (`packages:` of the daemon's configuration).
struct PackageSettings: Sendable, Equatable {
    var allowlist = PackageAllowlist.defaultPath
    /// nil: PyPI (through pip's own index configuration).
    var wheelhouse: String?
    var advisoryDatabase = OSVDatabase.defaultDirectory
    var layers = "/var/lib/safespace/layers"
    /// The host interpreter that runs pip (`<python> -m pip`).
    var python = "python3"
}

struct PackageLayerBuilder: Sendable {
    let settings: PackageSettings

    /// The glibc of the rootfs images (Debian bookworm: 2.36); wheels for it or older.
    static let manylinuxGlibc = "2_36"

    /// Builds (or reuses) the layer of `pool`; nil for a pool without packages.
    /// - Throws: `PackageLayerError` naming the field: `package_not_allowed` (a package
    ///   outside the allowlist, or no allowlist), `advisory` (an unwaived advisory),
    ///   `advisory_database` (no readable database), `package_build_failed` (pip failed),
    ///   `layer_tampered` (a built layer that differs from its manifest).
    func build(_ pool: WarmPool) throws(PackageLayerError) -> PackageLayer? {
        let pins = pool.preloadPins
        guard !pins.isEmpty, let poolName = pool.metadata.name else { return nil }
        let allowlist = try loadAllowlist()
        for (i, pin) in pins.enumerated() where !allowlist.allows(pin.name) {
            throw PackageLayerError(
                code: "package_not_allowed", field: "spec.preloadPackages[\(i)]",
                message: "\(pin.name) is not in the node's package allowlist (\(settings.allowlist))")
        }
        let database = try loadDatabase()
        try refuseAdvisories(database.scan(pins, waivers: pool.spec.waiveAdvisories ?? []))
        let target = try Self.target(runtime: pool.sandbox(named: "x").spec.runtime ?? "")
        var key = "python=\(target.version)\nplatforms=\(target.platforms.joined(separator: ","))\n"
        key += "source=\(settings.wheelhouse ?? "pypi")\n" + pins.map(\.description).sorted().joined(separator: "\n")
        let digest = SHA256.hash(data: Data(key.utf8)).map { String(format: "%02x", $0) }.joined().prefix(16)
        let path = settings.layers + "/" + poolName + "-" + digest
        try Self.requireSearchable(settings.layers)
        if let existing = try? Self.read(path) {
            try check(existing.packages, allowlist: allowlist, database: database, pool: pool)
            // A layer changed on the node since its build is not used (nor silently rebuilt:
            // the operator looks at it and removes it).
            let difference: RootfsDifference?
            do {
                difference = try RootfsListing.firstDifference(
                    recorded: existing.listing, actual: RootfsListing.scan(existing.sitePackages))
            } catch {
                throw PackageLayerError(
                    code: "layer_tampered", field: "spec.preloadPackages", message: "\(path): \(error)")
            }
            if let difference {
                throw PackageLayerError(
                    code: "layer_tampered", field: "spec.preloadPackages",
                    message: "the built layer \(path) differs from its manifest: \(difference); remove it to rebuild")
            }
            return existing
        }
        return try make(path, pins: pins, target: target, allowlist: allowlist, database: database, pool: pool)
    }

    /// The findings for the pool's packages now: those of its layer when it has one, else its
    /// pins (dependencies are known after a build only).
    func scan(_ pool: WarmPool, layer: PackageLayer?) throws(PackageLayerError) -> [OSVFinding] {
        try loadDatabase().scan(layer?.packages ?? pool.preloadPins, waivers: pool.spec.waiveAdvisories ?? [])
    }

    private func loadAllowlist() throws(PackageLayerError) -> PackageAllowlist {
        guard let data = FileManager.default.contents(atPath: settings.allowlist) else {
            throw PackageLayerError(
                code: "package_not_allowed", field: "spec.preloadPackages",
                message:
                    "no package allowlist at \(settings.allowlist) (packages.allowlist): without one no package may be preloaded"
            )
        }
        do { return try PackageAllowlist(text: String(decoding: data, as: UTF8.self)) } catch {
            throw PackageLayerError(
                code: "package_not_allowed", field: "spec.preloadPackages", message: "\(settings.allowlist): \(error)")
        }
    }

    private func loadDatabase() throws(PackageLayerError) -> OSVDatabase {
        do { return try OSVDatabase.load(directory: settings.advisoryDatabase) } catch {
            throw PackageLayerError(
                code: "advisory_database", field: "spec.preloadPackages",
                message: "\(error) (packages.advisoryDatabase): packages cannot be scanned")
        }
    }

    private func refuseAdvisories(_ findings: [OSVFinding]) throws(PackageLayerError) {
        let open = findings.filter { !$0.waived }
        guard !open.isEmpty else { return }
        throw PackageLayerError(
            code: "advisory", field: "spec.preloadPackages",
            message: "known advisories (waive by id in spec.waiveAdvisories): "
                + open.map(\.description).joined(separator: "; "))
    }

    /// Steps 1 and 3 over every package of a layer (requested ones and dependencies).
    private func check(
        _ packages: [PackagePin], allowlist: PackageAllowlist, database: OSVDatabase, pool: WarmPool
    ) throws(PackageLayerError) {
        let requested = Set(pool.preloadPins.map(\.name))
        for package in packages where !allowlist.allows(package.name) {
            let what = requested.contains(package.name) ? "" : " (a dependency of the pool's packages)"
            throw PackageLayerError(
                code: "package_not_allowed", field: "spec.preloadPackages",
                message: "\(package)\(what) is not in the node's package allowlist (\(settings.allowlist))")
        }
        try refuseAdvisories(database.scan(packages, waivers: pool.spec.waiveAdvisories ?? []))
    }

    /// The interpreter wheels must fit: `python:3.11` gives version 3.11, ABI cp311, and the
    /// manylinux platforms of this machine's architecture.
    static func target(runtime: String) throws(PackageLayerError) -> (version: String, abi: String, platforms: [String])
    {
        let version = runtime.hasPrefix("python:") ? String(runtime.dropFirst("python:".count)) : ""
        let parts = version.split(separator: ".")
        guard parts.count == 2, parts.allSatisfy({ Int($0) != nil }) else {
            throw PackageLayerError(
                code: "package_build_failed", field: "spec.template.runtime",
                message: "\"\(runtime)\" names no Python version (python:X.Y) to build wheels for")
        }
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return (version, "cp" + parts.joined(), ["manylinux_\(manylinuxGlibc)_\(machine)", "manylinux2014_\(machine)"])
    }

    /// The layer is bound into sandboxes by their init, which runs as the sandbox's (mapped,
    /// unprivileged) root: every existing directory on the way to `layers` must be searchable
    /// by others (path_resolution(7)), or the bind fails with EACCES in every refill.
    /// - Throws: `package_build_failed` naming `packages.layers` and the directory.
    static func requireSearchable(_ layers: String) throws(PackageLayerError) {
        var path = ""
        for part in layers.split(separator: "/") {
            path += "/" + part
            var st = stat()
            guard stat(path, &st) == 0 else { return }  // made by the build (0755)
            if st.st_mode & S_IXOTH == 0 {
                throw PackageLayerError(
                    code: "package_build_failed", field: "spec.preloadPackages",
                    message:
                        "packages.layers \(layers): \(path) (mode \(String(st.st_mode & 0o7777, radix: 8))) is not searchable by others; a sandbox's root, an unprivileged mapped user, could not reach its layer. Make it searchable (chmod o+x) or choose another packages.layers"
                )
            }
        }
    }

    // MARK: build

    private func make(
        _ path: String, pins: [PackagePin], target: (version: String, abi: String, platforms: [String]),
        allowlist: PackageAllowlist, database: OSVDatabase, pool: WarmPool
    ) throws(PackageLayerError) -> PackageLayer {
        func failed(_ message: String) -> PackageLayerError {
            PackageLayerError(code: "package_build_failed", field: "spec.preloadPackages", message: message)
        }
        do { try FileManager.default.createDirectory(atPath: settings.layers, withIntermediateDirectories: true) } catch
        {
            throw failed("cannot make \(settings.layers) (packages.layers): \(error)")
        }
        let work =
            settings.layers + "/.build-" + (pool.metadata.name ?? "") + "-"
            + String(UInt32.random(in: .min ... .max), radix: 16)
        let wheels = work + "/wheels"
        defer { try? FileManager.default.removeItem(atPath: work) }
        guard mkdir(work, 0o755) == 0, mkdir(wheels, 0o755) == 0 else {
            throw failed("cannot make \(work): \(String(cString: strerror(errno)))")
        }
        var common = [
            "--disable-pip-version-check", "--no-input", "--only-binary=:all:", "--python-version", target.version,
            "--implementation", "cp", "--abi", target.abi,
        ]
        for platform in target.platforms { common += ["--platform", platform] }
        let source = settings.wheelhouse.map { ["--no-index", "--find-links", $0] } ?? []
        try pip(["download", "--dest", wheels] + common + source + pins.map(\.description), failed)

        // What was downloaded: the pins and their dependencies.
        var locked: [(PackagePin, String, String)] = []  // pin, file, sha256
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: wheels)) ?? []).sorted()
        for file in files {
            guard let pin = PackagePin.ofWheel(fileName: file) else {
                throw failed("pip downloaded \(file), which is not a wheel")
            }
            guard let bytes = FileManager.default.contents(atPath: wheels + "/" + file) else {
                throw failed("cannot read \(wheels)/\(file)")
            }
            locked.append((pin, file, SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()))
        }
        let packages = locked.map(\.0).sorted { $0.name < $1.name }
        for pin in pins where !packages.contains(pin) {
            throw failed("pip did not download \(pin) (got \(packages.map(\.description).joined(separator: ", ")))")
        }
        try check(packages, allowlist: allowlist, database: database, pool: pool)

        var lock = "# safespace: the packages of pool \(pool.metadata.name ?? "") for python \(target.version)"
        lock += " (\(settings.wheelhouse.map { "wheelhouse " + $0 } ?? "PyPI")); pip install --require-hashes\n"
        for (pin, _, sha) in locked.sorted(by: { $0.0.name < $1.0.name }) {
            lock += "\(pin) --hash=sha256:\(sha)\n"
        }
        do { try lock.write(toFile: work + "/requirements.lock", atomically: false, encoding: .utf8) } catch {
            throw failed("cannot write the lock file: \(error)")
        }
        // The host's pip compiles byte code with the host's interpreter: only when it is the
        // rootfs's version is that byte code the sandbox's.
        let compile = hostPythonVersion() == target.version ? [] : ["--no-compile"]
        try pip(
            [
                "install", "--require-hashes", "--no-deps", "--no-index", "--find-links", wheels, "--target",
                work + "/site-packages", "-r", work + "/requirements.lock",
            ] + common + compile, failed)
        try? FileManager.default.removeItem(atPath: wheels)
        // Read-only for everyone but root, readable by the sandbox's (unmapped) users.
        normalizeModes(work + "/site-packages")
        let modules = Self.topLevelModules(sitePackages: work + "/site-packages", of: pins)
        let listing: RootfsListing
        do { listing = try RootfsListing.scan(work + "/site-packages") } catch {
            throw failed("cannot list the layer: \(error)")
        }
        let meta: [String: Any] = [
            "pool": pool.metadata.name ?? "", "packages": packages.map(\.description), "modules": modules,
            "python": target.version, "source": settings.wheelhouse ?? "pypi",
        ]
        do {
            try Data(listing.text).write(to: URL(fileURLWithPath: work + "/manifest.listing"))
            try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys]).write(
                to: URL(fileURLWithPath: work + "/layer.json"))
        } catch { throw failed("cannot write the manifest: \(error)") }
        chmod(work, 0o755)
        if rename(work, path) != 0 {
            // Built meanwhile by another request for the same inputs: that one is used.
            if let existing = try? Self.read(path) { return existing }
            throw failed("cannot move the layer to \(path): \(String(cString: strerror(errno)))")
        }
        return PackageLayer(path: path, packages: packages, modules: modules, listing: listing)
    }

    /// Reads a built layer (`layer.json`, `manifest.listing`).
    static func read(_ path: String) throws -> PackageLayer {
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path + "/layer.json")))
        let listing = try Data(contentsOf: URL(fileURLWithPath: path + "/manifest.listing"))
        guard let object = meta as? [String: Any], let texts = object["packages"] as? [String],
            let modules = object["modules"] as? [String]
        else { throw PackageLayerError(code: "internal", field: "", message: "\(path)/layer.json: malformed") }
        let packages = try texts.map { text in
            guard let pin = try? PackagePin.parse(text).get() else {
                throw PackageLayerError(code: "internal", field: "", message: "\(path)/layer.json: \(text)")
            }
            return pin
        }
        return PackageLayer(
            path: path, packages: packages, modules: modules, listing: RootfsListing(text: Array(listing)))
    }

    /// Runs `<python> -m pip ARGS`; a failure carries pip's last lines.
    private func pip(_ args: [String], _ failed: (String) -> PackageLayerError) throws(PackageLayerError) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [settings.python, "-m", "pip"] + args
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw failed("cannot run \(settings.python) -m pip: \(error)") }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let tail = text.split(separator: "\n").suffix(6).joined(separator: " | ")
            throw failed("pip \(args[0]) failed (exit \(process.terminationStatus)): \(tail)")
        }
    }

    private func hostPythonVersion() -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [settings.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Owner root, no write bit for group and others, readable (and searchable) by all.
    private func normalizeModes(_ top: String) {
        guard let walker = FileManager.default.enumerator(atPath: top) else { return }
        var paths = [top]
        while let relative = walker.nextObject() as? String { paths.append(top + "/" + relative) }
        for path in paths {
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK else { continue }
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            let exec = isDir || (st.st_mode & 0o111) != 0
            lchown(path, 0, 0)
            chmod(path, exec ? 0o755 : 0o644)
        }
    }

    /// The importable top-level names of the requested packages: their dist-info's
    /// `top_level.txt`, else the first components of their `RECORD` (packaging spec "Recording
    /// installed projects"): directories and `.py`/extension-module files; names that are
    /// private (`_x`), not identifiers (`numpy.libs`) or metadata are left out.
    static func topLevelModules(sitePackages: String, of pins: [PackagePin]) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: sitePackages)) ?? []
        var modules: [String] = []
        for pin in pins {
            guard
                let info = entries.first(where: { entry in
                    entry.hasSuffix(".dist-info")
                        && PackagePin.ofWheel(fileName: String(entry.dropLast(".dist-info".count)) + "-x-x-x.whl")
                            .map { $0 == pin } == true
                })
            else { continue }
            var names: [String] = []
            if let text = try? String(contentsOfFile: "\(sitePackages)/\(info)/top_level.txt", encoding: .utf8) {
                names = text.split(whereSeparator: \.isNewline).map { String($0).trimmingCharacters(in: .whitespaces) }
            } else if let record = try? String(contentsOfFile: "\(sitePackages)/\(info)/RECORD", encoding: .utf8) {
                for line in record.split(whereSeparator: \.isNewline) {
                    let path = line.split(separator: ",").first.map(String.init) ?? ""
                    let parts = path.split(separator: "/")
                    guard let first = parts.first else { continue }
                    if parts.count > 1 {
                        names.append(String(first))
                    } else if first.hasSuffix(".py") {
                        names.append(String(first.dropLast(3)))
                    } else if first.hasSuffix(".so") {
                        names.append(String(first.prefix { $0 != "." }))
                    }
                }
            }
            for name in names
            where !name.isEmpty && !name.hasPrefix("_") && !modules.contains(name)
                && name.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) })
            {
                modules.append(name)
            }
        }
        return modules
    }
}
