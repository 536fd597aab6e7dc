import Foundation
import Testing

@testable import SandboxSpec

/// PEP 440 ordering, pins, the allowlist, and OSV matching (PackagePin, PEP440Version,
/// OSVDatabase).
struct PEP440VersionTests {
    static func v(_ text: String) -> PEP440Version {
        guard let version = PEP440Version(text) else {
            Issue.record("\(text) did not parse")
            return PEP440Version("0")!
        }
        return version
    }

    /// Ascending, from PEP 440's "Summary of permitted suffixes and relative ordering"
    /// example list (plus epochs and local versions).
    static let ascending = [
        "1.0.dev456", "1.0a1", "1.0a2.dev456", "1.0a12.dev456", "1.0a12", "1.0b1.dev456", "1.0b2",
        "1.0b2.post345.dev456", "1.0b2.post345", "1.0rc1.dev456", "1.0rc1", "1.0", "1.0+abc.5", "1.0+abc.7",
        "1.0+5", "1.0.post456.dev34", "1.0.post456", "1.0.15", "1.1.dev1", "1.1", "2.1.3", "2.10", "10.0",
        "1!0.1",
    ]

    @Test func pep440Ordering() {
        let versions = Self.ascending.map(Self.v)
        for i in versions.indices {
            for j in versions.indices {
                #expect((versions[i] < versions[j]) == (i < j), "\(Self.ascending[i]) vs \(Self.ascending[j])")
            }
        }
    }

    @Test(
        "normalized spellings are equal",
        arguments: [
            ("1.0", "1.0.0"), ("1.0", "v1.0"), ("1.0a1", "1.0alpha1"), ("1.0b0", "1.0beta"), ("1.0rc1", "1.0c1"),
            ("1.0rc1", "1.0-pre1"), ("1.0rc1", "1.0preview1"), ("1.0.post1", "1.0-1"), ("1.0.post1", "1.0_r1"),
            ("1.0.post0", "1.0.post"), ("1.0.dev0", "1.0-dev"), ("1.0a1", "1.0.A.1"), ("0!1.0", "1.0"),
            ("1.0+ubuntu.1", "1.0+ubuntu-1"),
        ])
    func equalSpellings(a: String, b: String) {
        #expect(Self.v(a) == Self.v(b), "\(a) == \(b)")
        #expect(!(Self.v(a) < Self.v(b)) && !(Self.v(b) < Self.v(a)))
    }

    @Test("not versions", arguments: ["", "abc", "1.0-", "1..0", "1.0+", "1.0+a..b", "1.0foo", "1.0.post1a", "1!"])
    func refused(text: String) {
        #expect(PEP440Version(text) == nil, "\(text)")
    }

    @Test func normalizedDescription() {
        #expect(Self.v("V1.0-ALPHA-1.POST-2.DEV-3+Local_1").description == "1.0a1.post2.dev3+local.1")
        #expect(Self.v("2!1.0c2").description == "2!1.0rc2")
    }
}

struct PackagePinTests {
    @Test func pins() throws {
        let pin = try PackagePin.parse("Foo_Bar.baz == 1.0").get()
        #expect(pin.name == "foo-bar-baz" && pin.version == PEP440Version("1.0")!)
        #expect(pin.description == "foo-bar-baz==1.0")
        for bad in ["numpy", "numpy>=1", "numpy==", "numpy==1.0+local", "numpy==1==2", "num py==1", "numpy[x]==1"] {
            #expect(throws: PinError.self, "\(bad)") { try PackagePin.parse(bad).get() }
        }
    }

    @Test func wheelNames() {
        #expect(
            PackagePin.ofWheel(fileName: "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
                == PackagePin(name: "numpy", version: PEP440Version("2.1.3")!))
        #expect(PackagePin.ofWheel(fileName: "tiny_pkg-1.0-1-py3-none-any.whl")?.name == "tiny-pkg")
        #expect(PackagePin.ofWheel(fileName: "numpy-2.1.3.tar.gz") == nil)
        #expect(PackagePin.ofWheel(fileName: "x-1.0-py3.whl") == nil)
    }

    @Test func allowlist() throws {
        let list = try PackageAllowlist(text: "# the node's packages\nNumPy\n  pandas   # data frames\n\nTiny_Pkg\n")
        #expect(list.allows("numpy") && list.allows("PANDAS") && list.allows("tiny.pkg") && list.allows("tiny-pkg"))
        #expect(!list.allows("scipy") && !list.allows("pandas-stubs"))
        #expect(throws: PinError.self) { try PackageAllowlist(text: "numpy\nnot a name\n") }
    }
}

