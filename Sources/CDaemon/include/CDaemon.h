#ifndef CDAEMON_H
#define CDAEMON_H
// The syscalls of safespaced that Swift cannot call (missing from Glibc's module).
#include <sys/types.h>
#include <stdint.h>

/// openat2(2) with `how.flags = flags`, `how.mode = mode`, `how.resolve = resolve`
/// (RESOLVE_* below). Returns the fd, or -1 with errno.
int sd_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

/// flistxattr(2): the NUL-separated names of the extended attributes of `fd` into `list`
/// (`size` bytes). Returns their length, or -1 with errno.
ssize_t sd_flistxattr(int fd, char *list, size_t size);

#define SD_RESOLVE_NO_XDEV 0x01
#define SD_RESOLVE_NO_MAGICLINKS 0x02
#define SD_RESOLVE_NO_SYMLINKS 0x04
#define SD_RESOLVE_BENEATH 0x08
#define SD_RESOLVE_IN_ROOT 0x10

/// struct ucred of SO_PEERCRED (unix(7)), spelled out: Glibc's module hides it without _GNU_SOURCE.
struct sd_ucred {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
};
/// sendmsg(2) of `length` bytes of `buffer` with `count` fds (at most 8) as SCM_RIGHTS
/// (unix(7)). Returns what sendmsg returns.
ssize_t sd_send_fds(int fd, const void *buffer, size_t length, const int *fds, int count, int flags);

#define SD_SOL_SOCKET 1
#define SD_SO_PEERCRED 17
#endif
