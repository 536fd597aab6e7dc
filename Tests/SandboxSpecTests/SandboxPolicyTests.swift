import Foundation
import OCI
import Testing

@testable import SandboxSpec

/// `Sandbox` -> OCI `config.json`: every security decision is a field of the spec.
struct SandboxPolicyTests {
    static func sandbox(_ spec: SandboxSpec = SandboxSpec(runtime: "python:3.11"), name: String = "box") -> Sandbox {
        Sandbox(metadata: ObjectMeta(name: name), spec: spec)
    }

    static func spec(
        _ sandbox: Sandbox = sandbox(), args: [String] = ["python3", "-c", "print(1)"], env: [String] = [],
        nofile: UInt64 = 1 << 20
    ) throws -> Spec {
        try SandboxPolicy.bundleSpec(
            for: sandbox, rootfs: "/var/lib/safespace/rootfs/python-3.11", id: "box", args: args, env: env,
            nofileHardLimit: nofile)
    }

    static func mount(_ spec: Spec, _ destination: String) -> Mount? {
        spec.mounts?.first { $0.destination == destination }
    }

    @Test("the process runs as 1000:1000 with no supplementary groups")
    func defaultUser() throws {
        let process = try #require(try Self.spec().process)
        #expect(process.user.uid == 1000)
        #expect(process.user.gid == 1000)
        #expect(process.user.additionalGids == [])
        #expect(process.args == ["python3", "-c", "print(1)"])
        #expect(process.terminal == false)
    }

    @Test("runAsUser and runAsGroup set the process user and the owner of writable paths")
    func customUser() throws {
        let spec = try Self.spec(
            Self.sandbox(
                SandboxSpec(
                    runtime: "python:3.11", securityContext: SecurityContextSpec(runAsUser: 2000, runAsGroup: 3000))))
        #expect(spec.process?.user == User(uid: 2000, gid: 3000, additionalGids: []))
        #expect(Self.mount(spec, "/workspace")?.options?.contains("uid=2000") == true)
        #expect(Self.mount(spec, "/workspace")?.options?.contains("gid=3000") == true)
    }

