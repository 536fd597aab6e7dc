import CSafeSpace
import Glibc
import LinuxKernel

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `spec.resources.ephemeralStorage`: one volume of the requested size per sandbox that holds
/// everything the sandbox can write (each writable path as a subdirectory, bind-mounted into
/// place, and the writable layer of a writable root as an overlay's upper dir), so their
/// total is capped: past it, writes fail with ENOSPC, and the node's disk and memory are fine.
///
/// Backends:
/// - `.loop` (the default): a sparse image file `<base>/<id>/disk.img` with ext4 (no journal,
///   no reserved blocks), attached to a loop device with autoclear and mounted at
///   `<base>/<id>/volume`. Disk-backed: the data does not count against the sandbox's memory
///   limit, so `ephemeralStorage` may exceed `memory`. Needs /dev/loop-control and mkfs.ext4.
/// - `.tmpfs`: a tmpfs with `size=`. No disk, nothing to format, but its pages are charged to
///   the memory cgroup of the writer and cannot be swapped out: once the data nears the
///   sandbox's memory limit the sandbox is OOM-killed instead of getting ENOSPC. The
///   fallback when no loop device can be had, and right only for volumes well below `memory`.
///
/// (Project quota on one shared xfs would avoid a file system per sandbox, but needs the
/// node's /var/lib on xfs mounted with prjquota; a loop image works on any node.)
public struct EphemeralStorage: Sendable, Equatable {
    public enum Backend: String, Sendable {
        case loop, tmpfs
    }

    public static let defaultBase = "/var/lib/safespace/ephemeral"
    static let field = "spec.resources.ephemeralStorage"

    public let sandbox: String
    public let base: String
    public let backend: Backend
    public let size: Int64

    /// `<base>/<id>`: the image, the volume's mount point and the overlay root live here.
    public var directory: String { base + "/" + sandbox }
    /// Where the volume is mounted on the host.
    public var volume: String { directory + "/volume" }
    var image: String { directory + "/disk.img" }
    /// The merged root of `writableLayer(lower:)`.
    public var rootfs: String { directory + "/rootfs" }

    /// The loop backend when this node has loop devices and mkfs.ext4, else tmpfs.
    public static var preferredBackend: Backend {
        access("/dev/loop-control", F_OK) == 0 && mkfsPath != nil ? .loop : .tmpfs
    }

    static var mkfsPath: String? {
        ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"].first { access($0, X_OK) == 0 }
    }

    /// Makes and mounts sandbox `id`'s volume of `size` bytes.
    /// - Throws: `ResourceError` naming `spec.resources.ephemeralStorage` with the step and
    ///   errno; on failure nothing is left behind.
    public static func create(sandbox id: String, size: Int64, base: String = defaultBase, backend: Backend? = nil)
        throws(ResourceError) -> EphemeralStorage
    {
        guard !id.isEmpty, !id.contains("/"), id != ".", id != ".." else {
            throw ResourceError(.invalidValue, field: "id", "\"\(id)\" cannot name a directory")
        }
        let storage = EphemeralStorage(sandbox: id, base: base, backend: backend ?? preferredBackend, size: size)
        try makeDirectories(base)
        if storage.backend == .loop { try checkDiskSpace(size: size, base: base) }
        if mkdir(storage.directory, 0o755) != 0 {
            // Never adopt a directory: it is another sandbox's volume (a live one, or one `reap` takes).
            throw errno == EEXIST
                ? ResourceError(
                    .alreadyExists, field: field,
                    "\(storage.directory) exists already: a volume of a sandbox named \(id)")
                : error("mkdir \(storage.directory)")
        }
        do {
            // Whose volume this is, before anything is mounted: `reap` destroys it once that
            // process is dead (the one rule of crash recovery, `ProcessIdentity`).
            try storage.writeOwner(.current())
            try makeDirectories(storage.volume)
            switch storage.backend {
            case .tmpfs:
                try mountOrThrow(
                    "tmpfs", storage.volume, "tmpfs", UInt(MS_NOSUID | MS_NODEV), "size=\(size),mode=0755",
                    step: "mount tmpfs")
            case .loop:
                try storage.makeImage()
                try storage.mountImage()
            }
            return storage
        } catch {
            try? storage.destroy()
            throw error
        }
    }

    /// `<directory>/owner.json`: the process the volume belongs to.
    var ownerPath: String { directory + "/owner.json" }

