import Foundation
import Glibc
import LinuxKernel
import TestSupport
import Testing

@testable import SandboxNetwork

/// The topology of a sandbox with egress rules, against the kernel: namespace file, veth,
/// addresses, routes, the nftables table and its counters; what is dropped, what reaches the
/// filter (a stand-in: `NetworkProbes.Listener`), and that nothing is left on any exit path.
/// Root only; each test has its own lease store and a pool of its own in 100.127.0.0/16.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root (network namespaces, veth, nftables)"))
struct SandboxNetworkTests {
    static let childVariable = "SAFESPACE_NETWORK_TEST_CHILD"
    static let isChild = ProcessInfo.processInfo.environment[childVariable] != nil

    /// A lease store in a temp dir and a pool `100.127.<n>.0/24` of its own.
    static func networks(_ n: Int, dir: String) throws -> SandboxNetworks {
        try SandboxNetworks(
            pool: "100.127.\(n).0/24", leases: LeaseStore(directory: dir + "/leases"),
            namespaceDirectory: SandboxNetworks.defaultNamespaceDirectory)
    }

    static func name(_ tag: String) -> String { "nt\(tag)-\(getpid() % 100_000)" }

    /// What exists of sandbox `name`'s network: veth, table, namespace file, host route, lease.
    static func leftovers(_ name: String, _ networks: SandboxNetworks) throws -> [String] {
        var out: [String] = []
        let veth = SandboxNetworks.vethName(name)
        if try NetworkProbes.ip(["-br", "link"]).contains(veth) { out.append("veth \(veth)") }
        if try NetworkProbes.tables().contains("table inet \(SandboxNetworks.table(name))") {
            out.append("table \(SandboxNetworks.table(name))")
        }
        let file = networks.namespaceDirectory + "/" + name
        if FileManager.default.fileExists(atPath: file) { out.append("namespace file \(file)") }
        for route in lines(try NetworkProbes.ip(["route"]))
        where route.contains(" dev \(veth) ") || route.hasSuffix(" dev \(veth)") {
            out.append("route \(route)")
        }
        let leases = try networks.leases.withLock { try $0.leases(SandboxNetworks.leaseKind) }
        for lease in leases where lease.record.sandbox == name { out.append("lease \(lease.key)") }
        return out
    }

    static let ports = EgressPorts(dns: 1, http: 2, tls: 3)

    @Test(
        "a sandbox with egress rules gets a namespace with lo up, eth0 with its address and a default route, a veth on the host with the host address, and its table; detach leaves nothing"
    )
    func topology() throws {
        let dir = try Harness.tempDir("net-topology")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(1, dir: dir)
        let name = Self.name("topo")
        let net = try networks.attach(sandbox: name, ports: Self.ports)
        defer { try? net.detach() }
        #expect(net.hostAddress.description == "100.127.1.1")
        #expect(net.sandboxAddress.description == "100.127.1.2")
        #expect(net.namespacePath == "/run/safespace-netns/\(name)")
        let veth = SandboxNetworks.vethName(name)
        #expect(veth.utf8.count <= 15)
        let host = try NetworkProbes.ip(["-br", "-4", "addr", "show", "dev", veth])
        #expect(host.contains("100.127.1.1/30") && host.contains("UP"), "\(host)")
        let inside = try NetworkProbes.ip(["-br", "-4", "addr"], in: net.namespacePath)
        #expect(inside.contains("eth0") && inside.contains("100.127.1.2/30"), "\(inside)")
        #expect(inside.contains("127.0.0.1/8"), "lo is up: \(inside)")
        let routes = try NetworkProbes.ip(["route"], in: net.namespacePath)
        #expect(routes.contains("default via 100.127.1.1 dev eth0"), "\(routes)")
        #expect(try SandboxNetworks.counters(sandbox: name).keys.sorted() == SandboxRules.counters.sorted())
        #expect(try Self.leftovers(name, networks).count == 5, "veth, table, file, route, lease")

        try net.detach()
        #expect(try Self.leftovers(name, networks) == [])
    }

