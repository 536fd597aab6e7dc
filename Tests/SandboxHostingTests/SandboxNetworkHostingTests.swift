import Foundation
import Glibc
import LinuxKernel
import NodeResources
import OCI
import Runtime
import SandboxNetwork
import SandboxSpec
import Testing

@testable import SandboxHosting

/// The egress filter as the host sees it: what was registered, and what was taken back.
private final class RecordingFilter: SandboxEgressFilter, @unchecked Sendable {
    let egressPorts = EgressPorts(dns: 5301, http: 5302, tls: 5303)
    private let lock = NSLock()
    private var registered: [String: (IPv4Address, [SandboxEgressRule])] = [:]
    private var log: [String] = []

    func register(sandbox: String, source: IPv4Address, hostAddress: IPv4Address, rules: [SandboxEgressRule]) throws {
        lock.withLock {
            registered[sandbox] = (source, rules)
            log.append("register \(sandbox) \(source) at \(hostAddress)")
        }
    }

    func unregister(sandbox: String) {
        lock.withLock {
            registered[sandbox] = nil
            log.append("unregister \(sandbox)")
        }
    }

    func registration(_ sandbox: String) -> (IPv4Address, [SandboxEgressRule])? {
        lock.withLock { registered[sandbox] }
    }
    var events: [String] { lock.withLock { log } }
}

private func node(filter: (any SandboxEgressFilter)?) throws -> (base: String, configuration: SandboxHost.Configuration)
{
    let base = FileManager.default.temporaryDirectory.path + "/sandbox-net-host-" + UUID().uuidString
    for dir in ["bundles", "state", "store", "profiles", "volumes", "rootfs/etc"] {
        try FileManager.default.createDirectory(atPath: base + "/" + dir, withIntermediateDirectories: true)
    }
    #expect(FileManager.default.createFile(atPath: base + "/rootfs/etc/resolv.conf", contents: Data()))
    var configuration = SandboxHost.Configuration(
        stateRoot: base + "/state", bundleRoot: base + "/bundles", ephemeralStorageBase: base + "/volumes",
        rootfsStore: base + "/store", seccompProfiles: base + "/profiles")
    configuration.egressFilter = filter
    configuration.networkPool = "100.127.50.0/24"
    return (base, configuration)
}

private func egressSandbox(_ name: String, _ rules: [EgressRule]) -> Sandbox {
    var sandbox = Sandbox().applying(SandboxOverrides(name: name, runtime: "python:3.11"))
    sandbox.spec.networkAccess = NetworkAccessSpec(egress: rules)
    return sandbox
}

@Suite struct SandboxNetworkPlanTests {
    @Test("egress rules on a host without an egress filter: refused at plan, naming spec.networkAccess.egress")
    func noFilter() throws {
        let (base, configuration) = try node(filter: nil)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let error = #expect(throws: SandboxHostError.self) {
            try SandboxHost(configuration: configuration).plan(
                for: egressSandbox("net-nofilter", [EgressRule(domain: "pypi.org")]), args: ["true"])
        }
        #expect(error?.code == .unsupported)
        #expect(error?.field == "spec.networkAccess.egress")
        #expect(try FileManager.default.contentsOfDirectory(atPath: base + "/bundles") == [])
    }

    @Test("the network plan: domains and cidr rules for the filter, cidr rules with their ports for nftables")
    func plan() throws {
        let plan = try #require(
            try SandboxNetworkPlan(
                egressSandbox(
                    "p",
                    [
                        EgressRule(domain: "pypi.org"),
                        EgressRule(
                            cidr: "198.18.0.0/15", ports: [PortRule(port: 5432), PortRule(port: 53, protocol: "UDP")]),
                    ])))
        #expect(plan.rules == [.domain("pypi.org"), .cidr(try IPv4Prefix("198.18.0.0/15"), ports: [5432, 53])])
        #expect(plan.cidrRules.first?.ports == [.init(port: 5432, protocol: "tcp"), .init(port: 53, protocol: "udp")])
        #expect(plan.cidrField == "spec.networkAccess.egress[1].cidr")
        #expect(plan.ingress == false)
        #expect(try SandboxNetworkPlan(egressSandbox("p", [])) == nil, "no egress: only lo")
    }
}

