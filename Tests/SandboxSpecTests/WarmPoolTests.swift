import Testing

@testable import SandboxSpec

/// The WarmPool resource: strict decoding, validation naming the field, defaults, matching.
struct WarmPoolTests {
    static func pool(_ spec: String, name: String = "python-std") throws -> WarmPool {
        try WarmPool.decode(
            yaml: """
                apiVersion: llmsafespace.dev/v1
                kind: WarmPool
                metadata: {name: \(name)}
                spec:
                \(spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
                """)
    }

    static let template = "template:\n  runtime: python:3.11\n  resources: {cpu: \"1\", memory: 1Gi}"

    @Test func decodesTheIssueExampleWithoutPreload() throws {
        let pool = try Self.pool("minSize: 4\nmaxSize: 16\nmaxAgeSeconds: 3600\nrecycle: false\n" + Self.template)
        try pool.validate()
        #expect(pool.minSize == 4 && pool.maxSize == 16 && pool.maxAgeSeconds == 3600)
        #expect(pool.spec.template?.resources?.cpu == "1")
        #expect(pool.sandbox(named: "python-std-0000abcd").metadata.name == "python-std-0000abcd")
    }

    @Test func defaults() throws {
        let pool = try Self.pool("template: {}")
        try pool.validate()
        #expect(pool.minSize == 1 && pool.maxSize == 4 && pool.maxAgeSeconds == 3600)
        #expect(pool.sandbox(named: "x").spec.runtime == Sandbox.defaultRuntime)
        #expect(try Self.pool("minSize: 9\ntemplate: {}").maxSize == 9)
    }

    /// (spec YAML, field of the first issue, kind)
    static let refused: [(String, String, FieldIssue.Kind)] = [
        ("minSize: 5\nmaxSize: 2\ntemplate: {}", "spec.minSize", .invalidValue),
        ("minSize: -1\ntemplate: {}", "spec.minSize", .invalidValue),
        ("maxSize: 0\ntemplate: {}", "spec.maxSize", .invalidValue),
        ("maxSize: 1000\ntemplate: {}", "spec.maxSize", .invalidValue),
        ("maxAgeSeconds: 0\ntemplate: {}", "spec.maxAgeSeconds", .invalidValue),
        ("whenEmpty: later\ntemplate: {}", "spec.whenEmpty", .invalidValue),
        ("minSize: 1", "spec.template", .missingField),
        ("recycle: true\ntemplate: {securityLevel: high}", "spec.recycle", .notEnforceable),
        ("preloadPackages: [\"numpy>=2\"]\ntemplate: {}", "spec.preloadPackages[0]", .invalidValue),
        ("preloadPackages: [\"numpy\"]\ntemplate: {}", "spec.preloadPackages[0]", .invalidValue),
        ("preloadPackages: [\"a==1\", \"numpy==2.1.*\"]\ntemplate: {}", "spec.preloadPackages[1]", .invalidValue),
        ("preloadPackages: [\"Foo_Bar==1\", \"foo.bar==2\"]\ntemplate: {}", "spec.preloadPackages[1]", .invalidValue),
        ("preloadPackages: [\"-x==1\"]\ntemplate: {}", "spec.preloadPackages[0]", .invalidValue),
        (
            "preloadPackages: [\"left-pad==1.3.0\"]\ntemplate: {runtime: \"node:18\"}", "spec.preloadPackages",
            .invalidValue
        ),
        (
            "preloadPackages: [\"a==1\"]\nwaiveAdvisories: [\"\"]\ntemplate: {}", "spec.waiveAdvisories[0]",
            .invalidValue
        ),
        ("template: {runtime: \"Python 3\"}", "spec.template.runtime", .invalidValue),
        ("template:\n  securityContext: {runAsUser: 0}", "spec.template.securityContext.runAsUser", .invalidValue),
        ("template:\n  storage: {persistent: true}", "spec.template.storage.persistent", .notEnforceable),
    ]

    @Test("a bad pool is refused naming the field", arguments: refused)
    func refusedField(spec: String, field: String, kind: FieldIssue.Kind) throws {
        let pool = try Self.pool(spec)
        let error = #expect(throws: SandboxError.self) { try pool.validate() }
        #expect(error?.fields.first == field, "\(String(describing: error))")
        #expect(error?.code == kind)
    }

    /// Recycling is built for the native levels with a read-only root; the refusals name the
    /// template field that rules it out.
    @Test func recycle() throws {
        let pool = try Self.pool("recycle: true\ntemplate: {securityLevel: standard}")
        try pool.validate()
        #expect(pool.spec.recycle == true)
        try Self.pool("recycle: true\ntemplate: {}").validate()
        let high = #expect(throws: SandboxError.self) {
            try Self.pool("recycle: true\ntemplate: {securityLevel: high}").validate()
        }
        #expect(
            high?.issues.contains { $0.field == "spec.recycle" && $0.message.contains("spec.template.securityLevel") }
                == true)
        let writable = #expect(throws: SandboxError.self) {
            try Self.pool("recycle: true\ntemplate:\n  filesystem: {readOnlyRoot: false}").validate()
        }
        #expect(
            writable?.issues.contains {
                $0.field == "spec.recycle" && $0.message.contains("spec.template.filesystem.readOnlyRoot")
            } == true)
        let wrong = #expect(throws: SandboxError.self) { try Self.pool("recycle: yes please\ntemplate: {}") }
        #expect(wrong?.code == .wrongType && wrong?.field == "spec.recycle")
    }

    @Test func strictDecoding() throws {
        let unknown = #expect(throws: SandboxError.self) { try Self.pool("minsize: 1\ntemplate: {}") }
        #expect(unknown?.code == .unknownField && unknown?.field == "spec.minsize")
        let inTemplate = #expect(throws: SandboxError.self) { try Self.pool("template: {runtim: x}") }
        #expect(inTemplate?.field == "spec.template.runtim")
        let twice = #expect(throws: SandboxError.self) { try Self.pool("minSize: 1\nminSize: 2\ntemplate: {}") }
        #expect(twice?.code == .duplicateField && twice?.field == "spec.minSize")
        let wrong = #expect(throws: SandboxError.self) { try Self.pool("minSize: many\ntemplate: {}") }
        #expect(wrong?.code == .wrongType && wrong?.field == "spec.minSize")
        let kind = #expect(throws: SandboxError.self) {
            try WarmPool.decode(
                yaml: "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata: {name: a}\nspec: {template: {}}"
            )
            .validate()
        }
        #expect(kind?.field == "kind")
    }

    @Test func poolNamesLeaveRoomForSandboxNames() throws {
        let long = String(repeating: "a", count: WarmPool.maxNameLength + 1)
        let error = #expect(throws: SandboxError.self) { try Self.pool("template: {}", name: long).validate() }
        #expect(error?.field == "metadata.name")
        try Self.pool("template: {}", name: String(repeating: "a", count: WarmPool.maxNameLength)).validate()
        let bad = #expect(throws: SandboxError.self) { try Self.pool("template: {}", name: "Not_A_Label").validate() }
        #expect(bad?.field == "metadata.name")
    }

    @Test func matchesTheTemplateWithCreateDefaults() throws {
        let pool = try Self.pool("template:\n  resources: {cpu: 100m, memory: 128Mi}")
        var spec = SandboxSpec(resources: pool.spec.template?.resources)
        #expect(pool.matches(spec))
        spec.runtime = Sandbox.defaultRuntime
        #expect(pool.matches(spec))
        spec.timeout = 5
        #expect(!pool.matches(spec))
        #expect(!pool.matches(SandboxSpec()))
    }
}