    @Test("no capability in any of the five sets, and no new privileges")
    func noPrivileges() throws {
        let process = try #require(try Self.spec().process)
        #expect(
            process.capabilities
                == Capabilities(bounding: [], effective: [], inheritable: [], permitted: [], ambient: []))
        #expect(process.noNewPrivileges == true)
    }

    @Test(
        "RLIMIT_NOFILE is the node's default (built in: 512/512), lowered to the caller's hard limit when that is lower",
        arguments: [(UInt64(1 << 20), UInt64(512)), (4096, 512), (512, 512), (256, 256)])
    func nofile(hard: UInt64, expected: UInt64) throws {
        let spec = try Self.spec(nofile: hard)
        #expect(spec.process?.rlimits == [Rlimit(type: "RLIMIT_NOFILE", hard: expected, soft: expected)])
    }

    @Test("new user, pid, network, ipc, uts, mount and cgroup namespaces; hostname is the name")
    func namespaces() throws {
        let spec = try Self.spec(Self.sandbox(name: "agent-7"))
        // The user namespace is the standard level's; its host range is the runtime's to pick.
        #expect(
            spec.linux?.namespaces
                == ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"].map { Namespace(type: $0) })
        #expect(spec.linux?.namespaces?.allSatisfy { $0.path == nil } == true)
        #expect(spec.hostname == "agent-7")
        #expect(spec.linux?.cgroupsPath == "safespace/box")
        #expect(spec.linux?.uidMappings == nil)
    }

    @Test("the root is the rootfs, read-only by default")
    func readOnlyRoot() throws {
        let plan = try SandboxPolicy.bundle(
            for: Self.sandbox(), rootfs: "/store/python", id: "box", args: ["sh"], nofileHardLimit: 4096)
        #expect(plan.spec.root == Root(path: "/store/python", readonly: true))
        #expect(plan.writableLayer == false)
    }

    @Test("readOnlyRoot: false (securityLevel custom) asks the caller for a writable layer")
    func writableRoot() throws {
        let plan = try SandboxPolicy.bundle(
            for: Self.sandbox(
                SandboxSpec(
                    runtime: "python:3.11", securityLevel: "custom", filesystem: FilesystemSpec(readOnlyRoot: false))),
            rootfs: "/run/safespace-bundles/box/rootfs", id: "box", args: ["sh"], nofileHardLimit: 4096)
        #expect(plan.spec.root == Root(path: "/run/safespace-bundles/box/rootfs", readonly: false))
        #expect(plan.writableLayer == true)
        #expect(plan.spec.process?.env?.contains("HOME=/home/sandbox") == true)
    }

    @Test("kernel filesystems are mounted as runc mounts them")
    func systemMounts() throws {
        let spec = try Self.spec()
        #expect(
            Self.mount(spec, "/proc")
                == Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]))
        #expect(
            Self.mount(spec, "/dev")
                == Mount(
                    destination: "/dev", type: "tmpfs", source: "tmpfs",
                    options: ["nosuid", "strictatime", "mode=755", "size=65536k"]))
        #expect(
            Self.mount(spec, "/dev/pts")
                == Mount(
                    destination: "/dev/pts", type: "devpts", source: "devpts",
                    options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]))
        #expect(
            Self.mount(spec, "/dev/shm")
                == Mount(
                    destination: "/dev/shm", type: "tmpfs", source: "shm",
                    options: ["nosuid", "noexec", "nodev", "mode=1777", "size=64m"]))
        #expect(
            Self.mount(spec, "/dev/mqueue")
                == Mount(
                    destination: "/dev/mqueue", type: "mqueue", source: "mqueue",
                    options: ["nosuid", "noexec", "nodev"]))
        #expect(
            Self.mount(spec, "/sys")
                == Mount(
                    destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]))
        // /dev comes before what is mounted inside it.
        let order = spec.mounts?.map(\.destination) ?? []
        #expect(order.prefix(6) == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"])
    }

    @Test("default writable paths: /tmp (64m, 1777) and /workspace (256m, sandbox user's)")
    func defaultWritablePaths() throws {
        let spec = try Self.spec()
        #expect(
            Self.mount(spec, "/tmp")
                == Mount(
                    destination: "/tmp", type: "tmpfs", source: "tmpfs",
                    options: ["nosuid", "nodev", "mode=1777", "size=64m"]))
        #expect(
            Self.mount(spec, "/workspace")
                == Mount(
                    destination: "/workspace", type: "tmpfs", source: "tmpfs",
                    options: ["nosuid", "nodev", "mode=0755", "uid=1000", "gid=1000", "size=256m"]))
        #expect(spec.mounts?.count == 8)
        #expect(spec.process?.cwd == "/workspace")
        #expect(spec.process?.env == ["PATH=\(SandboxPolicy.defaultPATH)", "HOME=/tmp", "LANG=C.UTF-8"])
    }

    @Test("each listed writable path is a sized tmpfs, parents first; none listed means none")
    func listedWritablePaths() throws {
        let spec = try Self.spec(
            Self.sandbox(
                SandboxSpec(
                    runtime: "python:3.11",
                    filesystem: FilesystemSpec(writablePaths: ["/home/sandbox/.cache", "/home/sandbox", "/tmp"]))))
        let writable = spec.mounts?.dropFirst(6).map(\.destination)
        #expect(writable == ["/tmp", "/home/sandbox", "/home/sandbox/.cache"])
        #expect(
            Self.mount(spec, "/home/sandbox")?.options == [
                "nosuid", "nodev", "mode=0755", "uid=1000", "gid=1000", "size=64m",
            ])
        #expect(spec.process?.cwd == "/tmp")
        #expect(spec.process?.env?.contains("HOME=/home/sandbox") == true)

        let none = try Self.spec(
            Self.sandbox(SandboxSpec(runtime: "python:3.11", filesystem: FilesystemSpec(writablePaths: []))))
        #expect(none.mounts?.count == 6)
        #expect(none.process?.cwd == "/")
        #expect(none.process?.env?.contains("HOME=/") == true)
    }

    @Test("masked and read-only paths are runc's defaults")
    func maskedPaths() throws {
        let linux = try #require(try Self.spec().linux)
        let masked = Set(linux.maskedPaths ?? [])
        for path in [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
            "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
        ] {
            #expect(masked.contains(path), "\(path) is not masked")
        }
        #expect(linux.readonlyPaths == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"])
        #expect(linux.resources?.devices == [Resources.DeviceCgroup(allow: false, access: "rwm")])
        // seccomp/default.json (SandboxSeccompTests has the rest).
        #expect(linux.seccomp?.defaultAction == "SCMP_ACT_ERRNO")
    }

    @Test("annotations name the sandbox, its runtime, security level and ephemeral storage cap")
    func annotations() throws {
        var sandbox = Self.sandbox(SandboxSpec(runtime: "node:20", timeout: 30))
        sandbox.metadata.namespace = "team-a"
        let spec = try Self.spec(sandbox)
        #expect(
            spec.annotations == [
                "llmsafespace.dev/sandbox-name": "box",
                "llmsafespace.dev/sandbox-namespace": "team-a",
                "llmsafespace.dev/runtime": "node:20",
                "llmsafespace.dev/security-level": "standard",
                "llmsafespace.dev/timeout": "30",
                "llmsafespace.dev/userns": "auto",
                "llmsafespace.dev/ephemeral-storage": "1073741824",
            ])
    }

    @Test("env entries are added or replace the defaults; malformed ones are refused by index")
    func environment() throws {
        let spec = try Self.spec(env: ["LANG=en_US.UTF-8", "FOO=a=b", "EMPTY="])
        #expect(
            spec.process?.env == [
                "PATH=\(SandboxPolicy.defaultPATH)", "HOME=/tmp", "LANG=en_US.UTF-8", "FOO=a=b", "EMPTY=",
            ])
        let error = #expect(throws: SandboxError.self) { try Self.spec(env: ["OK=1", "NOEQUALS"]) }
        #expect(error?.fields == ["env[1]"])
        let empty = #expect(throws: SandboxError.self) { try Self.spec(env: ["=x"]) }
        #expect(empty?.fields == ["env[0]"])
    }

    @Test("no command, a bad id, a relative rootfs or an invalid sandbox yields no spec")
    func refusals() {
        #expect((#expect(throws: SandboxError.self) { try Self.spec(args: []) })?.fields == ["args"])
        let badID = #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(
                for: Self.sandbox(), rootfs: "/r", id: "Bad_ID", args: ["sh"], nofileHardLimit: 1024)
        }
        #expect(badID?.fields == ["id"])
        let relative = #expect(throws: SandboxError.self) {
            try SandboxPolicy.bundleSpec(
                for: Self.sandbox(), rootfs: "rootfs", id: "box", args: ["sh"], nofileHardLimit: 1024)
        }
        #expect(relative?.fields == ["rootfs"])
        let root = #expect(throws: SandboxError.self) {
            try Self.spec(
                Self.sandbox(SandboxSpec(runtime: "python:3.11", securityContext: SecurityContextSpec(runAsUser: 0))))
        }
        #expect(root?.fields == ["spec.securityContext.runAsUser"])
    }

    @Test("the spec encodes to config.json with the runtime-spec's field names")
    func encodesAsConfigJSON() throws {
        let data = try JSONEncoder().encode(try Self.spec())
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let process = try #require(object["process"] as? [String: Any])
        let user = try #require(process["user"] as? [String: Any])
        #expect(user["additionalGids"] as? [Int] == [])
        #expect(process["noNewPrivileges"] as? Bool == true)
        let root = try #require(object["root"] as? [String: Any])
        #expect(root["readonly"] as? Bool == true)
        #expect((object["linux"] as? [String: Any])?["cgroupsPath"] as? String == "safespace/box")
        // Round trip through the OCI decoder the runtime uses.
        #expect(try JSONDecoder().decode(Spec.self, from: data) == (try Self.spec()))
    }

    @Test("the caller's real RLIMIT_NOFILE hard limit is read when none is given")
    func realNofile() throws {
        let spec = try SandboxPolicy.bundleSpec(for: Self.sandbox(), rootfs: "/r", id: "box", args: ["sh"])
        let limit = try #require(spec.process?.rlimits?.first)
        #expect(limit.type == "RLIMIT_NOFILE")
        #expect(limit.hard == min(512, SandboxPolicy.callerNofileHardLimit()))
        #expect(limit.soft == limit.hard)
    }
}
