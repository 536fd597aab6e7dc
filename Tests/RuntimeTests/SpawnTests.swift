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
