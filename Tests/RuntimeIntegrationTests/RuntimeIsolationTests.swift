import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// What a workload sees from inside a real container (busybox, or the Python rootfs), checked
/// from inside (its own output) and outside (the host after `run`).
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeIsolationTests {
    // MARK: identity

    @Test("uid/gid 1000 with additionalGids [] has exactly group 1000, none of the caller's")
    func noSupplementaryGroups() throws {
        let (r, left) = try Harness.runScript("id -u; id -G; grep '^Groups:' /proc/self/status") { spec in
            spec.process?.user = User(uid: 1000, gid: 1000, additionalGids: [])
        }
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        #expect(out.count == 3, "\(r.stdout)")
        #expect(out.first == "1000")
        #expect(out.dropFirst().first == "1000", "id -G: \(r.stdout)")
        // The kernel's list of supplementary groups is empty.
        #expect(out.last == "Groups:", "\(r.stdout)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("additionalGids [1000, 5] gives exactly those groups")
    func explicitSupplementaryGroups() throws {
        let (r, left) = try Harness.runScript("id -G; grep '^Groups:' /proc/self/status") { spec in
            spec.process?.user = User(uid: 1000, gid: 1000, additionalGids: [1000, 5])
        }
        #expect(r.status == 0, "\(r.stderr)")
        let out = lines(r.stdout)
        try #require(out.count == 2, "\(r.stdout)")
        #expect(Set(out[0].split(separator: " ").map(String.init)) == ["1000", "5"], "id -G: \(out[0])")
        let kernel = out[1].dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(
            String.init)
        #expect(kernel.sorted() == ["1000", "5"], "\(out[1])")
        #expect(left.isEmpty, "\(left)")
    }

    // MARK: file system

    @Test(
        "read-only root: EROFS under /, tmpfs /tmp and /workspace writable, size=1m gives ENOSPC, /dev/shm nosuid,nodev,noexec"
    )
    func readonlyRootAndTmpfs() throws {
        let script = """
            touch /x 2>&1 && echo ROOT-WRITABLE
            echo a > /tmp/a && echo tmp-ok
            echo b > /workspace/b && echo workspace-ok
            dd if=/dev/zero of=/tmp/big bs=1k count=2048 2>&1 && echo NO-ENOSPC
            echo c > /dev/shm/c && echo shm-ok
            grep ' /dev/shm ' /proc/self/mountinfo
            """
        let (r, left) = try Harness.runScript(script) { spec in
            spec.root?.readonly = true
            spec.mounts! += [
                Mount(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "size=1m"]),
                Mount(
                    destination: "/workspace", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "size=1m"]),
            ]
        }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Read-only file system"), "\(r.stdout)")
        #expect(!r.stdout.contains("ROOT-WRITABLE"))
        #expect(r.stdout.contains("tmp-ok") && r.stdout.contains("workspace-ok"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("No space left on device"), "\(r.stdout)")
        #expect(!r.stdout.contains("NO-ENOSPC"))
        #expect(r.stdout.contains("shm-ok"), "\(r.stderr)")
        let shm = try #require(lines(r.stdout).first { $0.contains(" /dev/shm ") }, "\(r.stdout)")
        let perMount = shm.split(separator: " ")[5].split(separator: ",")
        for flag in ["nosuid", "nodev", "noexec"] { #expect(perMount.contains(Substring(flag)), "\(shm)") }
        #expect(left.isEmpty, "\(left)")
    }

    @Test("the host's root file system is not written through the container's read-only root")
    func rootfsUntouched() throws {
        let bundle = try Harness.busyboxBundle(["sh", "-c", "echo x > /etc/passwd; echo y > /newfile; true"])
        let c = try TestContainer("rofs", bundle: bundle)
        defer { c.destroy() }
        let before = try String(contentsOfFile: bundle + "/rootfs/etc/passwd", encoding: .utf8)
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: bundle + "/rootfs/etc/passwd", encoding: .utf8) == before)
        #expect(!FileManager.default.fileExists(atPath: bundle + "/rootfs/newfile"))
    }

    // MARK: processes and UTS

    @Test("the workload is PID 1 and its hostname is spec.hostname; the host's hostname is unchanged")
    func pidOneAndHostname() throws {
        let host = Harness.hostname()
        let (r, left) = try Harness.runScript("echo $$; hostname") { spec in spec.hostname = "ss-inner-host" }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(lines(r.stdout) == ["1", "ss-inner-host"])
        #expect(Harness.hostname() == host)
        #expect(left.isEmpty, "\(left)")
    }

    @Test("hostname without a uts namespace is refused naming `hostname`; the host's hostname never changes")
    func hostnameNeedsUTS() throws {
        let host = Harness.hostname()
        let c = try TestContainer(
            "nouts",
            bundle: try Harness.busyboxBundle(["hostname"]) { spec in
                spec.hostname = "must-not-leak"
                spec.linux?.namespaces?.removeAll { $0.type == "uts" }
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("hostname"), "\(r.stderr)")
        #expect(!r.stdout.contains("must-not-leak"))
        #expect(Harness.hostname() == host)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: privileges

    @Test("empty capability sets give CapEff 0, and noNewPrivileges gives NoNewPrivs 1")
    func capabilitiesAndNoNewPrivs() throws {
        let (r, left) = try Harness.runScript(
            "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status"
        ) { spec in
            spec.process?.capabilities = Capabilities(
                bounding: [], effective: [], inheritable: [], permitted: [], ambient: [])
            spec.process?.noNewPrivileges = true
        }
        #expect(r.status == 0, "\(r.stderr)")
        var fields: [String: String] = [:]
        for l in lines(r.stdout) {
            let kv = l.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(fields[set] == "0000000000000000", "\(set): \(fields[set] ?? "missing")")
        }
        #expect(fields["NoNewPrivs"] == "1")
        #expect(left.isEmpty, "\(left)")
    }

    // MARK: network

    @Test("only lo, up with 127.0.0.1; a server on 127.0.0.1 answers a client in the same container")
    func loopbackOnly() throws {
        let script = """
            ip -o addr
            echo ---
            tail -n +3 /proc/net/dev | cut -d: -f1
            echo ---
            # The server answers every connection: a client that connected before the answer
            # was written (its stdin is empty, so it may close first) must not use it up.
            (while true; do echo hello-loopback | nc -l -p 8080; done &)
            for i in $(seq 200); do out=$(nc 127.0.0.1 8080 </dev/null 2>/dev/null) && [ -n "$out" ] && break; usleep 50000; done
            echo "got:$out"
            """
        let (r, left) = try Harness.runScript(script)
        #expect(r.status == 0, "\(r.stderr)")
        let parts = r.stdout.components(separatedBy: "---\n")
        try #require(parts.count == 3, "\(r.stdout)")
        let ifaces = Set(lines(parts[0]).compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) })
        #expect(ifaces == ["lo"], "\(parts[0])")
        #expect(parts[0].contains("inet 127.0.0.1/8"), "\(parts[0])")
        #expect(lines(parts[1]) == ["lo"], "/proc/net/dev: \(parts[1])")
        #expect(parts[2].contains("got:hello-loopback"), "\(parts[2])\(r.stderr)")
        #expect(left.isEmpty, "\(left)")
    }

    // MARK: /proc

    @Test("masked /proc paths read empty; /proc/sys and /proc/sysrq-trigger are read-only")
    func procMaskedAndReadonly() throws {
        // This kernel has no /proc/kcore or /proc/sysrq-trigger; check the paths that exist.
        let masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"].filter {
            FileManager.default.fileExists(atPath: $0)
        }
        try #require(!masked.isEmpty, "no maskable /proc file on this host")
        var script = masked.map { "echo \"\($0)=$(cat \($0) 2>/dev/null | wc -c)\"" }.joined(separator: "\n")
        script +=
            "\n{ echo x > /proc/sys/kernel/hostname; } 2>&1 || true; echo \"kernel.hostname=$(cat /proc/sys/kernel/hostname)\""
        let hasSysrq = FileManager.default.fileExists(atPath: "/proc/sysrq-trigger")
        // 'h' only prints help to the kernel log if the write were to get through.
        if hasSysrq { script += "\n{ echo h > /proc/sysrq-trigger; } 2>&1 && echo SYSRQ-WRITABLE" }
        let (r, left) = try Harness.runScript(script) { spec in spec.hostname = "ss-proc" }
        #expect(r.status == 0, "\(r.stderr)")
        for path in masked { #expect(r.stdout.contains("\(path)=0"), "\(path) not empty: \(r.stdout)") }
        #expect(r.stdout.contains("Read-only file system"), "\(r.stdout)")
        #expect(r.stdout.contains("kernel.hostname=ss-proc"), "\(r.stdout)")
        if hasSysrq { #expect(!r.stdout.contains("SYSRQ-WRITABLE")) }
        #expect(left.isEmpty, "\(left)")
    }

    @Test(
        "a mount whose destination is under /proc is refused naming mounts[N].destination",
        arguments: ["/proc/self", "/proc/sys", "/proc/../proc/sys/kernel"])
    func mountUnderProcRefused(destination: String) throws {
        var index = -1
        let c = try TestContainer(
            "procmnt",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                index = spec.mounts!.count
                spec.mounts!.append(
                    Mount(destination: destination, type: "tmpfs", source: "tmpfs", options: ["size=1m"]))
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status != 0)
        #expect(r.stderr.contains("mounts[\(index)].destination"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    // MARK: Python rootfs

    @Test(
        "python rootfs: read-only root, writable tmpfs /tmp and /workspace",
        .enabled(if: Harness.hasPythonRootfs, "no python rootfs"))
    func pythonReadonly() throws {
        let code = """
            import errno, os
            for p in ["/x", "/usr/lib/x"]:
                try:
                    open(p, "w")
                    print("WRITABLE", p)
                except OSError as e:
                    print("erofs" if e.errno == errno.EROFS else "other", p, e.strerror)
            for d in ["/tmp", "/workspace"]:
                with open(d + "/f", "w") as f:
                    f.write("ok")
                print("wrote", d)
            """
        let (r, left) = try Harness.runPython(["python3", "-c", code])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("erofs /x Read-only file system"), "\(r.stdout)")
        #expect(r.stdout.contains("erofs /usr/lib/x"), "\(r.stdout)")
        #expect(!r.stdout.contains("WRITABLE"))
        #expect(r.stdout.contains("wrote /tmp") && r.stdout.contains("wrote /workspace"), "\(r.stdout)")
        #expect(left.isEmpty, "\(left)")
        #expect(!FileManager.default.fileExists(atPath: Harness.pythonRootfs + "/workspace/f"))
        #expect(!FileManager.default.fileExists(atPath: Harness.pythonRootfs + "/tmp/f"))
    }

    @Test(
        "python rootfs: http.server on 127.0.0.1 answers urllib in the same container",
        .enabled(if: Harness.hasPythonRootfs, "no python rootfs"))
    func pythonLoopbackHTTP() throws {
        let code = """
            import http.server, threading, urllib.request
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = b"served-from-inside"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *a):
                    pass
            srv = http.server.HTTPServer(("127.0.0.1", 0), H)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            url = "http://127.0.0.1:%d/" % srv.server_address[1]
            print(urllib.request.urlopen(url, timeout=30).read().decode())
            try:
                urllib.request.urlopen("http://1.1.1.1/", timeout=5)
                print("EXTERNAL-REACHABLE")
            except Exception as e:
                print("external-unreachable")
            """
        let (r, left) = try Harness.runPython(["python3", "-c", code])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("served-from-inside"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("external-unreachable"), "\(r.stdout)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test(
        "python rootfs: a write past a tmpfs size=1m gets ENOSPC",
        .enabled(if: Harness.hasPythonRootfs, "no python rootfs"))
    func pythonTmpfsFull() throws {
        let code = """
            import errno
            try:
                with open("/workspace/big", "wb") as f:
                    f.write(b"\\0" * (2 << 20))
                print("NO-ENOSPC")
            except OSError as e:
                print("enospc" if e.errno == errno.ENOSPC else "other", e.strerror)
            """
        let c = try TestContainer(
            "pyfull",
            bundle: try Harness.pythonBundle(["python3", "-c", code], tmpOptions: ["nosuid", "nodev", "size=1m"]))
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("enospc No space left on device"), "\(r.stdout)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
