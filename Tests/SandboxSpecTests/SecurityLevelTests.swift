import OCI
import Testing

@testable import SandboxSpec

/// Security levels: one table (`SecurityLevel.profile`), one policy function
/// (`SecurityLevelPolicy.apply`), and fields that may only raise a level.
struct SecurityLevelTests {
    static func sandbox(_ level: String?, filesystem: FilesystemSpec? = nil, seccomp: SeccompProfileRef? = nil)
        -> Sandbox
    {
        Sandbox(
            metadata: ObjectMeta(name: "box"),
            spec: SandboxSpec(
                runtime: "python:3.11", securityLevel: level, filesystem: filesystem,
                securityContext: seccomp.map { SecurityContextSpec(seccompProfile: $0) }))
    }

    static func spec(_ sandbox: Sandbox) throws -> Spec {
        try SandboxPolicy.bundleSpec(
            for: sandbox, rootfs: "/store/python", id: "box", args: ["python3"], nofileHardLimit: 4096)
    }

    @Test("the table: what each level turns on")
    func table() {
        let standard = SecurityLevel.standard.profile
        let high = SecurityLevel.high.profile
        let custom = SecurityLevel.custom.profile
        #expect(standard.backend == .native && high.backend == .gvisor && custom.backend == .native)
        #expect(standard.userNamespace && !high.userNamespace && custom.userNamespace)
        #expect(standard.seccomp == .runtimeDefault && high.seccomp == .gvisorSentry)
        for p in [standard, high, custom] {
            #expect(!p.capabilities && p.noNewPrivileges && p.readOnlyRoot && p.network == "none")
        }
        #expect(!standard.fieldsMayWeaken && !high.fieldsMayWeaken && custom.fieldsMayWeaken)
        #expect(SecurityLevel.of(Self.sandbox(nil)) == .standard)
    }

    @Test(
        "standard and custom: a user namespace whose range the runtime allocates",
        arguments: [nil, "standard", "custom"])
    func userNamespace(level: String?) throws {
        let spec = try Self.spec(Self.sandbox(level))
        #expect(spec.linux?.namespaces?.first == Namespace(type: "user"))
        #expect(spec.linux?.namespaces?.filter { $0.type == "user" }.count == 1)
        #expect(spec.linux?.uidMappings == nil && spec.linux?.gidMappings == nil)
        #expect(spec.annotations?["llmsafespace.dev/userns"] == "auto")
        #expect(spec.annotations?["llmsafespace.dev/security-level"] == (level ?? "standard"))
    }

