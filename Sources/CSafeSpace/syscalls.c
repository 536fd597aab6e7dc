#define _GNU_SOURCE
#include "CSafeSpace.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <net/if.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <linux/keyctl.h>
#include <linux/mount.h>

int ss_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int ss_close_range_cloexec(unsigned int first) {
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
    return (int)syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC);
}

int ss_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFD, on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC));
}


int ss_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
    return prctl(option, a2, a3, a4, a5);
}

int ss_set_dumpable(int on) { return prctl(PR_SET_DUMPABLE, on ? 1 : 0, 0, 0, 0); }

int ss_ioctl_int(int fd, unsigned long request, int arg) { return ioctl(fd, request, arg); }

int ss_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    return ioctl(fd, TIOCSWINSZ, &ws);
}

int ss_join_session_keyring(const char *name) {
    return (int)syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name, 0, 0, 0);
}

int ss_loopback_up(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) { int e = errno; close(fd); errno = e; return -1; }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    int rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int ss_open_tree_clone(const char *path, int recursive) {
    unsigned int flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if (recursive) flags |= AT_RECURSIVE;
    return (int)syscall(SYS_open_tree, AT_FDCWD, path, flags);
}

int ss_mount_setattr_idmap(int dfd, const char *path, int userns_fd, int recursive) {
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = (unsigned long long)userns_fd;
    unsigned int flags = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0);
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, &attr, sizeof attr);
}

int ss_mount_setattr_recursive(const char *path, unsigned long long attr_set, unsigned long long attr_clr) {
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = attr_set;
    attr.attr_clr = attr_clr;
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &attr, sizeof attr);
}

int ss_personality(unsigned long persona) {
    return personality(persona);
}

int ss_move_mount(int from_fd, const char *to_path) {
    return (int)syscall(SYS_move_mount, from_fd, "", AT_FDCWD, to_path, MOVE_MOUNT_F_EMPTY_PATH);
}

int ss_move_mount_to_fd(int from_fd, int to_fd) {
    return (int)syscall(SYS_move_mount, from_fd, "", to_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}

int ss_send_fds(int sock, const void *data, size_t len, const int *fds, int nfds) {
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    char cbuf[CMSG_SPACE(sizeof(int) * 8)];
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > 8) { errno = EINVAL; return -1; }
        msg.msg_control = cbuf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : (int)n;
}

ssize_t ss_recv_fds(int sock, void *data, size_t cap, int *fds, int maxfds, int *nfds) {
    struct iovec iov = {.iov_base = data, .iov_len = cap};
    char cbuf[CMSG_SPACE(sizeof(int) * 8)];
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    *nfds = 0;
    if (n < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (*nfds < maxfds) fds[(*nfds)++] = fd; else close(fd);
            }
        }
    }
    return n;
}

// Raw syscalls: glibc's wrappers broadcast to all threads (setxid), which is right for a
// threaded process but these are only called in the single-threaded init.
int ss_setresuid(uid_t r, uid_t e, uid_t s) { return (int)syscall(SYS_setresuid, r, e, s); }
int ss_setresgid(gid_t r, gid_t e, gid_t s) { return (int)syscall(SYS_setresgid, r, e, s); }
int ss_setgroups(size_t n, const gid_t *groups) { return (int)syscall(SYS_setgroups, n, groups); }

int ss_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
int ss_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int ss_open(const char *path, int flags, unsigned int mode) { return open(path, flags, mode); }
int ss_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return openat(dirfd, path, flags, mode);
}

int ss_ptsname(int fd, char *buf, size_t len) { return ptsname_r(fd, buf, len); }
int ss_unlockpt(int fd) { return unlockpt(fd); }

int ss_sigmask_all(int block) {
    sigset_t set;
    sigfillset(&set);
    return sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

int ss_ignore_sigpipe(void) {
    return signal(SIGPIPE, SIG_IGN) == SIG_ERR ? -1 : 0;
}

/// Shell convention: the exit code, or 128+N when killed by signal N.
int ss_exit_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

static volatile pid_t forward_pid = 0;
static void forward_handler(int sig) {
    pid_t p = forward_pid;
    if (p > 0) kill(p, sig);
}

int ss_forward_signals(pid_t pid) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
    forward_pid = pid;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = pid > 0 ? forward_handler : SIG_DFL;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(sigs[i], &sa, NULL) < 0) return -1;
    }
    return 0;
}

#include <sched.h>
#include <sys/sysmacros.h>
int ss_setns(int fd, int nstype) { return setns(fd, nstype); }
int ss_unshare(int flags) { return unshare(flags); }
int ss_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
unsigned long ss_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }

#include <linux/filter.h>
#include <linux/seccomp.h>
int ss_seccomp_load(const void *bpf, size_t len, unsigned int flags) {
    if (len % sizeof(struct sock_filter) != 0 || len / sizeof(struct sock_filter) > 0xffff) {
        errno = EINVAL;
        return -1;
    }
    struct sock_fprog prog = {
        .len = (unsigned short)(len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)bpf,
    };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

int ss_block_stop_signals(int block) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    return sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

pid_t ss_clone_parent(void) {
    return (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0);
}
