import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// `linux.namespaces[].path`: a container joins another's namespace instead of creating one.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeNamespaceJoinTests {
    @Test(
        "B created with A's network namespace (/proc/<A>/ns/net) sees A's interfaces and reaches A's listening socket")
    func joinNetwork() throws {
        // A serves a line on 127.0.0.1:9090 in a loop.
        let a = try TestContainer(
            "netA", bundle: try Harness.busyboxBundle(["sh", "-c", "while true; do echo from-A | nc -l -p 9090; done"]))
        defer { a.destroy() }
        try #require(try a.create().status == 0)
        try #require(try a.start().status == 0)
        let aPid = try #require(a.pid)
        let aNet = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(aPid)/ns/net")
        let hostNet = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        #expect(aNet != hostNet)

        let script = """
            readlink /proc/self/ns/net
            ip -o link | cut -d: -f2 | tr -d ' '
            echo ---
            for i in $(seq 100); do out=$(nc 127.0.0.1 9090 </dev/null 2>/dev/null) && [ -n "$out" ] && break; usleep 50000; done
            echo "got:$out"
            # A's nc listens again a moment after each connection it served.
            for i in $(seq 100); do n=$(netstat -ltn | grep -c ':9090 '); [ "$n" = 1 ] && break; usleep 20000; done
            echo "$n"
            """
        let b = try TestContainer(
            "netB",
            bundle: try Harness.busyboxBundle(["sh", "-c", script]) { spec in
                for i in spec.linux!.namespaces!.indices where spec.linux!.namespaces![i].type == "network" {
                    spec.linux!.namespaces![i].path = "/proc/\(aPid)/ns/net"
                }
            })
        defer { b.destroy() }
        let r = try b.run()
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        #expect(out.first == aNet, "B is in \(out.first ?? "?"), A in \(aNet)")
        let sep = out.firstIndex(of: "---") ?? out.count
        #expect(Array(out[1..<sep]) == ["lo"], "\(r.stdout)")
        #expect(out.contains("got:from-A"), "\(r.stdout)")
        #expect(out.last == "1", "A's listening socket not visible to B: \(r.stdout)")

        // B's exit and delete leave A and its namespace alone.
        #expect(b.leftovers().isEmpty, "\(b.leftovers())")
        #expect(a.status == "running")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(aPid)/ns/net")) == aNet)
        #expect(try a.delete(force: true).status == 0)
        #expect(a.leftovers().isEmpty, "\(a.leftovers())")
    }

    @Test(
        "B joining A's uts namespace sees A's hostname; with hostname set it renames that namespace (runc allows it), never the host's"
    )
    func joinUTS() throws {
        let a = try TestContainer(
            "utsA", bundle: try Harness.busyboxBundle(["sleep", "1000"]) { spec in spec.hostname = "host-of-a" })
        defer { a.destroy() }
        try #require(try a.create().status == 0)
        try #require(try a.start().status == 0)
        let aPid = try #require(a.pid)
        func join(_ path: String) -> (inout Spec) -> Void {
            { spec in
                for i in spec.linux!.namespaces!.indices where spec.linux!.namespaces![i].type == "uts" {
                    spec.linux!.namespaces![i].path = path
                }
            }
        }
        let (ok, okLeft) = try Harness.runScript("hostname", prefix: "utsB") { spec in
            join("/proc/\(aPid)/ns/uts")(&spec)
            spec.hostname = nil
        }
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(lines(ok.stdout) == ["host-of-a"])
        #expect(okLeft.isEmpty, "\(okLeft)")
        // runc's validator asks only for a uts namespace in linux.namespaces: a hostname set in
        // a joined one applies to it (A shares it).
        let (renamed, renamedLeft) = try Harness.runScript("hostname", prefix: "utsC") { spec in
            join("/proc/\(aPid)/ns/uts")(&spec)
            spec.hostname = "renamed"
        }
        #expect(renamed.status == 0, "\(renamed.stderr)")
        #expect(lines(renamed.stdout) == ["renamed"])
        #expect(renamedLeft.isEmpty, "\(renamedLeft)")
        let check = try a.rt(["exec", a.id, "hostname"])
        #expect(lines(check.stdout) == ["renamed"], "A's namespace was not the one renamed: \(check.stdout)")
        // The runtime's own uts namespace is the host's: a hostname there would rename the host.
        let host = Harness.hostname()
        let (bad, badLeft) = try Harness.runScript("hostname", prefix: "utsD") { spec in
            join("/proc/\(getpid())/ns/uts")(&spec)
            spec.hostname = "host-renamed"
        }
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("hostname"), "\(bad.stderr)")
        #expect(badLeft.isEmpty, "\(badLeft)")
        #expect(Harness.hostname() == host)
        #expect(try a.delete(force: true).status == 0)
        #expect(a.leftovers().isEmpty, "\(a.leftovers())")
    }

    @Test("a namespace path that does not exist names linux.namespaces[N].path; nothing remains")
    func missingNamespacePath() throws {
        var index = -1
        let c = try TestContainer(
            "nspath",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                index = spec.linux!.namespaces!.firstIndex { $0.type == "network" }!
                spec.linux!.namespaces![index].path = "/proc/999999999/ns/net"
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("linux.namespaces[\(index)].path"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "a namespace path of the wrong type (a uts ns given as network) fails naming linux.namespaces; nothing remains")
    func wrongNamespaceType() throws {
        let c = try TestContainer(
            "nstype",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                let i = spec.linux!.namespaces!.firstIndex { $0.type == "network" }!
                spec.linux!.namespaces![i].path = "/proc/self/ns/uts"
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("linux.namespaces"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
