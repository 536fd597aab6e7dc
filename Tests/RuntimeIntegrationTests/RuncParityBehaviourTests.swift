import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Issue 16 item 5: behaviours where runc 1.1 and safespace-runtime must agree — a reused
/// cgroup holding processes, per-device block I/O weights, a CFS period updated alone, the
/// working directory of `exec --user`, cgroup mounts in a user namespace. Each runs the same
/// bundle and command line through both.
@Suite(.enabled(if: RuncDifferential.available, "needs root and runc"))
struct RuncParityBehaviourTests {
    static var unified: Bool { FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") }

    /// The directory of `pid`'s cgroup holding `controller` (v1), or its v2 cgroup.
    static func cgroupDir(pid: Int32, _ controller: String) throws -> String {
        let text = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if unified { return "/sys/fs/cgroup" + parts[2] }
            if parts[1].split(separator: ",").contains(Substring(controller)) {
                return "/sys/fs/cgroup/\(parts[1])\(parts[2])"
            }
        }
        throw CocoaError(.fileNoSuchFile)
    }

    static func read(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func pid(_ stateJSON: String) -> Int32? {
        ((try? JSONSerialization.jsonObject(with: Data(stateJSON.utf8))) as? [String: Any])?["pid"].flatMap {
            ($0 as? NSNumber)?.int32Value
        }
    }

    /// A user-namespace variant of runc's config (0 -> 100000, 65536 ids), runc's shape.
    static func userNamespace(_ spec: inout Spec, cgroupNamespace: Bool = false) {
        spec.linux?.namespaces?.append(Namespace(type: "user"))
        if cgroupNamespace { spec.linux?.namespaces?.append(Namespace(type: "cgroup")) }
        spec.linux?.uidMappings = [IDMapping(containerID: 0, hostID: 100_000, size: 65_536)]
        spec.linux?.gidMappings = [IDMapping(containerID: 0, hostID: 100_000, size: 65_536)]
    }

    @Test(
        "a pre-existing cgroup holding a process: runc's warning, the container runs, delete leaves that process alive")
    func nonEmptyCgroup() throws {
        let path = "/safespace-test-nonempty-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let hierarchies =
            Self.unified
            ? ["/sys/fs/cgroup"]
            : try FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup").map { "/sys/fs/cgroup/" + $0 }
                .filter { FileManager.default.fileExists(atPath: $0 + "/cgroup.procs") }
        let squatter = try Harness.Background("/bin/sleep", ["600"])
        defer {
            squatter.terminate()
            _ = squatter.wait()
            for h in hierarchies { rmdir(h + path) }
        }
        for h in hierarchies {
            try FileManager.default.createDirectory(atPath: h + path, withIntermediateDirectories: true)
            for file in ["cpuset.cpus", "cpuset.mems"]
            where FileManager.default.fileExists(atPath: h + path + "/" + file) {
                try Self.read(h + "/" + file).write(toFile: h + path + "/" + file, atomically: false, encoding: .utf8)
            }
            try "\(squatter.process.processIdentifier)".write(
                toFile: h + path + "/cgroup.procs", atomically: false, encoding: .utf8)
        }
        let d = try RuncDifferential(
            "nonempty", bundle: try Harness.busyboxBundle(["sleep", "600"]) { $0.linux?.cgroupsPath = path })
        defer { d.destroy() }
        // One after the other: each finds the squatter alone in the cgroup.
        for side in ["runc", "ours"] {
            let run = side == "runc" ? d.runc : d.ours
            let created = try run(["run", "--detach", "--bundle", d.bundle, "ID"], nil)
            #expect(created.status == 0, "\(side): \(created.stderr)")
            #expect(
                created.stderr.contains("level=warning msg=\"container's cgroup is not empty: 1 process(es) found\""),
                "\(side): \(created.stderr)")
            #expect(try run(["state", "ID"], nil).stdout.contains("\"running\""), "\(side)")
            let deleted = try run(["delete", "--force", "ID"], nil)
            #expect(deleted.status == 0, "\(side): \(deleted.stderr)")
            #expect(squatter.process.isRunning, "\(side) killed the process that was in the cgroup before")
            #expect(
                FileManager.default.fileExists(atPath: hierarchies[0] + path),
                "\(side) removed the cgroup it did not make")
        }
    }

    @Test(
        "blockIO.weightDevice: written to the BFQ weight file of a BFQ device by both; a device without BFQ fails in both, ours naming the field"
    )
    func weightDevice() throws {
        let dir = try Harness.tempDir("loop")
        defer { Harness.cleanup(dir) }
        try Data(count: 16 << 20).write(to: URL(fileURLWithPath: dir + "/disk"))
        let attach = try Harness.run("/usr/sbin/losetup", ["--find", "--show", dir + "/disk"])
        try #require(attach.status == 0, "\(attach.stderr)")
        let device = attach.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Harness.run("/usr/sbin/losetup", ["--detach", device]) }
        let name = String(device.split(separator: "/").last!)
        let scheduler = "/sys/block/\(name)/queue/scheduler"
        try #require(Self.read(scheduler).contains("bfq"), "this kernel has no BFQ scheduler: \(Self.read(scheduler))")
        try "bfq".write(toFile: scheduler, atomically: false, encoding: .utf8)
        let numbers = Self.read("/sys/block/\(name)/dev").split(separator: ":").compactMap { Int64($0) }
        try #require(numbers.count == 2)
        let path = "/safespace-test-wd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let d = try RuncDifferential(
            "wdev",
            bundle: try Harness.busyboxBundle(["sleep", "600"]) { spec in
                spec.linux?.cgroupsPath = path
                spec.linux?.resources?.blockIO = .init(weightDevice: [
                    .init(major: numbers[0], minor: numbers[1], weight: 300)
                ])
            })
        defer { d.destroy() }
        let file =
            Self.unified ? "/sys/fs/cgroup\(path)/io.bfq.weight" : "/sys/fs/cgroup/blkio\(path)/blkio.bfq.weight_device"
        for side in ["runc", "ours"] {
            let run = side == "runc" ? d.runc : d.ours
            let created = try run(["create", "--bundle", d.bundle, "ID"], nil)
            #expect(created.status == 0, "\(side): \(created.stderr)")
            #expect(
                Self.read(file).split(separator: "\n").contains("\(numbers[0]):\(numbers[1]) 300"),
                "\(side): \(Self.read(file))")
            #expect(try run(["delete", "--force", "ID"], nil).status == 0)
        }
        // The same device without BFQ keeps no weights: both refuse the config.
        try "none".write(toFile: scheduler, atomically: false, encoding: .utf8)
        let (r, o) = try d.both(["create", "--bundle", d.bundle, "ID"])
        #expect(r.status != 0 || Self.unified, "runc: \(r.stderr)")
        #expect(o.status != 0, "ours: \(o.stderr)")
        #expect(
            RuncDifferential.errorMessage(o.stderr)?.hasPrefix(
                "linux.resources.blockIO.weightDevice[0]: device \(numbers[0]):\(numbers[1]) refuses a weight") == true,
            "\(o.stderr)")
    }

    @Test("update --cpu-period alone keeps the quota: both runtimes leave the same period and quota")
    func periodAlone() throws {
        let d = try RuncDifferential(
            "period",
            bundle: try Harness.busyboxBundle(["sleep", "600"]) { spec in
                spec.linux?.resources?.cpu = .init(quota: 20_000, period: 100_000)
            })
        defer { d.destroy() }
        try d.startBoth()
        let (r, o) = try d.both(["update", "--cpu-period", "50000", "ID"])
        #expect(r.status == 0 && o.status == 0, "runc: \(r.stderr) ours: \(o.stderr)")
        var seen: [String] = []
        for run in [d.runc, d.ours] {
            let pid = try #require(Self.pid(try run(["state", "ID"], nil).stdout))
            let dir = try Self.cgroupDir(pid: pid, "cpu")
            seen.append(
                Self.unified
                    ? Self.read(dir + "/cpu.max")
                    : Self.read(dir + "/cpu.cfs_quota_us") + " " + Self.read(dir + "/cpu.cfs_period_us"))
        }
        #expect(seen == ["20000 50000", "20000 50000"])
    }

    @Test("exec --user into a cwd only root may enter: entered, as runc does (chdir before the user switch)")
    func cwdRootOnly() throws {
        let bundle = try Harness.busyboxBundle(["sleep", "600"])
        try FileManager.default.createDirectory(
            atPath: bundle + "/rootfs/private", withIntermediateDirectories: false,
            attributes: [.posixPermissions: 0o700])
        let d = try RuncDifferential("cwdroot", bundle: bundle)
        defer { d.destroy() }
        try d.startBoth()
        let (r, o) = try d.both(["exec", "--user", "1000:1000", "--cwd", "/private", "ID", "pwd"])
        #expect(r.status == 0 && o.status == 0, "runc: \(r.stderr) ours: \(o.stderr)")
        #expect(o.stdout == "/private\n" && r.stdout == o.stdout)
        let missing = try d.both(["exec", "--user", "1000", "--cwd", "/missing", "ID", "pwd"])
        #expect(missing.runc.status == 255 && missing.ours.status == 255)
        let text = "chdir to cwd (\\\"/missing\\\") set in config.json failed: no such file or directory"
        #expect(RuncDifferential.errorMessage(missing.runc.stderr)?.hasSuffix(text) == true, "\(missing.runc.stderr)")
        #expect(RuncDifferential.errorMessage(missing.ours.stderr)?.hasSuffix(text) == true, "\(missing.ours.stderr)")
    }

    @Test("exec --user into a cwd neither the user nor the container's root may enter: runc's error and status")
    func cwdNobodyMayEnter() throws {
        // A host directory of an id the user namespace does not map: even its root gets EACCES.
        let host = try Harness.tempDir("cwd-private")
        chown(host, 12_345, 12_345)
        chmod(host, 0o700)
        let d = try RuncDifferential(
            "cwdperm",
            bundle: try Harness.busyboxBundle(["sleep", "600"]) { spec in
                Self.userNamespace(&spec)
                spec.mounts?.append(Mount(destination: "/workspace", type: "bind", source: host, options: ["rbind"]))
            })
        defer {
            d.destroy()
            Harness.cleanup(host)
        }
        try d.startBoth()
        let (r, o) = try d.both(["exec", "--user", "1000:1000", "--cwd", "/workspace", "ID", "pwd"])
        #expect(r.status == 255 && o.status == 255, "runc \(r.status): \(r.stderr) ours \(o.status): \(o.stderr)")
        let text = "chdir to cwd (\\\"/workspace\\\") set in config.json failed: permission denied"
        #expect(RuncDifferential.errorMessage(r.stderr)?.hasSuffix(text) == true, "\(r.stderr)")
        #expect(RuncDifferential.errorMessage(o.stderr)?.hasSuffix(text) == true, "\(o.stderr)")
    }

    @Test(
        "a user namespace mounts a cgroup file system, with and without a cgroup namespace: the container's own cgroup, as with runc",
        arguments: [false, true])
    func userNamespaceCgroupMount(cgroupNamespace: Bool) throws {
        let procs = Self.unified ? "/sys/fs/cgroup/cgroup.procs" : "/sys/fs/cgroup/pids/cgroup.procs"
        let d = try RuncDifferential(
            "usercg",
            bundle: try Harness.busyboxBundle([
                "sh", "-c", "grep -c ' - cgroup' /proc/self/mountinfo; wc -l < \(procs)",
            ]) { spec in
                Self.userNamespace(&spec, cgroupNamespace: cgroupNamespace)
            })
        defer { d.destroy() }
        let (r, o) = try d.both(["run", "--bundle", d.bundle, "ID"])
        #expect(r.status == 0, "runc: \(r.stderr)")
        #expect(o.status == 0, "ours: \(o.stderr)")
        let runcOut = lines(r.stdout)
        let ourOut = lines(o.stdout)
        #expect(ourOut.first.flatMap { Int($0) } ?? 0 >= 1, "no cgroup mount: \(ourOut)")
        // sh and wc: the container's own processes only.
        #expect(ourOut.last.flatMap { Int($0) }.map { (1...3).contains($0) } == true, "ours: \(ourOut)")
        #expect(runcOut.last.flatMap { Int($0) }.map { (1...3).contains($0) } == true, "runc: \(runcOut)")
    }
}
