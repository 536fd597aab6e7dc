import Foundation
import Glibc
import OCI
import Runtime
import SandboxSpec
import Testing

@testable import SandboxHosting

/// Directories under /tmp for one host (bundles, runtime state, rootfs store), removed by `remove()`.
private struct TempNode {
    let base: String
    var configuration: SandboxHost.Configuration

    init(messages: @escaping @Sendable (SandboxHost.Message) -> Void = { _ in }) throws {
        base = FileManager.default.temporaryDirectory.path + "/sandbox-host-test-" + UUID().uuidString
        for dir in ["bundles", "state", "store", "profiles", "volumes"] {
            try FileManager.default.createDirectory(atPath: base + "/" + dir, withIntermediateDirectories: true)
        }
        configuration = SandboxHost.Configuration(
            stateRoot: base + "/state", bundleRoot: base + "/bundles", ephemeralStorageBase: base + "/volumes",
            rootfsStore: base + "/store", seccompProfiles: base + "/profiles",
            messages: messages)
    }

    /// Installs a fake rootfs `python:3.11`: a manifest and an empty `rootfs/`.
    func addRootfs() throws {
        let dir = base + "/store/python-3.11"
        try FileManager.default.createDirectory(atPath: dir + "/rootfs", withIntermediateDirectories: true)
        let manifest = """
            {"schemaVersion": 1, "name": "python", "version": "3.11", "runtime": "python:3.11",
             "debianSuite": "bookworm", "architecture": "amd64", "created": "2025-05-20T12:00:00Z",
             "digest": "sha256:\(String(repeating: "a", count: 64))", "sizeBytes": 1, "packages": []}
            """
        try Data(manifest.utf8).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
    }

    func remove() { try? FileManager.default.removeItem(atPath: base) }
}

private func sandbox(_ name: String, runtime: String = "python:3.11", readOnlyRoot: Bool? = nil) -> Sandbox {
    var sandbox = Sandbox().applying(SandboxOverrides(name: name, runtime: runtime))
    if let readOnlyRoot {
        sandbox.spec.filesystem = FilesystemSpec(readOnlyRoot: readOnlyRoot)
        // Only the custom level may lower a level's read-only root.
        sandbox.spec.securityLevel = "custom"
    }
    return sandbox
}

/// A plan that takes no root-only node state: no CPUs, no volume, no writable layer, no filter.
private func minimalPlan(_ id: String) -> SandboxPlan {
    SandboxPlan(
        id: id, spec: Spec(process: OCI.Process(args: ["true"], cwd: "/"), root: Root(path: "/", readonly: true)))
}

@Suite struct SandboxHostPlanTests {
    @Test func resolvesTheRootfsAndCompilesThePolicy() throws {
        let node = try TempNode()
        defer { node.remove() }
        try node.addRootfs()
        let host = SandboxHost(configuration: node.configuration)
        let plan = try host.plan(for: sandbox("sb-plan"), args: ["python3", "-c", "1"], env: ["A=b"])
        #expect(plan.id == "sb-plan")
        #expect(plan.spec.process?.args == ["python3", "-c", "1"])
        #expect(plan.spec.process?.env?.contains("A=b") == true)
        #expect(plan.spec.root?.path == node.base + "/store/python-3.11/rootfs")
        #expect(plan.writableLayer == nil)
        #expect(!plan.writablePaths.isEmpty)
    }

    @Test func aWritableRootIsAnOverlayInTheBundle() throws {
        let node = try TempNode()
        defer { node.remove() }
        try node.addRootfs()
        let host = SandboxHost(configuration: node.configuration)
        let plan = try host.plan(for: sandbox("sb-writable", readOnlyRoot: false), args: ["true"])
        #expect(plan.spec.root?.path == node.base + "/bundles/sb-writable/rootfs")
        #expect(plan.writableLayer?.lowerdir == node.base + "/store/python-3.11/rootfs")
        #expect(plan.writableLayer?.size == SandboxPolicy.writableLayerSize)
    }

    @Test func anUnknownRuntimeIsASpecRuntimeError() throws {
        let node = try TempNode()
        defer { node.remove() }
        let host = SandboxHost(configuration: node.configuration)
        #expect {
            try host.plan(for: sandbox("sb-none", runtime: "node:20"), args: ["true"])
        } throws: { error in
            "\(error)".hasPrefix("spec.runtime: ")
        }
    }
}

