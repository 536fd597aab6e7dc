/// The configuration file and options of safespaced (no daemon needed).
import Foundation
import XCTest

@testable import SafeSpaceDaemon

final class DaemonConfigTests: XCTestCase {
    func testMissingFileMeansDefaults() throws {
        let config = try DaemonConfig.load(path: "/nonexistent/safespaced.yaml")
        XCTAssertEqual(config, DaemonConfig())
        XCTAssertEqual(config.auditPath, "/var/log/safespace/audit.jsonl")
        XCTAssertEqual(try DaemonConfig.parse(yaml: ""), DaemonConfig())
    }

    func testEveryKey() throws {
        let config = try DaemonConfig.parse(
            yaml: """
                group: sbx
                audit: {path: /a/log.jsonl, journald: false, flush: data, freq: 7}
                node: {allocatableCPU: 1500m, allocatableMemory: 2Gi}
                limits: {maxRequestBytes: 2Mi, maxFileBytes: 1024, maxExecOutputBytes: 3Mi, maxSandboxes: 9}
                shutdown: {gracePeriodSeconds: 4, sandboxes: remove}
                paths: {runtimeRoot: /r, bundleRoot: /b, ephemeralStorage: /e, rootfsStore: /s, seccompProfiles: /p}
                pools: {directory: /pools, whenEmpty: refuse, refillPerSecond: 5}
                packages: {allowlist: /al.txt, wheelhouse: /wh, advisoryDatabase: /osv, layers: /l, python: python3.11}
                """)
        XCTAssertEqual(config.group, "sbx")
        XCTAssertEqual(config.auditPath, "/a/log.jsonl")
        XCTAssertFalse(config.auditJournald)
        XCTAssertEqual(config.auditFlush, "data")
        XCTAssertEqual(config.auditFreq, 7)
        XCTAssertEqual(AuditBridge.sync(config), .eachRecord)
        XCTAssertEqual(AuditBridge.sync(DaemonConfig()), .incrementalAsync(records: 50, interval: .seconds(1)))
        XCTAssertEqual(config.allocatableCPUMillis, 1500)
        XCTAssertEqual(config.allocatableMemoryBytes, 2 << 30)
        XCTAssertEqual(config.maxRequestBytes, 2 << 20)
        XCTAssertEqual(config.maxFileBytes, 1024)
        XCTAssertEqual(config.maxSandboxes, 9)
        XCTAssertEqual(config.gracePeriodSeconds, 4)
        XCTAssertTrue(config.removeSandboxesOnShutdown)
        XCTAssertEqual(
            [
                config.runtimeRoot, config.bundleRoot, config.ephemeralStorage, config.rootfsStore,
                config.seccompProfiles,
            ], ["/r", "/b", "/e", "/s", "/p"])
        XCTAssertEqual(config.poolsDirectory, "/pools")
        XCTAssertTrue(config.poolsRefuseWhenEmpty)
        XCTAssertEqual(config.poolsRefillPerSecond, 5)
        XCTAssertFalse(DaemonConfig().poolsRefuseWhenEmpty)
        XCTAssertEqual(
            config.packages,
            PackageSettings(
                allowlist: "/al.txt", wheelhouse: "/wh", advisoryDatabase: "/osv", layers: "/l", python: "python3.11"))
        XCTAssertEqual(DaemonConfig().packages.allowlist, "/etc/safespace/package-allowlist.txt")
        XCTAssertNil(DaemonConfig().packages.wheelhouse)
        XCTAssertEqual(DaemonConfig().packages.advisoryDatabase, "/var/lib/safespace/osv")
    }

    func testUnknownAndBadKeysAreRefusedByName() {
        func message(_ yaml: String) -> String {
            do {
                _ = try DaemonConfig.parse(yaml: yaml)
                return "accepted"
            } catch { return "\(error)" }
        }
        XCTAssertTrue(message("grup: x").hasPrefix("grup: unknown key"), message("grup: x"))
        XCTAssertTrue(message("audit:\n  paht: /x").hasPrefix("audit.paht: unknown key"))
        XCTAssertTrue(message("limits:\n  maxFileBytes: -1").hasPrefix("limits.maxFileBytes"))
        XCTAssertTrue(message("shutdown:\n  sandboxes: maybe").hasPrefix("shutdown.sandboxes"))
        XCTAssertTrue(message("paths:\n  runtimeRoot: relative").hasPrefix("paths.runtimeRoot"))
        XCTAssertTrue(
            message("node:\n  allocatableCPU: lots").hasPrefix("node.allocatableCPU"),
            message("node:\n  allocatableCPU: lots"))
        XCTAssertTrue(message("- a\n- b").contains("expected a mapping"))
        XCTAssertTrue(message("audit: 3").hasPrefix("audit: expected a mapping"))
        XCTAssertTrue(message("pools:\n  whenEmpty: wait").hasPrefix("pools.whenEmpty"))
        XCTAssertTrue(message("pools:\n  directory: rel").hasPrefix("pools.directory"))
        XCTAssertTrue(message("pools:\n  refillPerSecond: 0").hasPrefix("pools.refillPerSecond"))
        XCTAssertTrue(message("pools:\n  size: 1").hasPrefix("pools.size: unknown key"))
        XCTAssertTrue(message("audit:\n  flush: sync").hasPrefix("audit.flush: sync is not one of"))
        XCTAssertTrue(message("audit:\n  freq: 0").hasPrefix("audit.freq"), message("audit:\n  freq: 0"))
        XCTAssertTrue(message("packages:\n  wheelhouse: wheels").hasPrefix("packages.wheelhouse: must be an absolute"))
        XCTAssertTrue(message("packages:\n  index: x").hasPrefix("packages.index: unknown key"))
    }

    func testOptions() throws {
        let options = try DaemonOptions.parse(["--config", "/c.yaml", "--socket=/s.sock", "--state-dir", "/st"])
        XCTAssertEqual([options.configPath, options.socketPath, options.stateDir], ["/c.yaml", "/s.sock", "/st"])
        XCTAssertThrowsError(try DaemonOptions.parse(["--bogus"]))
        XCTAssertThrowsError(try DaemonOptions.parse(["--socket"]))
        XCTAssertThrowsError(try DaemonOptions.parse(["--state-dir", "rel"]))
    }
}
