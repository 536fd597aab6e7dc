import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// File descriptors: none of the caller's reach the workload, and a `cwd` through a leaked
/// directory fd cannot leave the root (CVE-2024-21626, runc's "Leaky Vessels").
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeFdTests {
    /// Lines of `text` between the line `start` and the next line starting with `end`.
    func section(_ text: String, from start: String, to end: String = "end") -> [String] {
        var out: [String] = []
        var inside = false
        for l in lines(text) {
            if l == start {
                inside = true
                continue
            }
            if inside && l.hasPrefix(end) { break }
            if inside { out.append(l) }
        }
        return out
    }

    @Test("the workload's shell has only fds 0, 1 and 2")
    func onlyStdio() throws {
        let (r, left) = try Harness.runScript("ls /proc/$$/fd; echo end; ls -l /proc/$$/fd")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(section("start\n" + r.stdout, from: "start") == ["0", "1", "2"], "\(r.stdout)")
        #expect(left.isEmpty, "\(left)")
    }

    @Test("an fd the caller leaks to the runtime (no O_CLOEXEC) does not reach the workload")
    func callerFdDoesNotLeak() throws {
        // open(2) without O_CLOEXEC: every exec of the test process's children keeps it.
        let leaked = open("/etc/hostname", O_RDONLY)
        try #require(leaked >= 0)
        defer { close(leaked) }
        let c = try TestContainer(
            "fdleak",
            bundle: try Harness.busyboxBundle([
                "sh", "-c", "echo container-fds; ls /proc/$$/fd; echo end; ls -l /proc/$$/fd",
            ]))
        defer { c.destroy() }
        // A host shell proves the fd is inherited, then execs the runtime with it still open.
        let r = try Harness.spawn(
            [
                "/bin/sh", "-c", "echo host-fds; ls /proc/$$/fd; echo end; exec \"$@\"", "sh",
                Harness.runtimeBinary, "--root", c.root, "run", "--bundle", c.bundle, c.id,
            ],
            inherit: [(leaked, leaked)])
        #expect(r.status == 0, "\(r.stderr)")
        let host = section(r.stdout, from: "host-fds")
        try #require(host.contains("\(leaked)"), "the runtime did not inherit fd \(leaked): \(r.stdout)")
        #expect(section(r.stdout, from: "container-fds") == ["0", "1", "2"], "\(r.stdout)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "an fd the caller leaks to `create` is not held by the created container's init (runc marks them O_CLOEXEC before spawning its init)"
    )
    func callerFdNotHeldByCreatedInit() throws {
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        let c = try TestContainer("fdheld", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        // The write end goes to `create` as fd 3, as Foundation.Process's exit-detection socket
        // or a caller's pipe would.
        let r = try Harness.spawn(
            [Harness.runtimeBinary, "--root", c.root, "create", "--bundle", c.bundle, c.id], inherit: [(writeEnd, 3)])
        close(writeEnd)
        try #require(r.status == 0, "\(r.stderr)")
        let pid = try #require(c.pid)
        // `create` has exited; if nobody else holds the write end, the read end is at EOF.
        var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, 0)
        let heldBy = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).sorted()
            .map {
                "\($0) -> "
                    + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "?")
            }
        #expect(
            pfd.revents & Int16(POLLHUP) != 0,
            "the created container's init (pid \(pid)) still holds the caller's fd: \(heldBy)")
        #expect(try c.start().status == 0)
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    /// The host's directory that the leaked fds point at, with a marker file in it.
    static func markerDir() throws -> String {
        let dir = try Harness.tempDir("cve-host")
        try "host".write(toFile: dir + "/cve-marker", atomically: true, encoding: .utf8)
        return dir
    }

    @Test(
        "cwd /proc/self/fd/N (N in 3…20) with the runtime holding a host directory at every such N is refused or stays inside the root (CVE-2024-21626)",
        arguments: Array(3...20))
    func cwdThroughLeakedFd(n: Int) throws {
        let hostDir = try Self.markerDir()
        defer { Harness.cleanup(hostDir) }
        // A directory of the host, open without O_CLOEXEC, duplicated onto fds 3…20 of the runtime
        // (the shape of runc's leaked cgroup fd): the init inherits them unless it closes them.
        let dirFd = open(hostDir, O_RDONLY | O_DIRECTORY)
        try #require(dirFd >= 0)
        defer { close(dirFd) }
        let escape =
            "ls cve-marker >/dev/null 2>&1 && echo ESCAPED-CWD; ls ../../../../../../../../../..\(hostDir)/cve-marker >/dev/null 2>&1 && echo ESCAPED-DOTDOT; echo cwd=$(pwd)"
        // /proc/1/fd/N is the same directory for the container's init (PID 1) but no string
        // check on "/proc/self/fd" catches it.
        for cwd in ["/proc/self/fd/\(n)", "/proc/1/fd/\(n)", "/proc/thread-self/fd/\(n)"] {
            let c = try TestContainer(
                "cve",
                bundle: try Harness.busyboxBundle(["sh", "-c", escape]) { spec in
                    spec.process?.cwd = cwd
                })
            defer { c.destroy() }
            let r = try Harness.spawn(
                [Harness.runtimeBinary, "--root", c.root, "run", "--bundle", c.bundle, c.id],
                inherit: (3...20).map { (dirFd, Int32($0)) })
            #expect(!r.stdout.contains("ESCAPED"), "cwd \(cwd) reached the host: \(r.stdout)")
            if r.status == 0 {
                // It ran: then its working directory is inside the container's root.
                #expect(r.stdout.contains("cwd=/"), "\(r.stdout)")
                #expect(!r.stdout.contains(hostDir), "\(r.stdout)")
            } else {
                #expect(r.stderr.contains("cwd"), "cwd \(cwd) failed without naming process.cwd: \(r.stderr)")
            }
            #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        }
    }

    @Test("a cwd through /proc/self/fd is refused at create, before the container is reported created")
    func cwdThroughFdRefusedAtCreate() throws {
        let c = try TestContainer(
            "cvecreate",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.process?.cwd = "/proc/self/fd/7"
            })
        defer { c.destroy() }
        let r = try c.create()
        #expect(r.status != 0, "create accepted cwd /proc/self/fd/7; it is refused only when the workload starts")
        #expect(r.stderr.contains("process.cwd"), "\(r.stderr)")
        if r.status != 0 { #expect(c.leftovers().isEmpty, "\(c.leftovers())") }
    }
}
