import Foundation
import OCI
import SeccompFilters
import Testing

@testable import SandboxSpec

/// Which seccomp profile a sandbox gets (SandboxPolicy+Seccomp.swift), SandboxProfiles, and
/// the built-in profiles (seccomp/, embedded as resources).
struct SandboxSeccompTests {
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static func sandbox(_ yaml: String) throws -> Sandbox {
        try Sandbox.decode(
            yaml:
                "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: box\nspec:\n  runtime: python:3.11\n"
                + yaml)
    }

    static func seccomp(_ sandbox: Sandbox, directory: String = "/nonexistent") throws(SandboxError) -> Seccomp? {
        try SandboxPolicy.seccomp(for: sandbox, profiles: SeccompProfiles(directory: directory))
    }

    /// A temporary profile directory, removed at the end of `body`.
    static func withDirectory(_ files: [String: String], _ body: (String) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "seccomp-profiles-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, text) in files {
            let path = dir + "/" + name
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        try body(dir)
    }

    @Test("each built-in name is its file of seccomp/, embedded", arguments: ["default", "python", "node"])
    func builtinIsFile(name: String) throws {
        let file = try String(contentsOfFile: Self.repo + "/seccomp/\(name).json", encoding: .utf8)
        #expect(SeccompProfiles.builtin[name] == file)
        #expect(SeccompProfiles.builtin.count == 3)
    }

