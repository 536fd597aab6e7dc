import Glibc
import Testing

@testable import LinuxKernel
@testable import OCI
@testable import Runtime

struct ValidationTests {
    func base() -> Spec {
        var spec = DefaultSpec.make(rootfs: "/", args: ["sh"])
        spec.process?.env = ["PATH=/bin"]
        return spec
    }

    func error(_ edit: (inout Spec) -> Void) -> String? {
        var spec = base()
        edit(&spec)
        do {
            try SpecValidation.validate(spec, bundle: "/")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("the default spec is valid")
    func defaultValid() {
        #expect(error { _ in } == nil)
    }

    @Test("each bad field is named in the error")
    func namesFields() {
        #expect(error { $0.ociVersion = "2.0.0" }?.contains("ociVersion") == true)
        #expect(error { $0.process?.args = [] }?.contains("process.args") == true)
        #expect(error { $0.process?.cwd = "relative" }?.contains("process.cwd") == true)
        #expect(
            error { $0.process?.rlimits = [Rlimit(type: "RLIMIT_BOGUS", hard: 1, soft: 1)] }?.contains(
                "process.rlimits[0].type") == true)
        #expect(
            error { $0.process?.rlimits = [Rlimit(type: "RLIMIT_NOFILE", hard: 1, soft: 2)] }?.contains(
                "process.rlimits[0]") == true)
        #expect(
            error { $0.process?.capabilities?.bounding = ["CAP_BOGUS"] }?.contains("process.capabilities.bounding")
                == true)
        #expect(error { $0.process?.env = ["NOEQUALS"] }?.contains("process.env") == true)
        #expect(error { $0.process?.oomScoreAdj = 5000 }?.contains("process.oomScoreAdj") == true)
        // runc's template lists five namespaces: the bogus one is the sixth.
        #expect(
            error { $0.linux?.namespaces?.append(Namespace(type: "bogus")) }?.contains("linux.namespaces[5].type")
                == true)
        #expect(error { $0.linux?.namespaces?.append(Namespace(type: "pid")) }?.contains("listed twice") == true)
        #expect(
            error { $0.linux?.namespaces?.removeAll { $0.type == "mount" } }?.contains("mount namespace is required")
                == true)
        #expect(error { $0.linux?.namespaces?.removeAll { $0.type == "uts" } }?.contains("hostname") == true)
        #expect(error { $0.linux?.sysctl = ["kernel.panic": "1"] }?.contains("linux.sysctl") == true)
        #expect(
            error {
                $0.linux?.sysctl = ["net.ipv4.ip_forward": "1"]
                $0.linux?.namespaces?.removeAll { $0.type == "network" }
            }?.contains("needs a network namespace") == true)
        #expect(error { $0.linux?.namespaces?.append(Namespace(type: "user")) }?.contains("linux.uidMappings") == true)
        #expect(error { $0.linux?.rootfsPropagation = "sideways" }?.contains("linux.rootfsPropagation") == true)
        #expect(
            error { $0.linux?.devices = [Device(type: "x", path: "/dev/foo")] }?.contains("linux.devices[0].type")
                == true)
        #expect(
            error { $0.linux?.devices = [Device(type: "c", path: "/etc/foo")] }?.contains("linux.devices[0].path")
                == true)
        #expect(
            error { $0.linux?.namespaces?.append(Namespace(type: "time", path: "/nonexistent/ns")) }?.contains(
                "/nonexistent/ns does not exist") == true)
    }

    @Test("kernel.hostname is refused; kernel.domainname only beside domainname; both name the fields")
    func utsSysctls() {
        #expect(
            error { $0.linux?.sysctl = ["kernel.hostname": "x"] }.map {
                $0.contains("linux.sysctl") && $0.contains("hostname field")
            } == true)
        #expect(error { $0.linux?.sysctl = ["kernel.domainname": "x"] } == nil)
        #expect(
            error {
                $0.domainname = "a"
                $0.linux?.sysctl = ["kernel.domainname": "x"]
            }.map { $0.contains("linux.sysctl") && $0.contains("domainname field") } == true)
    }

    @Test("hostname in a joined uts namespace is allowed unless it is the runtime's own")
    func joinedUTS() {
        func join(_ path: String) -> (inout Spec) -> Void {
            { spec in
                for i in spec.linux!.namespaces!.indices where spec.linux!.namespaces![i].type == "uts" {
                    spec.linux!.namespaces![i].path = path
                }
            }
        }
        // /proc/1/ns/uts is another process's file for the same namespace only when the test
        // runs in the host's; /proc/self/ns/uts is always the runtime's own.
        #expect(error(join("/proc/self/ns/uts"))?.contains("hostname") == true)
        #expect(
            error {
                join("/proc/self/ns/uts")(&$0)
                $0.hostname = nil
            } == nil)
    }

    @Test("a mount namespace joined by path that is the runtime's own is refused like none at all")
    func hostMountNamespace() {
        let e = error { spec in
            for i in spec.linux!.namespaces!.indices where spec.linux!.namespaces![i].type == "mount" {
                spec.linux!.namespaces![i].path = "/proc/self/ns/mnt"
            }
        }
        #expect(e?.contains("linux.namespaces") == true && e?.contains("mount namespace") == true, "\(e ?? "accepted")")
    }

    @Test("linux.personality: LINUX and LINUX32 pass; other domains and any flags name the field")
    func personality() {
        #expect(error { $0.linux?.personality = Personality(domain: "LINUX32") } == nil)
        #expect(error { $0.linux?.personality = Personality(domain: "LINUX") } == nil)
        #expect(
            error { $0.linux?.personality = Personality(domain: "PER_BSD") }?.contains("linux.personality.domain")
                == true)
        #expect(
            error { $0.linux?.personality = Personality(domain: "LINUX", flags: ["X"]) }?.contains(
                "linux.personality.flags") == true)
    }

    @Test(
        "mounts over /proc sub-paths are refused",
        arguments: ["/proc/self", "/proc/sys", "/proc//kcore", "/proc/../proc/1"])
    func procMounts(dest: String) {
        let e = error { $0.mounts?.append(Mount(destination: dest, type: "tmpfs", source: "tmpfs")) }
        #expect(e?.contains("mounts[7].destination") == true)
    }

    @Test("a non-proc file system at /proc and relative destinations are refused")
    func otherMounts() {
        #expect(error { $0.mounts?[0].type = "tmpfs" }?.contains("mounts[0].destination") == true)
        #expect(
            error { $0.mounts?.append(Mount(destination: "tmp", type: "tmpfs")) }?.contains("mounts[7].destination")
                == true)
        #expect(
            error {
                $0.mounts?.append(
                    Mount(destination: "/x", type: "bind", source: "/nonexistent-src", options: ["rbind"]))
            }?.contains("mounts[7].source") == true)
    }

    @Test("container ids", arguments: ["a/b", "..", ".", "", "x y", "../etc", String(repeating: "a", count: 1025)])
    func badIDs(id: String) {
        #expect(throws: RuntimeError.self) { try StateStore.validate(id: id) }
    }

    @Test("good ids", arguments: ["a", "sandbox-1", "A_b.c+d", String(repeating: "a", count: 1024)])
    func goodIDs(id: String) throws {
        try StateStore.validate(id: id)
    }

    @Test("ids past NAME_MAX get a digest directory name that no valid id can take")
    func directoryNames() {
        #expect(StateStore.directoryName(String(repeating: "a", count: 255)) == String(repeating: "a", count: 255))
        let long = StateStore.directoryName(String(repeating: "a", count: 256))
        #expect(long.hasPrefix("@sha256-") && long.count == 8 + 64)
        #expect(long != StateStore.directoryName(String(repeating: "a", count: 257)))
        #expect(throws: RuntimeError.self) { try StateStore.validate(id: long) }
        // FIPS 180-4 test vector.
        #expect(sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(sha256Hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }
}

struct PathTests {
    @Test(
        "cleanPath", arguments: [("//a/./b/../c", "/a/c"), ("/../..", "/"), ("/proc//self", "/proc/self"), ("/", "/")])
    func clean(input: String, output: String) {
        #expect(cleanPath(input) == output)
    }

    @Test("securePath keeps symlinks inside the root")
    func secure() throws {
        let root = "/tmp/safespace-securepath-\(getpid())"
        try Files.makeDirectories(root + "/a")
        defer { try? Files.removeTree(root) }
        #expect(symlink("/etc", root + "/abs") == 0)
        #expect(symlink("../../../../etc", root + "/a/rel") == 0)
        #expect(symlink("loop2", root + "/loop1") == 0)
        #expect(symlink("loop1", root + "/loop2") == 0)
        #expect(try securePath(root: root, "/abs/passwd") == root + "/etc/passwd")
        #expect(try securePath(root: root, "/a/rel/shadow") == root + "/etc/shadow")
        #expect(try securePath(root: root, "/../../x") == root + "/x")
        #expect(throws: RuntimeError.self) { try securePath(root: root, "/loop1/x") }
    }
}