    @Test(
        "from the sandbox: DNS (udp, tcp), 80 and 443 to any address reach the filter; port 22 of the host, udp 9999, 169.254.169.254 and other ports are dropped and counted; the host's 127.0.0.1 is out of reach"
    )
    func egress() throws {
        let dir = try Harness.tempDir("net-egress")
        defer { Harness.cleanup(dir) }
        let listener = try NetworkProbes.Listener()
        defer { listener.stop() }
        let networks = try Self.networks(2, dir: dir)
        let name = Self.name("egress")
        let ports = EgressPorts(dns: listener.ports["dns"]!, http: listener.ports["http"]!, tls: listener.ports["tls"]!)
        let net = try networks.attach(sandbox: name, ports: ports)
        defer { try? net.detach() }
        let ns = net.namespacePath
        let host = net.hostAddress.description

        #expect(try NetworkProbes.attempt(in: ns, "udp", "8.8.8.8", 53) == "reply:dns")
        #expect(try NetworkProbes.attempt(in: ns, "udp", host, 53) == "reply:dns")
        #expect(try NetworkProbes.attempt(in: ns, "tcp", "1.1.1.1", 53) == "reply:dns")
        #expect(try NetworkProbes.attempt(in: ns, "tcp", "93.184.216.34", 80) == "reply:http")
        #expect(try NetworkProbes.attempt(in: ns, "tcp", "93.184.216.34", 443) == "reply:tls")
        #expect(
            try NetworkProbes.attempt(in: ns, "tcp", "169.254.169.254", 443) == "reply:tls",
            "to the filter, which judges it")
        let hits = listener.hits
        #expect(hits.count == 6, "\(hits)")
        #expect(
            hits.allSatisfy { $0.hasSuffix(" " + net.sandboxAddress.description) },
            "the filter sees the sandbox's address: \(hits)")

        let before = try SandboxNetworks.counters(sandbox: name)["egress_dropped"] ?? 0
        // Dropped, not refused: no answer at all.
        #expect(try NetworkProbes.attempt(in: ns, "tcp", host, 22) == "timeout")
        #expect(
            try NetworkProbes.attempt(in: ns, "tcp", host, listener.ports["extra"]!) == "timeout",
            "a host port that listens")
        #expect(try NetworkProbes.attempt(in: ns, "udp", "93.184.216.34", 9999) == "timeout")
        #expect(try NetworkProbes.attempt(in: ns, "tcp", "169.254.169.254", 8080) == "timeout")
        #expect(try NetworkProbes.attempt(in: ns, "tcp", "10.0.0.1", 5432) == "timeout")
        let after = try SandboxNetworks.counters(sandbox: name)["egress_dropped"] ?? 0
        #expect(after >= before + 5, "egress_dropped \(before) -> \(after)")
        // 127.0.0.1 in the sandbox is its own loopback: the host's listener there is not reached.
        #expect(try NetworkProbes.attempt(in: ns, "tcp", "127.0.0.1", listener.ports["loopback"]!) == "refused")
        #expect(listener.hits.count == 6, "nothing else reached the host: \(listener.hits)")
    }

    @Test("from the veth only the sandbox's address: a second address inside is dropped and counted as spoof_dropped")
    func antiSpoof() throws {
        let dir = try Harness.tempDir("net-spoof")
        defer { Harness.cleanup(dir) }
        let listener = try NetworkProbes.Listener()
        defer { listener.stop() }
        let networks = try Self.networks(3, dir: dir)
        let name = Self.name("spoof")
        let ports = EgressPorts(dns: listener.ports["dns"]!, http: listener.ports["http"]!, tls: listener.ports["tls"]!)
        let net = try networks.attach(sandbox: name, ports: ports)
        defer { try? net.detach() }
        // Root in the sandbox's namespace (CAP_NET_ADMIN there) adds an address of its own.
        _ = try NetworkProbes.ip(["addr", "add", "10.9.9.9/32", "dev", "eth0"], in: net.namespacePath)
        let before = try SandboxNetworks.counters(sandbox: name)["spoof_dropped"] ?? 0
        #expect(
            try NetworkProbes.attempt(in: net.namespacePath, "tcp", "93.184.216.34", 80, source: "10.9.9.9")
                == "timeout")
        #expect((try SandboxNetworks.counters(sandbox: name)["spoof_dropped"] ?? 0) > before)
        #expect(listener.hits.isEmpty, "\(listener.hits)")
    }

    @Test("IPv6 from the sandbox (the veth's link-local addresses) is dropped and counted")
    func ipv6Dropped() throws {
        let dir = try Harness.tempDir("net-ipv6")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(8, dir: dir)
        let name = Self.name("six")
        let net = try networks.attach(sandbox: name, ports: Self.ports)
        defer { try? net.detach() }
        let veth = SandboxNetworks.vethName(name)
        // Both ends' link-local addresses, once duplicate address detection is done.
        var hostLinkLocal: String?
        let ready = Harness.eventually(timeout: 30, every: 0.1) {
            let host = (try? NetworkProbes.ip(["-6", "-o", "addr", "show", "dev", veth])) ?? ""
            let inside =
                (try? NetworkProbes.ip(["-6", "-o", "addr", "show", "dev", "eth0"], in: net.namespacePath)) ?? ""
            guard host.contains("fe80::"), inside.contains("fe80::"), !host.contains("tentative"),
                !inside.contains("tentative")
            else { return false }
            hostLinkLocal = host.split(separator: " ").first { $0.hasPrefix("fe80::") }.map {
                String($0.split(separator: "/")[0])
            }
            return true
        }
        guard ready, let address = hostLinkLocal else {
            Issue.record("no IPv6 link-local addresses on the veth (IPv6 off on this host?)")
            return
        }
        let before = try SandboxNetworks.counters(sandbox: name)["egress_dropped"] ?? 0
        // Not refused (no listener would answer with a reset): dropped before the host's stack.
        #expect(try NetworkProbes.attempt(in: net.namespacePath, "tcp", address + "%eth0", 22) == "timeout")
        #expect((try SandboxNetworks.counters(sandbox: name)["egress_dropped"] ?? 0) > before)
    }

    @Test("sandboxes do not reach each other: not the other's address, not the filter ports on the other's host side")
    func sandboxesApart() throws {
        let dir = try Harness.tempDir("net-apart")
        defer { Harness.cleanup(dir) }
        let listener = try NetworkProbes.Listener()
        defer { listener.stop() }
        let networks = try Self.networks(9, dir: dir)
        let ports = EgressPorts(dns: listener.ports["dns"]!, http: listener.ports["http"]!, tls: listener.ports["tls"]!)
        let a = try networks.attach(sandbox: Self.name("a"), ports: ports, ingress: true)
        defer { try? a.detach() }
        let b = try networks.attach(sandbox: Self.name("b"), ports: ports, ingress: true)
        defer { try? b.detach() }
        #expect(a.sandboxAddress != b.sandboxAddress)
        #expect(try NetworkProbes.attempt(in: a.namespacePath, "tcp", b.sandboxAddress.description, 8000) == "timeout")
        #expect(
            try NetworkProbes.attempt(in: a.namespacePath, "tcp", b.hostAddress.description, ports.tls) == "timeout")
        #expect(
            try NetworkProbes.attempt(in: a.namespacePath, "tcp", a.hostAddress.description, ports.tls) == "reply:tls")
        #expect(listener.hits == ["tls \(a.sandboxAddress)"])
    }

    @Test("ingress: false drops a connection from the host into the sandbox and counts it; ingress: true lets it in")
    func ingress() throws {
        let dir = try Harness.tempDir("net-ingress")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(4, dir: dir)
        for allowed in [false, true] {
            let name = Self.name(allowed ? "ingon" : "ingoff")
            let net = try networks.attach(sandbox: name, ports: Self.ports, ingress: allowed)
            defer { try? net.detach() }
            // A listener inside the sandbox's namespace.
            let inside = Process()
            inside.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            inside.arguments = [
                "--net=\(net.namespacePath)", "/usr/bin/python3", "-c",
                "import socket\ns=socket.socket();s.bind(('0.0.0.0',8000));s.listen(5)\nwhile True:\n c,_=s.accept();c.recv(10);c.sendall(b'in');c.close()",
            ]
            inside.standardOutput = FileHandle.nullDevice
            inside.standardError = FileHandle.nullDevice
            try inside.run()
            defer {
                kill(inside.processIdentifier, SIGKILL)
                inside.waitUntilExit()
            }
            #expect(
                Harness.eventually(timeout: 20) {
                    (try? NetworkProbes.ip(["-br", "link"], in: net.namespacePath)) != nil
                        && (try? Harness.run("/usr/bin/nsenter", ["--net=\(net.namespacePath)", "/usr/bin/ss", "-ltn"]))?
                            .stdout
                            .contains(":8000") == true
                })
            let before = try SandboxNetworks.counters(sandbox: name)["ingress_dropped"] ?? 0
            let result = try NetworkProbes.attempt(in: nil, "tcp", net.sandboxAddress.description, 8000)
            let after = try SandboxNetworks.counters(sandbox: name)["ingress_dropped"] ?? 0
            if allowed {
                #expect(result == "reply:in")
            } else {
                // Dropped in output: connect(2) fails (EPERM) or times out, never connects.
                #expect(result == "timeout" || result == "error:EPERM", "\(result)")
                #expect(after > before)
            }
        }
    }

    @Test(
        "bad input leaves nothing: cidr rules while forwarding is off, a veth name taken by someone else, a pool that is not a prefix"
    )
    func badInput() throws {
        let dir = try Harness.tempDir("net-bad")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(5, dir: dir)
        let name = Self.name("bad")
        let forwarding = try Files.readString(SandboxNetworks.forwardingSysctl).trimmingCharacters(
            in: .whitespacesAndNewlines)
        if forwarding != "1" {
            let rule = CIDRRule(prefix: try IPv4Prefix("198.18.0.0/15"), ports: [.init(port: 5432)])
            do {
                _ = try networks.attach(
                    sandbox: name, ports: Self.ports, cidrRules: [rule], cidrField: "spec.networkAccess.egress[1].cidr")
                Issue.record("cidr rules accepted with forwarding off")
            } catch let error as NetworkError {
                #expect(error.code == .unsupported)
                #expect(error.field == "spec.networkAccess.egress[1].cidr")
                #expect(error.message.contains("net.ipv4.ip_forward"))
            }
            #expect(try Self.leftovers(name, networks) == [])
        }
        // Someone else's link has the veth's name: the attach fails, that link stays, nothing else is left.
        let veth = SandboxNetworks.vethName(name)
        let made = try Harness.run("/usr/sbin/ip", ["link", "add", veth, "type", "veth"])
        try #require(made.status == 0, "ip link add: \(made.stderr)")
        defer { _ = try? Harness.run("/usr/sbin/ip", ["link", "del", veth]) }
        do {
            let net = try networks.attach(sandbox: name, ports: Self.ports)
            try? net.detach()
            Issue.record("attached over a link of the same name")
        } catch let error as NetworkError {
            #expect(error.errno == EEXIST, "\(error)")
        }
        #expect(try Self.leftovers(name, networks) == ["veth \(veth)"], "only the other link")
        #expect(try !NetworkProbes.ip(["-4", "addr", "show", veth]).contains("100.127."), "untouched")

        for (pool, problem) in [
            ("100.127.5.0/31", "smaller than one /30"), ("100.127.5.1/24", "host bits"),
            ("100.127.5/24", "not an IPv4 CIDR"),
        ] {
            do {
                _ = try SandboxNetworks(pool: pool, leases: networks.leases)
                Issue.record("pool \(pool) accepted")
            } catch let error as NetworkError {
                #expect(error.field == "network.pool")
                #expect(error.message.contains(problem), "\(error)")
            }
        }
        for bad in ["Upper", "a_b", "", String(repeating: "a", count: 64)] {
            do {
                let net = try networks.attach(sandbox: bad, ports: Self.ports)
                try? net.detach()
                Issue.record("attached sandbox name \(bad)")
            } catch let error as NetworkError {
                #expect(error.field == "metadata.name")
            }
        }
    }

    /// Runs only in the child process of `killedHolder`: attaches the network of
    /// `<SAFESPACE_NETWORK_TEST_NAME>` and waits to be killed.
    @Test(.enabled(if: isChild))
    func holderChildProcess() throws {
        let env = ProcessInfo.processInfo.environment
        let dir = try #require(env[Self.childVariable])
        let name = try #require(env["SAFESPACE_NETWORK_TEST_NAME"])
        _ = try Self.networks(6, dir: dir).attach(sandbox: name, ports: Self.ports)
        _ = FileManager.default.createFile(atPath: dir + "/attached", contents: nil)
        while true { sleep(60) }
    }

    @Test(
        "kill -9 of the process holding a network, then the sweep: no veth, table, route, namespace file or lease is left",
        .enabled(if: !isChild, "the parent run; its child process runs holderChildProcess"))
    func killedHolder() throws {
        let dir = try Harness.tempDir("net-killed")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(6, dir: dir)
        let name = Self.name("killed")
        let child = Process()
        child.executableURL = URL(
            fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        child.arguments = ["--testing-library", "swift-testing", "--filter", "holderChildProcess"]
        var env = ProcessInfo.processInfo.environment
        env[Self.childVariable] = dir
        env["SAFESPACE_NETWORK_TEST_NAME"] = name
        child.environment = env
        child.standardOutput = FileHandle.nullDevice
        child.standardError = FileHandle.nullDevice
        try child.run()
        let attached = Harness.eventually(timeout: 120) { FileManager.default.fileExists(atPath: dir + "/attached") }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        try #require(attached, "the child did not attach")

        let before = try Self.leftovers(name, networks)
        #expect(before.count == 5, "veth, table, namespace file, route, lease: \(before)")
        let swept = networks.sweep()
        #expect(swept.reclaimed == [name])
        #expect(swept.errors == [])
        #expect(try Self.leftovers(name, networks) == [])
    }

    static let forwardChildVariable = "SAFESPACE_NETWORK_FORWARD_CHILD"
    static let isForwardChild = ProcessInfo.processInfo.environment[forwardChildVariable] != nil

    /// Upstream of the forwarding test: TCP 5432 and 5433, UDP 5353, each answering `up` and
    /// logging `proto port peer` to `<dir>/uphits`.
    static let upstreamScript = #"""
        import selectors, socket, sys
        d = sys.argv[1]
        sel = selectors.DefaultSelector()
        def hit(text):
            with open(d + "/uphits", "a") as f: f.write(text + "\n")
        for port in (5432, 5433):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ, "tcp")
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
        sel.register(u, selectors.EVENT_READ, "udp")
        open(d + "/upready", "w").close()
        while True:
            for key, _ in sel.select():
                if key.data == "tcp":
                    c, peer = key.fileobj.accept(); hit("tcp %d %s" % (c.getsockname()[1], peer[0]))
                    c.settimeout(2)
                    try: c.recv(100); c.sendall(b"up")
                    except OSError: pass
                    c.close()
                else:
                    data, peer = key.fileobj.recvfrom(100); hit("udp 5353 %s" % peer[0]); key.fileobj.sendto(b"up", peer)
        """#

    /// Runs only in `cidrForwarded`'s child, in a network namespace of its own (the node):
    /// forwarding on there, an upstream namespace at 198.18.0.2 behind a veth.
    @Test(.enabled(if: isForwardChild))
    func forwardingChildProcess() throws {
        let dir = try #require(ProcessInfo.processInfo.environment[Self.forwardChildVariable])
        let name = Self.name("fwd")
        _ = try Harness.run("/usr/sbin/ip", ["link", "set", "lo", "up"])
        try Files.write(SandboxNetworks.forwardingSysctl, "1")
        let networks = try Self.networks(10, dir: dir)
        // The upstream: its own namespace file, a veth 198.18.0.1 (node) - 198.18.0.2 (upstream).
        let upstream = networks.namespaceDirectory + "/" + name + "-up"
        try Kernel.prepareNamespaceDirectory(networks.namespaceDirectory)
        try Kernel.createNamespace(at: upstream)
        defer { try? Kernel.removeNamespace(at: upstream) }
        let node = try RouteSocket()
        try node.createVeth(host: "up-" + name.suffix(8), peer: "up0", peerNamespace: upstream)
        defer { try? node.deleteLink("up-" + name.suffix(8)) }
        let inside = try RouteSocket(namespace: upstream)
        try node.addAddress(IPv4Address("198.18.0.1")!, prefix: 24, to: "up-" + name.suffix(8))
        try inside.addAddress(IPv4Address("198.18.0.2")!, prefix: 24, to: "up0")
        try node.up("up-" + name.suffix(8))
        try inside.up("up0")
        try inside.up("lo")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        server.arguments = ["--net=\(upstream)", "/usr/bin/python3", "-c", Self.upstreamScript, dir]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        try #require(Harness.eventually(timeout: 20) { FileManager.default.fileExists(atPath: dir + "/upready") })
        func upstreamHits() -> [String] { lines((try? String(contentsOfFile: dir + "/uphits", encoding: .utf8)) ?? "") }

        let rule = CIDRRule(
            prefix: try IPv4Prefix("198.18.0.0/24"), ports: [.init(port: 5432), .init(port: 5353, protocol: "udp")])
        let a = try networks.attach(sandbox: name, ports: Self.ports, cidrRules: [rule])
        let source = a.sandboxAddress.description
        #expect(try NetworkProbes.attempt(in: a.namespacePath, "tcp", "198.18.0.2", 5432) == "reply:up")
        #expect(try NetworkProbes.attempt(in: a.namespacePath, "tcp", "198.18.0.2", 5433) == "timeout", "not in ports")
        #expect(
            try NetworkProbes.attempt(in: a.namespacePath, "udp", "198.18.0.2", 5353, source: source + ",40000")
                == "reply:up")
        // Masqueraded: upstream sees the node's address, never the sandbox's.
        #expect(upstreamHits() == ["tcp 5432 198.18.0.1", "udp 5353 198.18.0.1"])
        #expect(try Conntrack.entries(of: a.sandboxAddress, delete: false) > 0)
        try a.detach()
        #expect(try Conntrack.entries(of: a.sandboxAddress, delete: false) == 0, "detach deletes the address's flows")

        // The next sandbox gets the same address and no cidr rule. The conntrack entry of the
        // UDP flow above is still there: the same 5-tuple must not ride on it.
        let b = try networks.attach(sandbox: name, ports: Self.ports)
        defer { try? b.detach() }
        #expect(b.sandboxAddress.description == source)
        #expect(
            try NetworkProbes.attempt(in: b.namespacePath, "udp", "198.18.0.2", 5353, source: source + ",40000")
                == "timeout")
        #expect(try NetworkProbes.attempt(in: b.namespacePath, "tcp", "198.18.0.2", 5432) == "timeout")
        #expect(upstreamHits().count == 2, "\(upstreamHits())")
        #expect(FileManager.default.createFile(atPath: dir + "/done", contents: nil))
    }

    @Test(
        "cidr rules, on a node with forwarding on (a network namespace of the test's own): the prefix's ports are forwarded and masqueraded, others dropped; a later sandbox with the same address inherits nothing through conntrack",
        .enabled(if: !isChild && !isForwardChild, "the parent run; its child runs forwardingChildProcess"))
    func cidrForwarded() throws {
        let dir = try Harness.tempDir("net-forward")
        defer { Harness.cleanup(dir) }
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var env = ProcessInfo.processInfo.environment
        env[Self.forwardChildVariable] = dir
        let r = try Harness.run(
            "/usr/bin/unshare",
            ["--net", "--", exe, "--testing-library", "swift-testing", "--filter", "forwardingChildProcess"],
            env: env, timeout: 300)
        let output = (r.stdout + r.stderr).split(separator: "\n").filter {
            $0.contains("✘") || $0.contains("Expectation")
        }
        #expect(r.status == 0, "\(output.joined(separator: "\n"))")
        #expect(FileManager.default.fileExists(atPath: dir + "/done"), "the child ran to its end")
    }

    @Test("attaches from 8 threads at once get 8 distinct subnets, veths and tables; all detach to nothing")
    func concurrentAttaches() throws {
        let dir = try Harness.tempDir("net-threads")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(11, dir: dir)
        let names = (0..<8).map { Self.name("t\($0)") }
        let lock = NSLock()
        nonisolated(unsafe) var attached: [SandboxNetworkAttachment] = []
        nonisolated(unsafe) var failures: [String] = []
        DispatchQueue.concurrentPerform(iterations: names.count) { i in
            do {
                let net = try networks.attach(sandbox: names[i], ports: Self.ports)
                lock.withLock { attached.append(net) }
            } catch {
                lock.withLock { failures.append("\(names[i]): \(error)") }
            }
        }
        defer { for net in attached { try? net.detach() } }
        #expect(failures == [])
        #expect(Set(attached.map(\.sandboxAddress)).count == names.count)
        for name in names { #expect(try Self.leftovers(name, networks).count == 5, "\(name)") }
        DispatchQueue.concurrentPerform(iterations: attached.count) { i in
            do { try attached[i].detach() } catch { lock.withLock { failures.append("detach: \(error)") } }
        }
        #expect(failures == [])
        for name in names { #expect(try Self.leftovers(name, networks) == [], "\(name)") }
    }

    @Test("a full pool: the next attach fails with poolExhausted and leaves nothing")
    func poolExhausted() throws {
        let dir = try Harness.tempDir("net-pool")
        defer { Harness.cleanup(dir) }
        // A /29: two /30 subnets.
        let networks = try SandboxNetworks(
            pool: "100.127.12.0/29", leases: LeaseStore(directory: dir + "/leases"),
            namespaceDirectory: SandboxNetworks.defaultNamespaceDirectory)
        let first = try networks.attach(sandbox: Self.name("p0"), ports: Self.ports)
        defer { try? first.detach() }
        let second = try networks.attach(sandbox: Self.name("p1"), ports: Self.ports)
        defer { try? second.detach() }
        #expect(
            [first.sandboxAddress.description, second.sandboxAddress.description] == ["100.127.12.2", "100.127.12.6"])
        let name = Self.name("p2")
        do {
            let third = try networks.attach(sandbox: name, ports: Self.ports)
            try? third.detach()
            Issue.record("a third subnet out of a /29")
        } catch let error as NetworkError {
            #expect(error.code == .poolExhausted)
        }
        #expect(try Self.leftovers(name, networks) == [])
    }

    @Test("a live holder's network stays through the sweep; a second attach of the name is refused")
    func liveHolderKept() throws {
        let dir = try Harness.tempDir("net-live")
        defer { Harness.cleanup(dir) }
        let networks = try Self.networks(7, dir: dir)
        let name = Self.name("live")
        let net = try networks.attach(sandbox: name, ports: Self.ports)
        defer { try? net.detach() }
        #expect(networks.sweep().reclaimed == [])
        do {
            _ = try networks.attach(sandbox: name, ports: Self.ports)
            Issue.record("a second network of \(name)")
        } catch let error as NetworkError {
            #expect(error.code == .inUse)
        }
        #expect(try Self.leftovers(name, networks).count == 5)
    }
}

@Suite struct AddressTests {
    @Test("dotted quads and prefixes: parsed strictly, printed back")
    func parsing() throws {
        #expect(IPv4Address("100.64.0.1")?.description == "100.64.0.1")
        for bad in ["1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "1.2.3.-4", "a.b.c.d", "", "1..2.3"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
        #expect(try IPv4Prefix("198.18.0.0/15").description == "198.18.0.0/15")
        #expect(try IPv4Prefix("0.0.0.0/0").size == 1 << 32)
        #expect(throws: NetworkError.self) { try IPv4Prefix("198.18.0.0/33") }
        #expect(throws: NetworkError.self) { try IPv4Prefix("198.18.0.1/15") }
        #expect(try IPv4Prefix("198.18.0.0/15").contains(IPv4Address("198.19.255.255")!))
        #expect(try !IPv4Prefix("198.18.0.0/15").contains(IPv4Address("198.20.0.0")!))
    }

    @Test("veth names: at most 15 bytes, distinct for names that share their first characters")
    func vethNames() {
        let a = SandboxNetworks.vethName("a-very-long-sandbox-name-1")
        let b = SandboxNetworks.vethName("a-very-long-sandbox-name-2")
        #expect(a.utf8.count <= 15 && b.utf8.count <= 15)
        #expect(a != b)
        #expect(SandboxNetworks.vethName("x").hasPrefix("ss-x-"))
    }
}
