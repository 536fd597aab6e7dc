import Testing

@testable import SandboxSpec

/// Command-line flags override the file's fields; defaults fill what is still unset.
struct SandboxOverridesTests {
    @Test("flags replace the file's name, runtime and timeout")
    func flagsOverride() throws {
        let file = try Sandbox.decode(
            yaml: """
                apiVersion: llmsafespace.dev/v1
                kind: Sandbox
                metadata:
                  name: from-file
                spec:
                  runtime: python:3.10
                  timeout: 300
                  filesystem:
                    writablePaths: [/tmp]
                """)
        let result = file.applying(SandboxOverrides(name: "from-flag", runtime: "node:20", timeout: 5))
        #expect(result.metadata.name == "from-flag")
        #expect(result.spec.runtime == "node:20")
        #expect(result.spec.timeout == 5)
        // What no flag names stays as the file has it.
        #expect(result.spec.filesystem?.writablePaths == ["/tmp"])
        try result.validate()
    }

    @Test("without flags the file's values stay")
    func noFlags() throws {
        let file = Sandbox(metadata: ObjectMeta(name: "keep"), spec: SandboxSpec(runtime: "node:20", timeout: 7))
        #expect(file.applying(SandboxOverrides()) == file)
    }

    @Test("no file and no flags: python:3.11 and a generated sandbox-<8 hex> name")
    func defaults() throws {
        let result = Sandbox().applying(SandboxOverrides())
        #expect(result.spec.runtime == "python:3.11")
        let name = try #require(result.metadata.name)
        #expect(name.hasPrefix("sandbox-"))
        let hex = name.dropFirst("sandbox-".count)
        #expect(hex.count == 8)
        #expect(hex.allSatisfy { "0123456789abcdef".contains($0) })
        try result.validate()
        #expect(Sandbox().applying(SandboxOverrides(), generateName: { "fixed" }).metadata.name == "fixed")
    }

    @Test("generated names differ and are valid DNS-1123 labels")
    func generatedNames() {
        let names = (0..<50).map { _ in Sandbox.generatedName() }
        #expect(Set(names).count > 45)
        #expect(names.allSatisfy { Sandbox.dns1123LabelProblem($0) == nil })
    }

    @Test("an overriding value is validated like one from the file")
    func overrideValidated() {
        let result = Sandbox().applying(SandboxOverrides(name: "Not_Valid", timeout: 0))
        let error = #expect(throws: SandboxError.self) { try result.validate() }
        #expect(error?.fields == ["metadata.name", "spec.timeout"])
    }
}
