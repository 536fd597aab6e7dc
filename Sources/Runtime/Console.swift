import Glibc
import CSafeSpace
import Linux
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
        let slavePath = String(cString: name)
        if let size { _ = ss_set_winsize(master, UInt16(size.height), UInt16(size.width)) }
        let slave = try sys("open", path: slavePath) { ss_open(slavePath, O_RDWR | O_NOCTTY | O_CLOEXEC, 0) }
        if bindConsole {
            if !Files.exists("/dev/console") {
                let fd = ss_open("/dev/console", O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
                if fd >= 0 { close(fd) }
            }
            try mount(source: slavePath, target: "/dev/console", type: nil, flags: UInt(MS_BIND))
        }
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
}