    @Test("high: the gVisor annotation, no OCI user namespace, and everything else standard has")
    func high() throws {
        let spec = try Self.spec(Self.sandbox("high"))
        let standard = try Self.spec(Self.sandbox("standard"))
        #expect(spec.annotations?["llmsafespace.dev/security-level"] == "high")
        #expect(spec.annotations?["llmsafespace.dev/userns"] == nil)
        #expect(spec.linux?.namespaces?.contains { $0.type == "user" } == false)
        #expect(spec.linux?.namespaces == standard.linux?.namespaces?.filter { $0.type != "user" })
        #expect(spec.linux?.namespaces?.contains(Namespace(type: "network")) == true)
        #expect(
            spec.process?.capabilities
                == Capabilities(bounding: [], effective: [], inheritable: [], permitted: [], ambient: []))
        #expect(spec.process?.noNewPrivileges == true)
        #expect(spec.root?.readonly == true)
        #expect(spec.process?.user.uid == 1000)
        #expect(spec.mounts == standard.mounts)
        #expect(spec.linux?.maskedPaths == standard.linux?.maskedPaths)
        #expect(spec.linux?.resources == standard.linux?.resources)
    }

    @Test("high loads no OCI seccomp profile inside gVisor unless the Sandbox names one")
    func highSeccomp() {
        var spec = Spec(
            process: nil, root: nil,
            linux: Linux(
                namespaces: [Namespace(type: "user")],
                seccomp: Seccomp(defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: 38)))
        SecurityLevelPolicy.apply(Self.sandbox("high"), to: &spec)
        #expect(spec.linux?.seccomp == nil)
        #expect(spec.linux?.namespaces == [])
        var asked = Spec(process: nil, root: nil, linux: Linux(seccomp: Seccomp(defaultAction: "SCMP_ACT_ALLOW")))
        SecurityLevelPolicy.apply(Self.sandbox("high", seccomp: SeccompProfileRef(type: "RuntimeDefault")), to: &asked)
        #expect(asked.linux?.seccomp == Seccomp(defaultAction: "SCMP_ACT_ALLOW"))
        var viaProfile = Spec(process: nil, root: nil, linux: Linux(seccomp: Seccomp(defaultAction: "SCMP_ACT_ALLOW")))
        var withProfileRef = Self.sandbox("high")
        withProfileRef.spec.profileRef = ProfileRef(name: "python-restricted")
        SecurityLevelPolicy.apply(withProfileRef, to: &viaProfile)
        #expect(viaProfile.linux?.seccomp == Seccomp(defaultAction: "SCMP_ACT_ALLOW"))
        var standard = Spec(process: nil, root: nil, linux: Linux(seccomp: Seccomp(defaultAction: "SCMP_ACT_ALLOW")))
        SecurityLevelPolicy.apply(Self.sandbox("standard"), to: &standard)
        #expect(standard.linux?.seccomp == Seccomp(defaultAction: "SCMP_ACT_ALLOW"))
    }

    @Test("apply restores the floor whatever came before: no capabilities, no_new_privs")
    func floor() {
        var spec = Spec(
            process: Process(
                user: User(uid: 1000, gid: 1000), args: ["sh"], cwd: "/",
                capabilities: Capabilities(bounding: ["CAP_SYS_ADMIN"]), noNewPrivileges: false),
            root: nil, linux: Linux())
        SecurityLevelPolicy.apply(Self.sandbox("custom"), to: &spec)
        #expect(
            spec.process?.capabilities
                == Capabilities(bounding: [], effective: [], inheritable: [], permitted: [], ambient: []))
        #expect(spec.process?.noNewPrivileges == true)
    }

    /// (level, field YAML would set, the field named)
    static let weakening: [(String?, FilesystemSpec?, SeccompProfileRef?, String)] = [
        ("high", FilesystemSpec(readOnlyRoot: false), nil, "spec.filesystem.readOnlyRoot"),
        ("standard", FilesystemSpec(readOnlyRoot: false), nil, "spec.filesystem.readOnlyRoot"),
        (nil, FilesystemSpec(readOnlyRoot: false), nil, "spec.filesystem.readOnlyRoot"),
        ("high", nil, SeccompProfileRef(type: "Unconfined"), "spec.securityContext.seccompProfile.type"),
        ("standard", nil, SeccompProfileRef(type: "Unconfined"), "spec.securityContext.seccompProfile.type"),
    ]

    @Test("a field that would weaken the level is an error naming it, unless the level is custom", arguments: weakening)
    func weakeningRefused(level: String?, filesystem: FilesystemSpec?, seccomp: SeccompProfileRef?, field: String)
        throws
    {
        let sandbox = Self.sandbox(level, filesystem: filesystem, seccomp: seccomp)
        let issues = sandbox.securityLevelIssues()
        #expect(issues.map(\.field) == [field])
        #expect(issues.first?.message.contains("weakens securityLevel \(level ?? "standard")") == true)
        let error = #expect(throws: SandboxError.self) { try Self.spec(sandbox) }
        #expect(error?.fields.contains(field) == true)
        // The same field at custom is allowed by the level (other rules may still refuse it).
        var custom = sandbox
        custom.spec.securityLevel = "custom"
        #expect(custom.securityLevelIssues() == [])
    }

    @Test("custom allows a writable root; the policy asks for the writable layer")
    func customWritable() throws {
        let plan = try SandboxPolicy.bundle(
            for: Self.sandbox("custom", filesystem: FilesystemSpec(readOnlyRoot: false)), rootfs: "/b/rootfs",
            id: "box",
            args: ["sh"], nofileHardLimit: 4096)
        #expect(plan.writableLayer)
        #expect(plan.spec.root?.readonly == false)
        #expect(plan.spec.annotations?["llmsafespace.dev/userns"] == "auto")
    }

    @Test("settings that do not weaken a level are accepted at every level", arguments: ["standard", "high", "custom"])
    func accepted(level: String) throws {
        let sandbox = Self.sandbox(level, filesystem: FilesystemSpec(readOnlyRoot: true, writablePaths: ["/tmp"]))
        #expect(sandbox.securityLevelIssues() == [])
        try sandbox.validate()
    }
}
