import Foundation
import TestSupport
import Testing

/// `spec.timeout` is the host library's (`PreparedSandbox.wait(timeout:)`): a sandbox that
/// outlives it is killed, and everything it took on the node is released — container, cgroup,
/// bundle directory and its mounts, volume, pinned CPUs, host id range. In a private world of
/// `CrashRecoveryTests` (its state root, bundles, lease store and volumes), counted by its
/// `snapshot`.
@Suite(.enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs"), .serialized)
struct SandboxTimeoutTests {
    @Test("a sandbox past spec.timeout is killed (exit 124) and releases everything it took")
    func pastTheTimeout() throws {
        let name = "tmo\(getpid() % 100_000)"
        let world = try CrashRecoveryTests.World("timeout", names: [name])
        defer { world.destroy() }
        try #require(world.snapshot().isEmpty, "\(world.snapshot())")
        // Every kind of node state: a pinned CPU, a volume holding a writable root whose lower
        // layer is idmapped to the sandbox's host id range.
        let yaml = world.dir + "/\(name).yaml"
        try """
        apiVersion: llmsafespace.dev/v1
        kind: Sandbox
        metadata:
          name: \(name)
        spec:
          runtime: python:3.11
          timeout: 3
          securityLevel: custom
          filesystem: {readOnlyRoot: false, writablePaths: [/tmp]}
          resources: {cpu: "1", cpuPinning: true, ephemeralStorage: 48Mi}

        """.write(toFile: yaml, atomically: true, encoding: .utf8)
        let run = try CrashRecoveryTests.Child(
            [Harness.cliBinary, "run"] + world.paths("run") + ["-f", yaml, "--", "sleep", "60"], env: world.environment)
        // While it runs, it holds all of it.
        var held: [String] = []
        _ = Harness.eventually(timeout: 30, every: 0.05) {
            held = world.snapshot()
            return ["state: ", "bundle: ", "volume: ", "cpus: ", "id range: ", "mount: "].allSatisfy { kind in
                held.contains { $0.hasPrefix(kind) }
            }
                || run.exited != nil
        }
        #expect(
            held.contains("cpus: \(name)") && held.contains("state: \(name)") && held.contains("volume: \(name)"),
            "\(held)")
        #expect(held.contains { $0.hasPrefix("id range: ") } && held.contains { $0.hasPrefix("mount: ") }, "\(held)")
        let status = run.wait()
        #expect(status == 124, "\(run.stderr)")
        #expect(
            run.stderr.hasSuffix(
                "safespace: error: sandbox \(name) timed out after 3 seconds (spec.timeout); killed\n"), "\(run.stderr)"
        )
        #expect(world.snapshot().isEmpty, "\(world.snapshot())")
    }
}
