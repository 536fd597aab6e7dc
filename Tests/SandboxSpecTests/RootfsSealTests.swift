import Foundation
import Testing

@testable import SandboxSpec

/// A build directory under /tmp: `<dir>/rootfs/` with a few objects of each kind and a dpkg
/// status database, removed by `remove()`.
private struct TempBuild {
    let store: String
    let dir: String
    var tree: String { dir + "/rootfs" }

    static let status = """
        Package: libc6
        Status: install ok installed
        Priority: optional
        Version: 2.36-9+deb12u10
        Description: GNU C Library: Shared libraries
         Contains the standard libraries that are used by nearly all programs on
         the system.

        Package: python3
        Status: install ok installed
        Version: 3.11.2-1+b1
        Conffiles:
         /etc/python3/debian_config 123abc

        Package: bsdutils
        Status: install ok installed
        Version: 1:2.38.1-5+deb12u3

        Package: removed-but-configured
        Status: deinstall ok config-files
        Version: 1.0

        Package: held
        Status: hold ok installed
        Version: 2.0

        """

    init() throws {
        store = FileManager.default.temporaryDirectory.path + "/rootfs-seal-test-" + UUID().uuidString
        dir = store + "/python-3.11"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/rootfs/var/lib/dpkg", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/rootfs/etc", withIntermediateDirectories: true)
        try write("/var/lib/dpkg/status", Self.status)
        try write("/etc/hostname", "sandbox\n")
        try write("/a", "hello\n", mode: 0o644)
        try write("/s", "", mode: 0o4755)
        try fm.createDirectory(
            atPath: tree + "/d", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        try fm.createSymbolicLink(atPath: tree + "/d/link", withDestinationPath: "../a")
        try fm.linkItem(atPath: tree + "/a", toPath: tree + "/d/h")
        #expect(mkfifo(tree + "/p", 0o600) == 0)
        for d in ["", "/var", "/var/lib", "/var/lib/dpkg", "/etc"] {
            try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tree + d)
        }
    }

    func write(_ path: String, _ text: String, mode: Int = 0o644) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: tree + path))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: tree + path)
    }

    func remove() { try? FileManager.default.removeItem(atPath: store) }
}

/// glibc's makedev (sys/sysmacros.h), which Swift does not import.
private func makedev(major: UInt64, minor: UInt64) -> dev_t {
    dev_t((major & 0xfff) << 8 | (major & ~0xfff) << 32 | (minor & 0xff) | (minor & ~0xff) << 12)
}

private func sha256sum(_ bytes: [UInt8]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    let input = Pipe()
    let output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    input.fileHandleForWriting.write(Data(bytes))
    try input.fileHandleForWriting.close()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: out.prefix(64), as: UTF8.self)
}

@Suite struct RootfsListingTests {
    /// Every kind of object, in the format rootfs/README.md gives, sorted bytewise; the
    /// digest is sha256sum(1) of the text.
    @Test func listsEveryObjectAsTheReadmeSays() throws {
        let build = try TempBuild()
        defer { build.remove() }
        let listing = try RootfsListing.scan(build.tree)
        let u = getuid()
        let g = getgid()
        let hello = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"  // sha256("hello\n")
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        let statusSize = TempBuild.status.utf8.count
        let statusHash = try sha256sum(Array(TempBuild.status.utf8))
        let expected = [
            "/\td\t0755\t\(u)\t\(g)\t-\t-",
            "/a\tf\t0644\t\(u)\t\(g)\t6\t\(hello)",
            "/d\td\t0750\t\(u)\t\(g)\t-\t-",
            "/d/h\tf\t0644\t\(u)\t\(g)\t6\t\(hello)",
            "/d/link\tl\t0777\t\(u)\t\(g)\t-\t../a",
            "/etc\td\t0755\t\(u)\t\(g)\t-\t-",
            "/etc/hostname\tf\t0644\t\(u)\t\(g)\t8\t\(try sha256sum(Array("sandbox\n".utf8)))",
            "/p\tp\t0600\t\(u)\t\(g)\t-\t-",
            "/s\tf\t4755\t\(u)\t\(g)\t0\t\(empty)",
            "/var\td\t0755\t\(u)\t\(g)\t-\t-",
            "/var/lib\td\t0755\t\(u)\t\(g)\t-\t-",
            "/var/lib/dpkg\td\t0755\t\(u)\t\(g)\t-\t-",
            "/var/lib/dpkg/status\tf\t0644\t\(u)\t\(g)\t\(statusSize)\t\(statusHash)",
        ]
        #expect(listing.lines.map { String(decoding: $0, as: UTF8.self) } == expected)
        #expect(listing.digest == "sha256:" + (try sha256sum(listing.text)))
        #expect(listing.sizeBytes == Int64(6 + 6 + 8 + 0 + statusSize))
        #expect(RootfsListing(text: listing.text) == listing)
    }

