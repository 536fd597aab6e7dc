import Foundation
import Glibc
import Testing

@testable import Runtime

/// The hot verbs' parser (issue 17): the plain command lines containerd, podman and CRI send
/// are read without reflection; every other form is left to ArgumentParser (nil), so that its
/// answer, and every refusal, stays the full parser's.
struct RuncArgumentsTests {
    private func parse(_ words: [String]) -> RuncInvocation? {
        RuncInvocation.parse(["safespace-runtime"] + words)
    }

    private func globals(
        root: String = RuncGlobalOptions.defaultRoot, log: String? = nil, format: String = "text", debug: Bool = false,
        systemdCgroup: Bool = false
    ) -> RuncGlobalOptions {
        var g = RuncGlobalOptions()
        g.root = root
        g.log = log
        g.logFormat = format
        g.debug = debug
        g.systemdCgroup = systemdCgroup
        return g
    }

    @Test("containerd's create: globals before the verb, every create flag, the id last")
    func containerdCreate() throws {
        let line = [
            "--root", "/run/containerd/runc/k8s.io", "--log", "/run/x/log.json", "--log-format", "json", "create",
            "--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "--console-socket", "/tmp/pty.sock",
            "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "c1",
        ]
        var flags = RuncCreateFlags()
        flags.bundle = "/run/b"
        flags.pidFile = "/run/b/init.pid"
        flags.consoleSocket = "/tmp/pty.sock"
        flags.noPivot = true
        flags.noNewKeyring = true
        flags.preserveFds = 2
        let expected = RuncInvocation.create(
            globals(root: "/run/containerd/runc/k8s.io", log: "/run/x/log.json", format: "json"), flags, id: "c1")
        #expect(parse(line) == expected)
        #expect(flags.options.preserveFds == 2 && flags.options.pidFile == "/run/b/init.pid")
    }

    @Test("=forms, short names, globals after the verb, options after the id")
    func forms() {
        var flags = RuncCreateFlags()
        flags.bundle = "/b"
        flags.pidFile = "/p"
        #expect(
            parse(["run", "--root=/r", "-b", "/b", "c1", "--pid-file=/p", "-d", "--keep", "--debug"])
                == .run(globals(root: "/r", debug: true), flags, detach: true, keep: true, id: "c1"))
        flags = RuncCreateFlags()
        flags.bundle = "/b"
        #expect(parse(["create", "--bundle=/b", "c1"]) == .create(globals(), flags, id: "c1"))
        #expect(parse(["--log-format=json", "start", "c1"]) == .start(globals(format: "json"), id: "c1"))
        #expect(parse(["state", "c1"]) == .state(globals(), id: "c1"))
        #expect(parse(["delete", "-f", "c1"]) == .delete(globals(), force: true, id: "c1"))
        #expect(parse(["delete", "c1", "--force"]) == .delete(globals(), force: true, id: "c1"))
        #expect(parse(["delete", "c1"]) == .delete(globals(), force: false, id: "c1"))
        #expect(parse(["kill", "c1"]) == .kill(globals(), all: false, id: "c1", signal: "SIGTERM"))
        #expect(parse(["kill", "--all", "c1", "KILL"]) == .kill(globals(), all: true, id: "c1", signal: "KILL"))
        #expect(parse(["kill", "-a", "c1", "9"]) == .kill(globals(), all: true, id: "c1", signal: "9"))
        // An id equal to a verb's name is an id once the verb is read.
        #expect(parse(["state", "create"]) == .state(globals(), id: "create"))
        // --systemd-cgroup is read here and refused by the verb (naming the flag), as before.
        #expect(parse(["--systemd-cgroup", "state", "c1"]) == .state(globals(systemdCgroup: true), id: "c1"))
        // A log format other than text/json is the verb's to refuse, as before.
        #expect(parse(["--log-format", "xml", "state", "c1"]) == .state(globals(format: "xml"), id: "c1"))
    }

    @Test(
        "help, version, other verbs and every malformed line go to the full parser",
        arguments: [
            [], ["--help"], ["-h"], ["help"], ["help", "create"], ["create", "--help"], ["create", "-h", "c1"],
            ["-v"], ["--version"], ["--root", "/r", "--version"], ["exec", "c1", "ls"], ["list"], ["ps", "c1"],
            ["spec"], ["features"], ["update", "c1"], ["events", "c1"], ["pause", "c1"], ["checkpoint", "c1"],
            ["nosuchverb", "c1"], ["init"],
            // unknown options, and options of another verb
            ["create", "--bogus", "c1"], ["--bogus", "state", "c1"], ["start", "--bundle", "/b", "c1"],
            ["state", "--force", "c1"], ["delete", "--all", "c1"], ["kill", "--force", "c1"], ["create", "-d", "c1"],
            ["create", "--keep", "c1"], ["--bundle", "/b", "create", "c1"], ["-b", "/b", "create", "c1"],
            // hidden globals
            ["--criu", "/c", "state", "c1"], ["--rootless", "state", "c1"],
            // missing, empty or dash-led values; a value on a boolean flag; single-dash =forms
            ["create", "c1", "--bundle"], ["create", "--bundle=", "c1"], ["create", "--bundle", "", "c1"],
            ["--root", "state", "c1"], ["create", "--pid-file", "-x", "c1"], ["delete", "--force=true", "c1"],
            ["run", "--detach=false", "c1"], ["create", "-b=/b", "c1"], ["create", "-bx", "c1"],
            ["run", "-dk", "c1"],
            // repeated options, under one name or both
            ["--root", "/a", "--root", "/b", "state", "c1"], ["--root=/a", "state", "--root", "/b", "c1"],
            ["create", "-b", "/a", "--bundle", "/b", "c1"], ["delete", "-f", "--force", "c1"],
            ["--debug", "state", "--debug", "c1"],
            // --preserve-fds that is not a number
            ["create", "--preserve-fds", "two", "c1"], ["create", "--preserve-fds", "-1", "c1"],
            // arguments: none, too many, empty, dash-led, after `--`
            ["create"], ["state"], ["start", "a", "b"], ["delete", "a", "b"], ["kill", "a", "KILL", "x"],
            ["state", ""], ["kill", "c1", "-9"], ["state", "--", "c1"], ["--root", "/r"],
        ])
    func fallsBack(words: [String]) {
        #expect(parse(words) == nil, "\(words)")
    }

    @Test("the verbs read here are exactly runc's lifecycle verbs")
    func verbs() {
        #expect(RuncInvocation.verbs == ["create", "run", "start", "state", "kill", "delete"])
    }
}

/// `list`'s owner column reads /etc/passwd itself (the release binary is static: no NSS).
struct PasswdNameTests {
    @Test("the first entry with the uid names it; none, a bad line or no file gives nil")
    func names() throws {
        let path = "/tmp/safespace-passwd-test-\(getpid())"
        defer { unlink(path) }
        let text =
            "# comment\nbroken\nroot:x:0:0:root:/root:/bin/bash\n:x:5:5::/:/bin/sh\nbin:x:2:2::/:/bin/sh\nalias:x:2:2::/:/bin/sh\n"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        #expect(ContainerRuntime.passwdName(uid: 0, passwd: path) == "root")
        #expect(ContainerRuntime.passwdName(uid: 2, passwd: path) == "bin")
        #expect(ContainerRuntime.passwdName(uid: 5, passwd: path) == nil)
        #expect(ContainerRuntime.passwdName(uid: 1000, passwd: path) == nil)
        #expect(ContainerRuntime.passwdName(uid: 0, passwd: path + ".missing") == nil)
    }
}