    @Test("a sandbox without a choice gets seccomp/default.json, in its bundle")
    func standardDefault() throws {
        let spec = try SandboxPolicy.bundleSpec(
            for: try Self.sandbox(""), rootfs: "/r", id: "box", args: ["true"], nofileHardLimit: 1024)
        let seccomp = try #require(spec.linux?.seccomp)
        // An allowlist (seccomp/README.md): EPERM for what it does not name.
        #expect(seccomp.defaultAction == "SCMP_ACT_ERRNO" && seccomp.defaultErrnoRet == 1)
        #expect(seccomp.syscalls?.contains { $0.names.contains("read") && $0.action == "SCMP_ACT_ALLOW" } == true)
        #expect(seccomp.syscalls?.contains { $0.names.contains("keyctl") && $0.action == "SCMP_ACT_ERRNO" } == true)
        #expect(seccomp.syscalls?.contains { $0.names == ["clone3"] && $0.errnoRet == 38 } == true)
        #expect(seccomp.architectures == [SeccompNames.nativeArchitecture])
        #expect(
            try Self.seccomp(try Self.sandbox("  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n"))
                == seccomp)
    }

    @Test("Localhost: an absolute path, or one relative to the profile directory")
    func localhost() throws {
        let profile =
            #"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#
        try Self.withDirectory(["lang/p.json": profile]) { dir in
            let relative = try Self.seccomp(
                try Self.sandbox(
                    "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: lang/p.json\n"
                ), directory: dir)
            #expect(relative?.defaultAction == "SCMP_ACT_ERRNO" && relative?.syscalls?.first?.names == ["read"])
            let absolute = try Self.seccomp(
                try Self.sandbox(
                    "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: \(dir)/lang/p.json\n"
                ))
            #expect(absolute == relative)
            let missing = #expect(throws: SandboxError.self) {
                try Self.seccomp(
                    try Self.sandbox(
                        "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: nope.json\n"
                    ), directory: dir)
            }
            #expect(
                missing?.description.contains(
                    "spec.securityContext.seccompProfile.localhostProfile: cannot read the seccomp profile \(dir)/nope.json"
                ) == true)
        }
    }

    @Test(
        "field checks: the type, localhostProfile only with Localhost and without .., profileRef.name a DNS label",
        arguments: [
            (
                "  securityContext:\n    seccompProfile:\n      type: Strict\n",
                "spec.securityContext.seccompProfile.type"
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: Localhost\n",
                "spec.securityContext.seccompProfile.localhostProfile"
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: ../etc/x.json\n",
                "spec.securityContext.seccompProfile.localhostProfile"
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n      localhostProfile: x.json\n",
                "spec.securityContext.seccompProfile.localhostProfile"
            ),
            ("  profileRef:\n    name: Not_A_Label\n", "spec.profileRef.name"),
        ])
    func fieldChecks(yaml: String, field: String) throws {
        let error = #expect(throws: SandboxError.self) { try Self.sandbox(yaml).validate() }
        #expect(error?.fields == [field], "\(String(describing: error))")
    }

    @Test("Unconfined is no filter, at securityLevel custom only")
    func unconfined() throws {
        let custom = try Self.sandbox(
            "  securityLevel: custom\n  securityContext:\n    seccompProfile:\n      type: Unconfined\n")
        try custom.validate()
        #expect(try Self.seccomp(custom) == nil)
        let standard = try Self.sandbox("  securityContext:\n    seccompProfile:\n      type: Unconfined\n")
        #expect(throws: SandboxError.self) { try standard.validate() }
    }

    @Test(
        "profileRef: the built-in python SandboxProfile, one in the directory with a relative profile, language and conflicts"
    )
    func profileRef() throws {
        let builtin = try Self.seccomp(try Self.sandbox("  profileRef:\n    name: python\n"))
        #expect(builtin?.defaultAction == "SCMP_ACT_ERRNO" && builtin?.defaultErrnoRet == 1)
        let files = [
            "restricted.yaml":
                "apiVersion: llmsafespace.dev/v1\nkind: SandboxProfile\nmetadata:\n  name: restricted\nspec:\n  language: python\n  seccompProfile: profiles/r.json\n",
            "profiles/r.json":
                #"{"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}"#,
            "nolang.json":
                #"{"apiVersion": "llmsafespace.dev/v1", "kind": "SandboxProfile", "metadata": {"name": "nolang"}, "spec": {"seccompProfile": "node"}}"#,
            "broken.yaml": "apiVersion: llmsafespace.dev/v1\nkind: SandboxProfile\nspec:\n  seccomp: x\n",
        ]
        try Self.withDirectory(files) { dir in
            let restricted = try Self.seccomp(try Self.sandbox("  profileRef:\n    name: restricted\n"), directory: dir)
            #expect(restricted?.defaultAction == "SCMP_ACT_KILL_PROCESS")
            let nolang = try Self.seccomp(try Self.sandbox("  profileRef:\n    name: nolang\n"), directory: dir)
            #expect(nolang?.syscalls?.contains { $0.names.contains("pkey_alloc") } == true, "the built-in node profile")

            func message(_ yaml: String, runtime: String = "python:3.11") -> String {
                do {
                    var sandbox = try Self.sandbox(yaml)
                    sandbox.spec.runtime = runtime
                    _ = try Self.seccomp(sandbox, directory: dir)
                    return ""
                } catch { return "\(error)" }
            }
            #expect(
                message("  profileRef:\n    name: restricted\n", runtime: "node:18").contains(
                    "spec.profileRef: SandboxProfile restricted is for python; the sandbox runs node:18"))
            #expect(
                message("  profileRef:\n    name: missing\n").contains(
                    "spec.profileRef.name: no SandboxProfile missing"))
            #expect(
                message("  profileRef:\n    name: broken\n").contains(
                    "spec.profileRef.name: \(dir)/broken.yaml: spec.seccomp: unknown field"))
            #expect(
                message(
                    "  profileRef:\n    name: restricted\n  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n"
                )
                .contains(
                    "spec.securityContext.seccompProfile: both this and the SandboxProfile of spec.profileRef name a seccomp profile"
                ))
        }
    }

    @Test("a SandboxProfile file is strict and checks apiVersion, kind and language")
    func sandboxProfileFile() throws {
        let files = ["p.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  language: Python!\n"]
        try Self.withDirectory(files) { dir in
            let error = #expect(throws: SandboxError.self) { try SandboxProfile.load(path: dir + "/p.yaml") }
            #expect(error?.fields == ["apiVersion", "kind", "spec.language"])
        }
    }

    @Test("a profile the resolver rejects names the profile's own entry")
    func badEntry() throws {
        let files = [
            "bad.json":
                #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"}, {"names": ["b"], "action": "SCMP_ACT_NOPE"}]}"#
        ]
        try Self.withDirectory(files) { dir in
            let error = #expect(throws: SandboxError.self) {
                try Self.seccomp(
                    try Self.sandbox(
                        "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: bad.json\n"
                    ), directory: dir)
            }
            #expect(
                error?.description.contains(
                    "spec.securityContext.seccompProfile.localhostProfile: \(dir)/bad.json: syscalls[1].action: unknown action \"SCMP_ACT_NOPE\""
                ) == true, "\(String(describing: error))")
        }
    }
}
