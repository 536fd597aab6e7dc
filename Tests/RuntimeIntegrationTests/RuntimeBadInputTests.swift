import Foundation
import OCI
import Runtime
import TestSupport
import Testing

/// Bad bundles and ids: a non-zero exit, a message naming the field at fault, and nothing left
/// on the host — including when `create` fails half-way, after the init and cgroup exist.
@Suite(.enabled(if: Harness.isRoot, "needs root"))
struct RuntimeBadInputTests {
    /// Runs `create` then `run` on the bundle; both must fail naming `expected`, leaving nothing.
    func expectRefused(
        _ bundle: String, naming expected: [String], prefix: String = "bad",
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let c = try TestContainer(prefix, bundle: bundle)
        defer { c.destroy() }
        for verb in ["create", "run"] {
            let r = verb == "create" ? try c.create() : try c.run()
            #expect(r.status != 0, "\(verb) succeeded", sourceLocation: sourceLocation)
            for word in expected {
                #expect(
                    r.stderr.contains(word), "\(verb): stderr does not name \(word): \(r.stderr)",
                    sourceLocation: sourceLocation)
            }
            #expect(c.leftovers().isEmpty, "\(verb) left: \(c.leftovers())", sourceLocation: sourceLocation)
            #expect(c.state() == nil, sourceLocation: sourceLocation)
        }
    }

    // MARK: config.json

    @Test("malformed config.json (syntax error)")
    func malformedJSON() throws {
        let bundle = try Harness.busyboxBundle(["true"])
        try #"{"ociVersion": "1.2.0", "process": {"#.write(
            toFile: bundle + "/config.json", atomically: true, encoding: .utf8)
        try expectRefused(bundle, naming: ["config.json"])
    }

    @Test("a memory limit too low for the init names linux.resources.memory.limit, not the broken init socket")
    func memoryLimitTooLow() throws {
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            spec.linux!.resources = Resources(memory: .init(limit: 4096))
        }
        try expectRefused(bundle, naming: ["linux.resources.memory.limit", "OOM-killed"])
    }

    @Test("missing config.json")
    func missingConfig() throws {
        let bundle = try Harness.busyboxBundle(["true"])
        try FileManager.default.removeItem(atPath: bundle + "/config.json")
        try expectRefused(bundle, naming: ["config.json"])
    }

    @Test("unknown namespace type names linux.namespaces[N].type")
    func unknownNamespace() throws {
        var index = -1
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            index = spec.linux!.namespaces!.count
            spec.linux!.namespaces!.append(Namespace(type: "bogus"))
        }
        try expectRefused(bundle, naming: ["linux.namespaces[\(index)].type", "bogus"])
    }

    @Test("a bad uid names process.user.uid", arguments: ["-1", "\"abc\"", "4294967296"])
    func badUID(value: String) throws {
        let bundle = try Harness.busyboxBundle(["true"])
        // Splice the raw value in: Spec cannot hold it.
        let path = bundle + "/config.json"
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let range = try #require(text.range(of: #""uid" : 0"#), "\(text)")
        text.replaceSubrange(range, with: "\"uid\" : \(value)")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try expectRefused(bundle, naming: ["process.user.uid"])
    }

    @Test(
        "an integer out of its field's range (memory.limit 1e30) names the field and the range, not \"malformed JSON\"")
    func outOfRangeInteger() throws {
        let bundle = try Harness.busyboxBundle(["true"])
        try Harness.patchConfig(bundle: bundle) { obj in
            var linux = obj["linux"] as? [String: Any] ?? [:]
            linux["resources"] = ["memory": ["limit": 1e30]]
            obj["linux"] = linux
        }
        try expectRefused(
            bundle, naming: ["linux.resources.memory.limit", "1e+30", "-9223372036854775808...9223372036854775807"])
        let c = try TestContainer("bad", bundle: bundle)
        defer { c.destroy() }
        #expect(!(try c.create()).stderr.contains("malformed JSON"))
    }

    @Test("a missing rootfs directory names root.path")
    func missingRootfs() throws {
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            spec.root = Root(path: "no-such-rootfs", readonly: true)
        }
        try expectRefused(bundle, naming: ["root.path", "no-such-rootfs"])
    }

    @Test("a relative process.cwd names process.cwd")
    func relativeCwd() throws {
        let bundle = try Harness.busyboxBundle(["true"]) { spec in spec.process?.cwd = "tmp" }
        try expectRefused(bundle, naming: ["process.cwd"])
    }

    @Test("no process.args names process.args")
    func noArgs() throws {
        let bundle = try Harness.busyboxBundle([]) { spec in spec.process?.args = [] }
        try expectRefused(bundle, naming: ["process.args"])
    }

    // MARK: ids

    @Test("a duplicate id is refused and the first container is untouched")
    func duplicateID() throws {
        let c = try TestContainer("dup", bundle: try Harness.busyboxBundle(["sleep", "1000"]))
        defer { c.destroy() }
        try #require(try c.create().status == 0)
        let pid = try #require(c.pid)
        let again = try c.create()
        #expect(again.status != 0)
        #expect(again.stderr.contains("already exists"), "\(again.stderr)")
        #expect(c.status == "created")
        #expect(c.pid == pid)
        let run = try c.run()
        #expect(run.status != 0)
        #expect(c.status == "created", "a failed `run` with a duplicate id must not delete the existing container")
        try #require(try c.delete(force: true).status == 0)
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(
        "ids with \"/\" or \"..\" are refused by every verb and touch nothing",
        arguments: ["a/b", "..", ".", "../escape", "x/../../escape", "/abs", "other/.."])
    func badIDs(id: String) throws {
        // parent/sentinel, parent/escape/, and another container's state dir in the root: a verb
        // that joins the id onto --root unchecked would reach them.
        let parent = try Harness.tempDir("idparent")
        defer { Harness.cleanup(parent) }
        let root = parent + "/root"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/other", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/a/b", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: parent + "/escape", withIntermediateDirectories: true)
        try "{}".write(toFile: root + "/other/state.json", atomically: true, encoding: .utf8)
        try "x".write(toFile: parent + "/sentinel", atomically: true, encoding: .utf8)
        let bundle = try Harness.busyboxBundle(["true"])
        defer { Harness.cleanup(bundle) }
        for verb in [
            ["create", "--bundle", bundle], ["run", "--bundle", bundle], ["state"], ["start"], ["kill"],
            ["kill", "--all"], ["delete"], ["delete", "--force"], ["exec"],
        ] {
            let r = try Harness.spawn(
                [Harness.runtimeBinary, "--root", root] + verb + (verb == ["exec"] ? [id, "true"] : [id]))
            #expect(r.status != 0, "\(verb) \(id) succeeded")
            #expect(r.stderr.contains("container id"), "\(verb) \(id): \(r.stderr)")
            #expect(fm.fileExists(atPath: parent + "/sentinel"), "\(verb) \(id) removed a file outside --root")
            #expect(
                fm.fileExists(atPath: root + "/other/state.json"), "\(verb) \(id) removed another container's state")
            #expect(
                fm.fileExists(atPath: parent + "/escape") && fm.fileExists(atPath: root + "/a/b"),
                "\(verb) \(id) removed a directory it names")
        }
        let inRoot = ((try? fm.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }
        #expect(Set(inRoot) == ["other", "a"], "\(inRoot)")
        #expect(((try? fm.contentsOfDirectory(atPath: parent + "/escape")) ?? []).isEmpty)
    }

    // MARK: create failing half-way

    @Test("process.args[0] missing from the rootfs: create fails at \"executable file not found\", nothing remains")
    func missingExecutable() throws {
        let bundle = try Harness.busyboxBundle(["/no/such/binary"])
        try expectRefused(bundle, naming: ["process.args[0]"])
        let bundle2 = try Harness.busyboxBundle(["no-such-command"])
        try expectRefused(bundle2, naming: ["executable file not found"])
    }

    @Test("a bind mount with a missing source names mounts[N].source, nothing remains")
    func bindMissingSource() throws {
        var index = -1
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            index = spec.mounts!.count
            spec.mounts!.append(
                Mount(destination: "/data", type: "bind", source: "/no/such/source", options: ["rbind", "ro"]))
        }
        try expectRefused(bundle, naming: ["mounts[\(index)].source"])
    }

    @Test("an unknown rlimit type names process.rlimits[N].type")
    func unknownRlimit() throws {
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            spec.process?.rlimits = [
                Rlimit(type: "RLIMIT_NOFILE", hard: 100, soft: 100), Rlimit(type: "RLIMIT_BOGUS", hard: 1, soft: 1),
            ]
        }
        try expectRefused(bundle, naming: ["process.rlimits[1].type"])
    }

    @Test("an rlimit whose soft is above its hard names process.rlimits[N]")
    func softAboveHard() throws {
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            spec.process?.rlimits = [Rlimit(type: "RLIMIT_NOFILE", hard: 100, soft: 200)]
        }
        try expectRefused(bundle, naming: ["process.rlimits[0]"])
    }

    @Test("a bind mount over a file that is a directory in the rootfs fails inside the init; nothing remains")
    func bindFileOverDirectory() throws {
        var index = -1
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            index = spec.mounts!.count
            spec.mounts!.append(
                Mount(destination: "/etc", type: "bind", source: "/etc/hostname", options: ["bind", "ro"]))
        }
        try expectRefused(bundle, naming: ["mounts[\(index)]"])
    }

    @Test("a failing createRuntime hook fails create and leaves nothing behind")
    func failingCreateRuntimeHook() throws {
        let hooks = try Harness.tempDir("hooks")
        defer { Harness.cleanup(hooks) }
        let fail = try Harness.script(hooks, "fail.sh", "exit 7")
        let bundle = try Harness.busyboxBundle(["true"]) { spec in
            spec.hooks = Hooks(createRuntime: [Hook(path: fail)])
        }
        try expectRefused(bundle, naming: ["hooks.createRuntime[0]"])
    }
}
