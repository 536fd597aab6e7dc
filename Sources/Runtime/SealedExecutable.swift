import CSafeSpace
import Glibc
import LinuxKernel
import OCI

/// The binary every helper runs where a container can see it (`init`, the `exec` helper, the
/// user namespace helper of `IDMappedMount`): this process's own executable, sealed so that a
/// container cannot write to the host's file through /proc/PID/exe (CVE-2019-5736; runc's
/// libcontainer/exeseal). Made once per runtime process and kept open (O_CLOEXEC).
///
/// Two ways, both safe, in runc's order:
/// - `overlayfs`: the binary seen through a detached read-only overlayfs mount of its own
///   directory (fsopen(2)/fsmount(2), never attached anywhere). No copy; reopening it for
///   writing fails with EROFS, and there is no way back to the host's file from it.
/// - `memfd`: a copy in a memfd sealed against writes, resizes and seal changes (fcntl(2)
///   F_ADD_SEALS); write(2) fails with EPERM. Costs one copy of the binary per runtime
///   process (`scripts/bench` shows it as `safespace-memfd`).
///
/// `SAFESPACE_EXE_SEAL=memfd` in the runtime's environment skips the overlayfs attempt (for
/// measuring the copy, or a host whose overlayfs misbehaves); there is no value that runs the
/// host's file itself.
public enum SealedExecutable {
    public enum Method: String, Sendable {
        case overlayfs, memfd
    }

    /// The empty directory under the binary's directory in the overlay (overlayfs needs two
    /// lower layers to mount without an upper one). Must not contain, or be inside, the
    /// binary's directory; created on first use, mode 0500.
    static let emptyLowerDir = "/run/safespace-exe-lower"

    private static let sealed: Result<(fd: Int32, method: Method), any Error> = Result { try make() }

    /// The sealed executable's fd, for execveat(2) with AT_EMPTY_PATH, for the helpers this
    /// process forks. They are copies of this process until they re-execute, so it must run
    /// the sealed binary itself (`reexecIfUnsealed`, which every front end calls first), unless
    /// no container can see a helper before its re-execution (`visibleToContainer` false: see
    /// `helpersInvisible(to:)`).
    /// - Throws: `RuntimeError` when this process runs the host's file and the helper is visible
    ///   to a container; `SysError` when it cannot be opened. The same error on every call of
    ///   this process.
    static func fd(visibleToContainer: Bool = true) throws -> Int32 {
        guard isRunningSealed || !visibleToContainer else {
            throw RuntimeError(
                .hostFailure,
                "refusing to start a container's helpers from a process that runs the host's binary: call SealedExecutable.reexecIfUnsealed() first"
            )
        }
        return try sealed.get().fd
    }

    /// Whether the helpers that start a container of `spec` are out of every container's sight
    /// until they re-execute as the sealed binary: the spec asks for a PID namespace of its own
    /// (a `pid` entry without a path). Then stage 2 is PID 1 of that empty namespace until its
    /// execveat(2), and stage 1 and this process stay in the caller's PID namespace, which only
    /// the host and containers sharing the host's PID namespace see, and those see the runtime
    /// process itself as well (runc's parent runs the host's file too; only `runc init`, the
    /// process that enters the container, is sealed). /proc/PID/exe is reached only through a
    /// PID namespace that shows the process (proc(5), pid_namespaces(7)). A spec without a PID
    /// namespace (the host's) or joining one by path needs the sealed parent; so does `exec`.
    public static func helpersInvisible(to spec: Spec) -> Bool {
        spec.linux?.namespaces?.contains { $0.type == "pid" && ($0.path ?? "").isEmpty } == true
    }

    /// `reexecIfUnsealed()` for `create` and `run` of the bundle at `bundle`: no re-execution
    /// when the bundle's spec gives the container a PID namespace of its own
    /// (`helpersInvisible(to:)`), saving a start of this binary per container. The create
    /// decides again from the spec it reads itself (`fd(visibleToContainer:)`), so a
    /// config.json changed in between fails the create instead of weakening it; an unreadable
    /// or invalid one re-executes (the create reports it).
    /// - Throws: as `reexecIfUnsealed()`.
    public static func reexecIfUnsealed(creatingFrom bundle: String) throws {
        if isRunningSealed { return }
        if let (_, spec) = try? BundleSpec.load(bundle + "/config.json"), helpersInvisible(to: spec) { return }
        try reexecIfUnsealed()
    }

