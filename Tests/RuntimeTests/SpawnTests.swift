import Glibc
import OCI
import Testing

@testable import Runtime

/// The real gid that keeps a helper's exec non-dumpable (spawn.c, Spawn.swift).
struct SpawnTests {
    @Test("outside a user namespace any gid other than the effective one")
    func initialNamespace() {
        let gid = nonDumpableGid(inUserNamespace: false, mappings: [])
        #expect(gid >= 0 && gid_t(gid) != getegid())
    }

    @Test("in a user namespace a mapped gid other than 0, or none")
    func userNamespace() {
        #expect(
            nonDumpableGid(inUserNamespace: true, mappings: [IDMapping(containerID: 0, hostID: 100000, size: 65536)])
                == 1)
        #expect(
            nonDumpableGid(
                inUserNamespace: true,
                mappings: [
                    IDMapping(containerID: 0, hostID: 100000, size: 1),
                    IDMapping(containerID: 1000, hostID: 200000, size: 1),
                ]) == 1000)
        // Only 0 mapped, or the mappings unknown (a namespace joined by path): no such gid.
        #expect(
            nonDumpableGid(inUserNamespace: true, mappings: [IDMapping(containerID: 0, hostID: 100000, size: 1)]) == -1)
        #expect(nonDumpableGid(inUserNamespace: true, mappings: []) == -1)
    }
}

/// When a `create` may fork its helpers from the host's binary (SealedExecutable).
struct SealedParentRuleTests {
    static func spec(_ namespaces: [Namespace]?) -> Spec {
        Spec(linux: Linux(namespaces: namespaces))
    }

    @Test("only a PID namespace of the container's own keeps the helpers out of every container's sight")
    func rule() {
        #expect(SealedExecutable.helpersInvisible(to: Self.spec([Namespace(type: "pid"), Namespace(type: "mount")])))
        #expect(SealedExecutable.helpersInvisible(to: Self.spec([Namespace(type: "pid", path: "")])))
        // The host's PID namespace, one joined by path, no linux section: the sealed parent.
        #expect(!SealedExecutable.helpersInvisible(to: Self.spec([Namespace(type: "mount")])))
        #expect(!SealedExecutable.helpersInvisible(to: Self.spec([Namespace(type: "pid", path: "/proc/1/ns/pid")])))
        #expect(!SealedExecutable.helpersInvisible(to: Self.spec(nil)))
        #expect(!SealedExecutable.helpersInvisible(to: Spec()))
    }
}
