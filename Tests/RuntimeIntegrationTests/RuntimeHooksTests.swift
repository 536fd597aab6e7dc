import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// OCI hooks run on the host (prestart, createRuntime, poststart, poststop): each receives the
/// state JSON on stdin with the container's id, pid and the status of its lifecycle point.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeHooksTests {
    /// A hook script that appends its name to `dir/order` and writes its stdin to `dir/<name>.json`.
    static func recorder(_ dir: String) throws -> String {
        try Harness.script(dir, "record.sh", "echo \"$1\" >> \(dir)/order\n/bin/cat > \(dir)/\"$1\".json")
    }

    static func hook(_ script: String, _ name: String) -> Hook { Hook(path: script, args: [script, name]) }

    static func read(_ dir: String, _ name: String) -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: dir + "/\(name).json") else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    static func order(_ dir: String) -> [String] {
        lines((try? String(contentsOfFile: dir + "/order", encoding: .utf8)) ?? "")
    }

    @Test("prestart, createRuntime, poststart and poststop get the state JSON at their lifecycle points")
    func lifecycleHooks() throws {
        try Self.checkLifecycleHooks("hooks") { try Harness.busyboxBundle(["sleep", "1000"], edit: $0) }
    }

    /// Creates, starts and force-deletes a container running `sleep 1000` from `bundle` (made
    /// with the given spec edit) with a recorder at the four hooks run in the runtime
    /// namespace, and checks the state each got (runtime.md#state). The gVisor backend's test
    /// runs it too.
    static func checkLifecycleHooks(_ prefix: String, bundle: ((inout Spec) -> Void) throws -> String) throws {
        let dir = try Harness.tempDir("hooks")
        defer { Harness.cleanup(dir) }
        let rec = try Self.recorder(dir)
        let c = try TestContainer(
            prefix,
            bundle: try bundle { spec in
                spec.hooks = Hooks(
                    prestart: [Self.hook(rec, "prestart")], createRuntime: [Self.hook(rec, "createRuntime")],
                    poststart: [Self.hook(rec, "poststart")], poststop: [Self.hook(rec, "poststop")])
                spec.annotations = (spec.annotations ?? [:]).merging(["org.example.key": "value"]) { $1 }
            })
        defer { c.destroy() }

        let cr = try c.create()
        try #require(cr.status == 0, "\(cr.stderr)")
        let pid = try #require(c.pid)
        #expect(Self.order(dir) == ["prestart", "createRuntime"])
        for name in ["prestart", "createRuntime"] {
            let s = try #require(Self.read(dir, name), "\(name) got no state")
            #expect(s["id"] as? String == c.id)
            #expect((s["pid"] as? NSNumber)?.int32Value == pid, "\(name): \(s)")
            #expect(s["status"] as? String == "creating", "\(name): \(s)")
            #expect(s["bundle"] as? String == c.bundle, "\(name): \(s)")
            #expect((s["annotations"] as? [String: String])?["org.example.key"] == "value")
            #expect((s["ociVersion"] as? String)?.hasPrefix("1.") == true)
        }

        let st = try c.start()
        try #require(st.status == 0, "\(st.stderr)")
        #expect(Self.order(dir) == ["prestart", "createRuntime", "poststart"])
        let post = try #require(Self.read(dir, "poststart"))
        #expect(post["id"] as? String == c.id)
        #expect((post["pid"] as? NSNumber)?.int32Value == pid)
        // runtime.md#lifecycle step 7-8: the workload runs before poststart (and sleeps on).
        #expect(post["status"] as? String == "running", "\(post)")

        let d = try c.delete(force: true)
        #expect(d.status == 0, "\(d.stderr)")
        #expect(Self.order(dir) == ["prestart", "createRuntime", "poststart", "poststop"])
        let stop = try #require(Self.read(dir, "poststop"))
        #expect(stop["id"] as? String == c.id)
        #expect(stop["status"] as? String == "stopped", "\(stop)")
        // runtime.md#state: pid is required only while created or running; stopped, the init is
        // gone and its number may be another process's, so there is none (as runc gives none).
        #expect(stop["pid"] == nil, "\(stop)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("the createRuntime hook runs while the init exists in its namespaces, before the workload starts")
    func createRuntimeSeesInit() throws {
        let dir = try Harness.tempDir("hooks")
        defer { Harness.cleanup(dir) }
        // The hook reads the pid from its state with sed and records the init's hostname ns and
        // whether the workload (sleep) already runs.
        let body = """
            state=$(/bin/cat)
            pid=$(echo "$state" | /bin/sed -n 's/.*"pid" *: *\\([0-9]*\\).*/\\1/p')
            /bin/readlink /proc/$pid/ns/uts > \(dir)/uts
            /bin/cat /proc/$pid/cmdline | /bin/tr '\\0' ' ' > \(dir)/cmdline
            """
        let script = try Harness.script(dir, "ns.sh", body)
        let c = try TestContainer(
            "hookns",
            bundle: try Harness.busyboxBundle(["sleep", "1000"]) { spec in
                spec.hooks = Hooks(createRuntime: [Hook(path: script)])
            })
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        let uts = try String(contentsOfFile: dir + "/uts", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        let hostUTS = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/uts")
        #expect(uts.hasPrefix("uts:["), "\(uts)")
        #expect(uts != hostUTS, "the init had no uts namespace of its own when createRuntime ran")
        let cmdline = try String(contentsOfFile: dir + "/cmdline", encoding: .utf8)
        #expect(!cmdline.hasPrefix("sleep"), "the workload already ran when createRuntime ran: \(cmdline)")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "createContainer and startContainer hooks run in the container's namespaces with its own view of the pid (1): creating, then created"
    )
    func containerNamespaceHooks() throws {
        let dir = try Harness.tempDir("hooks")
        defer { Harness.cleanup(dir) }
        let rec = try Self.recorder(dir)
        let c = try TestContainer(
            "hookctr",
            bundle: try Harness.busyboxBundle(["sleep", "1000"]) { spec in
                // startContainer runs after pivot_root: its path resolves in the container
                // (config.md#posix-platform-hooks); it leaves its state on the container's /dev/shm.
                spec.hooks = Hooks(
                    createContainer: [Self.hook(rec, "createContainer")],
                    startContainer: [Hook(path: "/startContainer.sh")])
            })
        defer { c.destroy() }
        _ = try Harness.script(c.bundle + "/rootfs", "startContainer.sh", "/bin/cat > /dev/shm/startContainer.json")

        let cr = try c.create()
        try #require(cr.status == 0, "\(cr.stderr)")
        let pid = try #require(c.pid)
        // runtime.md#state: "for hooks executed in the container namespace, it is the pid as
        // seen by the container"; the create operation is under way.
        let create = try #require(Self.read(dir, "createContainer"), "createContainer got no state")
        #expect(create["id"] as? String == c.id)
        #expect((create["pid"] as? NSNumber)?.int32Value == 1, "\(create)")
        #expect(create["status"] as? String == "creating", "\(create)")
        #expect(create["bundle"] as? String == c.bundle, "\(create)")

        let st = try c.start()
        try #require(st.status == 0, "\(st.stderr)")
        // Created, not yet running: startContainer runs before the workload is executed. The
        // init runs it once `start` has read the exec FIFO (as runc's does), so `start` may
        // return first: wait for the workload.
        #expect(
            Harness.eventually {
                ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").hasPrefix("sleep")
            })
        let data = try #require(
            FileManager.default.contents(atPath: "/proc/\(pid)/root/dev/shm/startContainer.json"),
            "startContainer got no state")
        let start = try #require(
            (try JSONSerialization.jsonObject(with: data)) as? [String: Any], "\(String(decoding: data, as: UTF8.self))"
        )
        #expect(start["id"] as? String == c.id)
        #expect((start["pid"] as? NSNumber)?.int32Value == 1, "\(start)")
        #expect(start["status"] as? String == "created", "\(start)")
        #expect(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("`run` runs poststop after the workload exits, with status stopped")
    func runPoststop() throws {
        let dir = try Harness.tempDir("hooks")
        defer { Harness.cleanup(dir) }
        let rec = try Self.recorder(dir)
        let c = try TestContainer(
            "hookrun",
            bundle: try Harness.busyboxBundle(["sh", "-c", "exit 4"]) { spec in
                spec.hooks = Hooks(poststart: [Self.hook(rec, "poststart")], poststop: [Self.hook(rec, "poststop")])
            })
        defer { c.destroy() }
        let r = try c.run()
        #expect(r.status == 4, "\(r.stderr)")
        #expect(Self.order(dir) == ["poststart", "poststop"])
        #expect(Self.read(dir, "poststop")?["status"] as? String == "stopped")
        #expect(
            Self.read(dir, "poststop").map { $0["pid"] == nil } == true,
            "\(String(describing: Self.read(dir, "poststop")))")
        #expect(Self.read(dir, "poststop")?["id"] as? String == c.id)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "a failing createRuntime hook fails create naming hooks.createRuntime[0]; later hooks do not run; nothing remains"
    )
    func failingCreateRuntime() throws {
        let dir = try Harness.tempDir("hooks")
        defer { Harness.cleanup(dir) }
        let rec = try Self.recorder(dir)
        let fail = try Harness.script(dir, "fail.sh", "/bin/cat > /dev/null; exit 3")
        let c = try TestContainer(
            "hookfail",
            bundle: try Harness.busyboxBundle(["sleep", "1000"]) { spec in
                spec.hooks = Hooks(createRuntime: [Hook(path: fail)], poststart: [Self.hook(rec, "poststart")])
            })
        defer { c.destroy() }
        let r = try c.create()
        #expect(r.status != 0)
        #expect(r.stderr.contains("hooks.createRuntime[0]"), "\(r.stderr)")
        #expect(c.state() == nil)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
        #expect(Self.order(dir).isEmpty)
    }

    @Test("a createRuntime hook past its timeout is killed and fails create; nothing remains")
    func hookTimeout() throws {
        let dir = try Harness.tempDir("hooks")
        defer { Harness.cleanup(dir) }
        let slow = try Harness.script(dir, "slow.sh", "exec /bin/sleep 120")
        let c = try TestContainer(
            "hooktime",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.hooks = Hooks(createRuntime: [Hook(path: slow, timeout: 1)])
            })
        defer { c.destroy() }
        let r = try c.create()
        #expect(r.status != 0)
        #expect(r.stderr.contains("hooks.createRuntime[0]") && r.stderr.contains("timed out"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test("a hook path that does not exist fails create naming the hook")
    func missingHook() throws {
        let c = try TestContainer(
            "hookmiss",
            bundle: try Harness.busyboxBundle(["true"]) { spec in
                spec.hooks = Hooks(prestart: [Hook(path: "/no/such/hook")])
            })
        defer { c.destroy() }
        let r = try c.create()
        #expect(r.status != 0)
        #expect(r.stderr.contains("hooks.prestart[0]"), "\(r.stderr)")
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }
}
