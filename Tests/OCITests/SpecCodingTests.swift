import Foundation
import Testing

@testable import OCI

struct SpecCodingTests {
    /// A trimmed config.json as `runc spec` writes it, plus fields containerd adds.
    static let runcSpec = """
        {
          "ociVersion": "1.0.2-dev",
          "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0, "additionalGids": [10, 20], "umask": 18},
            "args": ["sh"],
            "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "noNewPrivileges": true,
            "oomScoreAdj": 100
          },
          "root": {"path": "rootfs", "readonly": true},
          "hostname": "runc",
          "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                     {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "size=65536k"]}],
          "hooks": {"createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]},
          "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
          "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "resources": {"devices": [{"allow": false, "access": "rwm"}], "memory": {"limit": 33554432, "swap": 33554432},
                          "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"}, "pids": {"limit": -1}},
            "cgroupsPath": "/default/abc",
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/x"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_forward": "1"},
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "architectures": ["SCMP_ARCH_X86_64"],
                        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
            "futureField": {"ignored": true}
          }
        }
        """

    @Test("decodes every field of a runc/containerd config.json")
    func decodesRuncSpec() throws {
        let spec = try JSONDecoder().decode(Spec.self, from: Data(Self.runcSpec.utf8))
        #expect(spec.ociVersion == "1.0.2-dev")
        #expect(spec.process?.user.additionalGids == [10, 20])
        #expect(spec.process?.user.umask == 18)
        #expect(spec.process?.rlimits == [Rlimit(type: "RLIMIT_NOFILE", hard: 1024, soft: 512)])
        #expect(spec.process?.capabilities?.bounding == ["CAP_KILL"])
        #expect(spec.process?.oomScoreAdj == 100)
        #expect(spec.root == Root(path: "rootfs", readonly: true))
        #expect(spec.mounts?[1].options == ["nosuid", "size=65536k"])
        #expect(spec.hooks?.createRuntime?.first?.timeout == 5)
        #expect(spec.linux?.namespaces?[1] == Namespace(type: "network", path: "/var/run/netns/x"))
        #expect(spec.linux?.resources?.memory?.limit == 33_554_432)
        #expect(spec.linux?.resources?.pids?.limit == -1)
        #expect(spec.linux?.resources?.cpu?.cpus == "0-1")
        #expect(spec.linux?.seccomp?.defaultErrnoRet == 38)
        #expect(spec.linux?.seccomp?.syscalls?.first?.args?.first?.op == "SCMP_CMP_EQ")
        #expect(spec.linux?.sysctl == ["net.ipv4.ip_forward": "1"])
    }

    @Test("round-trips through JSON unchanged")
    func roundTrip() throws {
        let spec = try JSONDecoder().decode(Spec.self, from: Data(Self.runcSpec.utf8))
        let again = try JSONDecoder().decode(Spec.self, from: JSONEncoder().encode(spec))
        #expect(again == spec)
    }

    @Test(
        "a missing required field is an error naming it",
        arguments: [
            (#"{"ociVersion":"1.0.0","process":{"user":{"uid":0},"cwd":"/"}}"#, "gid"),
            (#"{"ociVersion":"1.0.0","process":{"user":{"uid":0,"gid":0}}}"#, "cwd"),
            (#"{"process":{}}"#, "ociVersion"),
        ])
    func missingField(json: String, field: String) {
        #expect {
            _ = try JSONDecoder().decode(Spec.self, from: Data(json.utf8))
        } throws: { error in
            "\(error)".contains(field)
        }
    }

    @Test("a uid that is negative or not a number is rejected", arguments: ["-1", "\"abc\"", "4294967296"])
    func badUID(uid: String) {
        let json = #"{"ociVersion":"1.0.0","process":{"user":{"uid":\#(uid),"gid":0},"cwd":"/"}}"#
        #expect(throws: DecodingError.self) {
            _ = try JSONDecoder().decode(Spec.self, from: Data(json.utf8))
        }
    }

    @Test("runc's state JSON has the fields containerd decodes")
    func runcState() throws {
        let s = RuncState(
            id: "a", pid: 42, status: "running", bundle: "/b", rootfs: "/b/rootfs",
            created: "2026-01-01T00:00:00.000000000Z", annotations: nil)
        let obj = try JSONSerialization.jsonObject(with: JSONEncoder().encode(s)) as! [String: Any]
        #expect(
            Set(obj.keys).isSuperset(of: ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]))
        #expect(obj["pid"] as? Int == 42)
    }
}

