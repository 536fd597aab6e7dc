import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// User namespaces (standard level): every sandbox's uid 0..65535 is a host range of its own,
/// looked at from inside and from the host.
@Suite(
    "User namespaces",
    .enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs (scripts/setup)"))
struct UserNamespaceTests {
    /// Every capability: even holding all of them in its namespace, uid 0 stays confined.
    static let allCapabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ]

    /// A user namespace whose range the runtime allocates, as the standard level's policy asks.
    static func userns(_ spec: inout Spec) {
        spec.annotations = (spec.annotations ?? [:]).merging(["llmsafespace.dev/userns": "auto"]) { $1 }
        spec.linux?.namespaces?.insert(Namespace(type: "user"), at: 0)
        // cgroup v1 cannot be mounted from a user namespace; the sandbox has no use for it.
        spec.mounts?.removeAll { $0.destination == "/sys/fs/cgroup" }
    }

    /// The first `0 <host> <size>` line of /proc/PID/uid_map.
    static func hostRange(pid: Int32, map: String = "uid_map") throws -> (host: UInt32, size: UInt32) {
        let text = try String(contentsOfFile: "/proc/\(pid)/\(map)", encoding: .utf8)
        let fields = try #require(lines(text).first).split(separator: " ").compactMap { UInt32($0) }
        try #require(fields.count == 3 && fields[0] == 0)
        return (fields[1], fields[2])
    }

    /// `Uid:`/`Gid:`/`Groups:` of /proc/PID/status.
    static func status(_ pid: Int32, _ key: String) throws -> [String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(lines(text).first { $0.hasPrefix(key + ":") })
        return line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    }

    @Test(
        "safespace run: id is 1000, root-owned rootfs files are root's and readable, writable paths are the sandbox user's, no groups"
    )
    func inside() throws {
        let code = """
            import os
            st = os.stat("/etc/passwd")
            print(os.getuid(), os.getgid(), os.getgroups())
            print(st.st_uid, st.st_gid, open("/etc/passwd").readline().split(":")[0])
            print(os.stat("/usr/bin").st_uid, os.stat("/workspace").st_uid, os.stat("/workspace").st_gid)
            print(open("/proc/self/uid_map").read().split())
            print(open("/proc/self/gid_map").read().split())
            print([l for l in open("/proc/self/status") if l.startswith("Groups:")][0].split())
            """
        // The caller's supplementary groups must not reach the sandbox.
        let r = try Harness.run(
            "/usr/bin/setpriv", ["--groups", "4,27,100", "--", Harness.cliBinary, "run", "--", "python3", "-c", code])
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        try #require(out.count == 6, "\(r.stdout)")
        #expect(out[0] == "1000 1000 []")
        #expect(out[1] == "0 0 root")
        #expect(out[2] == "0 1000 1000")
        let uidMap = out[3]
        let gidMap = out[4]
        #expect(uidMap.hasPrefix("['0', '") && uidMap.hasSuffix("', '65536']"), "\(uidMap)")
        #expect(uidMap == gidMap)
        #expect(!uidMap.contains("'0', '0'") && !uidMap.contains("'1000', "), "\(uidMap)")
        #expect(out[5] == "['Groups:']")
    }

    @Test(
        "from the host the workload runs as its mapped uid (not 0, not 1000); its range is recorded and freed on delete"
    )
    func hostView() throws {
        let c = try TestContainer(
            "userns-host",
            bundle: try Harness.pythonBundle(["python3", "-c", "import time; time.sleep(60)"]) { spec in
                Self.userns(&spec)
                spec.process?.user = User(uid: 1000, gid: 1000)
            })
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        #expect(try c.start().status == 0)
        let pid = try #require(c.pid)
        let range = try Self.hostRange(pid: pid)
        #expect(range.size == 65536)
        #expect(range.host != 0 && range.host >= 65536)
        let uids = try Self.status(pid, "Uid")
        let gids = try Self.status(pid, "Gid")
        #expect(uids == Array(repeating: "\(range.host + 1000)", count: 4))
        #expect(gids == Array(repeating: "\(range.host + 1000)", count: 4))
        #expect(!uids.contains("0") && !uids.contains("1000"))
        #expect(try Self.status(pid, "Groups") == [])
        let allocator = try RuntimeConfiguration.load().idAllocator
        let owner = c.root + "/" + c.id
        #expect(try allocator.allocation(owner: owner)?.hostID == range.host)
        #expect(try c.delete(force: true).status == 0)
        #expect(try allocator.allocation(owner: owner) == nil)
        #expect(c.leftovers().isEmpty)
    }

    @Test("two sandboxes get disjoint ranges; both come back after delete")
    func disjoint() throws {
        let a = try TestContainer("userns-a", bundle: try Harness.pythonBundle(["sleep", "60"]) { Self.userns(&$0) })
        let b = try TestContainer("userns-b", bundle: try Harness.pythonBundle(["sleep", "60"]) { Self.userns(&$0) })
        defer {
            a.destroy()
            b.destroy()
        }
        #expect(try a.create().status == 0)
        #expect(try b.create().status == 0)
        let ra = try Self.hostRange(pid: try #require(a.pid))
        let rb = try Self.hostRange(pid: try #require(b.pid))
        let ga = try Self.hostRange(pid: try #require(a.pid), map: "gid_map")
        #expect(ra == ga)
        #expect(ra.host + ra.size <= rb.host || rb.host + rb.size <= ra.host, "\(ra) overlaps \(rb)")
        let allocator = try RuntimeConfiguration.load().idAllocator
        #expect(try a.delete(force: true).status == 0)
        #expect(try b.delete(force: true).status == 0)
        // By owner, not by host id: tests running in parallel may be handed a range just freed.
        #expect(try allocator.allocation(owner: a.root + "/" + a.id) == nil)
        #expect(try allocator.allocation(owner: b.root + "/" + b.id) == nil)
    }

    @Test(
        "uid 0 inside, with every capability in its namespace, cannot load a module, mount the host's disk or change the host's hostname"
    )
    func rootInside() throws {
        let hostname = Harness.hostname()
        // The host's root file system device, bound into the sandbox and allowed by its cgroup:
        // only the user namespace stands between uid 0 and mounting it.
        var rootStat = stat()
        stat("/", &rootStat)
        let disk = try FileManager.default.contentsOfDirectory(atPath: "/dev").map { "/dev/" + $0 }.first { path in
            var st = stat()
            return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFBLK && st.st_rdev == rootStat.st_dev
        }
        let script = """
            echo "uid=$(id -u)"; grep CapEff /proc/self/status
            insmod /bin/busybox 2>&1; echo "insmod=$?"
            mount -t ext4 \(disk ?? "/dev/vda") /tmp 2>&1; echo "mount=$?"
            mount -t ext4 -o ro \(disk ?? "/dev/vda") /tmp 2>&1; echo "mount-ro=$?"
            hostname sandboxed-\(getpid()) && echo "hostname=$(hostname)"
            """
        let c = try TestContainer(
            "userns-root",
            bundle: try Harness.busyboxBundle(["sh", "-c", script]) { spec in
                Self.userns(&spec)
                let caps = Self.allCapabilities
                spec.process?.capabilities = Capabilities(
                    bounding: caps, effective: caps, inheritable: caps, permitted: caps, ambient: caps)
                spec.process?.noNewPrivileges = false
                if let disk {
                    let major = Int64(rootStat.st_dev >> 8 & 0xfff)
                    let minor = Int64((rootStat.st_dev & 0xff) | (rootStat.st_dev >> 12 & 0xfff00))
                    spec.linux?.devices = [
                        Device(type: "b", path: disk, major: major, minor: minor, fileMode: 0o660, uid: 0, gid: 0)
                    ]
                }
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        let out = r.stdout
        #expect(out.contains("uid=0"))
        #expect(out.contains("CapEff:\t000001ffffffffff"), "\(out)")
        // CAP_SYS_MODULE counts only in the initial user namespace: EPERM. A kernel built
        // without loadable modules (no /proc/modules) answers ENOSYS to everyone first.
        let moduleError =
            FileManager.default.fileExists(atPath: "/proc/modules")
            ? "Operation not permitted" : "kernel does not support requested operation"
        #expect(out.contains("insmod: can't insert '/bin/busybox': \(moduleError)"), "\(out)")
        #expect(out.contains("insmod=") && !out.contains("insmod=0"), "\(out)")
        // ext4 cannot be mounted from a user namespace (no FS_USERNS_MOUNT), device or not.
        // (busybox words EPERM as "permission denied (are you root?)": it is root, in its namespace.)
        #expect(out.contains("mount: permission denied"), "\(out)")
        #expect(!out.contains("mount=0") && !out.contains("mount-ro=0"), "\(out)")
        #expect(out.contains("hostname=sandboxed-\(getpid())"))
        #expect(Harness.hostname() == hostname)
        #expect(c.leftovers().isEmpty)
    }

    @Test("a crashed sandbox's range is recovered: its state gone and its creator dead")
    func recoveredAfterCrash() throws {
        let c = try TestContainer(
            "userns-crash", bundle: try Harness.pythonBundle(["sleep", "60"]) { Self.userns(&$0) })
        defer { c.destroy() }
        #expect(try c.create().status == 0)
        let pid = try #require(c.pid)
        let range = try Self.hostRange(pid: pid)
        // A crash: the sandbox dies and its state directory is lost without a delete.
        kill(pid, SIGKILL)
        _ = Harness.eventually { c.status == "stopped" }
        try FileManager.default.removeItem(atPath: c.root + "/" + c.id + "/state.json")
        let config = try RuntimeConfiguration.load()
        let probe = IDAllocator(
            directory: config.idAllocator.directory, firstHostID: config.idAllocator.firstHostID,
            ranges: config.idAllocator.ranges)
        // The next allocation sweeps it (the creating `safespace-runtime create` has exited).
        let other = try Harness.tempDir("userns-owner")
        defer { Harness.cleanup(other) }
        _ = FileManager.default.createFile(atPath: other + "/state.json", contents: Data("{}".utf8))
        _ = try probe.allocate(owner: other)
        #expect(try probe.allocation(owner: c.root + "/" + c.id) == nil)
        try probe.release(owner: other)
        _ = range
        // The cgroup the crash left behind is force-deleted with the directory.
        let cg = try Harness.run("/usr/bin/find", ["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", c.id])
            .stdout
        for dir in lines(cg).sorted(by: { $0.count > $1.count }) { rmdir(dir) }
        _ = try? c.delete(force: true)
    }
}
