import Testing

@testable import SandboxSpec

/// Fields that this build cannot enforce are refused, naming the field, never ignored.
struct NotEnforceableTests {
    /// (YAML under `spec:`, the field refused)
    static let refused: [(String, String)] = [
        ("securityLevel: high\n  networkAccess:\n    ingress: true", "spec.networkAccess.ingress"),
        (
            "networkAccess:\n    egress:\n      - domain: pypi.org\n        ports: [{port: 443}]",
            "spec.networkAccess.egress[0].ports"
        ),
        ("storage:\n    persistent: true", "spec.storage.persistent"),
        ("storage:\n    volumeSize: 10Gi", "spec.storage.volumeSize"),
    ]

    static func sandbox(spec body: String) throws -> Sandbox {
        try Sandbox.decode(
            yaml: """
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
        // Enforced by the resources policy (Sandbox+Resources.swift).
        "resources:\n    cpu: \"1\"",
        "resources:\n    memory: 1Gi",
        "resources:\n    ephemeralStorage: 5Gi",
        "resources:\n    cpu: \"2\"\n    memory: 1Gi\n    ephemeralStorage: 5Gi\n    cpuPinning: true",
        "networkAccess:\n    egress: []\n    ingress: false",
        // Enforced by the node's network (SandboxNetwork, through SandboxHosting).
        "networkAccess:\n    egress:\n      - domain: pypi.org",
        "networkAccess:\n    egress:\n      - domain: pypi.org\n        ports: [{port: 80}, {port: 443}]",
        "networkAccess:\n    egress:\n      - cidr: 198.18.0.0/15\n        ports: [{port: 5432}]\n    ingress: true",
        "networkAccess: {}",
        // At a native level through safespaced's port forward (dialled inside the sandbox's netns).
        "networkAccess:\n    ingress: true",
        "storage:\n    persistent: false",
        // Enforced by the seccomp policy (SandboxPolicy+Seccomp.swift).
        "securityContext:\n    seccompProfile:\n      type: RuntimeDefault",
        "profileRef:\n    name: python-restricted",
    ]

    @Test("settings that ask for no more than the default are accepted", arguments: accepted)
    func acceptedField(body: String) throws {
        let sandbox = try Self.sandbox(spec: body)
        #expect(sandbox.notEnforceableYet() == [])
        try sandbox.validate()
    }

    @Test("a sandbox with an unenforceable field yields no bundle")
    func noBundle() throws {
        let sandbox = try Self.sandbox(spec: "storage:\n    volumeSize: 10Gi")
        let error = #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(for: sandbox, rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 4096)
        }
        #expect(error?.fields == ["spec.storage.volumeSize"])
    }
}
