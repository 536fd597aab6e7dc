import Foundation
import Testing

@testable import SandboxSpec

/// Decoding `Sandbox` documents from YAML and JSON, strictly.
struct SandboxDecodingTests {
    static let fullYAML = """
        apiVersion: llmsafespace.dev/v1
        kind: Sandbox
        metadata:
          name: full-sandbox
          namespace: team-a
          labels:
            app: agent
        spec:
          runtime: python:3.10
          securityLevel: standard
          timeout: 300
          resources:
            cpu: "1"
            memory: 1Gi
            ephemeralStorage: 5Gi
            cpuPinning: true
          networkAccess:
            egress:
              - domain: pypi.org
              - domain: files.pythonhosted.org
                ports:
                  - port: 443
                    protocol: TCP
            ingress: false
          filesystem:
            readOnlyRoot: true
            writablePaths:
              - /tmp
              - /workspace
          storage:
            persistent: true
            volumeSize: 10Gi
          securityContext:
            runAsUser: 1000
            runAsGroup: 1001
        """

    @Test("every field of the product document decodes to its value")
    func fullYAMLDecodes() throws {
        let sandbox = try Sandbox.decode(yaml: Self.fullYAML)
        #expect(sandbox.apiVersion == "llmsafespace.dev/v1")
        #expect(sandbox.kind == "Sandbox")
        #expect(sandbox.metadata.name == "full-sandbox")
        #expect(sandbox.metadata.namespace == "team-a")
        #expect(sandbox.metadata.labels == ["app": "agent"])
        #expect(sandbox.spec.runtime == "python:3.10")
        #expect(sandbox.spec.securityLevel == "standard")
        #expect(sandbox.spec.timeout == 300)
        #expect(
            sandbox.spec.resources == ResourcesSpec(cpu: "1", memory: "1Gi", ephemeralStorage: "5Gi", cpuPinning: true))
        #expect(sandbox.spec.networkAccess?.egress?.map(\.domain) == ["pypi.org", "files.pythonhosted.org"])
        #expect(sandbox.spec.networkAccess?.egress?[1].ports == [PortRule(port: 443, protocol: "TCP")])
        #expect(sandbox.spec.networkAccess?.ingress == false)
        #expect(sandbox.spec.filesystem == FilesystemSpec(readOnlyRoot: true, writablePaths: ["/tmp", "/workspace"]))
        #expect(sandbox.spec.storage == StorageSpec(persistent: true, volumeSize: "10Gi"))
        #expect(sandbox.spec.securityContext == SecurityContextSpec(runAsUser: 1000, runAsGroup: 1001))
        #expect(sandbox.spec.profileRef == nil)
    }

    @Test("an unquoted YAML number is accepted as a quantity string")
    func numericQuantity() throws {
        let sandbox = try Sandbox.decode(
            yaml: "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nspec:\n  resources:\n    cpu: 2\n")
        #expect(sandbox.spec.resources?.cpu == "2")
    }

    @Test("JSON decodes to the same value as YAML, with spaces or tabs")
    func json() throws {
        let json = """
            {
            \t"apiVersion": "llmsafespace.dev/v1",
            \t"kind": "Sandbox",
            \t"metadata": {"name": "json-box"},
            \t"spec": {
            \t\t"runtime": "node:20",
            \t\t"timeout": 60,
            \t\t"filesystem": {"readOnlyRoot": false, "writablePaths": ["/tmp"]},
            \t\t"securityContext": {"runAsUser": 2000, "runAsGroup": 3000}
            \t}
            }
            """
        let fromJSON = try Sandbox.decode(yaml: json)
        let fromTabless = try Sandbox.decode(yaml: json.replacingOccurrences(of: "\t", with: "  "))
        let expected = Sandbox(
            metadata: ObjectMeta(name: "json-box"),
            spec: SandboxSpec(
                runtime: "node:20", timeout: 60,
                filesystem: FilesystemSpec(readOnlyRoot: false, writablePaths: ["/tmp"]),
                securityContext: SecurityContextSpec(runAsUser: 2000, runAsGroup: 3000)))
        #expect(fromJSON == expected)
        #expect(fromTabless == expected)
        let fromData = try Sandbox.decode(data: Data(json.utf8))
        #expect(fromData == expected)
    }

    @Test("encoding and decoding round-trip, so every encoded key is a known one")
    func roundTrip() throws {
        let sandbox = try Sandbox.decode(yaml: Self.fullYAML)
        let encoded = try JSONEncoder().encode(sandbox)
        let decoded = try Sandbox.decode(data: encoded)
        #expect(decoded == sandbox)
    }

    /// (document body under a valid header, path of the unknown field)
    static let unknownFields: [(String, String)] = [
        ("spec:\n  filesystm: {}\n", "spec.filesystm"),
        ("spec:\n  runtime: python:3.11\n  runAsUser: 1000\n", "spec.runAsUser"),
        ("spec:\n  filesystem:\n    readOnlyroot: true\n", "spec.filesystem.readOnlyroot"),
        ("spec:\n  securityContext:\n    privileged: true\n", "spec.securityContext.privileged"),
        ("spec:\n  resources:\n    gpu: 1\n", "spec.resources.gpu"),
        (
            "spec:\n  networkAccess:\n    egress:\n      - domain: a.org\n        port: 80\n",
            "spec.networkAccess.egress[0].port"
        ),
        (
            "spec:\n  networkAccess:\n    egress:\n      - domain: a.org\n        ports:\n          - port: 80\n            proto: TCP\n",
            "spec.networkAccess.egress[0].ports[0].proto"
        ),
        ("spec:\n  storage:\n    size: 1Gi\n", "spec.storage.size"),
        (
            "spec:\n  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n      path: x\n",
            "spec.securityContext.seccompProfile.path"
        ),
        ("spec:\n  profileRef:\n    name: p\n    kind: X\n", "spec.profileRef.kind"),
        ("metadata:\n  name: a\n  uid: abc\n", "metadata.uid"),
        ("status: {}\n", "status"),
    ]

    @Test("an unknown field is an error naming its path", arguments: unknownFields)
    func unknownField(body: String, path: String) {
        let text = "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\n" + body
        let error = #expect(throws: SandboxError.self) { try Sandbox.decode(yaml: text) }
        #expect(error?.issues == [FieldIssue(.unknownField, field: path, "unknown field")])
        #expect(error?.description == "\(path): unknown field")
    }

    @Test("unknown fields are found in JSON too")
    func unknownFieldJSON() {
        let json =
            #"{"apiVersion":"llmsafespace.dev/v1","kind":"Sandbox","spec":{"filesystem":{"writeablePaths":["/tmp"]}}}"#
        let error = #expect(throws: SandboxError.self) { try Sandbox.decode(yaml: json) }
        #expect(error?.fields == ["spec.filesystem.writeablePaths"])
        #expect(error?.issues.first?.kind == .unknownField)
    }

    @Test("a duplicated key is an error naming it, not a silent last-one-wins")
    func duplicateKey() {
        let text = """
            apiVersion: llmsafespace.dev/v1
            kind: Sandbox
            spec:
              securityContext:
                runAsUser: 1000
                runAsUser: 0
            """
        let error = #expect(throws: SandboxError.self) { try Sandbox.decode(yaml: text) }
        #expect(
            error?.issues == [FieldIssue(.duplicateField, field: "spec.securityContext.runAsUser", "duplicate field")])
    }

    /// (document body, field at fault, kind)
    static let badTypes: [(String, String, FieldIssue.Kind)] = [
        ("spec:\n  timeout: soon\n", "spec.timeout", .wrongType),
        ("spec:\n  filesystem:\n    writablePaths: /tmp\n", "spec.filesystem.writablePaths", .wrongType),
        ("spec:\n  filesystem:\n    readOnlyRoot: maybe\n", "spec.filesystem.readOnlyRoot", .wrongType),
        ("spec:\n  securityContext:\n    runAsUser: [1]\n", "spec.securityContext.runAsUser", .wrongType),
        ("spec:\n  filesystem: [a]\n", "spec.filesystem", .wrongType),
        (
            "spec:\n  networkAccess:\n    egress:\n      - ports: []\n", "spec.networkAccess.egress[0].domain",
            .missingField
        ),
    ]

    @Test("a value of the wrong type is an error naming the field", arguments: badTypes)
    func wrongType(body: String, path: String, kind: FieldIssue.Kind) {
        let text = "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\n" + body
        let error = #expect(throws: SandboxError.self) { try Sandbox.decode(yaml: text) }
        #expect(error?.fields == [path])
        #expect(error?.issues.first?.kind == kind)
    }

    @Test("apiVersion and kind are required")
    func headerRequired() {
        let noVersion = #expect(throws: SandboxError.self) { try Sandbox.decode(yaml: "kind: Sandbox\n") }
        #expect(noVersion?.issues == [FieldIssue(.missingField, field: "apiVersion", "required (llmsafespace.dev/v1)")])
        let noKind = #expect(throws: SandboxError.self) {
            try Sandbox.decode(yaml: "apiVersion: llmsafespace.dev/v1\n")
        }
        #expect(noKind?.fields == ["kind"])
    }

    @Test(
        "text that is not one mapping is a syntax error", arguments: ["", "- a\n- b\n", "a: [\n", "a: 1\n---\nb: 2\n"])
    func notAMapping(text: String) {
        let error = #expect(throws: SandboxError.self) { try Sandbox.decode(yaml: text) }
        #expect(error?.fields == [""])
        #expect([.syntax, .wrongType].contains(error?.issues.first?.kind))
    }

    @Test("load reads a file and names it in document-level errors")
    func loadFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sandbox-tests-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let good = directory.appendingPathComponent("good.yaml")
        try Self.fullYAML.write(to: good, atomically: true, encoding: .utf8)
        #expect(try Sandbox.load(path: good.path).metadata.name == "full-sandbox")

        let missing = directory.appendingPathComponent("missing.yaml").path
        let error = #expect(throws: SandboxError.self) { try Sandbox.load(path: missing) }
        #expect(error?.description.contains(missing) == true)
    }
}