@Suite(.serialized, .enabled(if: getuid() == 0, "needs root (network namespaces, veth, nftables)"))
struct SandboxNetworkHostingTests {
    static let childVariable = "SAFESPACE_NETWORK_HOST_CHILD"
    static let isChild = ProcessInfo.processInfo.environment[childVariable] != nil

    static func plan(_ id: String, rootfs: String, rules: [EgressRule]) throws -> SandboxPlan {
        var spec = Spec(process: OCI.Process(args: ["true"], cwd: "/"), root: Root(path: rootfs, readonly: true))
        spec.linux = Linux(namespaces: [Namespace(type: "pid"), Namespace(type: "network")])
        return SandboxPlan(id: id, spec: spec, network: try SandboxNetworkPlan(egressSandbox(id, rules)))
    }

    static func leftovers(_ id: String) -> [String] {
        var out: [String] = []
        let links = (try? String(contentsOfFile: "/proc/net/dev", encoding: .utf8)) ?? ""
        if links.contains(SandboxNetworks.vethName(id) + ":") { out.append("veth") }
        if FileManager.default.fileExists(atPath: SandboxNetworks.defaultNamespaceDirectory + "/" + id) {
            out.append("namespace file")
        }
        if (try? SandboxNetworks.counters(sandbox: id)) != nil { out.append("table") }
        return out
    }

    @Test(
        "prepare: the spec joins the sandbox's namespace file, resolv.conf names the host side, the filter knows the sandbox's address; cleanup takes all of it back"
    )
    func prepareAndCleanup() throws {
        let filter = RecordingFilter()
        let (base, configuration) = try node(filter: filter)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let id = "net-host-\(getpid() % 100_000)"
        let sandbox = try SandboxHost(configuration: configuration).prepare(
            try Self.plan(id, rootfs: base + "/rootfs", rules: [EgressRule(domain: "pypi.org")]))
        defer { try? sandbox.cleanup() }

        let config = try JSONDecoder().decode(
            Spec.self, from: Data(contentsOf: URL(fileURLWithPath: sandbox.bundle + "/config.json")))
        let network = config.linux?.namespaces?.first { $0.type == "network" }
        #expect(network?.path == SandboxNetworks.defaultNamespaceDirectory + "/" + id)
        let resolv = config.mounts?.first { $0.destination == "/etc/resolv.conf" }
        #expect(resolv?.source == sandbox.bundle + "/resolv.conf")
        #expect(resolv?.options?.contains("ro") == true)
        let (source, rules) = try #require(filter.registration(id))
        #expect(
            try String(contentsOfFile: sandbox.bundle + "/resolv.conf", encoding: .utf8).hasPrefix(
                "nameserver 100.127.50."))
        #expect(source.description.hasPrefix("100.127.50."))
        #expect(rules == [.domain("pypi.org")])
        #expect(Self.leftovers(id) == ["veth", "namespace file", "table"])