    func writeOwner(_ owner: ProcessIdentity) throws(ResourceError) {
        guard let data = try? JSONEncoder().encode(owner) else {
            throw ResourceError(.failed, field: Self.field, "encode owner")
        }
        let fd = open(ownerPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.error("create \(ownerPath)") }
        let ok = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count }
        close(fd)
        guard ok else { throw Self.error("write \(ownerPath)") }
    }

    /// The process the volume belongs to; nil for a volume made before owners were recorded,
    /// or by a process killed between its mkdir and the record.
    public var owner: ProcessIdentity? {
        guard let text = try? CPUAllocator.readText(ownerPath) else { return nil }
        return try? JSONDecoder().decode(ProcessIdentity.self, from: Data(text.utf8))
    }

    /// Sandbox `id`'s volume under `base` as another process made it: for `owner` and
    /// `destroy` (which undoes either backend).
    public static func existing(sandbox id: String, base: String = defaultBase) -> EphemeralStorage {
        EphemeralStorage(sandbox: id, base: base, backend: .tmpfs, size: 0)
    }

    func makeImage() throws(ResourceError) {
        let fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Self.error("create \(image)") }
        let ok = ftruncate(fd, off_t(size)) == 0
        let code = errno
        close(fd)
        guard ok else { throw Self.error("truncate \(image) to \(size) bytes", code: code) }
        guard let mkfs = Self.mkfsPath else {
            throw ResourceError(
                .missingTool, field: Self.field, "mkfs.ext4 is not installed (apt-get install e2fsprogs)")
        }
        // No journal (the data dies with the sandbox), no blocks reserved for root.
        let status = Self.spawnAndWait([
            mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1", image,
        ])
        guard status == 0 else {
            throw ResourceError(
                .failed, field: Self.field, "mkfs.ext4 \(image) exited with \(status)", operation: "mkfs.ext4")
        }
    }

    func mountImage() throws(ResourceError) {
        let fd = open(image, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error("open \(image)") }
        defer { close(fd) }
        var name = [CChar](repeating: 0, count: 64)
        let dev = ss_loop_attach(fd, 0, &name, name.count)
        guard dev >= 0 else { throw Self.error("attach \(image) to a loop device") }
        defer { close(dev) }  // with autoclear, the device goes when the mount does
        let device = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        try Self.mountOrThrow(device, volume, "ext4", UInt(MS_NOSUID | MS_NODEV), "", step: "mount \(device)")
    }

    /// A directory for writable path `path` (e.g. `/workspace`) on the volume, owned by
    /// `uid`:`gid` (host ids), to bind-mount at `path` in the sandbox.
    /// - Returns: its host path, `<volume>/paths/<path with / as _>`.
    public func directory(for path: String, uid: UInt32, gid: UInt32, mode: mode_t = 0o755) throws(ResourceError)
        -> String
    {
        let name = path.split(separator: "/").joined(separator: "_")
        let dir = volume + "/paths/" + (name.isEmpty ? "_" : name)
        try Self.makeDirectories(dir)
        guard chown(dir, uid, gid) == 0, chmod(dir, mode) == 0 else { throw Self.error("chown/chmod \(dir)") }
        return dir
    }

    /// A writable root: an overlay of `lower` (the shared, read-only rootfs) with its upper
    /// and work dirs on the volume, mounted at `rootfs` (use it as `root.path`).
    public func writableLayer(lower: String) throws(ResourceError) -> String {
        let upper = volume + "/layer/upper"
        let work = volume + "/layer/work"
        try Self.makeDirectories(upper)
        try Self.makeDirectories(work)
        try Self.makeDirectories(rootfs)
        try Self.mountOrThrow(
            "overlay", rootfs, "overlay", 0, "lowerdir=\(lower),upperdir=\(upper),workdir=\(work)",
            step: "mount overlay")
        return rootfs
    }

    /// Unmounts the overlay and the volume (detached, so a process still inside cannot block
    /// it; the loop device goes with the last reference) and removes `directory`. Idempotent.
    public func destroy() throws(ResourceError) {
        for target in [rootfs, volume] where Self.isMountPoint(target) {
            if umount2(target, Int32(MNT_DETACH)) != 0 && errno != EINVAL && errno != ENOENT {
                throw Self.error("umount \(target)")
            }
        }
        detachLoopDevices()
        unlink(image)
        unlink(ownerPath)
        for dir in [rootfs, volume] { rmdir(dir) }
        if rmdir(directory) != 0 && errno != ENOENT {
            throw Self.error("remove \(directory)")
        }
    }

    /// Detaches every loop device whose backing file is this volume's image
    /// (`/sys/block/loopN/loop/backing_file`, sysfs-block(5)): a create killed between the
    /// attach and the mount on a kernel without LOOP_CONFIGURE, or between LOOP_SET_FD and
    /// LOOP_SET_STATUS64, leaves one without autoclear that no unmount would release. A device
    /// still mounted is only marked to detach when its mount goes (LOOP_CLR_FD's autoclear).
    func detachLoopDevices() {
        guard let devices = Files.entries("/sys/block") else { return }
        for name in devices where name.hasPrefix("loop") {
            guard let backing = try? Files.readString("/sys/block/\(name)/loop/backing_file") else { continue }
            var path = String(backing.split(separator: "\n").first ?? "")
            if path.hasSuffix(" (deleted)") { path = String(path.dropLast(" (deleted)".count)) }
            if path == image { _ = ss_loop_clear("/dev/" + name) }
        }
    }

    /// Destroys the volumes under `base` whose owner (`owner.json`) is dead: after a crash,
    /// `delete` never ran for them. A volume without an owner record is asked about:
    /// `isAlive(id)` false destroys it.
    /// - Returns: the ids reaped.
    @discardableResult
    public static func reap(base: String = defaultBase, isAlive: (String) -> Bool) -> [String] {
        guard let ids = Files.entries(base) else { return [] }
        var reaped: [String] = []
        for id in ids {
            let volume = existing(sandbox: id, base: base)
            if let owner = volume.owner { if owner.isAlive { continue } } else if isAlive(id) { continue }
            // The backend only matters for create; destroy undoes either.
            if (try? volume.destroy()) != nil { reaped.append(id) }
        }
        return reaped
    }

    // MARK: helpers

    /// Refuses a loop-backed cap larger than the space `base`'s filesystem has free for it
    /// (statvfs(3): f_bavail × f_frsize). The image is sparse, so such a cap would let one
    /// sandbox fill the node's disk before its own volume is full. (A tmpfs volume is memory,
    /// charged to the sandbox's memory limit.)
    /// - Throws: `ResourceError` naming `spec.resources.ephemeralStorage`, with both sizes.
    static func checkDiskSpace(size: Int64, base: String) throws(ResourceError) {
        var st = statvfs()
        guard statvfs(base, &st) == 0 else { throw error("statvfs \(base)") }
        let available = Int64(
            clamping: UInt64(st.f_bavail).multipliedReportingOverflow(by: UInt64(st.f_frsize)).partialValue)
        if size > available {
            throw ResourceError(
                .exceedsNode, field: field,
                "\(size) bytes asked for, but \(base) has \(available) bytes free; a cap above the node's free disk would let the sandbox fill it"
            )
        }
    }

    static func error(_ step: String, code: Int32 = errno) -> ResourceError {
        ResourceError(
            .failed, field: field, "\(step): \(String(cString: strerror(code)))", operation: step, errno: code)
    }

    static func mountOrThrow(
        _ source: String, _ target: String, _ type: String, _ flags: UInt, _ data: String, step: String
    ) throws(ResourceError) {
        if mount(source, target, type, flags, data) != 0 { throw error(step) }
    }

    static func makeDirectories(_ path: String) throws(ResourceError) {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST { throw error("mkdir \(current)") }
        }
    }

    /// Whether `path` is a mount point (its device differs from its parent's, or it is a bind).
    static func isMountPoint(_ path: String) -> Bool {
        guard let mounts = try? MountInfo.read() else { return false }
        return mounts.contains { $0.mountPoint == path }
    }

    /// posix_spawn + waitpid, output discarded; the exit status (128+N for signal N).
    static func spawnAndWait(_ args: [String]) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = args.map { $0.withCString { strdup($0) } } + [nil]
        defer { argv.forEach { free($0) } }
        var env: [UnsafeMutablePointer<CChar>?] = [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".withCString { strdup($0) }, nil,
        ]
        defer { free(env[0]) }
        var pid: pid_t = 0
        guard posix_spawn(&pid, args[0], &actions, nil, argv, &env) == 0 else { return 127 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) != 0 ? 128 + (status & 0x7f) : (status >> 8) & 0xff
    }
}
