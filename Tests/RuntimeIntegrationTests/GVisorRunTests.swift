import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// `run` at the gVisor level (issue 17): the runtime hands runsc the whole run, one
/// `runsc run --detach`, instead of `runsc create` then `runsc start`, unless a prestart or
/// createRuntime hook has to run between the two. runsc is a logging wrapper of the installed
/// one (the configuration's `gvisor.runsc`), so the tests see every runsc invocation.
@Suite(
    "gVisor run",
    .enabled(if: GVisor.available, "needs root, runsc (apt-get install runsc) and the python rootfs (scripts/setup)"))
struct GVisorRunTests {
    /// A directory with `runsc` (appends its arguments, one invocation a line, to `calls`, then
    /// execs the real runsc) and `runtime.json` naming it.
    struct LoggedRunsc {
        let dir: String
        var calls: String { dir + "/calls" }
        var config: String { dir + "/runtime.json" }

        init() throws {
            dir = try Harness.tempDir("gv-run")
            let wrapper = dir + "/runsc"
            try "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '\(calls)'\nexec '\(GVisor.runsc!)' \"$@\"\n".write(
                toFile: wrapper, atomically: true, encoding: .utf8)
            chmod(wrapper, 0o755)
            try #"{"gvisor": {"runsc": "\#(wrapper)"}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        }

        /// The verbs of the invocations on container `id` (those with the id as an argument), in order.
        func verbs(_ id: String) -> [String] {
            let text = (try? String(contentsOfFile: calls, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap { line in
                let words = line.split(separator: " ").map(String.init)
                guard words.contains(id) else { return nil }
                // After the global flags (--flag value pairs and --oci-seccomp): the verb.
                var i = 0
                while i < words.count, words[i].hasPrefix("--") { i += words[i] == "--oci-seccomp" ? 1 : 2 }
                return i < words.count ? words[i] : nil
            }
        }

        func runtime(_ args: [String]) throws -> Harness.Result {
            try GVisor.runtime(root: dir + "/root", args, env: ["SAFESPACE_RUNTIME_CONFIG": config])
        }
    }

    @Test("run is one runsc run --detach: the workload's stdout, stderr, exit status and pid file; nothing left")
    func runAtOnce() throws {
        let runsc = try LoggedRunsc()
        defer { Harness.cleanup(runsc.dir) }
        let bundle = try GVisor.bundle(["sh", "-c", "echo out; echo err >&2; exit 3"])
        defer { Harness.cleanup(bundle) }
        let id = Harness.uniqueID("gv-run")
        let pidFile = runsc.dir + "/pid"
        let r = try runsc.runtime(["run", "--pid-file", pidFile, "--bundle", bundle, id])
        #expect(r.status == 3, "\(r.stderr)")
        #expect(r.stdout == "out\n")
        #expect(r.stderr.contains("err"), "\(r.stderr)")
        #expect(runsc.verbs(id) == ["run"], "\(runsc.verbs(id))")
        let calls = (try? String(contentsOfFile: runsc.calls, encoding: .utf8)) ?? ""
        #expect(calls.contains("run --detach --bundle "), "\(calls)")
        let pid = try String(contentsOfFile: pidFile, encoding: .utf8)
        #expect(Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 0, "\(pid)")
        #expect(Harness.leftovers(id: id, root: runsc.dir + "/root").isEmpty)
        #expect(GVisor.runscProcesses(id).isEmpty)
    }

    @Test("run --detach: one runsc run --detach, the container running until it is killed and deleted")
    func runDetached() throws {
        let runsc = try LoggedRunsc()
        defer { Harness.cleanup(runsc.dir) }
        let bundle = try GVisor.bundle(["sleep", "1000"])
        defer { Harness.cleanup(bundle) }
        let id = Harness.uniqueID("gv-rund")
        let r = try runsc.runtime(["run", "--detach", "--bundle", bundle, id])
        #expect(r.status == 0, "\(r.stderr)")
        let state = try runsc.runtime(["state", id])
        #expect(state.stdout.contains("\"running\""), "\(state.stdout)")
        #expect(try runsc.runtime(["kill", id, "KILL"]).status == 0)
        var deleted = false
        for _ in 0..<100 where !deleted {
            deleted = try runsc.runtime(["delete", id]).status == 0
            if !deleted { usleep(50_000) }
        }
        #expect(deleted)
        #expect(runsc.verbs(id).prefix(2) == ["run", "kill"], "\(runsc.verbs(id))")
        #expect(Harness.leftovers(id: id, root: runsc.dir + "/root").isEmpty)
        #expect(GVisor.runscProcesses(id).isEmpty)
    }

    @Test("with a prestart hook, run keeps runsc create, the hook, then runsc start (runtime.md#lifecycle)")
    func runWithHook() throws {
        let runsc = try LoggedRunsc()
        defer { Harness.cleanup(runsc.dir) }
        let hook = runsc.dir + "/prestart.sh"
        try "#!/bin/sh\necho prestart >> '\(runsc.calls)'\n".write(toFile: hook, atomically: true, encoding: .utf8)
        chmod(hook, 0o755)
        let bundle = try GVisor.bundle(["sh", "-c", "echo ran"]) { $0.hooks = Hooks(prestart: [Hook(path: hook)]) }
        defer { Harness.cleanup(bundle) }
        let id = Harness.uniqueID("gv-runh")
        let r = try runsc.runtime(["run", "--bundle", bundle, id])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "ran\n")
        let lines = ((try? String(contentsOfFile: runsc.calls, encoding: .utf8)) ?? "").split(separator: "\n")
        let create = lines.firstIndex { $0.hasSuffix(" \(id)") && $0.contains(" create --bundle ") }
        let prestart = lines.firstIndex { $0 == "prestart" }
        let start = lines.firstIndex { $0.hasSuffix(" start \(id)") }
        #expect(create != nil && prestart != nil && start != nil, "\(lines)")
        if let create, let prestart, let start { #expect(create < prestart && prestart < start, "\(lines)") }
        #expect(!runsc.verbs(id).contains("run"), "\(runsc.verbs(id))")
        #expect(Harness.leftovers(id: id, root: runsc.dir + "/root").isEmpty)
    }
}
