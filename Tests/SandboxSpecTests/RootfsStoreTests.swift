import Foundation
import Testing

@testable import SandboxSpec

private let digestA = "sha256:" + String(repeating: "a", count: 64)

private func manifestJSON(
    name: String, version: String, runtime: String? = nil, digest: String = digestA,
    created: String = "2025-05-20T12:00:00Z", packages: [(String, String)] = [("python3", "3.11.2-1+b1")]
) -> String {
    let pkgs = packages.map { #"{"name": "\#($0.0)", "version": "\#($0.1)"}"# }.joined(separator: ", ")
    return """
        {
          "schemaVersion": 1,
          "name": "\(name)",
          "version": "\(version)",
          "runtime": "\(runtime ?? "\(name):\(version)")",
          "debianSuite": "bookworm",
          "architecture": "amd64",
          "created": "\(created)",
          "digest": "\(digest)",
          "sizeBytes": 148657835,
          "packages": [\(pkgs)]
        }
        """
}

/// A store directory under /tmp, removed by `remove()`.
private struct TempStore {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory.path + "/rootfs-store-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// Installs a fake rootfs: `<dir>/manifest.json` and, unless `withRootfs` is false, `<dir>/rootfs/`.
    func add(_ dir: String, manifest: String, withRootfs: Bool = true) throws {
        let path = root + "/" + dir
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Data(manifest.utf8).write(to: URL(fileURLWithPath: path + "/manifest.json"))
        if withRootfs {
            try FileManager.default.createDirectory(atPath: path + "/rootfs", withIntermediateDirectories: true)
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

@Suite struct RootfsManifestTests {
    @Test func decodesTheBuildScriptsManifest() throws {
        let json = manifestJSON(
            name: "python", version: "3.11",
            packages: [("libc6", "2.36-9+deb12u10"), ("python3", "3.11.2-1+b1"), ("bsdutils", "1:2.38.1-5+deb12u3")])
        let m = try JSONDecoder().decode(RootfsManifest.self, from: Data(json.utf8))
        #expect(m.name == "python")
        #expect(m.version == "3.11")
        #expect(m.runtime == "python:3.11")
        #expect(m.debianSuite == "bookworm")
        #expect(m.architecture == "amd64")
        #expect(m.schemaVersion == 1)
        #expect(m.digest == digestA)
        #expect(m.sizeBytes == 148_657_835)
        #expect(m.packages.count == 3)
        #expect(m.package(named: "python3")?.version == "3.11.2-1+b1")
        #expect(m.package(named: "bsdutils")?.version == "1:2.38.1-5+deb12u3")
        #expect(m.created == Date(timeIntervalSince1970: 1_747_742_400))
    }

    @Test func roundTripsAndAcceptsFractionalSeconds() throws {
        let json = manifestJSON(name: "node", version: "18", created: "2025-05-20T12:00:00.250Z")
        let m = try JSONDecoder().decode(RootfsManifest.self, from: Data(json.utf8))
        #expect(m.created == Date(timeIntervalSince1970: 1_747_742_400.25))
        let again = try JSONDecoder().decode(RootfsManifest.self, from: JSONEncoder().encode(m))
        #expect(again.runtime == "node:18")
        #expect(again.packages == m.packages)
        #expect(abs(again.created.timeIntervalSince(m.created)) < 1)
    }

    @Test func optionalFieldsMayBeAbsent() throws {
        let json = """
            {"name": "node", "version": "18", "runtime": "node:18", "debianSuite": "bookworm",
             "created": "2025-05-20T12:00:00Z", "digest": "\(digestA)", "sizeBytes": 1, "packages": []}
            """
        let m = try JSONDecoder().decode(RootfsManifest.self, from: Data(json.utf8))
        #expect(m.schemaVersion == 1)
        #expect(m.architecture == nil)
    }

    @Test(arguments: [
        ("digest", manifestJSON(name: "python", version: "3.11", digest: "md5:abc")),
        ("created", manifestJSON(name: "python", version: "3.11", created: "yesterday")),
        ("runtime", #"{"name": "python", "version": "3.11"}"#),
    ])
    func rejectsBadManifests(field: String, json: String) throws {
        let store = try TempStore()
        defer { store.remove() }
        try store.add("python-3.11", manifest: json)
        let error = #expect(throws: RootfsError.self) { try RootfsStore(root: store.root).list() }
        guard case .invalidManifest(let path, let reason) = error else {
            Issue.record("unexpected error \(String(describing: error))")
            return
        }
        #expect(path == store.root + "/python-3.11/manifest.json")
        #expect(reason.contains(field), "\(reason)")
    }
}

@Suite struct RootfsStoreLookupTests {
    @Test func missingStoreMeansNothingInstalled() throws {
        let store = RootfsStore(root: "/nonexistent/safespace-rootfs-" + UUID().uuidString)
        #expect(try store.list().isEmpty)
        let error = #expect(throws: RootfsError.self) { try store.resolve(runtime: "python:3.11") }
        #expect(error?.description.contains("installed: none") == true)
    }

    @Test func listsInstalledRootfsAndSkipsTemporaries() throws {
        let store = try TempStore()
        defer { store.remove() }
        try store.add("python-3.11", manifest: manifestJSON(name: "python", version: "3.11"))
        try store.add("python-3.9", manifest: manifestJSON(name: "python", version: "3.9"))
        try store.add("node-18", manifest: manifestJSON(name: "node", version: "18"))
        // a build in progress, a lock file and a directory without a manifest are not runtimes
        try store.add(".build-ruby-3.1.AbC123", manifest: manifestJSON(name: "ruby", version: "3.1"))
        try Data().write(to: URL(fileURLWithPath: store.root + "/.python-3.11.lock"))
        try FileManager.default.createDirectory(
            atPath: store.root + "/go-1.19/rootfs", withIntermediateDirectories: true)

        let runtimes = try RootfsStore(root: store.root).list().map(\.runtime)
        #expect(runtimes == ["node:18", "python:3.11", "python:3.9"])
    }

    @Test func resolvesExactNameOnlyAndVersionPrefix() throws {
        let store = try TempStore()
        defer { store.remove() }
        try store.add("python-3.9", manifest: manifestJSON(name: "python", version: "3.9"))
        try store.add("python-3.11", manifest: manifestJSON(name: "python", version: "3.11"))
        try store.add("node-18", manifest: manifestJSON(name: "node", version: "18"))
        let s = RootfsStore(root: store.root)

        let exact = try s.resolve(runtime: "python:3.9")
        #expect(exact.manifest.version == "3.9")
        #expect(exact.rootfsPath == store.root + "/python-3.9/rootfs")

        // newest is numeric, not lexical: 3.11 > 3.9
        #expect(try s.resolve(runtime: "python").manifest.version == "3.11")
        #expect(try s.resolve(runtime: "python:3").manifest.version == "3.11")
        #expect(try s.resolve(runtime: "node").rootfsPath == store.root + "/node-18/rootfs")
        #expect(throws: RootfsError.self) { try s.resolve(runtime: "python:3.1") }
    }

    @Test func missingRuntimeErrorListsInstalledRuntimes() throws {
        let store = try TempStore()
        defer { store.remove() }
        try store.add("python-3.11", manifest: manifestJSON(name: "python", version: "3.11"))
        try store.add("node-18", manifest: manifestJSON(name: "node", version: "18"))

        let error = #expect(throws: RootfsError.self) {
            try RootfsStore(root: store.root).resolve(runtime: "ruby:3.1")
        }
        #expect(error == .notInstalled(runtime: "ruby:3.1", installed: ["node:18", "python:3.11"]))
        #expect(
            error?.description
                == #"runtime "ruby:3.1" is not installed on this node; installed: node:18, python:3.11; build one with: safespace rootfs build NAME"#
        )
    }

    @Test func malformedRuntimeIsRejected() throws {
        let s = RootfsStore(root: "/nonexistent")
        for bad in ["", "Python", "python:", ":3.11", "python:3.11:1", "py thon", "../etc"] {
            #expect(throws: RootfsError.invalidRuntime(bad)) { try s.resolve(runtime: bad) }
        }
    }

    @Test func manifestWithoutRootfsDirectoryIsReported() throws {
        let store = try TempStore()
        defer { store.remove() }
        try store.add("node-18", manifest: manifestJSON(name: "node", version: "18"), withRootfs: false)
        #expect(throws: RootfsError.rootfsMissing(runtime: "node:18", path: store.root + "/node-18/rootfs")) {
            try RootfsStore(root: store.root).resolve(runtime: "node:18")
        }
    }

    @Test func manifestInTheWrongDirectoryIsRejected() throws {
        let store = try TempStore()
        defer { store.remove() }
        try store.add("python-3.11", manifest: manifestJSON(name: "python", version: "3.12"))
        #expect(throws: RootfsError.self) { try RootfsStore(root: store.root).list() }
    }

    @Test func versionOrdering() {
        #expect(RootfsStore.compareVersions("3.11", "3.9") == .orderedDescending)
        #expect(RootfsStore.compareVersions("18", "20") == .orderedAscending)
        #expect(RootfsStore.compareVersions("3.11", "3.11.1") == .orderedAscending)
        #expect(RootfsStore.compareVersions("3.11", "3.11") == .orderedSame)
        #expect(RootfsStore.version("3.11", hasPrefix: "3"))
        #expect(!RootfsStore.version("31.1", hasPrefix: "3"))
    }

    @Test func buildScriptSearchOrder() {
        let c = RootfsStore.buildScriptCandidates(
            environment: "/opt/x/build-rootfs", executable: "/usr/local/bin/safespace")
        #expect(
            c == [
                "/opt/x/build-rootfs",
                "/usr/local/share/safespace/scripts/build-rootfs",
            ])
        // no guessing from a source tree: a program in .build/ finds no script of its own
        #expect(
            RootfsStore.buildScriptCandidates(environment: nil, executable: "/src/safespace/.build/debug/safespace")
                == ["/src/safespace/.build/share/safespace/scripts/build-rootfs"])
    }

    /// build() runs the script with NAME --dest ROOT [--force] and maps its exit status.
    @Test func buildRunsTheScriptAndReportsItsFailure() throws {
        let store = try TempStore()
        defer { store.remove() }
        let script = store.root + "/fake-build-rootfs"
        let argsFile = store.root + "/args"
        let text = "#!/bin/sh\nprintf '%s\\n' \"$@\" > '\(argsFile)'\n[ \"$1\" = good ] || exit 3\n"
        try Data(text.utf8).write(to: URL(fileURLWithPath: script))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        let s = RootfsStore(root: store.root, buildScript: script)

        try s.build(name: "good", force: true)
        let args = try String(contentsOfFile: argsFile, encoding: .utf8)
        #expect(args == "good\n--dest\n\(store.root)\n--force\n")

        #expect(throws: RootfsError.buildFailed(name: "bad", script: script, reason: "exit status 3")) {
            try s.build(name: "bad", force: false)
        }
        #expect(try String(contentsOfFile: argsFile, encoding: .utf8) == "bad\n--dest\n\(store.root)\n")
    }

    /// build(onOutput:) hands over the script's stdout and stderr line by line (a last line
    /// without its newline too) and still maps its exit status.
    @Test func buildHandsOverTheScriptsOutput() throws {
        let store = try TempStore()
        defer { store.remove() }
        let script = store.root + "/fake-build-rootfs"
        let text =
            "#!/bin/sh\necho 'build-rootfs: [   0s] step one'\necho oops >&2\nprintf 'last'\n[ \"$1\" = good ] || exit 4\n"
        try Data(text.utf8).write(to: URL(fileURLWithPath: script))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        let s = RootfsStore(root: store.root, buildScript: script)
        var lines: [String] = []
        try s.build(name: "good", force: false) { lines.append($0) }
        #expect(lines == ["build-rootfs: [   0s] step one", "oops", "last"])
        lines = []
        #expect(throws: RootfsError.buildFailed(name: "bad", script: script, reason: "exit status 4")) {
            try s.build(name: "bad", force: false) { lines.append($0) }
        }
        #expect(lines == ["build-rootfs: [   0s] step one", "oops", "last"])
    }

    /// Without $SAFESPACE_BUILD_ROOTFS or an installed layout, the error says what was tried
    /// and how to fix it.
    @Test func missingBuildScriptErrorSaysWhatToDo() {
        let error = RootfsError.buildScriptNotFound(searched: ["/x/.build/share/safespace/scripts/build-rootfs"])
        #expect(error.description.contains("looked at: /x/.build/share/safespace/scripts/build-rootfs"))
        #expect(error.description.contains("set SAFESPACE_BUILD_ROOTFS"))
    }

    /// build() passes the program that seals the tree as $SAFESPACE_CLI.
    @Test func buildPassesTheSealingProgram() throws {
        let store = try TempStore()
        defer { store.remove() }
        let script = store.root + "/fake-build-rootfs"
        let out = store.root + "/cli"
        try Data("#!/bin/sh\nprintf %s \"$SAFESPACE_CLI\" > '\(out)'\n".utf8).write(to: URL(fileURLWithPath: script))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script)
        try RootfsStore(root: store.root, buildScript: script).build(
            name: "good", force: false, safespace: "/opt/bin/safespace")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "/opt/bin/safespace")
    }
}

