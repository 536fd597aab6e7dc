import Testing

@testable import SandboxSpec

/// `Sandbox.validate()`: each rule names the field it checks.
struct SandboxValidationTests {
    /// A sandbox that passes validation, to break one field at a time.
    static func valid() -> Sandbox {
        Sandbox(metadata: ObjectMeta(name: "box"), spec: SandboxSpec(runtime: "python:3.11"))
    }

    static func issues(_ change: (inout Sandbox) -> Void) -> [FieldIssue] {
        var sandbox = valid()
        change(&sandbox)
        do {
            try sandbox.validate()
            return []
        } catch {
            return error.issues
        }
    }

    @Test("the minimal sandbox and the product's examples are valid")
    func validExamples() throws {
        try Self.valid().validate()
        let example = try Sandbox.decode(
            yaml: """
                apiVersion: llmsafespace.dev/v1
                kind: Sandbox
                metadata:
                  name: filesystem-secure-sandbox
                spec:
                  runtime: python:3.10
                  securityLevel: standard
                  timeout: 600
                  networkAccess:
                    egress: []
                    ingress: false
                  filesystem:
                    readOnlyRoot: true
                    writablePaths:
                      - /tmp
                      - /workspace
                  securityContext:
                    runAsUser: 1000
                    runAsGroup: 1000
                """)
        try example.validate()
    }

    @Test("runAsUser and runAsGroup 0 (root) are refused", arguments: ["runAsUser", "runAsGroup"])
    func rootRefused(field: String) {
        let issues = Self.issues {
            $0.spec.securityContext =
                field == "runAsUser"
                ? SecurityContextSpec(runAsUser: 0) : SecurityContextSpec(runAsGroup: 0)
        }
        #expect(issues.map(\.field) == ["spec.securityContext.\(field)"])
        #expect(issues.first?.kind == .invalidValue)
        #expect(issues.first?.message.contains("root") == true)
    }

    @Test("ids outside 1-65534 are refused", arguments: [Int64(-1), 65535, 4_294_967_295, 1 << 40])
    func idRange(id: Int64) {
        let issues = Self.issues { $0.spec.securityContext = SecurityContextSpec(runAsUser: id, runAsGroup: id) }
        #expect(issues.map(\.field) == ["spec.securityContext.runAsUser", "spec.securityContext.runAsGroup"])
        #expect(issues.allSatisfy { $0.message.contains("out of range") })
    }

    @Test("ids inside 1-65534 are accepted", arguments: [Int64(1), 1000, 65534])
    func idAccepted(id: Int64) {
        #expect(Self.issues { $0.spec.securityContext = SecurityContextSpec(runAsUser: id, runAsGroup: id) } == [])
    }

    @Test(
        "writable paths that are not absolute, normalized and outside /proc /sys /dev are refused",
        arguments: [
            "tmp", "", "/", "/tmp/", "/a//b", "/a/./b", "/a/../etc", "/..", "/proc", "/proc/sys",
            "/sys", "/sys/fs/cgroup", "/dev", "/dev/shm", "/tmp\nx",
        ])
    func badWritablePath(path: String) {
        let issues = Self.issues { $0.spec.filesystem = FilesystemSpec(writablePaths: ["/tmp", path]) }
        #expect(issues.map(\.field) == ["spec.filesystem.writablePaths[1]"])
        #expect(issues.first?.kind == .invalidValue)
    }

