import NodeResources
import OCI
import Testing

@testable import SandboxSpec

/// `spec.resources` -> `linux.resources` (Sandbox+Resources.swift); bad quantities name the field.
struct SandboxResourcesTests {
    static func sandbox(resources body: String) throws -> Sandbox {
        try Sandbox.decode(
            yaml: """
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

    static func resources(_ body: String) throws -> Resources? {
        try SandboxPolicy.bundleSpec(
            for: sandbox(resources: body), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096
        )
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
        #expect(r.pids?.limit == 512)
        #expect(r.devices == [Resources.DeviceCgroup(allow: false, access: "rwm")])
    }

    @Test("whole CPUs: quota is cpu x period")
    func wholeCPUs() throws {
        let r = try Self.resources("cpu: \"2\"")
        #expect(r?.cpu?.quota == 200_000)
        // The node's default memory (built in: 1Gi), as every sandbox gets.
        #expect(r?.memory?.limit == 1 << 30)
    }

    static let bare =
        "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: box\nspec:\n  runtime: python:3.11"
    static let node = NodeCapacity(cpus: 2, memoryBytes: 4 << 30)

    @Test("a sandbox without resources gets every limit from the node's defaults, in its bundle")
    func nodeDefaults() throws {
        let builtIn = try SandboxPolicy.bundle(
            for: Sandbox.decode(yaml: Self.bare), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096,
            capacity: Self.node)
        #expect(builtIn.spec.linux?.resources?.pids?.limit == 512)
        #expect(builtIn.spec.linux?.resources?.cpu?.quota == 100_000)
        #expect(builtIn.spec.linux?.resources?.memory == .init(limit: 1 << 30, swap: 1 << 30))
        #expect(builtIn.spec.process?.rlimits == [Rlimit(type: "RLIMIT_NOFILE", hard: 512, soft: 512)])
        #expect(builtIn.limits.ephemeralStorageBytes == 1 << 30)

        let defaults = SandboxDefaults(
            cpuMillis: 500, memoryBytes: 64 << 20, ephemeralStorageBytes: 16 << 20, pidsLimit: 64, nofile: 256)
        let plan = try SandboxPolicy.bundle(
            for: Sandbox.decode(yaml: Self.bare), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096,
            defaults: defaults, capacity: Self.node)
        let r = try #require(plan.spec.linux?.resources)
        #expect(r.cpu?.quota == 50_000 && r.cpu?.period == 100_000)
        #expect(r.memory == .init(limit: 64 << 20, swap: 64 << 20))
        #expect(r.pids?.limit == 64)
        #expect(plan.spec.process?.rlimits == [Rlimit(type: "RLIMIT_NOFILE", hard: 256, soft: 256)])
        #expect(plan.spec.annotations?[SandboxPolicy.Annotation.ephemeralStorage] == "\(16 << 20)")
        #expect(plan.limits == SandboxLimits(cpuMillis: 500, memoryBytes: 64 << 20, ephemeralStorageBytes: 16 << 20))
        // What spec.resources names wins over the default; the rest stays the node's.
        let own = try SandboxPolicy.bundle(
            for: Self.sandbox(resources: "memory: 128Mi"), rootfs: "/r", id: "box", args: ["true"],
            nofileHardLimit: 4096, defaults: defaults, capacity: Self.node)
        #expect(own.spec.linux?.resources?.memory?.limit == 128 << 20)
        #expect(own.spec.linux?.resources?.cpu?.quota == 50_000)
        #expect(own.limits.ephemeralStorageBytes == 16 << 20)
    }

    @Test(
        "a limit the node can never give is refused, naming the field; the node's own size is fine",
        arguments: [
            ("cpu: \"100000\"", "spec.resources.cpu"), ("cpu: \"2500m\"", "spec.resources.cpu"),
            ("memory: 5Gi", "spec.resources.memory"), ("memory: 1Ti", "spec.resources.memory"),
        ])
    func aboveCapacity(body: String, field: String) throws {
        let error = #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(
                for: Self.sandbox(resources: body), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096,
                capacity: Self.node)
        }
        #expect(error?.fields == [field])
        #expect(error?.description.contains("can never be given") == true, "\(String(describing: error))")
        let fits = try SandboxPolicy.bundleSpec(
            for: Self.sandbox(resources: "cpu: \"2\"\n    memory: 4Gi"), rootfs: "/r", id: "box", args: ["true"],
            nofileHardLimit: 4096, capacity: Self.node)
        #expect(fits.linux?.resources?.memory?.limit == 4 << 30)
    }

    @Test(
        "a node default above the node's capacity is refused as sandboxDefaults.*, unless spec.resources names the value"
    )
    func defaultAboveCapacity() throws {
        let small = NodeCapacity(cpus: 1, memoryBytes: 512 << 20)
        let error = #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(
                for: Sandbox.decode(yaml: Self.bare), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096,
                capacity: small)
        }
        #expect(error?.fields == ["sandboxDefaults.memory"])
        let own = try SandboxPolicy.bundleSpec(
            for: Self.sandbox(resources: "cpu: \"1\"\n    memory: 256Mi"), rootfs: "/r", id: "box", args: ["true"],
            nofileHardLimit: 4096, capacity: small)
        #expect(own.linux?.resources?.memory?.limit == 256 << 20)
    }

    @Test(
        "sandboxDefaults: quantities and whole numbers; unknown keys, wrong types and values below the minimum name the key"
    )
    func parseDefaults() throws {
        let d = try SandboxDefaults.parse(
            ["cpu": .string("250m"), "memory": .string("2Gi"), "pids": .integer(100), "nofile": .integer(4096)],
            source: "test.json")
        #expect(
            d
                == SandboxDefaults(
                    cpuMillis: 250, memoryBytes: 2 << 30, ephemeralStorageBytes: 1 << 30, pidsLimit: 100, nofile: 4096))
        #expect(try SandboxDefaults.parse([:]) == SandboxDefaults())
        let bad: [([String: SandboxDefaults.Value], String)] = [
            (["memroy": .string("1Gi")], "sandboxDefaults.memroy"),
            (["memory": .integer(1024)], "sandboxDefaults.memory"),
            (["memory": .string("1Mi")], "sandboxDefaults.memory"), (["cpu": .string("lots")], "sandboxDefaults.cpu"),
            (["pids": .string("100")], "sandboxDefaults.pids"), (["pids": .integer(0)], "sandboxDefaults.pids"),
            (["nofile": .other], "sandboxDefaults.nofile"),
            (["ephemeralStorage": .string("1k")], "sandboxDefaults.ephemeralStorage"),
        ]
        for (object, field) in bad {
            let error = #expect(throws: ResourceError.self) { try SandboxDefaults.parse(object, source: "test.json") }
            #expect(error?.field == field, "\(object)")
            #expect(error?.message.contains("test.json") == true, "\(String(describing: error))")
        }
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
