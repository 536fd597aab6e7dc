/// The in-sandbox agent on the host side: its binary (`safespace-agent`, a static C program,
/// Sources/SafeSpaceAgent) and one directory per sandbox through which the daemon reaches it.
///
/// Inside a sandbox (never a mountpoint in the rootfs: both destinations are on the sandbox's
/// own /dev tmpfs, SandboxPolicy.systemMounts):
/// - `/dev/.safespace-agent`: a read-only bind of the daemon's copy of the binary, run as the
///   sandbox's PID 1 (the runtime sets its user, filter and capabilities before exec);
/// - `/dev/.safespace`: a bind of the sandbox's host directory, a tmpfs of its own (64 KiB, 64
///   inodes, owned by the sandbox's host uid, mode 0700, nosuid,nodev,noexec): the agent's
///   sockets. Nothing else is in it, no other sandbox sees it, and what the sandbox writes
///   there is capped.
import Foundation
import Glibc
import LinuxKernel
import Logging
import OCI

struct AgentInstall: Sendable {
    /// `<parent of the bundle root>/safespaced-agents`.
    let root: String
    /// The daemon's copy of the binary, `<root>/bin/safespace-agent`.
    var binary: String { root + "/bin/safespace-agent" }
    static let sandboxBinary = "/dev/.safespace-agent"
    static let sandboxDirectory = "/dev/.safespace"
    static let directorySize = "64k"

    /// Where the agent binary is: `$SAFESPACE_AGENT`, beside the daemon's executable, or
    /// /usr/libexec/safespace/safespace-agent. `SAFESPACE_AGENT=off`: none (sandboxes run the
    /// idle shell and execs the runtime exec path, as before the agent; for comparisons).
    static func locate() -> String? {
        var candidates: [String] = []
        if let path = ProcessInfo.processInfo.environment["SAFESPACE_AGENT"] {
            if path == "off" { return nil }
            candidates.append(path)
        }
        // The daemon's own executable: argv[0] (/proc/self/exe may name a sealed copy).
        var executables = [CommandLine.arguments.first ?? ""]
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            executables.append(exe)
        }
        for exe in executables where exe.contains("/") {
            candidates.append(URL(fileURLWithPath: exe).deletingLastPathComponent().path + "/safespace-agent")
        }
        candidates += ["/usr/libexec/safespace/safespace-agent", "/usr/local/libexec/safespace/safespace-agent"]
        return candidates.first { access($0, X_OK) == 0 }
    }

    /// Copies the agent binary under `<parent of bundleRoot>/safespaced-agents` (a new file
    /// renamed into place: running sandboxes keep the inode they bound).
    /// - Returns: nil (with a warning) when no binary is found or it cannot be copied: the
    ///   daemon's sandboxes then run the idle shell and every exec is a runtime exec.
    static func install(bundleRoot: String, logger: Logger) -> AgentInstall? {
        guard let source = locate() else {
            logger.warning("no safespace-agent binary found: execs use the runtime exec path")
            return nil
        }
        let install = AgentInstall(
            root: URL(fileURLWithPath: bundleRoot).deletingLastPathComponent().path + "/safespaced-agents")
        do {
            for dir in [install.root, install.root + "/bin", install.root + "/sandboxes"] {
                if mkdir(dir, 0o755) != 0 && errno != EEXIST { throw SysError("mkdir", path: dir) }
                chmod(dir, 0o755)
            }
            let bytes = try Files.read(source)
            try Files.writeAtomically(install.binary, bytes, mode: 0o755)
        } catch {
            logger.warning("cannot install safespace-agent (\(error)): execs use the runtime exec path")
            return nil
        }
        return install
    }

    func directory(_ name: String) -> String { root + "/sandboxes/" + name }

    /// PID 1's command: the agent, with the warm Python interpreter when `python` is set.
    func args(python: Bool, preload: [String]) -> [String] {
        var args = [Self.sandboxBinary, "--dir", Self.sandboxDirectory]
        if python {
            args += ["--python", "python3"]
            for module in preload { args += ["--preload", module] }
        }
        return args
    }

    /// The two bind mounts of a sandbox (after the spec's own: /dev is mounted by then).
    func mounts(_ name: String) -> [Mount] {
        [
            Mount(
                destination: Self.sandboxBinary, type: "bind", source: binary,
                options: ["bind", "ro", "nosuid", "nodev"]),
            Mount(
                destination: Self.sandboxDirectory, type: "bind", source: directory(name),
                options: ["bind", "nosuid", "nodev", "noexec"]),
        ]
    }

    /// Makes the sandbox's directory: a tmpfs of its own, root's until `own`.
    func prepare(_ name: String) throws {
        let path = directory(name)
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw SysError("mkdir", path: path) }
        let options = "size=\(Self.directorySize),nr_inodes=64,mode=0700"
        guard mount("tmpfs", path, "tmpfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), options) == 0 else {
            throw SysError("mount", path: path)
        }
    }

    /// Gives the directory to the sandbox's process user: its host uid and gid under the
    /// container's id mappings (known once the container is created: the runtime allocates
    /// the range), before its init (the agent) starts.
    func own(_ name: String, spec: Spec) throws {
        let user = spec.process?.user
        func host(_ id: UInt32, _ mappings: [IDMapping]?) -> UInt32 {
            guard let mappings, !mappings.isEmpty else { return id }
            for m in mappings where id >= m.containerID && id - m.containerID < m.size {
                return m.hostID + (id - m.containerID)
            }
            return 65534
        }
        let path = directory(name)
        guard
            chown(
                path, host(user?.uid ?? 0, spec.linux?.uidMappings), host(user?.gid ?? 0, spec.linux?.gidMappings))
                == 0
        else { throw SysError("chown", path: path) }
    }

    /// Waits (at most 2 s for the agent, 10 s for the warm interpreter) until the agent's
    /// sockets are there, so that a sandbox is answered as created once it takes execs. A
    /// socket that does not come is no error: its execs then run another way.
    func waitForSockets(_ name: String, python: Bool) {
        let clock = ContinuousClock()
        let start = clock.now
        var st = stat()
        for (socket, limit) in [(AgentExec.agentSocket, 2)] + (python ? [(AgentExec.pythonSocket, 10)] : []) {
            while lstat(directory(name) + "/" + socket, &st) != 0, clock.now - start < .seconds(limit) {
                usleep(1000)
            }
        }
    }

    /// Unmounts and removes the sandbox's directory.
    /// - Returns: what could not be removed.
    func remove(_ name: String) -> [String] {
        let path = directory(name)
        var st = stat()
        guard lstat(path, &st) == 0 else { return [] }
        for _ in 0..<4 where umount2(path, Int32(MNT_DETACH)) == 0 {}
        if rmdir(path) != 0 && errno != ENOENT {
            return ["agent directory \(path): \(String(cString: strerror(errno)))"]
        }
        return []
    }

    /// Names of the sandbox directories present.
    func names() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: root + "/sandboxes")) ?? []
    }
}
