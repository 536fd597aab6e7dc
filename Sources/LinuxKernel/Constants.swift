import Glibc

// Constants behind _GNU_SOURCE that Swift's Glibc module does not export. Values from the
// kernel's uapi headers (linux/sched.h, linux/prctl.h, asm-generic/fcntl.h) and statvfs(3).
public let CLONE_NEWNS: Int32 = 0x0002_0000
public let CLONE_NEWCGROUP: Int32 = 0x0200_0000
public let CLONE_NEWUTS: Int32 = 0x0400_0000
public let CLONE_NEWIPC: Int32 = 0x0800_0000
public let CLONE_NEWUSER: Int32 = 0x1000_0000
public let CLONE_NEWPID: Int32 = 0x2000_0000
public let CLONE_NEWNET: Int32 = 0x4000_0000
public let CLONE_NEWTIME: Int32 = 0x0000_0080
public let O_PATH: Int32 = 0o10000000
public let PR_SET_KEEPCAPS: Int32 = 8
public let PR_SET_NO_NEW_PRIVS: Int32 = 38
public let ST_NODEV: UInt = 4
public let ST_NOEXEC: UInt = 8
public let ST_NOATIME: UInt = 1024
public let ST_NODIRATIME: UInt = 2048
public let ST_RELATIME: UInt = 4096
/// fcntl(2) "File Sealing" (linux/fcntl.h): read a memfd's seals; the seal against writes.
public let F_GET_SEALS: Int32 = 1034
public let F_SEAL_WRITE: Int32 = 0x0008
/// fcntl(2) "Changing the capacity of a pipe" (linux/fcntl.h: F_LINUX_SPECIFIC_BASE + 7).
public let F_SETPIPE_SZ: Int32 = 1031
