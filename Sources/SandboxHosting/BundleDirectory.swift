/// The OCI bundle of one sandbox of `SandboxHost`: `/run/safespace-bundles/<id>/` with
/// `config.json` and, for a writable root, the overlay that is the root.
import Foundation
import Glibc
import OCI
import Runtime

/// A bundle directory this process created, and what it mounted in it.
///
/// Layout (writable root only for the last two):
/// ```
/// <parent>/<id>/config.json
/// <parent>/<id>/layer/          tmpfs, size 1g: upper/ and work/ of the overlay
/// <parent>/<id>/rootfs/         overlay: lowerdir = the store's rootfs (never written)
/// <parent>/<id>/lower/          with a user namespace: the store's rootfs idmapped, the lowerdir
/// ```
final class BundleDirectory {
    let path: String
    private var layerMounted = false
    private var overlayMounted = false
    private var lowerMounted = false

    var configPath: String { path + "/config.json" }
    var rootfsPath: String { path + "/rootfs" }
    var layerPath: String { path + "/layer" }
    var lowerPath: String { path + "/lower" }

    /// Creates `<parent>/<id>` (mode 0711; `parent` too, if missing) holding `lease.json`
    /// (`SandboxLease`: this process owns the sandbox). Search-only for others: a sandbox in a
    /// user namespace is an unprivileged host uid that must reach its root (`<id>/rootfs`) by
    /// path, as with runc; nothing can be listed or read. A directory of that name whose owner
    /// is dead (a killed run) is reclaimed first (`SandboxLeases.acquire`).
    /// - Throws: `SandboxHostError` `.nameInUse` if a live sandbox of that name exists already.
    init(leases: SandboxLeases, lease: SandboxLease) throws {
        path = try leases.acquire(lease)
    }

    /// Writes `config.json` (mode 0600).
    func writeConfig(_ spec: Spec) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(spec)
        guard FileManager.default.createFile(atPath: configPath, contents: data, attributes: [.posixPermissions: 0o600])
        else {
            throw SandboxHostError(.failed, "cannot write \(configPath)", operation: "write")
        }
    }

    /// Mounts the writable layer: a tmpfs of `size` holding the upper and work dirs, and an
    /// overlay of it over `lowerdir` at `rootfsPath`. Writes go to the tmpfs only.
    /// With `idMapping` (a user namespace's `0 -> hostID` map), the lower layer is `lowerdir`
    /// idmapped at `lowerPath` and the upper dir belongs to the mapped root, so the sandbox sees
    /// the store's files with their owners (Runtime's IDMappedMount).
    func mountWritableLayer(lowerdir: String, size: String, idMapping: [IDMapping]? = nil) throws {
        // overlayfs splits its options on ',' and lowerdir on ':'.
        if lowerdir.contains(where: { $0 == "," || $0 == ":" || $0 == "\\" }) {
            throw SandboxHostError(
                .invalidPlan, "rootfs path \(lowerdir) contains ',', ':' or '\\', which overlayfs cannot take")
        }
        for dir in [layerPath, rootfsPath] where mkdir(dir, 0o700) != 0 {
            throw SandboxHostError.failed("cannot create \(dir)", operation: "mkdir")
        }
        let flags = UInt(MS_NOSUID | MS_NODEV)
        guard mount("tmpfs", layerPath, "tmpfs", flags, "size=\(size),mode=0700") == 0 else {
            throw SandboxHostError.failed("mount tmpfs on \(layerPath)", operation: "mount")
        }
        layerMounted = true
        let upper = layerPath + "/upper"
        let work = layerPath + "/work"
        // The upper dir is the overlay's root directory: it takes its mode from the rootfs'.
        var status = stat()
        let rootMode = stat(lowerdir, &status) == 0 ? status.st_mode & 0o7777 : 0o755
        for dir in [upper, work] where mkdir(dir, 0o700) != 0 {
            throw SandboxHostError.failed("cannot create \(dir)", operation: "mkdir")
        }
        _ = chmod(upper, rootMode)
        var lower = lowerdir
        if let idMapping, let root = idMapping.first(where: { $0.containerID == 0 }) {
            guard mkdir(lowerPath, 0o700) == 0 else {
                throw SandboxHostError.failed("cannot create \(lowerPath)", operation: "mkdir")
            }
            try IDMappedMount.mount(lowerdir, at: lowerPath, mappings: idMapping)
            lowerMounted = true
            lower = lowerPath
            guard chown(upper, root.hostID, root.hostID) == 0 else {
                throw SandboxHostError.failed("chown \(upper)", operation: "chown")
            }
        }
        let options = "lowerdir=\(lower),upperdir=\(upper),workdir=\(work)"
        guard mount("overlay", rootfsPath, "overlay", flags, options) == 0 else {
            throw SandboxHostError.failed("mount overlay on \(rootfsPath) (\(options))", operation: "mount")
        }
        overlayMounted = true
    }

    /// Unmounts what `mountWritableLayer` mounted, then removes the directory, never
    /// recursively: a directory still holding a mount is left in place and reported.
    func remove() throws {
        var problems: [String] = []
        if overlayMounted {
            if let problem = unmount(rootfsPath) { problems.append(problem) } else { overlayMounted = false }
        }
        if layerMounted && !overlayMounted {
            if let problem = unmount(layerPath) { problems.append(problem) } else { layerMounted = false }
        }
        if lowerMounted && !overlayMounted {
            if let problem = unmount(lowerPath) { problems.append(problem) } else { lowerMounted = false }
        }
        if !overlayMounted && !layerMounted && !lowerMounted {
            // The lease last: while it is there, a run that is killed now leaves a sandbox
            // that the next run of the name or `safespace gc` reclaims.
            for file in [configPath, path + "/" + SandboxLease.fileName] where unlink(file) != 0 && errno != ENOENT {
                problems.append("cannot remove \(file): \(lastError())")
            }
            for dir in [rootfsPath, layerPath, lowerPath, path] where rmdir(dir) != 0 && errno != ENOENT {
                problems.append("cannot remove \(dir): \(lastError())")
            }
        }
        if !problems.isEmpty {
            throw SandboxHostError(.failed, problems.joined(separator: "; "), operation: "remove bundle")
        }
    }

    /// umount(2), falling back to a lazy unmount when something still holds the mount.
    private func unmount(_ target: String) -> String? {
        if umount2(target, 0) == 0 { return nil }
        if errno == EBUSY, umount2(target, Int32(MNT_DETACH)) == 0 { return nil }
        return "cannot unmount \(target): \(lastError())"
    }
}

/// strerror(3) of the current errno.
func lastError() -> String { String(cString: strerror(errno)) }