        try sandbox.cleanup()
        #expect(filter.registration(id) == nil)
        let host = IPv4Address(source.value - 1)
        #expect(filter.events == ["register \(id) \(source) at \(host)", "unregister \(id)"])
        #expect(Self.leftovers(id) == [])
        #expect(!FileManager.default.fileExists(atPath: sandbox.bundle))
    }

    @Test(
        "cidr rules while net.ipv4.ip_forward is 0: prepare fails naming the rule's field and leaves nothing (bundle, network, registration)"
    )
    func forwardingOff() throws {
        let forwarding = try Files.readString(SandboxNetworks.forwardingSysctl)
        guard forwarding.hasPrefix("0") else { return }
        let filter = RecordingFilter()
        let (base, configuration) = try node(filter: filter)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let id = "net-fwd-\(getpid() % 100_000)"
        let plan = try Self.plan(
            id, rootfs: base + "/rootfs",
            rules: [EgressRule(domain: "pypi.org"), EgressRule(cidr: "198.18.0.0/15", ports: [PortRule(port: 5432)])])
        do {
            let sandbox = try SandboxHost(configuration: configuration).prepare(plan)
            try? sandbox.cleanup()
            Issue.record("prepared with forwarding off")
        } catch let error as NetworkError {
            #expect(error.field == "spec.networkAccess.egress[1].cidr")
            #expect(error.code == .unsupported)
        }
        #expect(filter.events == [])
        #expect(Self.leftovers(id) == [])
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: base + "/bundles").filter { !$0.hasPrefix(".") } == [])
    }

    @Test(
        "transfer (the daemon hands a sandbox to its init): the network follows the sandbox's owner; swept once that owner is dead, not before"
    )
    func transferFollowsOwner() throws {
        let filter = RecordingFilter()
        let (base, configuration) = try node(filter: filter)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let id = "net-xfer-\(getpid() % 100_000)"
        let sandbox = try SandboxHost(configuration: configuration).prepare(
            try Self.plan(id, rootfs: base + "/rootfs", rules: [EgressRule(domain: "pypi.org")]))
        defer { try? sandbox.cleanup() }
        // The new owner: a process of its own, alive until killed below.
        let owner = Process()
        owner.executableURL = URL(fileURLWithPath: "/bin/sleep")
        owner.arguments = ["600"]
        try owner.run()
        let identity = ProcessIdentity(
            pid: owner.processIdentifier, startTime: try #require(ProcStat.read(pid: owner.processIdentifier)).startTime
        )
        try SandboxLeases(directory: configuration.bundleRoot, backends: configuration.backends).transfer(
            id, to: identity)
        let store = try RuntimeConfiguration.load().leaseStore
        let held = try store.withLock { try $0.leases(SandboxNetworks.leaseKind) }.filter { $0.record.sandbox == id }
        #expect(held.map(\.holder) == [identity])
        #expect(try SandboxNetworks(leases: store).sweep().reclaimed.contains(id) == false, "its owner lives")
        #expect(Self.leftovers(id) == ["veth", "namespace file", "table"])
        kill(owner.processIdentifier, SIGKILL)
        owner.waitUntilExit()
        #expect(try SandboxNetworks(leases: store).sweep().reclaimed.contains(id))
        #expect(Self.leftovers(id) == [])
    }

    @Test("gc: the network of a dead holder (veth, table, namespace file, lease) is swept by GarbageCollector")
    func garbageCollector() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/sandbox-net-gc-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = LeaseStore(directory: dir + "/leases")
        let id = "net-gc-\(getpid() % 100_000)"
        let net = try SandboxNetworks(pool: "100.127.51.0/24", leases: store).attach(
            sandbox: id, ports: EgressPorts(dns: 1, http: 2, tls: 3))
        // Its holder dies: the lease now names an exited process.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        try store.withLock { tx in
            for var lease in try tx.leases(SandboxNetworks.leaseKind) where lease.record.sandbox == id {
                lease.holder = ProcessIdentity(pid: child.processIdentifier, startTime: 1)
                try tx.write(SandboxNetworks.leaseKind, lease)
            }
        }
        #expect(Self.leftovers(id) == ["veth", "namespace file", "table"])
        let report = GarbageCollector(
            stateRoot: dir + "/state", bundleRoot: dir + "/bundles",
            cpuAllocator: CPUAllocator(store: store, pool: [0]),
            idAllocator: IDAllocator(store: store), ephemeralStorageBase: dir + "/volumes",
            backends: RuntimeBackends([NativeBackend()])
        ).sweep()
        #expect(report.networks == [id], "\(report.errors)")
        #expect(Self.leftovers(id) == [])
        #expect(try store.withLock { try $0.leases(SandboxNetworks.leaseKind) }.isEmpty)
        #expect(report.description.contains("sandbox networks: 1 (\(id))"))
        _ = net
    }

    /// Runs only in the child process of `killedHost`: prepares sandbox
    /// `SAFESPACE_NETWORK_HOST_NAME` with egress rules in the node directories under
    /// `<SAFESPACE_NETWORK_HOST_CHILD>` and waits to be killed.
    @Test(.enabled(if: isChild))
    func hostChildProcess() throws {
        let env = ProcessInfo.processInfo.environment
        let base = try #require(env[Self.childVariable])
        let id = try #require(env["SAFESPACE_NETWORK_HOST_NAME"])
        var configuration = SandboxHost.Configuration(
            stateRoot: base + "/state", bundleRoot: base + "/bundles", ephemeralStorageBase: base + "/volumes",
            rootfsStore: base + "/store", seccompProfiles: base + "/profiles")
        configuration.egressFilter = RecordingFilter()
        configuration.networkPool = "100.127.52.0/24"
        _ = try SandboxHost(configuration: configuration).prepare(
            try Self.plan(id, rootfs: base + "/rootfs", rules: [EgressRule(domain: "pypi.org")]))
        #expect(FileManager.default.createFile(atPath: base + "/prepared", contents: nil))
        while true { sleep(60) }
    }

    @Test(
        "kill -9 of the hosting process with a sandbox network taken, then `safespace gc`: no veth, table, namespace file, address lease or bundle is left",
        .enabled(
            if: !isChild && ProcessInfo.processInfo.environment["SAFESPACE_BUILD_DIR"] != nil,
            "the parent run, with the safespace binary (SAFESPACE_BUILD_DIR)"))
    func killedHost() throws {
        let (base, _) = try node(filter: nil)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let id = "net-kill-\(getpid() % 100_000)"
        let child = Process()
        child.executableURL = URL(
            fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        child.arguments = ["--testing-library", "swift-testing", "--filter", "hostChildProcess"]
        var env = ProcessInfo.processInfo.environment
        env[Self.childVariable] = base
        env["SAFESPACE_NETWORK_HOST_NAME"] = id
        child.environment = env
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        var prepared = false
        for _ in 0..<1200 where !prepared {
            prepared = FileManager.default.fileExists(atPath: base + "/prepared")
            if !prepared { usleep(100_000) }
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        try #require(prepared, "the child did not prepare its sandbox")

        let store = try RuntimeConfiguration.load().leaseStore
        func leases() throws -> [String] {
            try store.withLock { try $0.leases(SandboxNetworks.leaseKind) }.filter { $0.record.sandbox == id }.map(
                \.key)
        }
        #expect(Self.leftovers(id) == ["veth", "namespace file", "table"])
        #expect(try leases().count == 1)
        #expect(FileManager.default.fileExists(atPath: base + "/bundles/" + id))

        let gc = Process()
        gc.executableURL = URL(
            fileURLWithPath: ProcessInfo.processInfo.environment["SAFESPACE_BUILD_DIR"]! + "/safespace")
        gc.arguments = [
            "gc", "--root", base + "/state", "--bundle-root", base + "/bundles", "--ephemeral-storage",
            base + "/volumes",
        ]
        let out = Pipe()
        gc.standardOutput = out
        gc.standardError = FileHandle.nullDevice
        try gc.run()
        let report = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        gc.waitUntilExit()
        #expect(gc.terminationStatus == 0, "\(report)")
        // Its network goes with the sandbox's reclaim (SandboxLeases), or else in gc's network sweep.
        #expect(report.contains("sandboxes: 1 (\(id))"), "\(report)")
        #expect(Self.leftovers(id) == [])
        #expect(try leases() == [])
        #expect(!FileManager.default.fileExists(atPath: base + "/bundles/" + id))
    }
}
