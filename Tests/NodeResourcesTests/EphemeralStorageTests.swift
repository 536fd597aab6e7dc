import Foundation
import LinuxKernel
import Testing

@testable import NodeResources

/// Real volumes (root: mount, loop devices). Each test uses its own base directory and
/// removes what it made.
@Suite(.enabled(if: getuid() == 0, "needs root to mount"), .serialized)
struct EphemeralStorageTests {
    static func base() -> String { NSTemporaryDirectory() + "safespace-eph-\(UUID().uuidString.prefix(8))" }

    /// Writes `bytes` to `path` in 1 MiB chunks; the errno of the first failed write, or 0.
    static func fill(_ path: String, bytes: Int) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        var written = 0
        while written < bytes {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 { return errno }
            written += n
        }
        return fsync(fd) == 0 ? 0 : errno
    }

    static func mounted(_ path: String) -> Bool {
        ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").contains(" \(path) ")
    }

    /// The file system type and source device of the mount at `path` ("ext4 /dev/loop" for
    /// any loop device), from /proc/self/mountinfo (proc(5)).
    static func mountSource(_ path: String) -> String? {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            let fields = halves[0].split(separator: " ")
            guard halves.count == 2, fields.count > 4, fields[4] == path else { continue }
            let after = halves[1].split(separator: " ")
            guard after.count > 1 else { return nil }
            let source = after[1].hasPrefix("/dev/loop") ? "/dev/loop" : String(after[1])
            return "\(after[0]) \(source)"
        }
        return nil
    }

    @Test(
        "loop: writing past the cap gets ENOSPC, across writable paths together; destroy leaves nothing",
        .enabled(if: EphemeralStorage.preferredBackend == .loop, "no /dev/loop-control or mkfs.ext4 on this node"))
    func enospcLoop() throws { try enospc(backend: .loop) }

    @Test("tmpfs: writing past the cap gets ENOSPC, across writable paths together; destroy leaves nothing")
    func enospcTmpfs() throws { try enospc(backend: .tmpfs) }

    func enospc(backend: EphemeralStorage.Backend) throws {
        let base = Self.base()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let v = try EphemeralStorage.create(sandbox: "s1", size: 16 << 20, base: base, backend: backend)
        // What is really mounted there: ext4 on a loop device, or a tmpfs.
        #expect(
            Self.mountSource(v.volume) == (backend == .loop ? "ext4 /dev/loop" : "tmpfs tmpfs"),
            "\(String(describing: Self.mountSource(v.volume)))")
        var destroyed = false
        defer { if !destroyed { try? v.destroy() } }
        #expect(Self.mounted(v.volume))
        let tmp = try v.directory(for: "/tmp", uid: 1000, gid: 1000)
        let work = try v.directory(for: "/workspace", uid: 1000, gid: 1000)
        var st = stat()
        #expect(stat(work, &st) == 0 && st.st_uid == 1000)
        #expect(Self.fill(tmp + "/a", bytes: 10 << 20) == 0)
        // 10 MiB used in /tmp: 10 more in /workspace exceed the 16 MiB shared cap.
        #expect(Self.fill(work + "/b", bytes: 10 << 20) == ENOSPC)
        try v.destroy()
        destroyed = true
        #expect(!Self.mounted(v.volume))
        #expect(!FileManager.default.fileExists(atPath: v.directory))
    }

    @Test("a loop-backed cap above the free disk is refused naming the field; nothing is made")
    func aboveFreeDisk() throws {
        let base = Self.base()
        defer { try? FileManager.default.removeItem(atPath: base) }
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        var st = statvfs()
        try #require(statvfs(base, &st) == 0)
        let free = Int64(st.f_bavail) * Int64(st.f_frsize)
        let error = #expect(throws: ResourceError.self) {
            try EphemeralStorage.create(sandbox: "big", size: free + (1 << 30), base: base, backend: .loop)
        }
        #expect(error?.field == "spec.resources.ephemeralStorage", "\(String(describing: error))")
        #expect(error?.message.contains("free") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: base + "/big"))
    }

    /// The loop devices whose backing file is `image` (sysfs-block(5)), "(deleted)" or not.
    static func loopDevices(backedBy image: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []
        return names.filter { name in
            guard name.hasPrefix("loop"),
                let backing = try? String(contentsOfFile: "/sys/block/\(name)/loop/backing_file", encoding: .utf8)
            else { return false }
            let path = backing.trimmingCharacters(in: .whitespacesAndNewlines)
            return path == image || path == image + " (deleted)"
        }
    }

    static func detach(_ device: String) {
        let p = Foundation.Process()
        p.executableURL = URL(
            fileURLWithPath: access("/sbin/losetup", X_OK) == 0 ? "/sbin/losetup" : "/usr/sbin/losetup")
        p.arguments = ["-d", device]
        try? p.run()
        p.waitUntilExit()
    }

    @Test(
        "destroy detaches a loop device attached without autoclear, as a create killed between attach and mount leaves it",
        .enabled(if: access("/sbin/losetup", X_OK) == 0 || access("/usr/sbin/losetup", X_OK) == 0, "no losetup"),
        .enabled(if: EphemeralStorage.preferredBackend == .loop, "no /dev/loop-control"))
    func destroyDetachesAPartwayAttach() throws {
        let base = Self.base()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let volume = EphemeralStorage.existing(sandbox: "cut", base: base)
        try FileManager.default.createDirectory(atPath: volume.directory, withIntermediateDirectories: true)
        let fd = open(volume.image, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        #expect(fd >= 0 && ftruncate(fd, 1 << 20) == 0)
        close(fd)
        // losetup attaches without LO_FLAGS_AUTOCLEAR: the state a kill -9 left between
        // LOOP_SET_FD and LOOP_SET_STATUS64, which no unmount ever releases.
        let losetup = access("/sbin/losetup", X_OK) == 0 ? "/sbin/losetup" : "/usr/sbin/losetup"
        let attach = Foundation.Process()
        attach.executableURL = URL(fileURLWithPath: losetup)
        attach.arguments = ["-f", volume.image]
        try attach.run()
        attach.waitUntilExit()
        let attached = Self.loopDevices(backedBy: volume.image)
        defer {
            for name in Self.loopDevices(backedBy: volume.image) { Self.detach("/dev/" + name) }
        }
        #expect(attached.count == 1)
        try volume.destroy()
        #expect(Self.loopDevices(backedBy: volume.image) == [])
        #expect(!FileManager.default.fileExists(atPath: volume.directory))
    }

    @Test(
        "loop: the device of a volume is attached with autoclear (one LOOP_CONFIGURE)",
        .enabled(if: EphemeralStorage.preferredBackend == .loop, "no /dev/loop-control or mkfs.ext4 on this node"))
    func loopAutoclear() throws {
        let base = Self.base()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let v = try EphemeralStorage.create(sandbox: "ac", size: 16 << 20, base: base, backend: .loop)
        defer { try? v.destroy() }
        let devices = Self.loopDevices(backedBy: v.image)
        #expect(devices.count == 1)
        for name in devices {
            let flag = try String(contentsOfFile: "/sys/block/\(name)/loop/autoclear", encoding: .utf8)
            #expect(flag.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        }
    }

    @Test("a writable root: an overlay whose writes land on the volume")
    func writableLayer() throws {
        let base = Self.base()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let lower = base + "/lower"
        try FileManager.default.createDirectory(atPath: lower + "/etc", withIntermediateDirectories: true)
        try "x".write(toFile: lower + "/etc/hostname", atomically: true, encoding: .utf8)
        let v = try EphemeralStorage.create(sandbox: "s2", size: 8 << 20, base: base)
        defer { try? v.destroy() }
        let root = try v.writableLayer(lower: lower)
        #expect(try String(contentsOfFile: root + "/etc/hostname", encoding: .utf8) == "x")
        #expect(Self.fill(root + "/big", bytes: 16 << 20) == ENOSPC)
        #expect(!FileManager.default.fileExists(atPath: lower + "/big"))
        try v.destroy()
        #expect(!Self.mounted(root) && !Self.mounted(v.volume))
    }

    @Test(
        "reap removes the volumes whose owner died (pid reused or gone), keeps a live owner's; unrecorded ones are asked about"
    )
    func reap() throws {
        let base = Self.base()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let gone = try EphemeralStorage.create(sandbox: "gone", size: 4 << 20, base: base, backend: .tmpfs)
        let reused = try EphemeralStorage.create(sandbox: "reused", size: 4 << 20, base: base, backend: .tmpfs)
        let alive = try EphemeralStorage.create(sandbox: "alive", size: 4 << 20, base: base, backend: .tmpfs)
        let legacy = try EphemeralStorage.create(sandbox: "legacy", size: 4 << 20, base: base, backend: .tmpfs)
        defer { try? alive.destroy() }
        #expect(alive.owner == .current())
        // A dead process: a child that exited and was reaped.
        let child = Foundation.Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        try gone.writeOwner(ProcessIdentity(pid: child.processIdentifier, startTime: 1))
        // This live process's pid with another start time: a reused pid is not the owner.
        var me = ProcessIdentity.current()
        me.startTime += 1
        try reused.writeOwner(me)
        unlink(legacy.ownerPath)
        #expect(EphemeralStorage.reap(base: base) { $0 != "legacy" }.sorted() == ["gone", "legacy", "reused"])
        #expect(
            !Self.mounted(gone.volume) && !Self.mounted(reused.volume) && !Self.mounted(legacy.volume)
                && Self.mounted(alive.volume))
        #expect(EphemeralStorage.reap(base: base) { _ in false }.isEmpty)
    }
}