    @Test(.enabled(if: getuid() == 0, "mknod needs CAP_MKNOD"))
    func devicesShowMajorAndMinor() throws {
        let build = try TempBuild()
        defer { build.remove() }
        #expect(mknod(build.tree + "/null", S_IFCHR | 0o666, makedev(major: 1, minor: 3)) == 0)
        #expect(mknod(build.tree + "/loop", S_IFBLK | 0o660, makedev(major: 259, minor: 300)) == 0)
        #expect(chmod(build.tree + "/null", 0o666) == 0 && chmod(build.tree + "/loop", 0o660) == 0)  // past the umask
        let lines = try RootfsListing.scan(build.tree).lines.map { String(decoding: $0, as: UTF8.self) }
        #expect(lines.contains("/null\tc\t0666\t0\t0\t-\t1:3"))
        #expect(lines.contains("/loop\tb\t0660\t0\t0\t-\t259:300"))
    }

    @Test func aNameWithANewlineCannotBeListed() throws {
        let build = try TempBuild()
        defer { build.remove() }
        try build.write("/bad\nname", "")
        #expect(throws: RootfsError.unlistableName(path: build.tree + "/bad\nname")) {
            try RootfsListing.scan(build.tree)
        }
    }

    @Test func firstDifferenceNamesAddedRemovedAndChangedPaths() {
        func listing(_ lines: [String]) -> RootfsListing { RootfsListing(lines: lines.map { Array($0.utf8) }) }
        let base = listing([
            "/\td\t0755\t0\t0\t-\t-", "/a\tf\t0644\t0\t0\t1\tx", "/a/b\td\t0755\t0\t0\t-\t-", "/c\tf\t0644\t0\t0\t1\ty",
        ])
        #expect(RootfsListing.firstDifference(recorded: base, actual: base) == nil)
        let changed = listing([
            "/\td\t0755\t0\t0\t-\t-", "/a\tf\t0600\t0\t0\t1\tx", "/a/b\td\t0755\t0\t0\t-\t-", "/c\tf\t0644\t0\t0\t1\ty",
        ])
        #expect(
            RootfsListing.firstDifference(recorded: base, actual: changed)
                == RootfsDifference(path: "/a", recorded: "f 0644 0 0 1 x", actual: "f 0600 0 0 1 x"))
        let removed = listing(["/\td\t0755\t0\t0\t-\t-", "/a\tf\t0644\t0\t0\t1\tx", "/c\tf\t0644\t0\t0\t1\ty"])
        #expect(
            RootfsListing.firstDifference(recorded: base, actual: removed)?.description
                == "/a/b was removed (was d 0755 0 0 - -)")
        #expect(
            RootfsListing.firstDifference(recorded: removed, actual: base)?.description
                == "/a/b was added (d 0755 0 0 - -)")
        let added = listing(base.lines.map { String(decoding: $0, as: UTF8.self) } + ["/d\tf\t0644\t0\t0\t1\tz"])
        #expect(RootfsListing.firstDifference(recorded: base, actual: added)?.path == "/d")
    }
}

