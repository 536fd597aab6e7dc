import Foundation
import Testing

@testable import OCI
@testable import SeccompFilters

/// The Docker/Podman profile format and its resolution into OCI linux.seccomp.
struct ProfileTests {
    static let amd64 = SeccompTarget(
        architecture: "SCMP_ARCH_X86_64", capabilities: [], kernelRelease: "6.1.0-18-amd64")

    func decode(_ json: String) throws -> SeccompProfile {
        try SeccompProfile.decode(Array(json.utf8), source: "test.json")
    }

    func message(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            return ""
        } catch { return "\(error)" }
    }

    @Test("archMap: the native entry and its sub-architectures become architectures")
    func archMap() throws {
        let p = try decode(
            """
            {"defaultAction": "SCMP_ACT_ERRNO", "archMap": [
              {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
              {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}]}
            """)
        #expect(
            try p.resolved(for: Self.amd64, source: "t").architectures == [
                "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
            ])
        let arm = SeccompTarget(architecture: "SCMP_ARCH_AARCH64", capabilities: [], kernelRelease: "6.1")
        #expect(try p.resolved(for: arm, source: "t").architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        let both = try decode(
            #"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"], "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#
        )
        #expect(
            message { try both.resolved(for: Self.amd64, source: "t") }.contains(
                "t: archMap: both architectures and archMap"))
    }

    @Test("includes and excludes by capability, architecture and minimum kernel")
    func includesExcludes() throws {
        let p = try decode(
            """
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
              {"names": ["a1"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
              {"names": ["a2"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
              {"names": ["b1"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32", "x86"]}},
              {"names": ["b2"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
              {"names": ["b3"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
              {"names": ["c1"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
              {"names": ["c2"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.2"}},
              {"names": ["c3"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "6.1.0"}},
              {"names": ["d1"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}}
            ]}
            """)
        func names(_ caps: Set<String>) throws -> [String] {
            var t = Self.amd64
            t.capabilities = caps
            return try p.resolved(for: t, source: "t").syscalls!.flatMap(\.names)
        }
        #expect(try names([]) == ["a2", "b1", "c1"])
        #expect(try names(["CAP_SYS_ADMIN"]) == ["a1", "b1", "c1"])
        #expect(try names(["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]) == ["a1", "b1", "c1", "d1"])
        let bad = try decode(
            #"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "five"}}]}"#
        )
        #expect(
            message { try bad.resolved(for: Self.amd64, source: "t") }.contains(
                "t: syscalls[0].includes.minKernel: \"five\" is not a kernel version"))
    }

    @Test("name and names, errno names (Podman) and errnoRet")
    func namesAndErrno() throws {
        let p = try decode(
            """
            {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": "ENOSYS", "syscalls": [
              {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errno": "EACCES"},
              {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "errno": "EPERM", "comment": "c", "args": []}]}
            """)
        let s = try p.resolved(for: Self.amd64, source: "t")
        #expect(s.defaultErrnoRet == 38)
        #expect(
            s.syscalls == [
                .init(names: ["mkdir"], action: "SCMP_ACT_ERRNO", errnoRet: 13),
                .init(names: ["rmdir"], action: "SCMP_ACT_ERRNO", errnoRet: 1),
            ])
        let both = try decode(
            #"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}"#
        )
        #expect(
            message { try both.resolved(for: Self.amd64, source: "t") }.contains("syscalls[0]: both name (a) and names")
        )
        let none = try decode(#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}"#)
        #expect(message { try none.resolved(for: Self.amd64, source: "t") }.contains("syscalls[0].names: missing"))
        let disagree = try decode(
            #"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2, "errno": "EPERM"}]}"#
        )
        #expect(
            message { try disagree.resolved(for: Self.amd64, source: "t") }.contains(
                "syscalls[0].errnoRet: 2 and the errno name EPERM (1) disagree"))
        let unknown = try decode(#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": "EWHATEVER"}"#)
        #expect(
            message { try unknown.resolved(for: Self.amd64, source: "t") }.contains(
                "defaultErrnoRet: unknown errno name \"EWHATEVER\""))
    }

    @Test(
        "bad input: not JSON, an unknown key, a wrong type, a missing defaultAction; each names the file and the path")
    func badInput() throws {
        #expect(message { try self.decode("{nope") }.hasPrefix("test.json: not JSON"))
        #expect(
            message {
                try self.decode(#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "actoin": "x"}]}"#)
            }
            .contains("test.json: syscalls[0].actoin: unknown field"))
        #expect(
            message {
                try self.decode(
                    #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1}]}"#
                )
            }
            .contains("test.json: syscalls[0].errnoRet: -1 is not an integer from 0 to 4294967295"))
        #expect(
            message {
                try self.decode(
                    #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 1.5, "op": "SCMP_CMP_EQ"}]}]}"#
                )
            }
            .contains("test.json: syscalls[0].args[0].value: 1.5 is not an integer"))
        let big = try self.decode(
            #"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 18446744073709551615, "op": "SCMP_CMP_EQ"}]}]}"#
        )
        #expect(big.syscalls?.first?.args?.first?.value == UInt64.max)
        #expect(message { try self.decode(#"{"syscalls": []}"#) }.contains("test.json: defaultAction: missing"))
        #expect(
            message {
                try self.decode(#"{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"architecture": "x", "sub": []}]}"#)
            }
            .contains("archMap[0].sub: unknown field"))
    }

    @Test("an OCI linux.seccomp object is a profile too")
    func ociIsProfile() throws {
        let oci = Seccomp(
            defaultAction: "SCMP_ACT_ERRNO", defaultErrnoRet: 1, architectures: ["SCMP_ARCH_X86"],
            flags: ["SECCOMP_FILTER_FLAG_LOG"],
            syscalls: [
                .init(names: ["read", "write"], action: "SCMP_ACT_ALLOW"),
                .init(
                    names: ["ioctl"], action: "SCMP_ACT_ALLOW",
                    args: [.init(index: 1, value: 0xffff_ffff, valueTwo: 0x5401, op: "SCMP_CMP_MASKED_EQ")]),
            ])
        let json = try JSONEncoder().encode(oci)
        let back = try SeccompProfile.decode(Array(json), source: "oci").resolved(for: Self.amd64, source: "oci")
        #expect(back == oci)
    }

    @Test("Podman's default profile (containers-common) resolves for a sandbox without capabilities and compiles")
    func podmanDefault() throws {
        let path = "/usr/share/containers/seccomp.json"
        try #require(FileManager.default.fileExists(atPath: path), "golang-github-containers-common ships \(path)")
        let p = try SeccompProfile.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))), source: path)
        let s = try p.resolved(for: .host(), source: path)
        #expect(s.defaultAction == "SCMP_ACT_ERRNO" && s.defaultErrnoRet == 38)
        #expect(s.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        let names = Set(s.syscalls!.flatMap(\.names))
        #expect(names.contains("arch_prctl") && !names.contains("s390_runtime_instr"))
        // Without CAP_SYS_ADMIN the entry that allows bpf etc. is left out and the one that denies stays.
        #expect(s.syscalls!.contains { $0.names.contains("bpf") && $0.action == "SCMP_ACT_ERRNO" })
        #expect(!s.syscalls!.contains { $0.names.contains("bpf") && $0.action == "SCMP_ACT_ALLOW" })
        let program = try SeccompCompiler.compile(s)
        let sim = try BPFSimulator(program)
        #expect(sim.run(.init("read")) == SeccompNames.actionAllow)
        #expect(sim.run(.init("bpf")) == SeccompNames.actionErrno | 1)
        #expect(sim.run(.init("add_key")) == SeccompNames.actionErrno | 38, "not named: the default, ENOSYS")
        #expect(
            sim.run(.init("socket", args: [16, 3, 9])) == SeccompNames.actionErrno | 22,
            "AF_NETLINK/NETLINK_AUDIT: EINVAL")
        #expect(sim.run(.init("personality", args: [0xffff_ffff])) == SeccompNames.actionAllow)
        #expect(sim.run(.init("personality", args: [0x0040_0000])) == SeccompNames.actionErrno | 38)
    }
}
