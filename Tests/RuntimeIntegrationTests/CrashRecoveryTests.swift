import Foundation
import LinuxKernel
import NodeResources
import OCI
import Runtime
import SandboxHosting
import TestSupport
import Testing

/// Crash safety (issue 10): a `safespace run` or `safespace-runtime create` SIGKILLed at a
/// random moment must leave nothing that the next operation needing it (a run or create of the
/// same name, a CPU allocation) or `safespace gc` does not reclaim, and nothing a live owner
/// holds may ever be reclaimed. Each test has its own state root, bundle directory, lease store
/// of CPUs and id ranges (via `SAFESPACE_RUNTIME_CONFIG`) and volume base, and
/// counts only what lives there or is named after its own sandboxes.
@Suite(.enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs"), .serialized)
struct CrashRecoveryTests {
    /// One test's private node state.
    final class World {
        let dir: String
        let root: String
        let bundles: String
        /// The lease store of CPUs and id ranges.
        let leases: String
        let volumes: String
        let config: String
        let names: [String]

        init(_ prefix: String, names: [String]) throws {
            dir = try Harness.tempDir(prefix)
            root = dir + "/root"
            bundles = dir + "/bundles"
            leases = dir + "/leases"
            volumes = dir + "/volumes"
            config = dir + "/runtime.json"
            self.names = names
            // Host ids of its own too, away from the node's ranges.
            let firstHostID = 0x6000_0000 + UInt32.random(in: 0..<256) * 16 * 65536
            try #"{"leases": "\#(leases)", "userNamespaces": {"firstHostID": \#(firstHostID), "ranges": 16}}"#
                .write(toFile: config, atomically: true, encoding: .utf8)
        }

        var environment: [String: String] {
            var env = ProcessInfo.processInfo.environment
            env["SAFESPACE_RUNTIME_CONFIG"] = config
            return env
        }

        /// `safespace ARGS` with this world's paths after the subcommand.
        func safespace(_ subcommand: String, _ args: [String]) throws -> Harness.Result {
            try Harness.run(Harness.cliBinary, [subcommand] + paths(subcommand) + args, env: environment)
        }

        func paths(_ subcommand: String) -> [String] {
            ["--root", root, "--bundle-root", bundles, "--ephemeral-storage", volumes]
        }

        func runtime(_ args: [String]) throws -> Harness.Result {
            try Harness.run(Harness.runtimeBinary, ["--root", root] + args, env: environment)
        }

        /// The host state this world owns: bundle and state directories, cgroup directories and
        /// volumes named after its sandboxes, mounts under its paths, CPU allocations, id ranges.
        func snapshot() -> [String] {
            let fm = FileManager.default
            func entries(_ path: String) -> [String] {
                ((try? fm.contentsOfDirectory(atPath: path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
            }
            var found = entries(bundles).map { "bundle: \($0)" }
            found += entries(root).map { "state: \($0)" }
            found += entries(volumes).map { "volume: \($0)" }
            found += entries(leases + "/uid-ranges").map { "id range: \($0)" }
            found += entries(leases + "/cpus").map { "cpus: \($0.hasSuffix(".json") ? String($0.dropLast(5)) : $0)" }
            if let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) {
                found += mounts.split(separator: "\n").filter { $0.contains(dir) }.map { "mount: \($0)" }
            }
            let nameArgs = names.enumerated().flatMap { i, name in (i == 0 ? [] : ["-o"]) + ["-name", name] }
            if let out = try? Harness.run(
                "/usr/bin/find", ["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "("] + nameArgs + [")"]
            ).stdout {
                found += out.split(separator: "\n").map { "cgroup: \($0)" }
            }
            return found
        }

        func destroy() {
            // Whatever a failed test left: the current binary's gc, then the files.
            _ = try? safespace("gc", [])
            for name in names { _ = try? runtime(["delete", "--force", name]) }
            Harness.cleanup(dir)
        }
    }

    /// A `ClientProcess`: started with posix_spawn and reaped with waitpid (Foundation's Process may
    /// miss the end of a SIGKILLed child). stdin and stdout are /dev/null — a container's init
    /// keeps what its creator had, so a pipe would never reach EOF — stderr is a file; default
    /// signal mask and dispositions (the test process blocks some, children would inherit that).
    final class Child {
        let process: ClientProcess
        let errPath: String
        var pid: pid_t { process.pid }

        init(_ args: [String], env: [String: String]) throws {
            errPath = NSTemporaryDirectory() + "safespace-crash-err-\(UUID().uuidString.prefix(8))"
            process = try ClientProcess(
                args[0], Array(args.dropFirst()), stdout: "/dev/null", stderr: errPath, env: env)
        }

        deinit {
            process.kill()
            unlink(errPath)
        }

        /// The exit status (128+N after signal N) once it has ended, without waiting.
        var exited: Int32? { process.isRunning ? nil : process.status }

        @discardableResult
        func wait() -> Int32 { process.wait() }

        var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }
    }

    /// Starts `args`, SIGKILLs it `delay` after `killWhen` holds (or at once), and reaps it.
    /// - Returns: nil when it was still running when killed, else its own exit status.
    @discardableResult
    static func startAndKill(
        _ args: [String], env: [String: String], after delay: Duration, killWhen: (() -> Bool)? = nil
    ) throws -> Int32? {
        let child = try Child(args, env: env)
        if let killWhen { _ = Harness.eventually(timeout: 30) { killWhen() || child.exited != nil } }
        let seconds = Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18
        _ = Harness.eventually(timeout: seconds, every: 0.001) { child.exited != nil }
        if let status = child.exited { return status }
        kill(child.pid, SIGKILL)
        child.wait()
        return nil
    }

    /// Runs `args` to completion (see `Child`).
    static func runQuiet(_ args: [String], env: [String: String]) throws -> Harness.Result {
        let child = try Child(args, env: env)
        return Harness.Result(status: child.wait(), stdout: "", stderr: child.stderr)
    }

    static func sandboxYAML(name: String, variant: Int) -> String {
        var spec = ""
        switch variant % 4 {
        case 1:  // a writable root: overlay + tmpfs layer + idmapped lower under the bundle directory
            spec = "  securityLevel: custom\n  filesystem: {readOnlyRoot: false, writablePaths: [/tmp]}\n"
        case 2:  // a volume holding the writable layer and paths (loop device or tmpfs)
            spec =
                "  securityLevel: custom\n  filesystem: {readOnlyRoot: false, writablePaths: [/tmp]}\n  resources: {ephemeralStorage: 48Mi}\n"
        case 3:  // a pinned CPU
            spec = "  resources: {cpu: \"1\", cpuPinning: true}\n"
        default:
            spec = ""
        }
        return
            "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: \(name)\nspec:\n  runtime: python:3.11\n"
            + spec
    }

    @Test(
        "safespace run SIGKILLed at random moments (40 runs): a new run of the name or safespace gc leaves zero bundles, state, cgroups, mounts, volumes, CPUs, id ranges"
    )
    func killedRuns() throws {
        let tag = "crk\(getpid() % 100_000)"
        let names = (0..<4).map { "\(tag)-v\($0)" }
        let world = try World("crash-run", names: names)
        defer { world.destroy() }
        let before = world.snapshot()
        try #require(before.isEmpty, "\(before)")
        var failures = 0
        var killedLive = 0
        for i in 0..<40 where failures < 3 {
            let variant = i % 4
            let name = names[variant]
            let yaml = world.dir + "/\(name).yaml"
            try Self.sandboxYAML(name: name, variant: variant).write(toFile: yaml, atomically: true, encoding: .utf8)
            let delay = Duration.milliseconds(Int.random(in: 5...450))
            let ended = try Self.startAndKill(
                [Harness.cliBinary, "run"] + world.paths("run") + ["-f", yaml, "--", "sleep", "3"],
                env: world.environment, after: delay)
            if ended == nil { killedLive += 1 }
            // Recovery: a new run of the same name, or gc (each variant gets both).
            let byRun = (i / 4) % 2 == 0
            let recovery: Harness.Result
            if byRun {
                recovery = try world.safespace("run", ["-f", yaml, "--", "true"])
            } else {
                recovery = try world.safespace("gc", [])
            }
            let after = world.snapshot()
            let ok = recovery.status == 0 && after == before
            #expect(
                ok,
                "iteration \(i) (variant \(variant), killed after \(delay)): \(byRun ? "run" : "gc") exited \(recovery.status): \(recovery.stderr.prefix(600)); left: \(after.prefix(12))"
            )
            if !ok { failures += 1 }
        }
        print("killed runs: \(killedLive) of 40 still running when killed")
        #expect(killedLive > 10, "only \(killedLive) of 40 runs were still running when killed")
    }

    @Test(
        "safespace-runtime create SIGKILLed at random moments (30 creates): list shows the half-made one, create of the id, delete or gc reclaims it, nothing is left"
    )
    func killedCreates() throws {
        let tag = "crc\(getpid() % 100_000)"
        let names = ["\(tag)-plain", "\(tag)-userns"]
        let world = try World("crash-create", names: names)
        defer { world.destroy() }
        let plain = try Harness.busyboxBundle(["sleep", "5"])
        let userns = try Harness.busyboxBundle(["sleep", "5"]) { spec in
            spec.linux?.namespaces?.append(Namespace(type: "user"))
            spec.annotations = [UserNamespaceRange.annotation: UserNamespaceRange.auto]
        }
        defer { Harness.cleanup(plain, userns) }
        let before = world.snapshot()
        try #require(before.isEmpty, "\(before)")
        var failures = 0
        var halfMade = 0
        var created = 0
        var nothing = 0
        for i in 0..<30 where failures < 3 {
            let id = names[i % 2]
            let bundle = i % 2 == 0 ? plain : userns
            let delay = Duration.milliseconds(Int.random(in: 0...120))
            try Self.startAndKill(
                [Harness.runtimeBinary, "--root", world.root, "create", "--bundle", bundle, id], env: world.environment,
                after: delay)
            var problems: [String] = []
            let stateExists = FileManager.default.fileExists(atPath: "\(world.root)/\(id)/state.json")
            if stateExists {
                created += 1
            } else if !FileManager.default.fileExists(atPath: "\(world.root)/\(id)") {
                nothing += 1
            }
            if FileManager.default.fileExists(atPath: "\(world.root)/\(id)"), !stateExists {
                halfMade += 1
                // Shown as such: `stopped`, with its dead creator unless it died before recording
                // itself (between its mkdir and creating.json, under the store lock).
                let list = try world.runtime(["list", "--format", "json"])
                let entries =
                    (try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]) ?? []
                let entry = entries.first { $0["id"] as? String == id }
                let recorded = FileManager.default.fileExists(atPath: "\(world.root)/\(id)/creating.json")
                if entry?["status"] as? String != "stopped" || recorded != (entry?["creator"] != nil) {
                    problems.append("list: \(list.stdout.prefix(400)) \(list.stderr.prefix(200))")
                }
            }
            if stateExists {
                // A created container is its init's: its owner deletes it as usual.
                let d = try world.runtime(["delete", "--force", id])
                if d.status != 0 { problems.append("delete: \(d.stderr)") }
            } else if i % 4 < 2 {
                let created = try Self.runQuiet(
                    [Harness.runtimeBinary, "--root", world.root, "create", "--bundle", bundle, id],
                    env: world.environment)
                if created.status != 0 {
                    problems.append("create of the same id exited \(created.status): \(created.stderr)")
                }
                let d = try world.runtime(["delete", "--force", id])
                if d.status != 0 { problems.append("delete: \(d.stderr)") }
            } else if i % 4 == 2 {
                let gc = try world.safespace("gc", [])
                if gc.status != 0 { problems.append("gc: \(gc.stderr)") }
            } else if FileManager.default.fileExists(atPath: "\(world.root)/\(id)") {
                // A plain delete (no --force) takes a half-made container whose creator is dead.
                let d = try world.runtime(["delete", id])
                if d.status != 0 { problems.append("delete: \(d.stderr)") }
            } else {
                // Killed before its directory: nothing to take; a plain delete says so, as runc's.
                let d = try world.runtime(["delete", id])
                if d.status == 0 || !d.stderr.contains("does not exist") {
                    problems.append("delete of nothing: \(d.status) \(d.stderr)")
                }
            }
            let after = world.snapshot()
            if after != before { problems.append("left: \(after.prefix(12))") }
            #expect(problems.isEmpty, "iteration \(i) (\(id), killed after \(delay)): \(problems)")
            if !problems.isEmpty { failures += 1 }
        }
        print("killed creates: \(halfMade) half-made, \(created) created, \(nothing) before their directory")
        #expect(halfMade > 0, "no create was killed half-way in 30 tries")
    }

    @Test(
        "cpuPinning: two runs SIGKILLed while holding every pinnable CPU, then a pinned run of another name succeeds and nothing is left"
    )
    func killedPinnedRuns() throws {
        let tag = "crp\(getpid() % 100_000)"
        let pool = CPUAllocator().pool.count
        let names = (0...pool).map { "\(tag)-\($0)" }
        let world = try World("crash-cpu", names: names)
        defer { world.destroy() }
        // Each killed run holds pool/2 CPUs (at least 1), so two of them hold the whole pool
        // (on this node's 2 CPUs: one each).
        let each = max(1, pool / 2)
        for name in names.prefix(2) {
            let yaml = world.dir + "/\(name).yaml"
            try
                "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: \(name)\nspec:\n  resources: {cpu: \"\(each)\", cpuPinning: true}\n"
                .write(toFile: yaml, atomically: true, encoding: .utf8)
            // Killed once its container exists (its CPUs are taken, state.json is written),
            // a random moment later.
            let ended = try Self.startAndKill(
                [Harness.cliBinary, "run"] + world.paths("run") + ["-f", yaml, "--", "sleep", "30"],
                env: world.environment,
                after: .milliseconds(Int.random(in: 0...200)),
                killWhen: { FileManager.default.fileExists(atPath: "\(world.root)/\(name)/state.json") })
            try #require(ended == nil, "\(name) ended by itself (\(ended ?? 0)) before it was killed")
        }
        // The second run's allocation may already have reclaimed the first's CPUs (its holder
        // was dead); what is held now is held by the dead.
        let held = try CPUAllocator(store: LeaseStore(directory: world.leases)).allocations()
        try #require(!held.isEmpty && held.values.allSatisfy { !$0.holder.isAlive }, "\(held)")
        let last = names[2]
        let yaml = world.dir + "/\(last).yaml"
        try
            "apiVersion: llmsafespace.dev/v1\nkind: Sandbox\nmetadata:\n  name: \(last)\nspec:\n  resources: {cpu: \"\(each)\", cpuPinning: true}\n"
            .write(toFile: yaml, atomically: true, encoding: .utf8)
        let r = try world.safespace("run", ["-f", yaml, "--", "sh", "-c", "grep Cpus_allowed_list /proc/self/status"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Cpus_allowed_list"), "\(r.stdout)")
        // The dead runs' sandboxes went with their CPUs: containers, cgroups, bundles, ranges.
        #expect(world.snapshot().isEmpty, "\(world.snapshot())")
    }

    @Test(
        "a half-made container: list and state show `creating` with its creator, create of the id refuses; once the creator is killed: `stopped`, create succeeds"
    )
    func halfMadeContainer() throws {
        let id = Harness.uniqueID("crh")
        let world = try World("crash-half", names: [id])
        defer { world.destroy() }
        let gate = world.dir + "/gate"
        // A prestart hook that waits for the gate holds the create half-way, deterministically.
        let held = try Harness.busyboxBundle(["sleep", "5"]) { spec in
            spec.hooks = Hooks(prestart: [
                Hook(path: "/bin/sh", args: ["sh", "-c", "while [ ! -e \(gate) ]; do sleep 0.05; done"])
            ])
        }
        let plain = try Harness.busyboxBundle(["true"])
        defer { Harness.cleanup(held, plain) }
        let p = try Child(
            [Harness.runtimeBinary, "--root", world.root, "create", "--bundle", held, id], env: world.environment)
        defer { _ = FileManager.default.createFile(atPath: gate, contents: nil) }
        // The hook runs once the cgroup and the init exist.
        let hookRuns = Harness.eventually {
            (try? Harness.run("/bin/ps", ["-eo", "args"]).stdout.contains("while [ ! -e \(gate) ]")) ?? false
        }
        try #require(hookRuns, "the prestart hook never ran")

        func listed() throws -> [String: Any]? {
            let list = try world.runtime(["list", "--format", "json"])
            let entries = (try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]) ?? []
            return entries.first { $0["id"] as? String == id }
        }
        let creating = try #require(try listed(), "list does not show the half-made container")
        #expect(creating["status"] as? String == "creating")
        #expect((creating["creator"] as? NSNumber)?.int32Value == p.pid)
        let state = try world.runtime(["state", id])
        #expect(state.status == 0 && state.stdout.contains("\"creating\""), "\(state.stdout) \(state.stderr)")
        let table = try world.runtime(["list"])
        #expect(table.stdout.contains("creating") && table.stdout.contains("create: pid \(p.pid)"), "\(table.stdout)")
        // Its creator lives: the id stays taken, and a plain delete refuses.
        let again = try Self.runQuiet(
            [Harness.runtimeBinary, "--root", world.root, "create", "--bundle", plain, id], env: world.environment)
        #expect(
            again.status != 0 && again.stderr.contains("already exists (being created by pid \(p.pid))"),
            "\(again.stderr)")
        #expect(try world.runtime(["delete", id]).status != 0)
        // gc never takes what a live owner holds.
        #expect(try world.safespace("gc", []).status == 0)
        #expect(FileManager.default.fileExists(atPath: "\(world.root)/\(id)/creating.json"))

        kill(p.pid, SIGKILL)
        p.wait()
        _ = FileManager.default.createFile(atPath: gate, contents: nil)
        let stopped = try #require(try listed())
        #expect(stopped["status"] as? String == "stopped")
        let created = try Self.runQuiet(
            [Harness.runtimeBinary, "--root", world.root, "create", "--bundle", plain, id], env: world.environment)
        #expect(created.status == 0, "\(created.stderr)")
        #expect(try world.runtime(["state", id]).stdout.contains("\"created\""))
        #expect(try world.runtime(["delete", "--force", id]).status == 0)
        #expect(world.snapshot().isEmpty, "\(world.snapshot())")
    }

    @Test("a lease whose owner lives is never reclaimed; the same pid with another start time (pid reuse) is dead")
    func liveOwnersKept() throws {
        let world = try World("crash-live", names: ["crl-live", "crl-reused"])
        defer { world.destroy() }
        let sleeper = try Child(["/bin/sleep", "60"], env: [:])
        let live = try #require(ProcStat.read(pid: sleeper.pid)).startTime
        let alive = ProcessIdentity(pid: sleeper.pid, startTime: live)
        let reused = ProcessIdentity(pid: sleeper.pid, startTime: live + 1)
        #expect(alive.isAlive && !reused.isAlive)

        // Sandbox leases (bundle directories).
        let leases = SandboxLeases(directory: world.bundles, backends: .native)
        _ = try leases.acquire(SandboxLease(id: "crl-live", owner: alive, stateRoot: world.root))
        _ = try leases.acquire(SandboxLease(id: "crl-reused", owner: reused, stateRoot: world.root))
        // CPU allocations held by either.
        let store = LeaseStore(directory: world.leases)
        let cpus = CPUAllocator(store: store, pool: [100, 101])
        _ = try cpus.allocate(sandbox: "crl-cpu-live", count: 1, runtimeRoot: world.root)
        _ = try cpus.allocate(sandbox: "crl-cpu-reused", count: 1, runtimeRoot: world.root)
        try Self.rewriteHolders(world.leases + "/cpus", ["crl-cpu-live": alive, "crl-cpu-reused": reused])
        // Id ranges held by either (no container state yet: a run between reserve and create).
        let ids = IDAllocator(store: store, firstHostID: 0x6f00_0000, ranges: 4)
        for (name, owner) in [("crl-rng-live", alive), ("crl-rng-reused", reused)] {
            let a = try ids.allocate(owner: world.root + "/" + name)
            try Self.rewriteHolders(world.leases + "/uid-ranges", ["\(a.index)": owner])
        }
        // A bundle directory without a lease (before leases; or its run died between mkdir and
        // lease): its owner is unknown, so dead; its container is looked for in gc's root.
        try FileManager.default.createDirectory(
            atPath: world.bundles + "/crl-legacy", withIntermediateDirectories: true)
        // Half-made containers created by either (and by nobody known, the legacy sandbox's).
        for (name, owner) in [("crl-ctr-live", alive), ("crl-ctr-reused", reused), ("crl-legacy", reused)] {
            try FileManager.default.createDirectory(atPath: "\(world.root)/\(name)", withIntermediateDirectories: true)
            try JSONEncoder().encode(
                CreatingRecord(id: name, creator: owner, bundle: "/nonexistent", created: "2026-01-01T00:00:00Z")
            )
            .write(to: URL(fileURLWithPath: "\(world.root)/\(name)/creating.json"))
        }

        let report = GarbageCollector(
            stateRoot: world.root, bundleRoot: world.bundles, cpuAllocator: cpus, idAllocator: ids,
            ephemeralStorageBase: world.volumes, backends: .native
        ).sweep()
        #expect(report.errors.isEmpty, "\(report.errors)")
        #expect(report.sandboxes == ["crl-legacy", "crl-reused"])
        #expect(report.containers == ["crl-ctr-reused"])
        #expect(report.cpuAllocations == ["crl-cpu-reused"])
        #expect(report.idRanges == [0x6f00_0000 + 65536])
        #expect(
            world.snapshot().sorted() == [
                "bundle: crl-live", "cpus: crl-cpu-live", "id range: 0.json", "state: crl-ctr-live",
            ])
        // The live owner's name stays taken, its container too.
        #expect(throws: (any Error).self) { try leases.acquire(SandboxLease(id: "crl-live", stateRoot: world.root)) }
        #expect(
            try ContainerRuntime(root: world.root, backends: .native).state(id: "crl-ctr-live").status == "creating")

        // Once the owner is dead, everything goes.
        kill(sleeper.pid, SIGKILL)
        sleeper.wait()
        let after = GarbageCollector(
            stateRoot: world.root, bundleRoot: world.bundles, cpuAllocator: cpus, idAllocator: ids,
            ephemeralStorageBase: world.volumes, backends: .native
        ).sweep()
        #expect(
            after.sandboxes == ["crl-live"] && after.containers == ["crl-ctr-live"]
                && after.cpuAllocations == ["crl-cpu-live"], "\(after)")
        #expect(after.idRanges == [0x6f00_0000])
        #expect(world.snapshot().isEmpty, "\(world.snapshot())")
    }

    /// Sets the holder of each named lease (by key) in a kind's directory of a lease store.
    static func rewriteHolders(_ directory: String, _ holders: [String: ProcessIdentity]) throws {
        for (key, holder) in holders {
            let url = URL(fileURLWithPath: "\(directory)/\(key).json")
            var lease = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            lease["holder"] = ["pid": holder.pid, "startTime": holder.startTime]
            try JSONSerialization.data(withJSONObject: lease).write(to: url)
        }
    }
}
