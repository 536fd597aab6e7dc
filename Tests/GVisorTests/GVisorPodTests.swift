import Testing

@testable import GVisor
@testable import OCI
@testable import Runtime

/// The pure parts of gVisor pods: the role from CRI annotations, the sum of a pod's limits
/// for the sandbox's cgroup, and the runsc release date.
struct GVisorPodUnitTests {
    @Test("the pod role comes from containerd's or CRI-O's annotations, as runsc reads them")
    func role() throws {
        #expect(try PodRole.of(nil) == .standalone)
        #expect(try PodRole.of(["llmsafespace.dev/security-level": "high"]) == .standalone)
        #expect(
            try PodRole.of(["io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "p"])
                == .sandbox)
        #expect(
            try PodRole.of(["io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "p"])
                == .container(sandboxID: "p"))
        #expect(
            try PodRole.of(["io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "q"])
                == .container(sandboxID: "q"))
        #expect {
            try PodRole.of(["io.kubernetes.cri.container-type": "container"])
        } throws: {
            "\($0)".contains("annotations[io.kubernetes.cri.container-type]") && "\($0)".contains("sandbox-id")
        }
        #expect {
            try PodRole.of(["io.kubernetes.cri.container-type": "vm"])
        } throws: { "\($0)".contains("unknown container type \"vm\"") }
    }

    @Test("each limit: the sum when every container sets it, bounded by the sandbox's own; -1 when nothing bounds it")
    func bound() {
        #expect(GVisorPodResources.bound(own: nil, parts: []) == -1)
        #expect(GVisorPodResources.bound(own: nil, parts: [64, 32]) == 96)
        #expect(GVisorPodResources.bound(own: nil, parts: [64, nil]) == -1)
        #expect(GVisorPodResources.bound(own: nil, parts: [64, -1]) == -1)
        #expect(GVisorPodResources.bound(own: 50, parts: [64, 32]) == 50)
        #expect(GVisorPodResources.bound(own: 500, parts: [64, nil]) == 500)
        #expect(GVisorPodResources.bound(own: nil, parts: [Int64.max, 1]) == Int64.max)
    }

    @Test("the sandbox cgroup's resources for a pod")
    func combined() {
        var a = Resources(
            memory: .init(limit: 64 << 20), cpu: .init(shares: 512, quota: 50_000, period: 100_000),
            pids: .init(limit: 100))
        a.hugepageLimits = [.init(pageSize: "2MB", limit: 0)]
        var b = Resources(
            memory: .init(limit: 32 << 20), cpu: .init(shares: 256, quota: 25_000, period: 50_000),
            pids: .init(limit: 50))
        b.hugepageLimits = [.init(pageSize: "2MB", limit: 0)]
        let own = Resources(cpu: .init(shares: 2))
        let r = GVisorPodResources.combined(own: own, containers: [a, b])
        #expect(r.memory?.limit == 96 << 20)
        // Not every container sets swap: memory+swap unbounded, so the kernel takes any limit.
        #expect(r.memory?.swap == -1)
        #expect(r.cpu?.shares == 2 + 512 + 256)
        // 0.5 + 0.5 CPUs at a 100 ms period.
        #expect(r.cpu?.quota == 100_000 && r.cpu?.period == 100_000)
        #expect(r.pids?.limit == 150)
        #expect(r.hugepageLimits == [.init(pageSize: "2MB", limit: 0)])

        // One container without a memory limit: memory is unbounded, the rest still sums.
        let unlimited = GVisorPodResources.combined(own: own, containers: [a, Resources(cpu: .init(shares: 2))])
        #expect(unlimited.memory?.limit == -1)
        #expect(unlimited.cpu?.quota == -1)
        #expect(unlimited.pids?.limit == -1)
        #expect(unlimited.hugepageLimits?.first?.limit == UInt64(Int64.max))

        // No containers left: back to the sandbox's own limits.
        let alone = GVisorPodResources.combined(
            own: Resources(memory: .init(limit: 1 << 30), pids: .init(limit: 10)), containers: [])
        #expect(alone.memory?.limit == 1 << 30)
        #expect(alone.pids?.limit == 10)
        #expect(alone.cpu?.quota == -1)
        #expect(alone.cpu?.shares == 1024, "no shares left: the kernel's default")
        // A size the cgroup was limited for and no one bounds now goes back to unlimited.
        #expect(
            GVisorPodResources.combined(own: nil, containers: [], cgroupPageSizes: ["2MB"]).hugepageLimits == [
                .init(pageSize: "2MB", limit: UInt64(Int64.max))
            ])
        // pids.max stops at PID_MAX_LIMIT: a larger sum is unlimited.
        let many = Resources(pids: .init(limit: 3_000_000))
        #expect(GVisorPodResources.combined(own: nil, containers: [many, many]).pids?.limit == -1)
        // Swap summed when every container sets it.
        let swapped = Resources(memory: .init(limit: 64 << 20, swap: 96 << 20))
        #expect(GVisorPodResources.combined(own: nil, containers: [swapped, swapped]).memory?.swap == 192 << 20)
    }