/// Checks the real python rootfs built by scripts/build-rootfs, when this node has one.
@Suite struct InstalledRootfsTests {
    static let pythonDir = RootfsStore.defaultRoot + "/python-3.11"

    @Test(.enabled(if: FileManager.default.fileExists(atPath: pythonDir + "/manifest.json")))
    func installedPythonRootfs() throws {
        let store = RootfsStore()
        let (manifest, path) = try store.resolve(runtime: "python:3.11")
        #expect(path == Self.pythonDir + "/rootfs")
        #expect(manifest.runtime == "python:3.11")
        #expect(manifest.debianSuite == "bookworm")
        #expect(RootfsManifest.isSHA256Digest(manifest.digest))
        #expect(manifest.sizeBytes > 10_000_000)
        let python3 = try #require(manifest.package(named: "python3"))
        #expect(python3.version.hasPrefix("3.11"))
        #expect(manifest.package(named: "libc6") != nil)
        let fm = FileManager.default
        #expect(fm.isExecutableFile(atPath: path + "/usr/bin/python3"))
        // built as a tree of its own: nothing of the manifest inside the rootfs
        #expect(!fm.fileExists(atPath: path + "/manifest.json"))
        let workspace = try fm.attributesOfItem(atPath: path + "/workspace")
        #expect((workspace[.ownerAccountID] as? NSNumber)?.intValue == 1000)
    }

