import Testing

@testable import Sandbox

/// Fields that this build cannot enforce are refused, naming the field, never ignored.
struct NotEnforceableTests {
    /// (YAML under `spec:`, the field refused)
    static let refused: [(String, String)] = [
        ("resources:\n    cpu: \"1\"", "spec.resources.cpu"),
        ("resources:\n    memory: 1Gi", "spec.resources.memory"),
        ("resources:\n    ephemeralStorage: 5Gi", "spec.resources.ephemeralStorage"),
        ("resources:\n    cpuPinning: true", "spec.resources.cpuPinning"),
        ("networkAccess:\n    egress:\n      - domain: pypi.org", "spec.networkAccess.egress"),
        ("networkAccess:\n    ingress: true", "spec.networkAccess.ingress"),
        ("storage:\n    persistent: true", "spec.storage.persistent"),
        ("storage:\n    volumeSize: 10Gi", "spec.storage.volumeSize"),
        ("securityContext:\n    seccompProfile:\n      type: RuntimeDefault", "spec.securityContext.seccompProfile"),
        ("profileRef:\n    name: python-restricted", "spec.profileRef"),
    ]

    static func sandbox(spec body: String) throws -> Sandbox {
        try Sandbox.decode(yaml: """
            apiVersion: llmsafespace.dev/v1
            kind: Sandbox
            metadata:
              name: box
            spec:
              runtime: python:3.11
              \(body)
            """)
    }

    @Test("a field this build cannot enforce is refused by name", arguments: refused)
    func refusedField(body: String, field: String) throws {
        let sandbox = try Self.sandbox(spec: body)
        #expect(sandbox.validationIssues() == [])
        let refused = sandbox.notEnforceableYet()
        #expect(refused.map(\.field) == [field])
        #expect(refused.first?.kind == .notEnforceable)
        #expect(refused.first?.message.hasPrefix("not enforceable yet") == true)
        let error = #expect(throws: SandboxError.self) { try sandbox.validate() }
        #expect(error?.fields == [field])
    }

    /// Settings that ask for nothing beyond what every sandbox gets.
    static let accepted: [String] = [
        "securityLevel: standard",
        "securityLevel: high",
        "securityLevel: custom",
        "resources:\n    cpuPinning: false",
        "resources: {}",
        "networkAccess:\n    egress: []\n    ingress: false",
        "networkAccess: {}",
        "storage:\n    persistent: false",
    ]

    @Test("settings that ask for no more than the default are accepted", arguments: accepted)
    func acceptedField(body: String) throws {
        let sandbox = try Self.sandbox(spec: body)
        #expect(sandbox.notEnforceableYet() == [])
        try sandbox.validate()
    }

    @Test("the product's resource example is refused on each of its fields")
    func resourceExample() throws {
        let sandbox = try Self.sandbox(spec: "resources:\n    cpu: \"2\"\n    memory: 1Gi\n    ephemeralStorage: 5Gi\n    cpuPinning: true")
        #expect(sandbox.notEnforceableYet().map(\.field) == [
            "spec.resources.cpu", "spec.resources.memory", "spec.resources.ephemeralStorage",
            "spec.resources.cpuPinning",
        ])
    }

    @Test("a sandbox with an unenforceable field yields no bundle")
    func noBundle() throws {
        let sandbox = try Self.sandbox(spec: "resources:\n    memory: 1Gi")
        let error = #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(for: sandbox, rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096)
        }
        #expect(error?.fields == ["spec.resources.memory"])
    }
}
