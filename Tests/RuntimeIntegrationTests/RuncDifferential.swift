import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// The same bundle and command line through runc and through safespace-runtime, each with a
/// root of its own and the same container id, so their outputs can be compared as they are.
/// For the runc-parity tests (issue 16); they are skipped where runc is not installed.
struct RuncDifferential {
    /// runc on this host, if any.
    static let runcBinary: String? = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    static var available: Bool { Harness.isRoot && runcBinary != nil }

    let id: String
    let bundle: String
    let runcRoot: String
    let ourRoot: String

    init(_ prefix: String, bundle: String) throws {
        id = Harness.uniqueID(prefix)
        self.bundle = bundle
        runcRoot = try Harness.tempDir("runc-root")
        ourRoot = try Harness.tempDir("root")
    }

    /// `runc --root RUNCROOT ARGS…`; `ID` in `args` stands for the container id.
    @discardableResult
    func runc(_ args: [String], stdin: String? = nil) throws -> Harness.Result {
        try Harness.spawn([Self.runcBinary!, "--root", runcRoot] + args.map { $0 == "ID" ? id : $0 }, stdin: stdin)
    }

    /// `safespace-runtime --root ROOT ARGS…`; `ID` stands for the container id.
    @discardableResult
    func ours(_ args: [String], stdin: String? = nil) throws -> Harness.Result {
        try Harness.spawn([Harness.runtimeBinary, "--root", ourRoot] + args.map { $0 == "ID" ? id : $0 }, stdin: stdin)
    }

    /// The same command line through both.
    func both(_ args: [String], stdin: String? = nil) throws -> (runc: Harness.Result, ours: Harness.Result) {
        (try runc(args, stdin: stdin), try ours(args, stdin: stdin))
    }

    /// `create --bundle B ID` then `start ID` in both; fails the test when either fails.
    func startBoth(_ extra: [String] = []) throws {
        let created = try both(["create", "--bundle", bundle] + extra + ["ID"])
        try #require(created.runc.status == 0, "runc create: \(created.runc.stderr)")
        try #require(created.ours.status == 0, "create: \(created.ours.stderr)")
        let started = try both(["start", "ID"])
        try #require(started.runc.status == 0 && started.ours.status == 0, "start: \(started)")
    }

    /// Force-deletes the container in both and removes both roots and the bundle.
    func destroy() {
        _ = try? both(["delete", "--force", "ID"])
        Harness.cleanup(runcRoot, ourRoot, bundle)
    }

    /// The last `level=error` message of a runtime's stderr (text log format).
    static func errorMessage(_ stderr: String) -> String? {
        stderr.split(separator: "\n").last { $0.contains("level=error") }.flatMap { line in
            line.range(of: "msg=\"").map { String(line[$0.upperBound...].dropLast()) }
        }
    }
}