struct RangeTests {
    @Test(
        "an out-of-range id names its field",
        arguments: [
            (#""uid":-1,"gid":0"#, "uid"), (#""uid":4294967296,"gid":0"#, "uid"), (#""uid":0,"gid":1.5"#, "gid"),
            (#""uid":0,"gid":0,"additionalGids":[1,-2]"#, "additionalGids"),
        ])
    func outOfRange(user: String, field: String) {
        let json = #"{"ociVersion":"1.0.0","process":{"user":{\#(user)},"cwd":"/"}}"#
        #expect {
            _ = try JSONDecoder().decode(Spec.self, from: Data(json.utf8))
        } throws: { error in
            guard case DecodingError.dataCorrupted(let ctx) = error else { return false }
            return ctx.codingPath.map(\.stringValue).contains(field)
        }
    }

    @Test("RLIM_INFINITY decodes; a negative rlimit names its field")
    func rlimits() throws {
        let ok = #"{"type":"RLIMIT_CORE","hard":18446744073709551615,"soft":0}"#
        #expect(try JSONDecoder().decode(Rlimit.self, from: Data(ok.utf8)).hard == UInt64.max)
        let bad = #"{"type":"RLIMIT_CORE","hard":-1,"soft":0}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Rlimit.self, from: Data(bad.utf8)) }
    }
}

struct NumberRangeTests {
    /// The `DecodingError` of `JSONDecoding.decode(Spec.self, …)` as "path: reason".
    static func message(_ json: String) -> String? {
        do {
            _ = try JSONDecoding.decode(Spec.self, from: Data(json.utf8))
            return nil
        } catch DecodingError.dataCorrupted(let ctx) {
            return ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop {
                $0 == "."
            } + ": " + ctx.debugDescription
        } catch {
            return "\(error)"
        }
    }

    @Test(
        "an integer field given a number its type cannot hold names the field and the range",
        arguments: [
            (
                #""memory":{"limit":1e30}"#,
                "linux.resources.memory.limit: 1e+30 is outside -9223372036854775808...9223372036854775807 (Int64)"
            ),
            (#""memory":{"limit":1.5}"#, "linux.resources.memory.limit: 1.5 is not an integer"),
            (
                #""memory":{"swappiness":-1}"#,
                "linux.resources.memory.swappiness: -1 is outside 0...18446744073709551615 (UInt64)"
            ),
            (#""blockIO":{"weight":70000}"#, "linux.resources.blockIO.weight: 70000 is outside 0...65535 (UInt16)"),
            (
                #""devices":[{"allow":true,"major":1},{"allow":true,"major":99999999999999999999}]"#,
                "linux.resources.devices[1].major: 1e+20 is outside -9223372036854775808...9223372036854775807 (Int64)"
            ),
        ])
    func outOfRange(resources: String, expected: String) {
        let json =
            #"{"ociVersion":"1.0.0","process":{"user":{"uid":0,"gid":0},"cwd":"/","rlimits":[{"type":"RLIMIT_CORE","hard":18446744073709551615,"soft":1}]},"linux":{"resources":{\#(resources)}}}"#
        #expect(Self.message(json) == expected)
    }

    @Test("valid JSON decodes as before; broken JSON stays a syntax error")
    func unchanged() throws {
        let ok = #"{"ociVersion":"1.0.0","linux":{"resources":{"memory":{"limit":1e3,"swappiness":100}}}}"#
        #expect(try JSONDecoding.decode(Spec.self, from: Data(ok.utf8)).linux?.resources?.memory?.limit == 1000)
        #expect {
            _ = try JSONDecoding.decode(Spec.self, from: Data(#"{"ociVersion": "#.utf8))
        } throws: { error in
            guard case DecodingError.dataCorrupted(let ctx) = error else { return false }
            return ctx.codingPath.isEmpty
        }
    }
}
