import CSafeSpace
import Glibc
import LinuxKernel
import OCI

/// `process.terminal`: a pty made inside the container's devpts; the master goes to the
/// caller's `--console-socket` (SCM_RIGHTS, as runc sends it), the slave becomes stdio.
enum Console {
    /// - Returns: the master fd (the caller closes it once sent).
    static func setup(socket: Int32, size: ConsoleSize?, bindConsole: Bool) throws -> Int32 {
        let master = try sys("open /dev/ptmx") { ss_open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC, 0) }
        try sys("unlockpt") { ss_unlockpt(master) }
        var name = [CChar](repeating: 0, count: 128)
        try sys("ptsname") { ss_ptsname(master, &name, name.count) }
        let slavePath = String(nulTerminated: name)
        if let size { _ = ss_set_winsize(master, UInt16(size.height), UInt16(size.width)) }
        let slave = try sys("open", path: slavePath) { ss_open(slavePath, O_RDWR | O_NOCTTY | O_CLOEXEC, 0) }
        if bindConsole { try bind(slavePath, overConsoleOf: "/dev") }
        let payload = Array("/dev/ptmx".utf8)
        var fdArray = [master]
        let sent = payload.withUnsafeBytes { ss_send_fds(socket, $0.baseAddress, $0.count, &fdArray, 1) }
        if sent < 0 { throw SysError("send pty master on --console-socket") }
        close(socket)
        // Already the leader of its own session (spawn.c's stage 2 calls setsid(2) for every
        // container process); kept for a caller that is not.
        _ = setsid()
        try sys("ioctl(TIOCSCTTY)") { ss_ioctl_int(slave, UInt(TIOCSCTTY), 0) }
        for target in Int32(0)...2 { dup2(slave, target) }
        close(slave)
        return master
    }

    /// Binds the pty slave over `console` in `devDir` (the container's /dev, after pivot_root).
    /// The rootfs decides what /dev/console is: a symbolic link there would make the bind land
    /// on whatever file it names (and O_CREAT create that file, e.g. in a volume shared with
    /// the host), so only a regular file or a device node is bound over; a missing one is
    /// created (O_EXCL, O_NOFOLLOW). The bind goes through an O_PATH fd of the checked file
    /// (open_tree + move_mount), never through the path again.
    /// - Throws: `RuntimeError` naming `process.terminal` for /dev or /dev/console of any
    ///   other type; `SysError` from the syscalls.
    static func bind(_ slavePath: String, overConsoleOf devDir: String) throws {
        let field = "process.terminal"
        let dev = ss_open(devDir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0)
        guard dev >= 0 else {
            let e = errno
            if e == ELOOP || e == ENOTDIR {
                throw RuntimeError(
                    .refused, field: field,
                    "\(devDir) in the container's root is not a directory (a symbolic link?); refusing to bind /dev/console through it"
                )
            }
            throw SysError("open", path: devDir, errno: e, field: field)
        }
        defer { close(dev) }
        var fd = ss_openat(dev, "console", O_PATH | O_NOFOLLOW | O_CLOEXEC, 0)
        if fd < 0 && errno == ENOENT {
            let made = try sys("create", path: devDir + "/console") {
                ss_openat(dev, "console", O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0o600)
            }
            close(made)
            fd = ss_openat(dev, "console", O_PATH | O_NOFOLLOW | O_CLOEXEC, 0)
        }
        guard fd >= 0 else { throw SysError("open", path: devDir + "/console", field: field) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SysError("fstat", path: devDir + "/console", field: field) }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFCHR else {
            let what =
                kind == S_IFLNK
                ? "a symbolic link" : kind == S_IFDIR ? "a directory" : "neither a regular file nor a character device"
            throw RuntimeError(
                .refused, field: field,
                "/dev/console in the container's root is \(what); refusing to bind the console over what it names")
        }
        let tree = try sys("open_tree", path: slavePath) { ss_open_tree_clone(slavePath, 0) }
        defer { close(tree) }
        do { try sys("move_mount", path: devDir + "/console") { ss_move_mount_to_fd(tree, fd) } } catch var e
            as SysError
        {
            e.field = field
            throw e
        }
    }
}