    @Test("good writable paths are accepted, a repeated one is not")
    func writablePaths() {
        #expect(
            Self.issues {
                $0.spec.filesystem = FilesystemSpec(writablePaths: [
                    "/tmp", "/workspace", "/home/sandbox", "/devices", "/proc2",
                ])
            } == [])
        #expect(Self.issues { $0.spec.filesystem = FilesystemSpec(writablePaths: []) } == [])
        let twice = Self.issues { $0.spec.filesystem = FilesystemSpec(writablePaths: ["/tmp", "/x", "/tmp"]) }
        #expect(twice.map(\.field) == ["spec.filesystem.writablePaths[2]"])
        let many = Self.issues { $0.spec.filesystem = FilesystemSpec(writablePaths: (0..<17).map { "/p\($0)" }) }
        #expect(many.map(\.field) == ["spec.filesystem.writablePaths"])
    }

    @Test(
        "the name must be a DNS-1123 label",
        arguments: ["", "Box", "box_1", "-box", "box-", "box.example", String(repeating: "a", count: 64), "bö"])
    func badName(name: String) {
        let issues = Self.issues { $0.metadata.name = name }
        #expect(issues.map(\.field) == ["metadata.name"])
        #expect(issues.first?.kind == .invalidValue)
    }

    @Test(
        "DNS-1123 labels are accepted as names", arguments: ["a", "box-1", "0box", String(repeating: "a", count: 63)])
    func goodName(name: String) {
        #expect(Self.issues { $0.metadata.name = name } == [])
    }

    @Test("name and runtime are required")
    func required() {
        let issues = Self.issues {
            $0.metadata.name = nil
            $0.spec.runtime = nil
        }
        #expect(issues.map(\.field) == ["metadata.name", "spec.runtime"])
        #expect(issues.allSatisfy { $0.kind == .missingField })
    }

    @Test("apiVersion and kind must be llmsafespace.dev/v1 Sandbox")
    func header() {
        let issues = Self.issues {
            $0.apiVersion = "v1"
            $0.kind = "Pod"
        }
        #expect(issues.map(\.field) == ["apiVersion", "kind"])
        #expect(issues[0].message == #"must be llmsafespace.dev/v1, not "v1""#)
    }

    @Test(
        "malformed runtimes are refused", arguments: ["", "Python:3", "python:", ":3.11", "py thon", "a:b:c", "../x"])
    func badRuntime(runtime: String) {
        #expect(Self.issues { $0.spec.runtime = runtime }.map(\.field) == ["spec.runtime"])
    }

    @Test("timeouts outside 1-86400 seconds are refused", arguments: [0, -5, 86_401])
    func badTimeout(timeout: Int) {
        #expect(Self.issues { $0.spec.timeout = timeout }.map(\.field) == ["spec.timeout"])
    }

    @Test("an unknown security level is an invalid value, not an unenforceable one")
    func badSecurityLevel() {
        let issues = Self.issues { $0.spec.securityLevel = "paranoid" }
        #expect(issues.map(\.field) == ["spec.securityLevel"])
        #expect(issues.first?.kind == .invalidValue)
    }

    @Test("egress rules are checked field by field")
    func egressRules() {
        let issues = Self.sandboxIssues(
            SandboxSpec(
                runtime: "python:3.11",
                networkAccess: NetworkAccessSpec(egress: [
                    EgressRule(domain: "pypi.org"),
                    EgressRule(
                        domain: "bad domain", ports: [PortRule(port: 0), PortRule(port: 443, protocol: "SCTP")]),
                ])))
        #expect(
            issues.filter { $0.kind == .invalidValue }.map(\.field) == [
                "spec.networkAccess.egress[1].domain",
                "spec.networkAccess.egress[1].ports[0].port",
                "spec.networkAccess.egress[1].ports[1].protocol",
            ])
    }

    @Test(
        "cidr rules: an IPv4 prefix without host bits; exactly one of domain or cidr; a domain only on TCP 80 and 443")
    func cidrRules() {
        var both = EgressRule(domain: "pypi.org")
        both.cidr = "198.18.0.0/15"
        let issues = Self.sandboxIssues(
            SandboxSpec(
                runtime: "python:3.11",
                networkAccess: NetworkAccessSpec(egress: [
                    EgressRule(
                        cidr: "198.18.0.0/15", ports: [PortRule(port: 5432), PortRule(port: 53, protocol: "UDP")]),
                    EgressRule(cidr: "198.18.0.1/15"),
                    EgressRule(cidr: "198.18.0.0/33"),
                    EgressRule(cidr: "198.018.0.0/15"),
                    EgressRule(cidr: "pypi.org"),
                    both,
                    EgressRule(domain: "pypi.org", ports: [PortRule(port: 22), PortRule(port: 443, protocol: "UDP")]),
                ])))
        #expect(
            issues.filter { $0.kind == .invalidValue }.map(\.field) == [
                "spec.networkAccess.egress[1].cidr",
                "spec.networkAccess.egress[2].cidr",
                "spec.networkAccess.egress[3].cidr",
                "spec.networkAccess.egress[4].cidr",
                "spec.networkAccess.egress[5]",
                "spec.networkAccess.egress[6].ports[0].port",
                "spec.networkAccess.egress[6].ports[1].protocol",
            ])
        #expect(
            issues.first { $0.field == "spec.networkAccess.egress[1].cidr" }?.message.contains("198.18.0.0/15") == true)
    }

    @Test("every issue is reported at once, each naming its field")
    func allIssues() {
        let issues = Self.issues {
            $0.metadata.name = "Bad Name"
            $0.spec.securityContext = SecurityContextSpec(runAsUser: 0)
            $0.spec.filesystem = FilesystemSpec(writablePaths: ["relative"])
            $0.spec.resources = ResourcesSpec(memory: "lots")
        }
        #expect(
            issues.map(\.field) == [
                "metadata.name", "spec.securityContext.runAsUser", "spec.filesystem.writablePaths[0]",
                "spec.resources.memory",
            ])
        let error = SandboxError(issues)
        #expect(error.description.split(separator: "\n").count == 4)
    }

    static func sandboxIssues(_ spec: SandboxSpec) -> [FieldIssue] {
        issues { $0.spec = spec }
    }
}
