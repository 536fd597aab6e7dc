import Foundation
import Glibc
import LinuxKernel
import OCI
import SandboxNetwork
import TestSupport
import Testing

/// A real container in a sandbox network (SandboxNetwork), at both levels: `standard`
/// (native, the veth's `eth0` in its network namespace) and `high` (runsc --network=sandbox on
/// the same namespace path, its netstack taking over eth0's address and route). The egress
/// filter is a stand-in (`NetworkProbes.Listener`) that answers with its name and logs peers.
@Suite(
    "sandbox network at both levels", .serialized,
    .enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs (scripts/setup)"))
struct SandboxNetworkLevelsTests {
    /// Each attempt prints `<label> <outcome>`; see `NetworkProbes.clientScript`.
    static let workload = #"""
        import socket, sys
        host = sys.argv[1]
        def attempt(label, proto, addr, port):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
            s.settimeout(3)
            try:
                if proto == "tcp": s.connect((addr, port)); s.sendall(b"hello")
                else: s.sendto(b"hello", (addr, port))
                out = "reply:" + s.recv(100).decode()
            except socket.timeout: out = "timeout"
            except ConnectionRefusedError: out = "refused"
            except OSError as e: out = "error:%d" % e.errno
            print(label, out, flush=True)
        attempt("https", "tcp", "93.184.216.34", 443)
        attempt("http", "tcp", "93.184.216.34", 80)
        attempt("dns", "udp", "8.8.8.8", 53)
        attempt("ssh", "tcp", host, 22)
        attempt("udp", "udp", "93.184.216.34", 9999)
        attempt("metadata", "tcp", "169.254.169.254", 8080)
        """#

    @Test(
        "DNS, 80 and 443 reach the filter from the sandbox; port 22, UDP 9999 and the metadata address do not",
        arguments: ["standard", "high"])
    func levels(level: String) throws {
        if level == "high" { try #require(GVisor.runsc != nil, "runsc is not installed") }
        let dir = try Harness.tempDir("net-levels")
        defer { Harness.cleanup(dir) }
        let listener = try NetworkProbes.Listener()
        defer { listener.stop() }
        let networks = try SandboxNetworks(pool: "100.127.40.0/24", leases: LeaseStore(directory: dir + "/leases"))
        let id = "netlv-\(level)-\(getpid() % 100_000)"
        let net = try networks.attach(
            sandbox: id,
            ports: EgressPorts(dns: listener.ports["dns"]!, http: listener.ports["http"]!, tls: listener.ports["tls"]!))
        defer { try? net.detach() }

        let args = ["python3", "-c", Self.workload, net.hostAddress.description]
        func joinNetwork(_ spec: inout Spec) {
            let namespaces = (spec.linux?.namespaces ?? []).map {
                $0.type == "network" ? Namespace(type: "network", path: net.namespacePath) : $0
            }
            spec.linux?.namespaces = namespaces
        }
        let bundle =
            level == "high"
            ? try GVisor.bundle(args, edit: joinNetwork) : try Harness.pythonBundle(args, edit: joinNetwork)
        let c = try TestContainer("netlv", bundle: bundle)
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        let outcomes = Dictionary(
            lines(r.stdout).compactMap { line -> (String, String)? in
                let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                return parts.count == 2 ? (parts[0], parts[1]) : nil
            }, uniquingKeysWith: { a, _ in a })
        #expect(outcomes["https"] == "reply:tls", "\(r.stdout)")
        #expect(outcomes["http"] == "reply:http", "\(r.stdout)")
        #expect(outcomes["dns"] == "reply:dns", "\(r.stdout)")
        for dropped in ["ssh", "udp", "metadata"] {
            #expect(outcomes[dropped] == "timeout", "\(dropped): \(r.stdout)")
        }
        let hits = listener.hits
        #expect(hits.count == 3, "\(hits)")
        #expect(hits.allSatisfy { $0.hasSuffix(" " + net.sandboxAddress.description) }, "\(hits)")
        #expect((try SandboxNetworks.counters(sandbox: id)["egress_dropped"] ?? 0) >= 3)
        #expect(c.leftovers().isEmpty)
        try net.detach()
        #expect(!FileManager.default.fileExists(atPath: net.namespacePath))
        #expect(try !NetworkProbes.tables().contains("table inet \(SandboxNetworks.table(id))"))
    }
}