    @Test(
        "what cannot be summed into one cgroup is refused for a pod container, naming the field",
        arguments: [
            (Resources(cpu: .init(cpus: "0")), "linux.resources.cpu.cpus"),
            (Resources(cpu: .init(mems: "0")), "linux.resources.cpu.mems"),
            (
                Resources(
                    memory: {
                        var m = Resources.Memory()
                        m.disableOOMKiller = true
                        return m
                    }()), "linux.resources.memory.disableOOMKiller"
            ),
            (
                {
                    var r = Resources()
                    r.unified = ["memory.high": "1"]
                    return r
                }(), "linux.resources.unified"
            ),
        ])
    func refused(resources: Resources, field: String) {
        #expect { try GVisorPodResources.check(resources) } throws: { "\($0)".hasPrefix(field + ":") }
    }

    @Test("kubelet's usual container resources pass")
    func kubeletResources() throws {
        var r = Resources(memory: .init(limit: 128 << 20), cpu: .init(shares: 102, quota: 20_000, period: 100_000))
        r.hugepageLimits = [.init(pageSize: "2MB", limit: 0), .init(pageSize: "1GB", limit: 0)]
        try GVisorPodResources.check(r)
    }

    @Test("runsc's release date, from Debian's and upstream's version lines")
    func releaseDate() {
        #expect(
            GVisorFeatures.releaseDate(versionOutput: "runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n") == 20221219)
        #expect(
            GVisorFeatures.releaseDate(versionOutput: "runsc version release-20240807.0\nspec: 1.1.0\n") == 20240807)
        #expect(GVisorFeatures.releaseDate(versionOutput: "runsc version unknown\n") == 0)
    }
}

/// Which configured level a `--root` gets.
struct RootSecurityLevelTests {
    // containerd's shim passes `--root <handler Root>/<namespace>`: with an exact match only,
    // the high handler's containers in any namespace but the configured one (ctr's `default`,
    // docker's `moby`) ran natively under a handler meant for gVisor.
    @Test("security: an entry covers every containerd namespace below the handler's root; the nearest entry wins")
    func prefix() throws {
        let config = RuntimeConfiguration(
            securityLevel: "standard",
            rootSecurityLevels: [
                "/run/safespace-high": "high", "/run/safespace-high/special": "custom", "/run/safespace/": "standard",
            ])
        let env: [String: String] = [:]
        #expect(try config.configuredLevel(root: "/run/safespace-high", environment: env) == .high)
        #expect(try config.configuredLevel(root: "/run/safespace-high/k8s.io", environment: env) == .high)
        #expect(try config.configuredLevel(root: "/run/safespace-high/default/", environment: env) == .high)
        #expect(try config.configuredLevel(root: "/run/safespace-high/special/x", environment: env) == .custom)
        #expect(try config.configuredLevel(root: "/run/safespace/k8s.io", environment: env) == .standard)
        // A sibling whose name merely starts the same is not below it.
        #expect(try config.configuredLevel(root: "/run/safespace-high2/k8s.io", environment: env) == .standard)
        #expect(
            try RuntimeConfiguration(rootSecurityLevels: ["/": "high"]).configuredLevel(
                root: "/anything", environment: env) == .high)
    }
}