@Suite struct PreparedSandboxTests {
    @Test func prepareWritesTheBundleAndLeaseAndCleanupRemovesThem() throws {
        let node = try TempNode()
        defer { node.remove() }
        let host = SandboxHost(configuration: node.configuration)
        let sandbox = try host.prepare(minimalPlan("sb-prep"))
        #expect(sandbox.bundle == node.base + "/bundles/sb-prep")
        let config = try JSONDecoder().decode(
            Spec.self, from: Data(contentsOf: URL(fileURLWithPath: sandbox.bundle + "/config.json")))
        #expect(config.process?.args == ["true"])
        let lease = try #require(
            SandboxLeases(directory: node.configuration.bundleRoot, backends: node.configuration.backends).lease(
                "sb-prep"))
        #expect(lease.owner == .current())
        #expect(lease.stateRoot == node.configuration.stateRoot)

        try sandbox.cleanup()
        #expect(!FileManager.default.fileExists(atPath: sandbox.bundle))
        // Idempotent; and a cleaned-up sandbox is not created again.
        try sandbox.cleanup()
        #expect(throws: SandboxHostError.self) { try sandbox.create() }
    }

    @Test func aLiveSandboxKeepsItsName() throws {
        let node = try TempNode()
        defer { node.remove() }
        let host = SandboxHost(configuration: node.configuration)
        let first = try host.prepare(minimalPlan("sb-name"))
        defer { try? first.cleanup() }
        #expect {
            try host.prepare(minimalPlan("sb-name"))
        } throws: { error in
            "\(error)".contains("a sandbox named sb-name exists already")
        }
        // The failed prepare released nothing of the first one.
        #expect(FileManager.default.fileExists(atPath: first.bundle + "/config.json"))
    }

    @Test func threadsPrepareAndCleanUpAtOnceAndOneNameGoesToOneOfThem() throws {
        let node = try TempNode()
        defer { node.remove() }
        let host = SandboxHost(configuration: node.configuration)
        let names = (0..<6).map { "sb-thread-\($0)" } + ["sb-shared", "sb-shared", "sb-shared"]
        let lock = NSLock()
        nonisolated(unsafe) var prepared: [PreparedSandbox] = []
        nonisolated(unsafe) var refused: [String] = []
        DispatchQueue.concurrentPerform(iterations: names.count) { index in
            do {
                let sandbox = try host.prepare(minimalPlan(names[index]))
                lock.withLock { prepared.append(sandbox) }
            } catch {
                lock.withLock { refused.append(names[index]) }
            }
        }
        #expect(prepared.count == 7)
        #expect(refused == ["sb-shared", "sb-shared"])
        DispatchQueue.concurrentPerform(iterations: prepared.count) { index in
            #expect(throws: Never.self) { try prepared[index].cleanup() }
        }
        #expect(
            SandboxLeases(directory: node.configuration.bundleRoot, backends: node.configuration.backends).ids().isEmpty
        )
    }

    @Test func aFailedPrepareReleasesWhatItTook() throws {
        let node = try TempNode()
        defer { node.remove() }
        let host = SandboxHost(configuration: node.configuration)
        // overlayfs cannot take ':' in its lowerdir: refused after the bundle directory is made.
        var plan = minimalPlan("sb-fail")
        plan.writableLayer = (lowerdir: node.base + "/a:b", size: "1m")
        #expect(throws: SandboxHostError.self) { try host.prepare(plan) }
        #expect(!FileManager.default.fileExists(atPath: node.base + "/bundles/sb-fail"))
    }

    @Test func cleanupReportsEachFailedReleaseAndRetriesIt() throws {
        let node = try TempNode()
        defer { node.remove() }
        let sandbox = try SandboxHost(configuration: node.configuration).prepare(minimalPlan("sb-retry"))
        // A file the bundle's removal does not expect: rmdir fails until it is gone.
        let stray = sandbox.bundle + "/stray"
        #expect(FileManager.default.createFile(atPath: stray, contents: nil))
        #expect {
            try sandbox.cleanup()
        } throws: { error in
            guard let error = error as? SandboxHostError, error.code == .cleanupFailed else { return false }
            return error.failures.count == 1 && error.lines[0].hasPrefix("cleanup: bundle \(sandbox.bundle): ")
        }
        unlink(stray)
        try sandbox.cleanup()
        #expect(!FileManager.default.fileExists(atPath: sandbox.bundle))
    }
}

@Suite struct SandboxHostMessageTests {
    @Test func configurationDropsMessagesByDefault() {
        SandboxHost.Configuration().messages(.warning("nobody listens"))
        #expect(SandboxHost.Message.warning("a") != .seccompSummary("a"))
    }
}