    static let installed = ["python:3.11", "node:18"].filter {
        FileManager.default.fileExists(
            atPath: RootfsStore.defaultRoot + "/" + $0.replacingOccurrences(of: ":", with: "-") + "/manifest.json")
    }

    /// Recomputes the digest (about 2 s each); root only, since the rootfs holds files only
    /// root can read (/etc/shadow). The installed rootfs were built by the bash digest of
    /// earlier versions, so this also proves the listings agree byte for byte.
    @Test(.enabled(if: getuid() == 0), arguments: installed)
    func installedRootfsMatchesItsDigest(runtime: String) throws {
        let manifest = try RootfsStore().verify(runtime: runtime)
        #expect(manifest.runtime == runtime)
        let (_, path) = try RootfsStore().resolve(runtime: runtime)
        #expect(try RootfsListing.scan(path).sizeBytes == manifest.sizeBytes)
    }

    /// The package list `seal` reads from dpkg's status is the one dpkg-query gave the
    /// installed manifests, and `manifestText` lays them out as they are on disk.
    @Test(arguments: installed)
    func sealReproducesInstalledManifests(runtime: String) throws {
        let store = RootfsStore()
        let (manifest, path) = try store.resolve(runtime: runtime)
        let status = try String(contentsOfFile: path + "/var/lib/dpkg/status", encoding: .utf8)
        #expect(RootfsPackage.installed(dpkgStatus: status) == manifest.packages)
        let onDisk = try String(contentsOfFile: store.directory(for: manifest) + "/manifest.json", encoding: .utf8)
        #expect(manifest.manifestText == onDisk)
    }
}
