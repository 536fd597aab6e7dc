import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Issue 10, runtime validation, init and rootfs: fields that were accepted and then ignored
/// or half-applied (kernel.hostname, linux.personality, `rro`), a /dev/console symlink the bind
/// followed, an unmapped additionalGids entry failing after `start`, ids past NAME_MAX.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeConformanceTests {
    /// `create` must fail naming every word of `expected`, leaving nothing.
    func expectCreateRefused(
        _ c: TestContainer, naming expected: [String], extra: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let r = try c.create(extra)
        #expect(r.status != 0, "create succeeded", sourceLocation: sourceLocation)
        for word in expected {
            #expect(
                r.stderr.contains(word), "stderr does not name \(word): \(r.stderr)", sourceLocation: sourceLocation)
        }
        #expect(c.leftovers().isEmpty, "left: \(c.leftovers())", sourceLocation: sourceLocation)
        #expect(c.state() == nil, sourceLocation: sourceLocation)
    }

    // MARK: sysctl vs hostname / domainname

    @Test("a kernel.hostname sysctl is refused naming linux.sysctl and hostname; the container never starts with it")
    func kernelHostnameSysctl() throws {
        let c = try TestContainer(
            "sysh",
            bundle: try Harness.busyboxBundle(["hostname"]) { spec in
                spec.hostname = "from-field"
                spec.linux?.sysctl = ["kernel.hostname": "from-sysctl"]
            })
        defer { c.destroy() }
        try expectCreateRefused(c, naming: ["linux.sysctl", "kernel.hostname", "hostname field"])
    }

    @Test("kernel.domainname together with domainname is refused naming both")
    func kernelDomainnameConflict() throws {
        let c = try TestContainer(
            "sysd",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.domainname = "field.example"
                spec.linux?.sysctl = ["kernel.domainname": "sysctl.example"]
            })
        defer { c.destroy() }
        try expectCreateRefused(c, naming: ["linux.sysctl", "kernel.domainname", "domainname field"])
    }

    // MARK: linux.personality

    @Test(
        "linux.personality LINUX32: uname -m is i686 in the init and in an exec'd process",
        .enabled(if: Harness.machine == "x86_64", "LINUX32 is the 32-bit domain of x86_64"))
    func personalityLinux32() throws {
        let c = try TestContainer(
            "pers",
            bundle: try Harness.busyboxBundle(["sh", "-c", "uname -m; sleep 1000"]) { spec in
                spec.linux?.personality = Personality(domain: "LINUX32")
            })
        defer { c.destroy() }
        let out = c.root + ".out"
        defer { unlink(out) }
        // The init's stdout goes to a file this test reads (create keeps the caller's stdio).
        let fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        let cr = try Harness.spawn(
            [Harness.runtimeBinary, "--root", c.root, "create", "--bundle", c.bundle, c.id], inherit: [(fd, 1)])
        close(fd)
        try #require(cr.status == 0, "\(cr.stderr)")
        try #require(try c.start().status == 0)
        #expect(Harness.eventually { ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("\n") })
        #expect(lines((try? String(contentsOfFile: out, encoding: .utf8)) ?? "") == ["i686"])
        let exec = try c.rt(["exec", c.id, "uname", "-m"])
        #expect(exec.status == 0, "\(exec.stderr)")
        #expect(lines(exec.stdout) == ["i686"], "exec: \(exec.stdout)")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "an unknown personality domain is refused naming linux.personality.domain; flags naming linux.personality.flags"
    )
    func personalityRefused() throws {
        let bad = try TestContainer(
            "persd",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.linux?.personality = Personality(domain: "SVR4")
            })
        defer { bad.destroy() }
        try expectCreateRefused(bad, naming: ["linux.personality.domain", "SVR4"])
        let flags = try TestContainer(
            "persf",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.linux?.personality = Personality(domain: "LINUX", flags: ["ADDR_NO_RANDOMIZE"])
            })
        defer { flags.destroy() }
        try expectCreateRefused(flags, naming: ["linux.personality.flags", "ADDR_NO_RANDOMIZE"])
    }

    // MARK: /dev/console

    /// A rootfs whose own /dev is used (no tmpfs over it) with dev/console a symlink to
    /// `target`, and a host directory bound read-write at /vol.
    @Test(
        "process.terminal with a /dev/console symlink in the rootfs is refused; no file appears and no bind lands where it points",
        arguments: ["/vol/console-target", "../../etc/passwd"])
    func consoleSymlink(target: String) throws {
        let volume = try Harness.tempDir("vol")
        defer { Harness.cleanup(volume) }
        let c = try TestContainer(
            "ttyln",
            bundle: try Harness.busyboxBundle(["cat", "/etc/passwd"]) { spec in
                spec.process?.terminal = true
                spec.mounts?.removeAll { $0.destination == "/dev" }
                spec.mounts?.append(Mount(destination: "/vol", type: "bind", source: volume, options: ["rbind", "rw"]))
            })
        defer { c.destroy() }
        try FileManager.default.createSymbolicLink(
            atPath: c.bundle + "/rootfs/dev/console", withDestinationPath: target)
        let passwd = try String(contentsOfFile: c.bundle + "/rootfs/etc/passwd", encoding: .utf8)
        let sockPath = c.root + ".sock"
        let listener = try RuntimeTerminalTests.listenUnix(sockPath)
        defer {
            close(listener)
            unlink(sockPath)
        }
        let r = try c.create(["--console-socket", sockPath])
        if r.status == 0, let pid = c.pid {
            // What the init's mount namespace shows: a mount over the link's target is the bug.
            let mounts = (try? String(contentsOfFile: "/proc/\(pid)/mountinfo", encoding: .utf8)) ?? ""
            let overTarget = lines(mounts).filter {
                $0.contains(" /etc/passwd ") || $0.contains(" /vol/console-target ")
            }
            Issue.record("create succeeded through the /dev/console symlink; mounts over its target: \(overTarget)")
        }
        #expect(r.status != 0)
        #expect(
            r.stderr.contains("process.terminal") && r.stderr.contains("/dev/console")
                && r.stderr.contains("symbolic link"), "\(r.stderr)")
        let inVolume = (try? FileManager.default.contentsOfDirectory(atPath: volume)) ?? ["(unreadable)"]
        #expect(inVolume.isEmpty, "the host volume got \(inVolume)")
        #expect(try String(contentsOfFile: c.bundle + "/rootfs/etc/passwd", encoding: .utf8) == passwd)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        #expect(c.state() == nil)
    }

    @Test(
        "process.terminal still binds /dev/console: rootfs /dev with a regular dev/console, and /dev tmpfs in a user namespace",
        arguments: ["rootfs-dev", "userns"])
    func consoleBound(variant: String) throws {
        let c = try TestContainer(
            "ttyok",
            bundle: try Harness.busyboxBundle(["sh", "-c", "grep -c ' /dev/console ' /proc/self/mountinfo; tty"]) {
                spec in
                spec.process?.terminal = true
                if variant == "rootfs-dev" {
                    spec.mounts?.removeAll { $0.destination == "/dev" }
                } else {
                    spec.linux?.namespaces?.insert(Namespace(type: "user"), at: 0)
                    spec.linux?.uidMappings = [IDMapping(containerID: 0, hostID: 2_000_000, size: 65536)]
                    spec.linux?.gidMappings = [IDMapping(containerID: 0, hostID: 2_000_000, size: 65536)]
                    spec.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" }
                }
            })
        defer { c.destroy() }
        if variant == "rootfs-dev" {
            try "".write(toFile: c.bundle + "/rootfs/dev/console", atomically: false, encoding: .utf8)
        }
        let sockPath = c.root + ".sock"
        let listener = try RuntimeTerminalTests.listenUnix(sockPath)
        defer {
            close(listener)
            unlink(sockPath)
        }
        let cr = try c.create(["--console-socket", sockPath])
        try #require(cr.status == 0, "\(cr.stderr)")
        let (master, _) = try RuntimeTerminalTests.receiveFd(listener)
        defer { close(master) }
        try #require(try c.start().status == 0)
        let output = RuntimeTerminalTests.readAll(master)
        #expect(lines(output.replacingOccurrences(of: "\r", with: "")) == ["1", "/dev/pts/0"], "\(output)")
        #expect(c.waitFor(status: "stopped"))
        #expect(try c.delete().status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: additionalGids in a user namespace

    @Test(
        "an additionalGids entry unmapped in the user namespace fails create naming the field and the gid, in the --log JSON; nothing remains"
    )
    func unmappedAdditionalGid() throws {
        let c = try TestContainer(
            "gidmap",
            bundle: try Harness.busyboxBundle(["id"]) { spec in
                spec.linux?.namespaces?.insert(Namespace(type: "user"), at: 0)
                spec.linux?.uidMappings = [IDMapping(containerID: 0, hostID: 2_000_000, size: 65536)]
                spec.linux?.gidMappings = [IDMapping(containerID: 0, hostID: 2_000_000, size: 65536)]
                spec.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" }
                spec.process?.user = User(uid: 1000, gid: 1000, additionalGids: [1000, 70000])
            })
        defer { c.destroy() }
        let log = c.root + ".log"
        defer { unlink(log) }
        let r = try c.create(["--log", log, "--log-format", "json"])
        #expect(r.status != 0, "create succeeded: the error would only come after start")
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let entries = lines(text).compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
        let errors = entries.filter { $0["level"] as? String == "error" }.compactMap { $0["msg"] as? String }
        #expect(
            errors.contains { $0.contains("process.user.additionalGids[1]") && $0.contains("70000") },
            "log: \(text) stderr: \(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        #expect(c.state() == nil)
    }

    @Test("exec with an unmapped additionalGids entry fails naming the field and the gid; the container is untouched")
    func unmappedAdditionalGidExec() throws {
        let c = try TestContainer(
            "gidexec",
            bundle: try Harness.busyboxBundle(["sleep", "1000"]) { spec in
                spec.linux?.namespaces?.insert(Namespace(type: "user"), at: 0)
                spec.linux?.uidMappings = [IDMapping(containerID: 0, hostID: 2_000_000, size: 65536)]
                spec.linux?.gidMappings = [IDMapping(containerID: 0, hostID: 2_000_000, size: 65536)]
                spec.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" }
            })
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        try #require(try c.start().status == 0)
        let processFile = c.root + ".process.json"
        defer { unlink(processFile) }
        let process: [String: Any] = [
            "args": ["id"], "cwd": "/", "env": ["PATH=/bin"],
            "user": ["uid": 0, "gid": 0, "additionalGids": [70000]],
        ]
        try JSONSerialization.data(withJSONObject: process).write(to: URL(fileURLWithPath: processFile))
        let r = try c.rt(["exec", "--process", processFile, c.id])
        #expect(r.status != 0)
        #expect(r.stderr.contains("process.user.additionalGids[0]") && r.stderr.contains("70000"), "\(r.stderr)")
        #expect(c.status == "running")
        let ps = try c.rt(["ps", "--format", "json", c.id])
        let pids = (try? JSONSerialization.jsonObject(with: Data(ps.stdout.utf8))) as? [Any]
        #expect(pids?.count == 1, "\(ps.stdout)")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: rro

    @Test("rro: a bind mount is read-only below its top too (a tmpfs submount of the source gets EROFS)")
    func recursiveReadOnly() throws {
        let source = try Harness.tempDir("rro")
        try FileManager.default.createDirectory(atPath: source + "/sub", withIntermediateDirectories: true)
        try #require(
            mount("tmpfs", source + "/sub", "tmpfs", 0, "size=1m") == 0,
            "mount tmpfs: \(String(cString: strerror(errno)))")
        defer {
            umount2(source + "/sub", Int32(MNT_DETACH))
            Harness.cleanup(source)
        }
        let script =
            "touch /data/top 2>&1; touch /data/sub/below 2>&1; grep ' /data/sub ' /proc/self/mountinfo | cut -d' ' -f6"
        let (r, left) = try Harness.runScript(script, prefix: "rro") { spec in
            spec.mounts?.append(Mount(destination: "/data", type: "bind", source: source, options: ["rbind", "rro"]))
        }
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        #expect(out.filter { $0.contains("Read-only file system") }.count == 2, "\(r.stdout)")
        #expect(out.last?.split(separator: ",").first == "ro", "submount options: \(r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: source + "/sub/below"))
        #expect(!FileManager.default.fileExists(atPath: source + "/top"))
        #expect(left.isEmpty, "\(left)")
    }

    @Test("rnoexec and rnosuid reach a submount of a bind source")
    func recursiveNoexec() throws {
        let source = try Harness.tempDir("rnoexec")
        try FileManager.default.createDirectory(atPath: source + "/sub", withIntermediateDirectories: true)
        try #require(mount("tmpfs", source + "/sub", "tmpfs", 0, "size=4m") == 0)
        defer {
            umount2(source + "/sub", Int32(MNT_DETACH))
            Harness.cleanup(source)
        }
        let (r, left) = try Harness.runScript(
            "grep ' /data/sub ' /proc/self/mountinfo | cut -d' ' -f6", prefix: "rnoex"
        ) { spec in
            spec.mounts?.append(
                Mount(destination: "/data", type: "bind", source: source, options: ["rbind", "rnoexec", "rnosuid"]))
        }
        #expect(r.status == 0, "\(r.stderr)")
        let flags = Set((lines(r.stdout).first ?? "").split(separator: ",").map(String.init))
        #expect(flags.isSuperset(of: ["noexec", "nosuid"]), "\(r.stdout)")
        #expect(left.isEmpty, "\(left)")
    }

    // MARK: container ids

    @Test("a 1024-character id goes through create, start, state, list, exec, kill and delete and leaves nothing")
    func longID() throws {
        let id =
            String(repeating: "x", count: 1024 - 12) + "-" + String(format: "%011u", UInt32.random(in: 0..<UInt32.max))
        #expect(id.count == 1024)
        let root = try Harness.tempDir("root")
        let bundle = try Harness.busyboxBundle(["sleep", "1000"])
        func rt(_ args: [String]) throws -> Harness.Result {
            try Harness.spawn([Harness.runtimeBinary, "--root", root] + args)
        }
        defer {
            _ = try? rt(["delete", "--force", id])
            Harness.cleanup(root, bundle)
        }
        let create = try rt(["create", "--bundle", bundle, id])
        try #require(create.status == 0, "\(create.stderr)")
        #expect(try rt(["start", id]).status == 0)
        let state = try rt(["state", id])
        let json = (try? JSONSerialization.jsonObject(with: Data(state.stdout.utf8))) as? [String: Any]
        #expect(json?["id"] as? String == id, "\(state.stdout) \(state.stderr)")
        #expect(json?["status"] as? String == "running")
        let list = try rt(["list", "--format", "json"])
        let listed = ((try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8))) as? [[String: Any]])?.compactMap
        { $0["id"] as? String }
        #expect(listed == [id], "\(list.stdout)")
        let exec = try rt(["exec", id, "echo", "inside"])
        #expect(exec.status == 0 && lines(exec.stdout) == ["inside"], "\(exec.stderr)")
        #expect(try rt(["kill", id, "KILL"]).status == 0)
        #expect(Harness.eventually { (try? rt(["state", id]))?.stdout.contains("\"stopped\"") == true })
        let delete = try rt(["delete", id])
        #expect(delete.status == 0, "\(delete.stderr)")
        // Nothing under the root but the runtime's own dot files; no cgroup by either name.
        let entries = try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }
        #expect(entries.isEmpty, "\(entries)")
        let digest = try Harness.run("/bin/sh", ["-c", "printf %s \"$1\" | sha256sum | cut -d' ' -f1", "sh", id]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let cgroups = try Harness.run(
            "/usr/bin/find", ["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", "*\(digest)*"]
        ).stdout
        #expect(cgroups.isEmpty, "\(cgroups)")
        #expect(Harness.leftovers(id: String(id.suffix(40)), root: root).isEmpty)
    }

    @Test("a 1025-character id is refused by create naming the 1-1024 limit; nothing is made")
    func tooLongID() throws {
        let id = String(repeating: "y", count: 1025)
        let root = try Harness.tempDir("root")
        let bundle = try Harness.busyboxBundle(["true"])
        defer { Harness.cleanup(root, bundle) }
        let r = try Harness.spawn([Harness.runtimeBinary, "--root", root, "create", "--bundle", bundle, id])
        #expect(r.status != 0)
        #expect(r.stderr.contains("1-1024"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }.isEmpty)
    }

    @Test(
        "gVisor level: an id runsc cannot name its control socket after is refused before runsc runs, naming the limit; 92 characters run",
        .enabled(if: GVisor.available, "needs runsc and the python rootfs"))
    func gvisorIDLimit() throws {
        let root = try Harness.tempDir("root")
        let bundle = try GVisor.bundle(["true"])
        defer { Harness.cleanup(root, bundle) }
        let tooLong = String(repeating: "v", count: 93)
        let r = try Harness.spawn([Harness.runtimeBinary, "--root", root, "run", "--bundle", bundle, tooLong])
        #expect(r.status != 0)
        #expect(r.stderr.contains("container id") && r.stderr.contains("at most 92"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }.isEmpty)
        #expect(GVisor.runscProcesses(tooLong).isEmpty)
        let fits = String(repeating: "w", count: 82) + String(format: "%010u", UInt32.random(in: 0..<UInt32.max))
        let ok = try Harness.spawn([Harness.runtimeBinary, "--root", root, "run", "--bundle", bundle, fits])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }.isEmpty)
    }
}

extension Harness {
    /// uname(2) machine of the host (`x86_64`, `aarch64`).
    static var machine: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
