import Testing

@testable import Cgroups

/// `exec --cgroup` values (runc 1.1 exec.go): parsing and the directories a process joins.
struct SubCgroupsTests {
    static let v1 = Cgroup(
        mode: .hybrid, path: "/c1",
        directories: [
            "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/c1", "memory": "/sys/fs/cgroup/memory/c1",
            "pids": "/sys/fs/cgroup/pids/c1", "name=systemd": "/sys/fs/cgroup/systemd/c1",
            "unified": "/sys/fs/cgroup/unified/c1",
        ],
        mountPoints: [:])
    static let v2 = Cgroup(mode: .unified, path: "/c1", directories: ["unified": "/sys/fs/cgroup/c1"], mountPoints: [:])

    @Test("forms: a path alone, controller lists, several values; a leading / and . are dropped")
    func parsing() throws {
        #expect(try SubCgroups(parsing: ["sub"]).paths == ["": "sub"])
        #expect(try SubCgroups(parsing: ["/a/./b/"]).paths == ["": "a/b"])
        #expect(
            try SubCgroups(parsing: ["cpu,memory:x", "pids:y/z"]).paths == ["cpu": "x", "memory": "x", "pids": "y/z"])
        #expect(try SubCgroups(parsing: ["cpu:x", "cpu:y"]).paths == ["cpu": "y"])
        #expect(try SubCgroups(parsing: []).isEmpty)
    }

    @Test(
        "refused, naming --cgroup",
        arguments: [["a:b:c"], ["sub", "cpu:sub"], [":sub"], ["cpu,:sub"], ["../x"], ["a/../../x"], ["/"], ["cpu:"]])
    func refused(values: [String]) {
        #expect {
            try SubCgroups(parsing: values)
        } throws: { error in
            (error as? CgroupError)?.field == "--cgroup"
        }
    }

    @Test("v1: the path form joins every hierarchy; controller forms only theirs; unknown controllers refused")
    func v1Directories() throws {
        let all = try Self.v1.directories(joining: SubCgroups(parsing: ["s"]))
        #expect(all.allSatisfy { $0.hasSuffix("/c1/s") } && all.count == 5)
        let some = Set(try Self.v1.directories(joining: SubCgroups(parsing: ["cpuacct,name=systemd:s", "memory:t/u"])))
        #expect(
            some == [
                "/sys/fs/cgroup/cpu,cpuacct/c1/s", "/sys/fs/cgroup/memory/c1/t/u", "/sys/fs/cgroup/pids/c1",
                "/sys/fs/cgroup/systemd/c1/s", "/sys/fs/cgroup/unified/c1",
            ])
        #expect(Set(try Self.v1.directories(joining: SubCgroups())) == Set(Self.v1.directories.values))
        #expect(throws: CgroupError.self) { try Self.v1.directories(joining: SubCgroups(parsing: ["foo:s"])) }
    }

    @Test("v2: one path without controller; controller forms refused")
    func v2Directories() throws {
        #expect(try Self.v2.directories(joining: SubCgroups(parsing: ["s/t"])) == ["/sys/fs/cgroup/c1/s/t"])
        #expect(throws: CgroupError.self) { try Self.v2.directories(joining: SubCgroups(parsing: ["cpu:s"])) }
    }

    @Test("realtime fields: 0 is not given, -1 is no limit, below -1 refused; refused by name on cgroup v2")
    func realtimeValues() throws {
        var cpu = OCIResources.CPU()
        cpu.realtimeRuntime = 0
        cpu.realtimePeriod = 0
        #expect(try RealtimeCPU.given(cpu) == (nil, nil))
        cpu.realtimeRuntime = -1
        #expect(try RealtimeCPU.given(cpu).runtime == -1)
        cpu.realtimeRuntime = -2
        #expect(throws: CgroupError.self) { try RealtimeCPU.given(cpu) }
        cpu.realtimeRuntime = 1000
        #expect {
            try RealtimeCPU.refuseOnV2(OCIResources(cpu: cpu))
        } throws: { error in
            (error as? CgroupError)?.field == "linux.resources.cpu.realtimeRuntime" && "\(error)".contains("cgroup v2")
        }
        #expect(throws: Never.self) { try RealtimeCPU.refuseOnV2(OCIResources(cpu: OCIResources.CPU(shares: 2))) }
    }
}