    /// `runningSealed()` of this process, read once (its executable never changes).
    private static let isRunningSealed = runningSealed()

    /// How this process sealed its executable, or nil when it could not.
    public static var method: Method? { try? sealed.get().method }

    /// Re-executes this process from its sealed executable (fexecve(3)), unless it runs one
    /// already. For the verbs that start processes in a container: every process they fork
    /// (stage 1, and stage 2 until it re-executes as `init`) then runs the sealed binary, not
    /// the host's file. Non-dumpable is not enough there: a container holding CAP_SYS_PTRACE in
    /// the host's user namespace may open /proc/PID/exe of a non-dumpable process, and
    /// `exec`'s helper is in the container's PID namespace from its clone on.
    /// - Throws: `SysError` when the binary cannot be sealed or re-executed; the caller must
    ///   stop then rather than run helpers from the host's file.
    public static func reexecIfUnsealed() throws {
        if isRunningSealed { return }
        let fd = try sealed.get().fd
        fexecve(fd, CommandLine.unsafeArgv, environ)
        throw SysError("re-execute the sealed binary (fexecve)", path: "/proc/self/exe")
    }

    /// Whether this process's executable cannot be opened for writing by anyone: a sealed
    /// memfd (F_SEAL_WRITE, fcntl(2)) or a file on a read-only mount (statvfs(3) ST_RDONLY),
    /// such as the overlayfs view.
    static func runningSealed() -> Bool {
        let fd = ss_open("/proc/self/exe", O_RDONLY | O_CLOEXEC, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let seals = fcntl(fd, F_GET_SEALS)
        if seals >= 0 && seals & F_SEAL_WRITE != 0 { return true }
        var st = statvfs()
        return fstatvfs(fd, &st) == 0 && st.f_flag & UInt(ST_RDONLY) != 0
    }

    private static func make() throws -> (fd: Int32, method: Method) {
        if isRunningSealed {
            // Re-executed already (`reexecIfUnsealed`): this executable is the sealed one.
            let fd = ss_open("/proc/self/exe", O_RDONLY | O_CLOEXEC, 0)
            guard fd >= 0 else { throw SysError("open", path: "/proc/self/exe") }
            return (fd, fcntl(fd, F_GET_SEALS) >= 0 ? .memfd : .overlayfs)
        }
        var overlayError: SysError?
        if getenv("SAFESPACE_EXE_SEAL").map({ String(cString: $0) }) != Method.memfd.rawValue {
            do { return (try overlay(), .overlayfs) } catch let error as SysError { overlayError = error }
        }
        do { return (try memfd(), .memfd) } catch let error as SysError {
            if let overlayError {
                throw SysError("seal /proc/self/exe (overlayfs: \(overlayError); memfd)", errno: error.errno)
            }
            throw error
        }
    }

    private static func overlay() throws -> Int32 {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { throw SysError("readlink", path: "/proc/self/exe") }
        let path = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard path.hasPrefix("/"), !path.hasSuffix(" (deleted)"), let slash = path.lastIndex(of: "/") else {
            throw SysError("overlayfs view of", path: path, errno: ENOENT)
        }
        let dir = slash == path.startIndex ? "/" : String(path[..<slash])
        let name = String(path[path.index(after: slash)...])
        let dirFd = ss_open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC, 0)
        guard dirFd >= 0 else { throw SysError("open", path: dir) }
        defer { close(dirFd) }
        if mkdir(emptyLowerDir, 0o500) != 0 && errno != EEXIST { throw SysError("mkdir", path: emptyLowerDir) }
        let emptyFd = ss_open(emptyLowerDir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard emptyFd >= 0 else { throw SysError("open", path: emptyLowerDir) }
        defer { close(emptyFd) }
        let fd = ss_exe_overlay(dirFd, emptyFd, name)
        guard fd >= 0 else { throw SysError("overlayfs view of", path: path) }
        return fd
    }

    private static func memfd() throws -> Int32 {
        let src = ss_open("/proc/self/exe", O_RDONLY | O_CLOEXEC, 0)
        guard src >= 0 else { throw SysError("open", path: "/proc/self/exe") }
        defer { close(src) }
        let fd = ss_exe_memfd(src, "safespace-runtime")
        guard fd >= 0 else { throw SysError("sealed memfd copy of", path: "/proc/self/exe") }
        return fd
    }
}
