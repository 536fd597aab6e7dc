import Foundation
import LinuxKernel
import NodeResources
import OCI
import TestSupport
import Testing

/// Resource limits on real containers through the `safespace-runtime` binary: OOM (exit 137,
/// counted per container), a contained fork bomb, cpuset pinning, `update`, `events`, device
/// rules. Runs on this cgroup v1 host and, unchanged, on cgroup v2 in scripts/vm-test's VM.
@Suite(.enabled(if: Harness.isRoot, "needs root to run containers"), .serialized)
struct ResourceTests {
    static let mib: Int64 = 1 << 20

    /// The container's cgroup directory for `controller` (v1) or its v2 directory, from state.json.
    static func cgroupDir(_ c: TestContainer, _ controller: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(c.root)/\(c.id)/state.json"))
        let state = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let cg = try #require(state["cgroup"] as? [String: Any])
        let dirs = try #require(cg["directories"] as? [String: String])
        if cg["mode"] as? String == "unified" { return try #require(dirs["unified"]) }
        return try #require(dirs.first { $0.key.split(separator: ",").contains(Substring(controller)) }?.value)
    }

    static var unified: Bool { FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") }

    static func read(_ dir: String, _ file: String) -> String {
        ((try? String(contentsOfFile: dir + "/" + file, encoding: .utf8)) ?? "").trimmingCharacters(
            in: .whitespacesAndNewlines)
    }

    static func flat(_ text: String) -> [String: Int] {
        var out: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let p = line.split(separator: " ")
            if p.count == 2, let v = Int(p[1]) { out[String(p[0])] = v }
        }
        return out
    }

    /// `events --stats` data.memory.event_count.oom_kill (0 when absent).
    static func oomKills(_ c: TestContainer) throws -> Int {
        let r = try c.rt(["events", "--stats", c.id])
        try #require(r.status == 0, "\(r.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(obj["type"] as? String == "stats" && obj["id"] as? String == c.id)
        let data = try #require(obj["data"] as? [String: Any])
        let memory = try #require(data["memory"] as? [String: Any])
        #expect(((memory["usage"] as? [String: Any])?["limit"] as? NSNumber)?.int64Value == 32 * mib)
        return ((memory["event_count"] as? [String: Any])?["oom_kill"] as? NSNumber)?.intValue ?? 0
    }

    /// `run --detach` through Harness.spawn (the running container keeps its caller's fds).
    static func detached(_ c: TestContainer) throws -> Harness.Result {
        try Harness.spawn([Harness.runtimeBinary, "--root", c.root, "run", "--detach", "--bundle", c.bundle, c.id])
    }

    static func limited(_ script: String, memory: Int64? = nil, pids: Int64? = nil, cpus: String? = nil) throws
        -> String
    {
        try Harness.busyboxBundle(["sh", "-c", script]) { spec in
            spec.linux?.resources = Resources(
                memory: memory.map { .init(limit: $0) }, cpu: cpus.map { .init(cpus: $0) },
                pids: pids.map { .init(limit: $0) })
        }
    }

    @Test("touching 4x the memory limit exits 137 and is counted as an OOM kill; twice; a clean run is not")
    func oomKilled() throws {
        for round in 1...2 {
            let c = try TestContainer(
                "oom",
                bundle: try Self.limited("exec dd if=/dev/zero of=/dev/null bs=128M count=1", memory: 32 * Self.mib))
            defer { c.destroy() }
            let r = try c.run(["--keep"])
            #expect(r.status == 137, "round \(round): \(r.stderr)")
            #expect(try Self.oomKills(c) == 1, "round \(round)")
            #expect(try c.delete().status == 0)
            #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        }
        let c = try TestContainer(
            "oom", bundle: try Self.limited("exec dd if=/dev/zero of=/dev/null bs=1M count=8", memory: 32 * Self.mib))
        defer { c.destroy() }
        let r = try c.run(["--keep"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Self.oomKills(c) == 0)
    }

    @Test("`events` streams stats and an oom event, then ends with the container")
    func eventsStream() throws {
        let c = try TestContainer(
            "ev", bundle: try Self.limited("exec dd if=/dev/zero of=/dev/null bs=128M count=1", memory: 32 * Self.mib))
        defer { c.destroy() }
        // Harness.spawn: the created init keeps what its caller gave it (see there).
        let cr = try Harness.spawn([Harness.runtimeBinary, "--root", c.root, "create", "--bundle", c.bundle, c.id])
        try #require(cr.status == 0, "\(cr.stderr)")
        let events = Foundation.Process()
        events.executableURL = URL(fileURLWithPath: Harness.runtimeBinary)
        events.arguments = ["--root", c.root, "events", "--interval", "100ms", c.id]
        let out = Pipe()
        events.standardOutput = out
        try events.run()
        // Started only once `events` reports (its first stats line), so a loaded host cannot
        // end the container before `events` looks.
        var first = Data()
        while !first.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            first += chunk
        }
        #expect(try c.start().status == 0)
        let text = String(decoding: first + out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        events.waitUntilExit()
        let types = text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["type"] as? String
        }
        #expect(types.contains("oom"), "\(text.prefix(500))")
        #expect(types.contains("stats"))
        #expect(events.terminationStatus == 0)
    }

    @Test("a fork bomb stays inside pids.max; the node answers; kill + delete leave nothing")
    func forkBomb() throws {
        let c = try TestContainer(
            "bomb", bundle: try Self.limited("exec >/dev/null 2>&1; f() { f | f & }; f; exec sleep 600", pids: 32))
        defer { c.destroy() }
        let r = try Self.detached(c)
        try #require(r.status == 0, "\(r.stderr)")
        let dir = try Self.cgroupDir(c, "pids")
        #expect(
            Harness.eventually { (Self.flat(Self.read(dir, "pids.events"))["max"] ?? 0) > 0 }, "pids.max never reached")
        #expect((Int(Self.read(dir, "pids.current")) ?? 99) <= 32)
        #expect(try Harness.run("/bin/sh", ["-c", "echo node-ok"]).stdout == "node-ok\n")
        #expect(try c.rt(["kill", "--all", c.id, "KILL"]).status == 0)
        let d = try c.delete(force: true)
        #expect(d.status == 0, "\(d.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir))
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("cpus \"0\" without mems pins the workload; a CPU the node lacks fails with nothing left")
    func cpuset() throws {
        let (ok, _) = try Harness.runScript("grep Cpus_allowed_list /proc/self/status", prefix: "pin") { spec in
            spec.linux?.resources = Resources(cpu: .init(cpus: "0"))
        }
        #expect(ok.status == 0 && ok.stdout == "Cpus_allowed_list:\t0\n", "\(ok.stdout) \(ok.stderr)")
        let (bad, left) = try Harness.runScript("true", prefix: "pin") { spec in
            spec.linux?.resources = Resources(cpu: .init(cpus: "63"))
        }
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("linux.resources.cpu.cpus"), "\(bad.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("update changes what it is given and keeps the rest (quota-only keeps the period)")
    func update() throws {
        let c = try TestContainer(
            "upd",
            bundle: try Harness.busyboxBundle(["sh", "-c", "exec >/dev/null 2>&1; exec sleep 600"]) { spec in
                spec.linux?.resources = Resources(
                    memory: .init(limit: 64 * Self.mib), cpu: .init(period: 250_000), pids: .init(limit: 64))
            })
        defer { c.destroy() }
        try #require(try Self.detached(c).status == 0)
        let cpu = try Self.cgroupDir(c, "cpu")
        let mem = try Self.cgroupDir(c, "memory")
        let pids = try Self.cgroupDir(c, "pids")
        let (memFile, cpuCheck): (String, () -> Bool) =
            Self.unified
            ? ("memory.max", { Self.read(cpu, "cpu.max") == "50000 250000" })
            : (
                "memory.limit_in_bytes",
                { Self.read(cpu, "cpu.cfs_quota_us") == "50000" && Self.read(cpu, "cpu.cfs_period_us") == "250000" }
            )

        var u = try c.rt(["update", "--cpu-quota", "50000", c.id])
        #expect(u.status == 0, "\(u.stderr)")
        #expect(cpuCheck())
        u = try c.rt(["update", "--memory", "128m", c.id])
        #expect(u.status == 0, "\(u.stderr)")
        #expect(Self.read(mem, memFile) == "134217728")
        #expect(Self.read(pids, "pids.max") == "64")
        u = try c.rt(["update", "--resources", "-", c.id], stdin: #"{"pids": {"limit": 100}}"#)
        #expect(u.status == 0, "\(u.stderr)")
        #expect(Self.read(pids, "pids.max") == "100")
        #expect(Self.read(mem, memFile) == "134217728")
        #expect(cpuCheck())
        u = try c.rt(["update", "--cpu-quota", "500", c.id])
        #expect(u.status != 0 && u.stderr.contains("linux.resources.cpu.quota"), "\(u.stderr)")
        #expect(cpuCheck())
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("devices: default deny keeps a bound host device closed; an allow rule opens it; /dev/null works")
    func devices() throws {
        func bundle(allow: Bool) throws -> String {
            try Harness.busyboxBundle(["sh", "-c", ": > /dev/null && : > /dev/kmsg && echo opened"]) { spec in
                spec.mounts =
                    (spec.mounts ?? []) + [
                        Mount(destination: "/dev/kmsg", type: "bind", source: "/dev/kmsg", options: ["bind"])
                    ]
                if allow {
                    spec.linux?.resources = Resources(devices: [
                        .init(allow: false, access: "rwm"),
                        .init(allow: true, type: "c", major: 1, minor: 11, access: "w"),
                    ])
                }
            }
        }
        let denied = try TestContainer("dev", bundle: try bundle(allow: false))
        defer { denied.destroy() }
        let d = try denied.run()
        #expect(d.status != 0 && d.stderr.contains("Operation not permitted"), "\(d.stdout) \(d.stderr)")
        let allowed = try TestContainer("dev", bundle: try bundle(allow: true))
        defer { allowed.destroy() }
        let a = try allowed.run()
        #expect(a.status == 0 && a.stdout == "opened\n", "\(a.stdout) \(a.stderr)")
    }

    @Test("ephemeral storage: writable paths share one capped volume; past it, writes in the sandbox get ENOSPC")
    func ephemeralStorage() throws {
        let base = try Harness.tempDir("eph")
        defer { Harness.cleanup(base) }
        let volume = try EphemeralStorage.create(sandbox: Harness.uniqueID("eph"), size: 16 << 20, base: base)
        defer { try? volume.destroy() }
        let tmp = try volume.directory(for: "/tmp", uid: 0, gid: 0)
        let work = try volume.directory(for: "/workspace", uid: 0, gid: 0)
        let script =
            "dd if=/dev/zero of=/tmp/a bs=1M count=10 2>/dev/null && echo tmp-ok; dd if=/dev/zero of=/workspace/b bs=1M count=10; echo rc=$?"
        let (r, left) = try Harness.runScript(script, prefix: "eph") { spec in
            spec.mounts =
                (spec.mounts ?? []) + [
                    Mount(destination: "/tmp", type: "bind", source: tmp, options: ["rbind", "nosuid", "nodev"]),
                    Mount(
                        destination: "/workspace", type: "bind", source: work, options: ["rbind", "nosuid", "nodev"]),
                ]
        }
        #expect(r.stdout.contains("tmp-ok") && r.stdout.contains("rc=1"), "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("No space left on device"), "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
        try volume.destroy()
        #expect(!FileManager.default.fileExists(atPath: volume.directory))
    }

    // MARK: teardown of frozen and nested cgroups

    /// Every directory of the container's cgroup (all hierarchies) that exists now, from state.json.
    static func cgroupDirs(_ c: TestContainer) throws -> [String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(c.root)/\(c.id)/state.json"))
        let state = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let dirs = try #require((state["cgroup"] as? [String: Any])?["directories"] as? [String: String])
        return dirs.values.sorted()
    }

    /// Directories (cgroups) at or below each of `dirs` that exist now.
    static func existing(_ dirs: [String]) -> [String] {
        dirs.flatMap { dir -> [String] in
            guard FileManager.default.fileExists(atPath: dir) else { return [] }
            let out = (try? Harness.run("/usr/bin/find", [dir, "-type", "d"]).stdout) ?? ""
            return out.split(separator: "\n").map(String.init)
        }
    }

    /// Whether `pid` has exited (gone, or a zombie its new parent has not reaped yet).
    static func goneOrZombie(_ pid: Int32) -> Bool {
        guard let stat = ProcStat.read(pid: pid) else { return true }
        return stat.state == "Z"
    }

    /// `delete --force` in the background, so a hang fails the test instead of the run; waits
    /// (bounded, against hanging, not a timing assertion) and kills it if it never returns.
    static func forceDelete(_ c: TestContainer) throws -> Harness.Result? {
        let d = try Harness.Background(Harness.runtimeBinary, ["--root", c.root, "delete", "--force", c.id])
        guard Harness.eventually(timeout: 60, { !d.process.isRunning }) else {
            d.terminate()
            _ = d.wait()
            return nil
        }
        return d.wait()
    }

    @Test("delete --force of a paused (frozen) container returns, kills it and leaves no cgroup")
    func deletePaused() throws {
        let c = try TestContainer(
            "pausedel",
            bundle: try Harness.busyboxBundle([
                "sh", "-c", "exec >/dev/null 2>&1; sleep 600 & sleep 600 & exec sleep 600",
            ]))
        defer { c.destroy() }
        try #require(try Self.detached(c).status == 0)
        let dirs = try Self.cgroupDirs(c)
        let pid = try #require(c.pid)
        #expect(
            Harness.eventually {
                Self.read(try! Self.cgroupDir(c, "pids"), "cgroup.procs").split(separator: "\n").count == 3
            })
        let p = try c.rt(["pause", c.id])
        try #require(p.status == 0, "\(p.stderr)")
        #expect(c.status == "paused")
        let before = Self.existing(dirs)
        #expect(before.count == dirs.count, "\(before)")
        let d = try #require(try Self.forceDelete(c), "delete --force of a paused container did not return")
        #expect(d.status == 0, "\(d.stderr)")
        #expect(Self.existing(dirs).isEmpty, "\(Self.existing(dirs))")
        #expect(Harness.eventually { Self.goneOrZombie(pid) }, "the init \(pid) survived")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "delete --force of a container whose workload made, filled and froze nested sub-cgroups returns and leaves none"
    )
    func deleteWithSubCgroups() throws {
        // A cgroup namespace (runc's default config has one) with a writable cgroupfs: the
        // workload makes sub/deeper in every hierarchy, moves a process into each level and
        // freezes sub/deeper (v1 freezer.state / v2 cgroup.freeze) from inside.
        let script = """
            exec >/dev/null 2>&1
            sleep 600 & a=$!
            sleep 600 & b=$!
            if [ -f /sys/fs/cgroup/cgroup.controllers ]; then hs=/sys/fs/cgroup; else hs=$(ls -d /sys/fs/cgroup/*); fi
            for h in $hs; do
                mkdir -p $h/sub/deeper
                if [ -f $h/cpuset.cpus ]; then
                    for d in sub sub/deeper; do cat $h/cpuset.cpus > $h/$d/cpuset.cpus; cat $h/cpuset.mems > $h/$d/cpuset.mems; done
                fi
                echo $a > $h/sub/cgroup.procs
                echo $b > $h/sub/deeper/cgroup.procs
            done
            if [ -f /sys/fs/cgroup/freezer/sub/deeper/freezer.state ]; then echo FROZEN > /sys/fs/cgroup/freezer/sub/deeper/freezer.state; fi
            if [ -f /sys/fs/cgroup/sub/deeper/cgroup.freeze ]; then echo 1 > /sys/fs/cgroup/sub/deeper/cgroup.freeze; fi
            touch /tmp/ready
            exec sleep 600
            """
        let c = try TestContainer(
            "subdel",
            bundle: try Harness.busyboxBundle(["sh", "-c", script]) { spec in
                spec.mounts = spec.mounts?.map { m in
                    guard m.destination == "/sys/fs/cgroup" else { return m }
                    var rw = m
                    rw.options = (m.options ?? []).filter { $0 != "ro" } + ["rw"]
                    return rw
                }
                spec.mounts =
                    (spec.mounts ?? []) + [
                        Mount(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev"])
                    ]
            })
        defer { c.destroy() }
        try #require(try Self.detached(c).status == 0)
        let dirs = try Self.cgroupDirs(c)
        let pidsDir = try Self.cgroupDir(c, "pids")
        let deeper = (Self.unified ? pidsDir : try Self.cgroupDir(c, "freezer")) + "/sub/deeper"
        let frozen = {
            Self.read(deeper, Self.unified ? "cgroup.events" : "freezer.state").contains(
                Self.unified ? "frozen 1" : "FROZEN")
        }
        try #require(Harness.eventually(frozen), "the workload never froze sub/deeper")
        #expect(!Self.read(pidsDir + "/sub/deeper", "cgroup.procs").isEmpty)
        #expect(!Self.read(pidsDir + "/sub", "cgroup.procs").isEmpty)
        #expect(Self.existing(dirs).count == 3 * dirs.count, "\(Self.existing(dirs))")
        let d = try #require(try Self.forceDelete(c), "delete --force did not return")
        #expect(d.status == 0, "\(d.stderr)")
        #expect(Self.existing(dirs).isEmpty, "\(Self.existing(dirs))")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "create over a pre-existing frozen cgroup fails at once naming linux.cgroupsPath; nothing is left, the frozen cgroup untouched"
    )
    func createOverFrozenCgroup() throws {
        let path = "/safespace-test-frozen-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let freezerRoot = Self.unified ? "/sys/fs/cgroup" : "/sys/fs/cgroup/freezer"
        let leftover = freezerRoot + path
        try FileManager.default.createDirectory(atPath: leftover, withIntermediateDirectories: true)
        defer {
            // Only the test's own cgroup: thaw it and remove it in every hierarchy.
            try? (Self.unified ? "0" : "THAWED").write(
                toFile: leftover + (Self.unified ? "/cgroup.freeze" : "/freezer.state"), atomically: false,
                encoding: .utf8)
            for h in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(h)\(path)")
            }
            rmdir(leftover)
        }
        try (Self.unified ? "1" : "FROZEN").write(
            toFile: leftover + (Self.unified ? "/cgroup.freeze" : "/freezer.state"), atomically: false, encoding: .utf8)
        let c = try TestContainer(
            "frozencg", bundle: try Harness.busyboxBundle(["true"]) { $0.linux?.cgroupsPath = path })
        defer { c.destroy() }
        let create = try Harness.Background(
            Harness.runtimeBinary, ["--root", c.root, "create", "--bundle", c.bundle, c.id])
        let returned = Harness.eventually(timeout: 60) { !create.process.isRunning }
        if !returned {
            // The old behaviour: the init sits frozen in the cgroup and create waits for it.
            create.terminate()
            try? (Self.unified ? "0" : "THAWED").write(
                toFile: leftover + (Self.unified ? "/cgroup.freeze" : "/freezer.state"), atomically: false,
                encoding: .utf8)
        }
        let r = create.wait()
        try #require(returned, "create over a frozen cgroup did not return")
        #expect(r.status != 0)
        #expect(r.stderr.contains("linux.cgroupsPath") && r.stderr.contains("frozen"), "\(r.stderr)")
        #expect(c.state() == nil)
        #expect(!FileManager.default.fileExists(atPath: c.root + "/" + c.id))
        // The frozen cgroup is as it was; the other hierarchies got nothing from this create.
        #expect(
            Self.read(leftover, Self.unified ? "cgroup.freeze" : "freezer.state") == (Self.unified ? "1" : "FROZEN"))
        if !Self.unified {
            #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory" + path))
        }
        #expect(Self.read(leftover, "cgroup.procs").isEmpty)
    }

    // MARK: device rules as written

    @Test("a device in linux.devices stays denied when linux.resources.devices denies all; the default set works")
    func linuxDeviceDeniedByRules() throws {
        let script = """
            : > /dev/null && echo null-ok
            head -c 4 /dev/urandom | wc -c
            head -c 4 /dev/zero | wc -c
            echo x > /dev/full || echo full-enospc
            ( : > /dev/kmsg ) || echo kmsg-write-denied
            head -c 1 /dev/kmsg >/dev/null || echo kmsg-read-denied
            ls -l /dev/kmsg | cut -c1
            """
        let (r, left) = try Harness.runScript(script, prefix: "devdeny") { spec in
            spec.linux?.devices = [
                Device(type: "c", path: "/dev/kmsg", major: 1, minor: 11, fileMode: 0o666, uid: 0, gid: 0)
            ]
            spec.linux?.resources = Resources(devices: [.init(allow: false, access: "rwm")])
        }
        let out = lines(r.stdout)
        #expect(out.contains("null-ok") && out.filter { $0 == "4" }.count == 2, "\(r.stdout) \(r.stderr)")
        #expect(out.contains("full-enospc") && r.stderr.contains("No space left on device"), "\(r.stdout) \(r.stderr)")
        // The node exists (linux.devices made it), but the device cgroup says no.
        #expect(out.last == "c", "\(r.stdout)")
        #expect(out.contains("kmsg-write-denied") && out.contains("kmsg-read-denied"), "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("/dev/kmsg: Operation not permitted"), "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    // MARK: linux.resources.memory conformance

    @Test(
        "memory.swappiness and disableOOMKiller land in memory.swappiness / memory.oom_control (v1); v2 takes only what it can honour"
    )
    func swappinessAndOOMKiller() throws {
        let hostSwappiness = UInt64(Self.read("/proc/sys/vm", "swappiness")) ?? 60
        func bundle(swappiness: UInt64?, disableOOMKiller: Bool?) throws -> String {
            try Harness.busyboxBundle(["sh", "-c", "exec >/dev/null 2>&1; exec sleep 600"]) { spec in
                var m = Resources.Memory(limit: 64 * Self.mib)
                m.swappiness = swappiness
                m.disableOOMKiller = disableOOMKiller
                spec.linux?.resources = Resources(memory: m)
            }
        }
        if !Self.unified {
            let wanted: UInt64 = hostSwappiness == 7 ? 8 : 7
            let c = try TestContainer("swappy", bundle: try bundle(swappiness: wanted, disableOOMKiller: true))
            defer { c.destroy() }
            let r = try Self.detached(c)
            try #require(r.status == 0, "\(r.stderr)")
            let mem = try Self.cgroupDir(c, "memory")
            #expect(Self.read(mem, "memory.swappiness") == "\(wanted)")
            #expect(
                Self.read(mem, "memory.oom_control").split(separator: "\n").contains("oom_kill_disable 1"),
                "\(Self.read(mem, "memory.oom_control"))")
            #expect(try c.delete(force: true).status == 0)
            #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        } else {
            // What v2 gives every cgroup anyway is accepted.
            let ok = try TestContainer(
                "swappy", bundle: try bundle(swappiness: hostSwappiness, disableOOMKiller: false))
            defer { ok.destroy() }
            let r = try Self.detached(ok)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try ok.delete(force: true).status == 0)
        }
        // Out of range on v1, not honourable on v2: refused naming the field, nothing left.
        for (swappiness, disable, field) in [
            (Self.unified ? (hostSwappiness == 7 ? 8 : 7) : 101, false, "linux.resources.memory.swappiness")
        ] + (Self.unified ? [(nil, true, "linux.resources.memory.disableOOMKiller")] : []) as [(UInt64?, Bool, String)]
        {
            let c = try TestContainer("swappy", bundle: try bundle(swappiness: swappiness, disableOOMKiller: disable))
            defer { c.destroy() }
            let r = try c.create()
            #expect(r.status != 0)
            #expect(r.stderr.contains(field), "\(r.stderr)")
            #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        }
    }

    @Test("memory.kernel and memory.kernelTCP are accepted and ignored with a warning naming them, as runc 1.1+")
    func kernelMemoryIgnored() throws {
        let (r, left) = try Harness.runScript("echo ran", prefix: "kmem") { spec in
            var m = Resources.Memory(limit: 64 * Self.mib)
            m.kernel = 32 * Self.mib
            m.kernelTCP = 16 * Self.mib
            spec.linux?.resources = Resources(memory: m)
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "ran\n")
        #expect(
            r.stderr.contains("level=warning")
                && r.stderr.contains("linux.resources.memory.kernel, linux.resources.memory.kernelTCP"), "\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }
}
