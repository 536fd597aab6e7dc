import Foundation
import Testing

/// `safespace rootfs seal/verify/listing` and `safespace doctor`: exit codes and output.
struct SafeSpaceRootfsCLITests {
    static let binary = SafeSpaceCLITests.binary

    static func safespace(_ arguments: [String]) throws -> SafeSpaceCLITests.Result {
        try SafeSpaceCLITests.safespace(arguments)
    }

    @Test(
        "rootfs verify: an installed rootfs matches its manifest",
        .enabled(
            if: binary != nil && geteuid() == 0
                && FileManager.default.fileExists(atPath: "/var/lib/safespace/rootfs/python-3.11/manifest.json")))
    func verifyInstalled() throws {
        let r = try Self.safespace(["rootfs", "verify", "python"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("python:3.11: matches its manifest (sha256:"))
    }

    /// seal a small tree into a store of its own; verify passes (0), then fails (1) naming
    /// the changed path; an unknown runtime is an error of safespace (125).
    @Test("rootfs seal, verify, listing", .enabled(if: binary != nil))
    func sealThenVerify() throws {
        let store = FileManager.default.temporaryDirectory.path + "/rootfs-cli-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: store) }
        let dir = store + "/tiny-1"
        try FileManager.default.createDirectory(atPath: dir + "/rootfs/var/lib/dpkg", withIntermediateDirectories: true)
        let status = "Package: busybox\nStatus: install ok installed\nVersion: 1:1.35.0-4+b3\n"
        try Data(status.utf8).write(to: URL(fileURLWithPath: dir + "/rootfs/var/lib/dpkg/status"))
        try Data("x\n".utf8).write(to: URL(fileURLWithPath: dir + "/rootfs/file"))

        let seal = try Self.safespace([
            "rootfs", "seal", dir, "--name", "tiny", "--version", "1", "--suite", "bookworm", "--architecture", "amd64",
        ])
        #expect(seal.status == 0, "\(seal.stderr)")
        #expect(
            seal.stdout.hasPrefix("tiny:1 sha256:")
                && seal.stdout.hasSuffix(" \(2 + status.utf8.count) bytes 1 packages\n"), "\(seal.stdout)")

        let ok = try Self.safespace(["rootfs", "verify", "tiny", "--store", store])
        #expect(ok.status == 0, "\(ok.stderr)")
        let listing = try Self.safespace(["rootfs", "listing", "tiny:1", "--store", store])
        let recorded = try Self.safespace(["rootfs", "listing", "tiny:1", "--store", store, "--recorded"])
        #expect(listing.status == 0 && listing.stdout == recorded.stdout)
        #expect(listing.stdout.contains("\n/file\tf\t"))

        try Data("y\n".utf8).write(to: URL(fileURLWithPath: dir + "/rootfs/file"))
        let bad = try Self.safespace(["rootfs", "verify", "tiny", "--store", store])
        #expect(bad.status == 1)
        #expect(
            bad.stderr.hasPrefix(
                "safespace: error: runtime \"tiny:1\" does not match its manifest: first difference: /file changed: "),
            "\(bad.stderr)")

        let missing = try Self.safespace(["rootfs", "verify", "ruby", "--store", store])
        #expect(missing.status == 125)
        #expect(missing.stderr.contains("runtime \"ruby\" is not installed on this node; installed: tiny:1"))
    }

    @Test("doctor: one line per check, exit 0 on this host", .enabled(if: binary != nil && geteuid() == 0))
    func doctor() throws {
        let r = try Self.safespace(["doctor"])
        #expect(r.status == 0, "\(r.stdout)")
        let lines = r.stdout.split(separator: "\n")
        let statuses = Set(lines.dropLast().map { $0.split(separator: " ").first.map(String.init) ?? "" })
        #expect(statuses.isSubset(of: ["ok", "warn"]), "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix("ok    libseccomp ") })
        #expect(lines.last?.hasPrefix("safespace doctor: the host can run SafeSpace") == true)
    }
}
