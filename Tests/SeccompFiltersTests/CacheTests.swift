import Foundation
import Testing

@testable import OCI
@testable import SeccompFilters

/// The on-disk cache of compiled filters: a hit is the same program, anything else a compile.
struct CacheTests {
    func withCache(_ body: (SeccompCache) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "seccomp-cache-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try body(SeccompCache(directory: dir))
    }

    func files(_ cache: SeccompCache) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cache.directory)) ?? []).sorted()
    }

    let denyMkdir = profile([.init(names: ["mkdir", "no_such_call"], action: "SCMP_ACT_ERRNO")])

    @Test("a second lookup is a hit: one file, the same program (BPF, flags, unknown names)")
    func hit() throws {
        try withCache { cache in
            let first = try cache.program(for: denyMkdir)
            #expect(files(cache).count == 1)
            let second = try cache.program(for: denyMkdir)
            let fresh = try SeccompCompiler.compile(denyMkdir)
            #expect(first == second)
            #expect(second == fresh)
            #expect(second.unknownSyscalls == ["no_such_call"])
        }
    }

    @Test(
        "profiles that differ in any field have different keys",
        arguments: [
            { (s: inout Seccomp) in s.defaultAction = "SCMP_ACT_LOG" },
            { (s: inout Seccomp) in s.syscalls![0].errnoRet = 13 },
            { (s: inout Seccomp) in s.syscalls![0].names = ["mkdir", "no_such"] },
            { (s: inout Seccomp) in s.syscalls![0].args = [.init(index: 0, value: 1, op: "SCMP_CMP_EQ")] },
            { (s: inout Seccomp) in s.architectures = ["SCMP_ARCH_X86_64"] },
            { (s: inout Seccomp) in s.flags = ["SECCOMP_FILTER_FLAG_LOG"] },
        ] as [@Sendable (inout Seccomp) -> Void])
    func keys(change: @Sendable (inout Seccomp) -> Void) {
        var other = denyMkdir
        change(&other)
        #expect(SeccompCache.key(other) != SeccompCache.key(denyMkdir))
    }

    @Test("a file under the right name with another key (a hash collision) or damaged is a miss, then replaced")
    func collisionAndDamage() throws {
        try withCache { cache in
            let other = profile([.init(names: ["rmdir"], action: "SCMP_ACT_KILL")])
            let otherProgram = try SeccompCompiler.compile(other)
            let path = cache.directory + "/" + SeccompCache.fnv1a(SeccompCache.key(denyMkdir)) + ".bin"
            try FileManager.default.createDirectory(atPath: cache.directory, withIntermediateDirectories: true)
            let planted = SeccompCache.encode(otherProgram, key: SeccompCache.key(other))
            try Data(planted).write(to: URL(fileURLWithPath: path))
            let fresh = try SeccompCompiler.compile(denyMkdir)
            #expect(try cache.program(for: denyMkdir) == fresh)
            for damage in [Array("12:short".utf8), [], Array(planted.dropLast(3))] {
                try Data(damage).write(to: URL(fileURLWithPath: path))
                #expect(try cache.program(for: denyMkdir) == fresh)
            }
        }
    }

    @Test("at most `capacity` files are kept")
    func eviction() throws {
        try withCache { base in
            var cache = base
            cache.capacity = 3
            for errno in 1...5 {
                _ = try cache.program(
                    for: profile([.init(names: ["mkdir"], action: "SCMP_ACT_ERRNO", errnoRet: UInt32(errno))]))
            }
            #expect(files(cache).count == 3)
        }
    }

    @Test("a compile error is not cached and is thrown every time")
    func errorsAreNotCached() throws {
        try withCache { cache in
            let bad = profile([.init(names: [""], action: "SCMP_ACT_ERRNO")])
            #expect(throws: SeccompError.self) { try cache.program(for: bad) }
            #expect(throws: SeccompError.self) { try cache.program(for: bad) }
            #expect(files(cache).isEmpty)
        }
    }
}
