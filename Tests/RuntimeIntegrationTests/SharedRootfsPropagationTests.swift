import Foundation
import Glibc
import TestSupport
import Testing

/// A rootfs store on a shared mount, as on every systemd host (systemd makes / rshared; the
/// development machines have / private). The user-namespace path clones the rootfs with
/// open_tree in the host's namespace; a clone of a shared mount joins its peer group, so
/// without care the sandbox's mounts propagate back to the host (and to every sandbox on the
/// same rootfs) and pivot_root refuses the shared root with EINVAL. Found booting
/// systemd in scripts/vm/systemd-boot-test.
@Suite(
    "Rootfs on a shared mount",
    .enabled(if: Harness.isRoot && Harness.hasPythonRootfs, "needs root and the python rootfs (scripts/setup)"))
struct SharedRootfsPropagationTests {
    /// The mount points of this process's mount namespace at or below `dir`.
    static func mounts(below dir: String) throws -> [String] {
        let text = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            return point == dir || point.hasPrefix(dir + "/") ? point : nil
        }
    }

    @Test("safespace run on a shared rootfs store: the sandbox runs and none of its mounts reach the host")
    func sharedStore() throws {
        let store = try Harness.tempDir("shared-store")
        // rmdir, never a recursive removal: `store` is a view of the real rootfs store.
        defer { rmdir(store) }
        let storeRoot = ((Harness.pythonRootfs as NSString).deletingLastPathComponent as NSString)
            .deletingLastPathComponent
        try #require(
            mount(storeRoot, store, nil, UInt(MS_BIND | MS_REC), nil) == 0,
            "bind \(storeRoot): \(String(cString: strerror(errno)))")
        // Detaches the view and anything that propagated below it.
        defer { _ = umount2(store, Int32(MNT_DETACH)) }
        try #require(mount(nil, store, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY), nil) == 0)
        try #require(mount(nil, store, nil, UInt(MS_SHARED | MS_REC), nil) == 0)
        let before = try Self.mounts(below: store)

        let r = try Harness.run(
            Harness.cliBinary,
            ["run", "--rootfs-store", store, "--runtime", "python:3.11", "--", "python3", "-c", "print(6 * 7)"],
            timeout: 120)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "42\n")
        #expect(!r.stderr.contains("pivot_root"), "\(r.stderr)")
        let after = try Self.mounts(below: store)
        #expect(after == before, "mounts the sandbox left on the host: \(Set(after).subtracting(before).sorted())")
    }
}
