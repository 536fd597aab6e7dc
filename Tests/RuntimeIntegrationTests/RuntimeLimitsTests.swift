import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// process.rlimits, process.oomScoreAdj and linux.sysctl on a host where root lacks
/// CAP_SYS_RESOURCE: what works is visible inside, what cannot work fails naming the field.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeLimitsTests {
    static func callerHardNofile() -> UInt64 {
        var rl = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        return UInt64(rl.rlim_max)
    }

    static func hostFile(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static var ownOomScoreAdj: Int { Int(hostFile("/proc/self/oom_score_adj")) ?? 0 }

    // MARK: rlimits

    @Test("RLIMIT_NOFILE 100/100 is what `ulimit -n` shows inside")
    func nofile() throws {
        let (r, left) = try Harness.runScript("ulimit -n; ulimit -Hn; grep 'Max open files' /proc/self/limits") {
            spec in
            spec.process?.rlimits = [Rlimit(type: "RLIMIT_NOFILE", hard: 100, soft: 100)]
        }
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        #expect(out.prefix(2) == ["100", "100"], "\(r.stdout)")
        #expect(out.last?.split(separator: " ").suffix(3).prefix(2) == ["100", "100"], "\(r.stdout)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("a soft limit below the hard one: RLIMIT_NOFILE 50/200")
    func softBelowHard() throws {
        let (r, _) = try Harness.runScript("ulimit -Sn; ulimit -Hn") { spec in
            spec.process?.rlimits = [Rlimit(type: "RLIMIT_NOFILE", hard: 200, soft: 50)]
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == ["50", "200"])
    }

    @Test(
        "a hard limit above the caller's hard limit fails naming CAP_SYS_RESOURCE; nothing remains",
        .enabled(if: callerHardNofile() < UInt64(Int32.max), "the caller's hard RLIMIT_NOFILE is unlimited"))
    func hardAboveCaller() throws {
        let hard = Self.callerHardNofile() + 1
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            spec.process?.rlimits = [Rlimit(type: "RLIMIT_NOFILE", hard: hard, soft: 100)]
        }
        let c = try TestContainer("rlim", bundle: bundle)
        defer { c.destroy() }
        for r in [try c.create(), try c.run()] {
            #expect(r.status != 0)
            #expect(r.stderr.contains("CAP_SYS_RESOURCE"), "\(r.stderr)")
            #expect(r.stderr.contains("process.rlimits[0]"), "\(r.stderr)")
            #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        }
    }

    // MARK: oom_score_adj

    @Test("a positive oomScoreAdj (500) is applied to the workload")
    func oomScoreAdjPositive() throws {
        let (r, left) = try Harness.runScript("cat /proc/self/oom_score_adj") { spec in spec.process?.oomScoreAdj = 500
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == ["500"])
        #expect(left.isEmpty, "\(left)")
    }

    @Test(
        "a negative oomScoreAdj (-500) fails naming process.oomScoreAdj; nothing remains",
        .enabled(if: ownOomScoreAdj > -500, "the caller's own oom_score_adj is already ≤ -500"))
    func oomScoreAdjNegative() throws {
        let c = try TestContainer(
            "oom",
            bundle: try Harness.busyboxBundle(["cat", "/proc/self/oom_score_adj"]) { spec in
                spec.process?.oomScoreAdj = -500
            })
        defer { c.destroy() }
        for r in [try c.create(), try c.run()] {
            #expect(r.status != 0, "oomScoreAdj -500 was accepted: \(r.stdout)")
            #expect(r.stderr.contains("process.oomScoreAdj"), "\(r.stderr)")
            #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        }
    }

    @Test("an oomScoreAdj outside -1000…1000 names process.oomScoreAdj")
    func oomScoreAdjRange() throws {
        let c = try TestContainer(
            "oomr", bundle: try Harness.busyboxBundle(["true"]) { spec in spec.process?.oomScoreAdj = 1001 })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("process.oomScoreAdj"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: sysctl

    @Test("net.ipv4.ip_forward=1 is applied inside the container's network namespace only")
    func sysctlNamespaced() throws {
        let host = Self.hostFile("/proc/sys/net/ipv4/ip_forward")
        let (r, left) = try Harness.runScript("cat /proc/sys/net/ipv4/ip_forward") { spec in
            spec.linux?.sysctl = ["net.ipv4.ip_forward": host == "1" ? "0" : "1"]
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == [host == "1" ? "0" : "1"])
        #expect(Self.hostFile("/proc/sys/net/ipv4/ip_forward") == host)
        #expect(left.isEmpty, "\(left)")
    }

    @Test("kernel.domainname (uts) is applied inside")
    func sysctlUTS() throws {
        let (r, _) = try Harness.runScript("cat /proc/sys/kernel/domainname") { spec in
            spec.linux?.sysctl = ["kernel.domainname": "ss.example"]
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == ["ss.example"])
    }

    @Test("a non-namespaced sysctl (kernel.panic) is refused naming linux.sysctl; the host's value is unchanged")
    func sysctlHostWide() throws {
        let host = Self.hostFile("/proc/sys/kernel/panic")
        let c = try TestContainer(
            "sysctl",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.linux?.sysctl = ["kernel.panic": host == "7" ? "8" : "7"]
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("linux.sysctl"), "\(r.stderr)")
        #expect(r.stderr.contains("kernel.panic"), "\(r.stderr)")
        #expect(Self.hostFile("/proc/sys/kernel/panic") == host)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "a net.* sysctl without a new network namespace is refused naming linux.sysctl; the host's value is unchanged")
    func sysctlWithoutNetns() throws {
        let host = Self.hostFile("/proc/sys/net/ipv4/ip_forward")
        let c = try TestContainer(
            "sysnet",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.linux?.namespaces?.removeAll { $0.type == "network" }
                spec.linux?.sysctl = ["net.ipv4.ip_forward": host == "1" ? "0" : "1"]
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("linux.sysctl"), "\(r.stderr)")
        #expect(Self.hostFile("/proc/sys/net/ipv4/ip_forward") == host)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
