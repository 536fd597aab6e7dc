import Foundation
import Testing

@testable import LinuxKernel
@testable import OCI
@testable import Runtime

/// The formats runc writes, without a container: Go's JSON layout, logrus's log lines, runc's
/// default config, and how /sys/fs/cgroup is put together (issue 16, items 2, 4 and 5).
struct RuncParityFormatTests {
    struct Ordered: Encodable {
        var zebra = "z"
        var alpha: Int? = nil
        var list: [Int] = []
        var empty: [String: Int] = [:]
        var map = ["b": 2, "a": 1]
        var text = "<a & b> \"q\" \\ /\n\t\u{01}"
    }

    @Test("GoJSON: declaration order, nil left out, maps sorted, Go's escaping")
    func marshal() throws {
        let text = String(decoding: try GoJSON.marshal(Ordered()), as: UTF8.self)
        #expect(
            text
                == #"{"zebra":"z","list":[],"empty":{},"map":{"a":1,"b":2},"text":"\u003ca \u0026 b\u003e \"q\" \\ /\n\t\u0001"}"#
        )
    }

    @Test("GoJSON: MarshalIndent's layout (tabs, `\"key\": value`, empty [] and {} inline)")
    func indent() throws {
        let text = String(decoding: try GoJSON.marshalIndent(Ordered()), as: UTF8.self)
        #expect(
            text.hasPrefix(
                "{\n\t\"zebra\": \"z\",\n\t\"list\": [],\n\t\"empty\": {},\n\t\"map\": {\n\t\t\"a\": 1,\n\t\t\"b\": 2\n\t},"
            ))
        #expect(text.hasSuffix("\"\n}"))
        #expect(
            String(decoding: GoJSON.indent(Array(#"{"a":[1,{"b":"x,y:{"}]}"#.utf8)), as: UTF8.self)
                == "{\n\t\"a\": [\n\t\t1,\n\t\t{\n\t\t\t\"b\": \"x,y:{\"\n\t\t}\n\t]\n}")
    }

    @Test("runc's template: terminal sh, five namespaces (no cgroup), ambient capabilities, a deny-all device rule")
    func template() throws {
        let spec = DefaultSpec.runc()
        #expect(spec.process?.terminal == true && spec.process?.args == ["sh"])
        #expect(spec.linux?.namespaces?.map(\.type) == ["pid", "network", "ipc", "uts", "mount"])
        #expect(
            spec.process?.capabilities?.ambient == DefaultSpec.capabilities
                && spec.process?.capabilities?.inheritable == nil)
        #expect(spec.linux?.resources?.devices == [Resources.DeviceCgroup(allow: false, access: "rwm")])
        let json = String(decoding: try GoJSON.marshal(spec), as: UTF8.self)
        // specs-go's member order: resources before namespaces, masked before read-only paths.
        let order = ["\"resources\"", "\"namespaces\"", "\"maskedPaths\"", "\"readonlyPaths\""].map {
            json.range(of: $0)!.lowerBound
        }
        #expect(order == order.sorted())
    }

    @Test(
        "runc's rootless template: user namespace mapping the caller, no network namespace, /sys bound, no gid= option, no resources"
    )
    func rootless() {
        let spec = DefaultSpec.runc(rootless: true, uid: 1000, gid: 1001)
        #expect(spec.linux?.namespaces?.map(\.type) == ["pid", "ipc", "uts", "mount", "user"])
        #expect(spec.linux?.uidMappings == [IDMapping(containerID: 0, hostID: 1000, size: 1)])
        #expect(spec.linux?.gidMappings == [IDMapping(containerID: 0, hostID: 1001, size: 1)])
        #expect(spec.linux?.resources == nil)
        #expect(
            spec.mounts?.first { $0.destination == "/sys" }?.options == ["rbind", "nosuid", "noexec", "nodev", "ro"])
        #expect(spec.mounts?.first { $0.destination == "/dev/pts" }?.options?.contains("gid=5") == false)
    }

    @Test("a process without `user` is uid 0, gid 0 (runc's zero value)")
    func processWithoutUser() throws {
        let p = try JSONDecoder().decode(OCI.Process.self, from: Data(#"{"args":["id"],"cwd":"/"}"#.utf8))
        #expect(p.user == User(uid: 0, gid: 0) && p.args == ["id"])
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(OCI.Process.self, from: Data(#"{"args":["id"]}"#.utf8))
        }
    }

    @Test("log lines in logrus's text and JSON formats")
    func logLines() {
        let text = String(
            decoding: RuntimeLog.line(
                .debug, "process exited", fields: [("pid", .number(12)), ("args", .text("sh -c \"x\""))], format: .text,
                time: "2026-01-02T03:04:05Z"), as: UTF8.self)
        #expect(text == #"time="2026-01-02T03:04:05Z" level=debug msg="process exited" pid=12 args="sh -c \"x\""\#n"#)
        let bare = String(
            decoding: RuntimeLog.line(.warning, "ok", fields: [("path", .text("/a/b.c"))], format: .text, time: "t"),
            as: UTF8.self)
        #expect(bare == "time=t level=warning msg=ok path=/a/b.c\n")
        let json = String(
            decoding: RuntimeLog.line(
                .error, "a <b>", fields: [("pid", .number(7))], format: .json, time: "2026-01-02T03:04:05Z"),
            as: UTF8.self)
        #expect(json == #"{"level":"error","msg":"a \u003cb\u003e","pid":7,"time":"2026-01-02T03:04:05Z"}"# + "\n")
        #expect(RuntimeLog.now().count == 20 && RuntimeLog.now().hasSuffix("Z"))
    }

    @Test("created is Go's RFC3339Nano: no trailing zeros in the fraction")
    func created() {
        let t = rfc3339Now()
        #expect(t.hasSuffix("Z") && !t.hasSuffix("0Z") && !t.contains(".Z"))
    }

    static let v1Cgroup = "9:name=systemd:/a\n4:memory:/p/a\n2:cpu,cpuacct:/a\n0::/a\n"
    static let v1Mounts = MountInfo.parse(
        """
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        35 31 0:32 /p /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """)

    @Test(
        "cgroup mounts on v1: one directory per hierarchy named after the host's, in mount order, the container's own cgroup, links for co-mounted ones"
    )
    func cgroupPlanV1() {
        let plan = CgroupMountPlan.make(procSelfCgroup: Self.v1Cgroup, mounts: Self.v1Mounts)
        #expect(!plan.unified)
        // In the mount table's order, as runc mounts them.
        #expect(plan.hierarchies.map(\.name) == ["memory", "cpu,cpuacct", "systemd", "unified"])
        #expect(
            plan.hierarchies.map(\.directory) == [
                "/sys/fs/cgroup/memory/a", "/sys/fs/cgroup/cpu,cpuacct/a", "/sys/fs/cgroup/systemd/a",
                "/sys/fs/cgroup/unified/a",
            ])
        #expect(plan.hierarchies.map(\.data) == ["memory", "cpu,cpuacct", "none,name=systemd", nil])
        #expect(plan.links.map { "\($0.0)->\($0.1)" } == ["cpu->cpu,cpuacct", "cpuacct->cpu,cpuacct"])
    }

    @Test("cgroup mounts inside a cgroup namespace: the hierarchies are known, no directory to bind")
    func cgroupPlanNamespaced() {
        let mounts = MountInfo.parse("35 31 0:32 /.. /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
        let plan = CgroupMountPlan.make(procSelfCgroup: "4:memory:/\n", mounts: mounts)
        #expect(plan.hierarchies.map(\.name) == ["memory"] && plan.hierarchies.first?.directory == nil)
    }

    @Test("cgroup mounts on v2: the one hierarchy at the destination")
    func cgroupPlanV2() {
        let mounts = MountInfo.parse("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
        let plan = CgroupMountPlan.make(procSelfCgroup: "0::/user.slice/x\n", mounts: mounts)
        #expect(plan.unified && plan.hierarchies.map(\.directory) == ["/sys/fs/cgroup/user.slice/x"])
    }
}