@Suite struct RootfsSealTests {
    @Test func dpkgStatusGivesTheInstalledPackagesSorted() {
        #expect(
            RootfsPackage.installed(dpkgStatus: TempBuild.status) == [
                RootfsPackage(name: "bsdutils", version: "1:2.38.1-5+deb12u3"),
                RootfsPackage(name: "libc6", version: "2.36-9+deb12u10"),
                RootfsPackage(name: "python3", version: "3.11.2-1+b1"),
            ])
    }

    /// seal writes a manifest the store lists and a listing whose digest is the manifest's;
    /// verify passes on the untouched tree.
    @Test func sealWritesAManifestThatVerifies() throws {
        let build = try TempBuild()
        defer { build.remove() }
        let created = Date(timeIntervalSince1970: 1_747_742_400.75)
        let sealed = try RootfsStore.seal(
            directory: build.dir, name: "python", version: "3.11", debianSuite: "bookworm", architecture: "amd64",
            created: created)
        let store = RootfsStore(root: build.store)
        let listed = try #require(try store.list().first)
        #expect(listed == sealed)
        #expect(listed.runtime == "python:3.11")
        #expect(listed.created == Date(timeIntervalSince1970: 1_747_742_400))
        #expect(listed.packages.map(\.name) == ["bsdutils", "libc6", "python3"])
        let text = try String(contentsOfFile: build.dir + "/manifest.json", encoding: .utf8)
        #expect(text.hasPrefix("{\n  \"schemaVersion\": 1,\n  \"name\": \"python\",\n"))
        #expect(text.contains("\n  \"created\": \"2025-05-20T12:00:00Z\",\n"))
        #expect(text.hasSuffix("    {\"name\": \"python3\", \"version\": \"3.11.2-1+b1\"}\n  ]\n}\n"))
        let recorded = try #require(try store.recordedListing(for: sealed))
        #expect(recorded.digest == sealed.digest)
        #expect(try store.verify(runtime: "python") == sealed)
        for file in ["/manifest.json", "/rootfs.listing"] {
            let mode = try FileManager.default.attributesOfItem(atPath: build.dir + file)[.posixPermissions] as? Int
            #expect(mode == 0o644, "\(file)")
        }
    }

    @Test(arguments: [
        ("content", "/etc/hostname", "changed: recorded f 0644"),
        ("mode", "/a", "changed: recorded f 0644"),
        ("added", "/etc/new", "was added (f 0644"),
        ("removed", "/s", "was removed (was f 4755"),
    ])
    func verifyNamesTheFirstDifferingPath(change: String, path: String, says: String) throws {
        let build = try TempBuild()
        defer { build.remove() }
        try RootfsStore.seal(
            directory: build.dir, name: "python", version: "3.11", debianSuite: "bookworm", architecture: "amd64")
        switch change {
        case "content": try build.write(path, "other\n")
        case "mode": try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: build.tree + path)
        case "added": try build.write(path, "x")
        default: try FileManager.default.removeItem(atPath: build.tree + path)
        }
        let error = #expect(throws: RootfsError.self) {
            try RootfsStore(root: build.store).verify(runtime: "python:3.11")
        }
        guard case .digestMismatch(let runtime, _, _, let difference) = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(runtime == "python:3.11")
        #expect(difference?.path == path)
        #expect(error?.description.contains("first difference: \(path) ") == true, "\(error!)")
        #expect(error?.description.contains(says) == true, "\(error!)")
    }

    /// A rootfs sealed before listings were recorded (the bash build) still verifies, and a
    /// mismatch says why it cannot name the path.
    @Test func withoutARecordedListingAMismatchNamesNoPath() throws {
        let build = try TempBuild()
        defer { build.remove() }
        try RootfsStore.seal(
            directory: build.dir, name: "python", version: "3.11", debianSuite: "bookworm", architecture: "amd64")
        try FileManager.default.removeItem(atPath: build.dir + "/rootfs.listing")
        let store = RootfsStore(root: build.store)
        #expect(try store.verify(runtime: "python:3.11").runtime == "python:3.11")
        try build.write("/a", "changed\n")
        let error = #expect(throws: RootfsError.self) { try store.verify(runtime: "python:3.11") }
        guard case .digestMismatch(_, _, _, let difference) = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(difference == nil)
        #expect(error?.description.contains("no listing was recorded") == true)
    }

    @Test func sealRefusesBadNamesAndATreeWithoutDpkg() throws {
        let build = try TempBuild()
        defer { build.remove() }
        #expect(throws: RootfsError.invalidRuntime("Python:3.11")) {
            try RootfsStore.seal(
                directory: build.dir, name: "Python", version: "3.11", debianSuite: "bookworm", architecture: "amd64")
        }
        #expect(throws: RootfsError.invalidRuntime("python")) {
            try RootfsStore.seal(
                directory: build.dir, name: "python", version: "3.11", runtime: "python", debianSuite: "bookworm",
                architecture: "amd64")
        }
        try FileManager.default.removeItem(atPath: build.tree + "/var/lib/dpkg/status")
        #expect(throws: RootfsError.self) {
            try RootfsStore.seal(
                directory: build.dir, name: "python", version: "3.11", debianSuite: "bookworm", architecture: "amd64")
        }
        #expect(!FileManager.default.fileExists(atPath: build.dir + "/manifest.json"))
    }
}
