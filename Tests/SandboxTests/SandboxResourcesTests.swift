import OCI
import Testing

@testable import Sandbox

/// `spec.resources` -> `linux.resources` (Sandbox+Resources.swift); bad quantities name the field.
struct SandboxResourcesTests {
    static func sandbox(resources body: String) throws -> Sandbox {
        try Sandbox.decode(yaml: """
            apiVersion: llmsafespace.dev/v1
            kind: Sandbox
            metadata:
              name: box
            spec:
              runtime: python:3.11
              resources:
                \(body)
            """)
    }

    static func resources(_ body: String) throws -> OCI.Resources? {
        try SandboxPolicy.bundleSpec(for: sandbox(resources: body), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096)
            .linux?.resources
    }

    @Test("cpu and memory become cpu.max and memory without swap; pids and devices always set")
    func translated() throws {
        let r = try #require(try Self.resources("cpu: \"500m\"\n    memory: 64Mi"))
        #expect(r.cpu?.quota == 50_000)
        #expect(r.cpu?.period == 100_000)
        #expect(r.cpu?.cpus == nil)
        #expect(r.memory?.limit == 64 << 20)
        #expect(r.memory?.swap == 64 << 20)
        #expect(r.pids?.limit == 1024)
        #expect(r.devices == [OCI.Resources.DeviceCgroup(allow: false, access: "rwm")])
    }

    @Test("whole CPUs: quota is cpu x period")
    func wholeCPUs() throws {
        let r = try Self.resources("cpu: \"2\"")
        #expect(r?.cpu?.quota == 200_000)
        #expect(r?.memory == nil)
    }

    @Test("a sandbox without resources still gets the default pids limit")
    func defaultPids() throws {
        let spec = try SandboxPolicy.bundleSpec(
            for: Sandbox.decode(yaml: "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: box\nspec:\n  runtime: python:3.11"),
            rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096)
        #expect(spec.linux?.resources?.pids?.limit == 1024)
        #expect(spec.linux?.resources?.cpu == nil)
        #expect(spec.linux?.resources?.memory == nil)
    }

    @Test("ephemeralStorage and cpuPinning leave linux.resources to the caller (volume, cpuset)")
    func nodeState() throws {
        let r = try Self.resources("cpu: \"1\"\n    ephemeralStorage: 8Mi\n    cpuPinning: true")
        #expect(r?.cpu?.quota == 100_000)
        #expect(r?.cpu?.cpus == nil)
        let limits = try Self.sandbox(resources: "cpu: \"1\"\n    ephemeralStorage: 8Mi\n    cpuPinning: true").limits()
        #expect(limits.pinnedCPUCount == 1)
        #expect(limits.ephemeralStorageBytes == 8 << 20)
    }

    static let bad: [(String, String)] = [
        ("memory: lots", "spec.resources.memory"),
        ("cpu: \"-1\"", "spec.resources.cpu"),
        ("ephemeralStorage: 1k", "spec.resources.ephemeralStorage"),
        ("cpu: \"500m\"\n    cpuPinning: true", "spec.resources.cpuPinning"),
    ]

    @Test("a bad quantity is an invalid value naming its field, and yields no bundle", arguments: bad)
    func badQuantity(body: String, field: String) throws {
        let sandbox = try Self.sandbox(resources: body)
        let error = #expect(throws: SandboxError.self) { try sandbox.validate() }
        #expect(error?.fields == [field])
        #expect(error?.issues.first?.kind == .invalidValue)
        #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(for: sandbox, rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096)
        }
    }
}