struct OSVDatabaseTests {
    /// An advisory for `tinypkg` affecting [1.0, 1.2) and 2.0 exactly, one withdrawn, one for
    /// another ecosystem with the same name, one with last_affected and limit.
    static let fixtures: [String: String] = [
        "PYSEC-2099-1.json": """
        {"id": "PYSEC-2099-1", "aliases": ["GHSA-aaaa-bbbb-cccc"], "summary": "tinypkg runs the wrong code",
         "affected": [{"package": {"ecosystem": "PyPI", "name": "TinyPkg"},
                       "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"fixed": "1.2"}]},
                                  {"type": "GIT", "repo": "https://example.org/x", "events": [{"introduced": "0"}]}],
                       "versions": ["2.0"]}]}
        """,
        "withdrawn.json": """
        {"id": "PYSEC-2099-2", "withdrawn": "2099-01-01T00:00:00Z",
         "affected": [{"package": {"ecosystem": "PyPI", "name": "tinypkg"}, "versions": ["1.5"]}]}
        """,
        "npm.json": """
        {"id": "GHSA-npm0-0000-0000", "affected": [{"package": {"ecosystem": "npm", "name": "tinypkg"},
         "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]}]}
        """,
        "sub/OTHER-1.json": """
        {"id": "OTHER-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "other.pkg"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"last_affected": "3.0"}, {"limit": "4"}]},
                    {"type": "ECOSYSTEM", "events": [{"introduced": "5.0rc1"}]}]}]}
        """,
    ]

    static func database() throws -> OSVDatabase {
        let dir = "/tmp/osv-test-" + String(UInt32.random(in: .min ... .max), radix: 16)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        for (name, text) in fixtures { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        let db = try OSVDatabase.load(directory: dir)
        #expect(db.fileCount == 4)
        return db
    }

    static func ids(_ db: OSVDatabase, _ pin: String) throws -> [String] {
        db.advisories(for: try PackagePin.parse(pin).get()).map(\.id)
    }

    @Test func matchesVersionsAndRanges() throws {
        let db = try Self.database()
        #expect(try Self.ids(db, "tinypkg==0.9") == [])
        #expect(try Self.ids(db, "tinypkg==1.0") == ["PYSEC-2099-1"])
        #expect(try Self.ids(db, "tiny_pkg==1.0") == [])  // another name: tiny-pkg
        #expect(try Self.ids(db, "TinyPkg==1.1.post3") == ["PYSEC-2099-1"])
        #expect(try Self.ids(db, "tinypkg==1.2rc1") == ["PYSEC-2099-1"])  // a pre-release of 1.2 is before 1.2
        #expect(try Self.ids(db, "tinypkg==1.2") == [])
        #expect(try Self.ids(db, "tinypkg==1.5") == [])  // withdrawn
        #expect(try Self.ids(db, "tinypkg==2.0.0") == ["PYSEC-2099-1"])  // the versions list, PEP 440 equality
        #expect(try Self.ids(db, "tinypkg==2.0.1") == [])
        #expect(try Self.ids(db, "other.pkg==3.0") == ["OTHER-1"])  // last_affected is affected
        #expect(try Self.ids(db, "other-pkg==3.0.post1") == [])
        #expect(try Self.ids(db, "other-pkg==4.5") == [])
        #expect(try Self.ids(db, "other-pkg==5.0rc1") == ["OTHER-1"])  // a second range, open-ended
        #expect(try Self.ids(db, "other-pkg==7") == ["OTHER-1"])
    }

    @Test func waiversByIdOrAlias() throws {
        let db = try Self.database()
        let pin = try PackagePin.parse("tinypkg==1.0").get()
        #expect(db.scan([pin], waivers: []).map(\.waived) == [false])
        #expect(db.scan([pin], waivers: ["PYSEC-2099-1"]).map(\.waived) == [true])
        #expect(db.scan([pin], waivers: ["GHSA-aaaa-bbbb-cccc"]).map(\.waived) == [true])
        #expect(db.scan([pin], waivers: ["PYSEC-2099-9"]).map(\.waived) == [false])
    }

    @Test func badDatabasesAreErrorsNamingTheFile() throws {
        #expect(throws: OSVError.self) { try OSVDatabase.load(directory: "/nonexistent-osv") }
        let notJSON = #expect(throws: OSVError.self) {
            var db = OSVDatabase()
            try db.add(data: Data("{".utf8), file: "x.json")
        }
        #expect(notJSON?.message.hasPrefix("x.json") == true)
        let noID = #expect(throws: OSVError.self) {
            var db = OSVDatabase()
            try db.add(data: Data("{\"affected\": []}".utf8), file: "y.json")
        }
        #expect(noID?.message == "y.json: id: missing")
    }
}
