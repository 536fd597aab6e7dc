// A copy of this process's binary that a container cannot write through /proc/PID/exe
// (CVE-2019-5736): the helpers that run inside a container's namespaces execute it instead
// of the file on the host. runc's exeseal does the same in this order: a read-only overlayfs
// view first (no copy), a sealed memfd copy where overlayfs cannot be mounted.
#define _GNU_SOURCE
#include "CSafeSpace.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/mount.h>

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U  // Linux 6.3: executable even where vm.memfd_noexec asks otherwise
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020  // Linux 6.3: the mode (and so the x bits) can no longer change
#endif

static int fail_close(int fd) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int ss_exe_overlay(int dir_fd, int empty_dir_fd, const char *name) {
    int ctx = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (ctx < 0) return -1;
    // overlayfs without an upper layer is read-only but needs two lower layers; the binary's
    // directory on top, so an entry of the same name below can never mask it. Paths through
    // /proc/self/fd: nothing to escape (':' and '\' are separators in lowerdir).
    char lower[96];
    snprintf(lower, sizeof lower, "/proc/self/fd/%d:/proc/self/fd/%d", dir_fd, empty_dir_fd);
    if (syscall(SYS_fsconfig, ctx, FSCONFIG_SET_STRING, "lowerdir", lower, NULL, 0) < 0) return fail_close(ctx);
    // xino is of no use here and logs to dmesg when the layers are on different filesystems.
    (void)syscall(SYS_fsconfig, ctx, FSCONFIG_SET_STRING, "xino", "off", NULL, 0);
    if (syscall(SYS_fsconfig, ctx, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) return fail_close(ctx);
    int mnt = (int)syscall(SYS_fsmount, ctx, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    if (mnt < 0) return fail_close(ctx);
    close(ctx);
    // The mount is never attached anywhere: the fd below keeps it alive, and nobody can
    // remount it writable or reach the file on the host through it.
    int exe = openat(mnt, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (exe < 0) return fail_close(mnt);
    close(mnt);
    struct stat st;
    if (fstat(exe, &st) < 0) return fail_close(exe);
    if (!S_ISREG(st.st_mode)) {
        close(exe);
        errno = ENOEXEC;
        return -1;
    }
    return exe;
}

int ss_exe_memfd(int src_fd, const char *name) {
    struct stat st;
    if (fstat(src_fd, &st) < 0) return -1;
    int fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL) fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -1;
    off_t offset = 0;
    while (offset < st.st_size) {
        ssize_t n = sendfile(fd, src_fd, &offset, (size_t)(st.st_size - offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_close(fd);
        if (n == 0) {
            errno = EIO;  // the source shrank while being copied
            return fail_close(fd);
        }
    }
    if (fchmod(fd, 0511) < 0) return fail_close(fd);
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC);
    // No write, resize or further seal change, ever: whoever reopens /proc/PID/exe for
    // writing gets EPERM on write(2), and a copy shared by several containers stays intact.
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) return fail_close(fd);
    return fd;
}
