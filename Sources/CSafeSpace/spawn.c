// The clone stages. Nothing here allocates, locks or touches Swift: stage 1 and stage 2 are
// copies of a possibly multithreaded process, so only raw syscalls and _exit run there
// (signal-safety(7)). clone(2) with a NULL stack behaves as fork(2) without atfork handlers.
#define _GNU_SOURCE
#include "CSafeSpace.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/sched.h>
#include <sys/prctl.h>

static pid_t raw_clone(unsigned long flags) {
    return (pid_t)syscall(SYS_clone, flags, 0, 0, 0, 0);
}

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = syscall(SYS_write, fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void fail(int fd, int32_t step) {
    char msg[9];
    int32_t err = errno;
    msg[0] = SS_MSG_ERROR;
    memcpy(msg + 1, &step, 4);
    memcpy(msg + 5, &err, 4);
    write_all(fd, msg, sizeof msg);
    syscall(SYS_exit_group, 1);
}

pid_t ss_spawn(const struct ss_spawn_config *c) {
    int stage1_into = c->cg_join && c->cg_dir_fd >= 0 && c->cg_stage1_into;
    pid_t stage1;
    if (stage1_into) {
        // Born in the v2 cgroup with the caller's credentials (see cg_stage1_into).
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = SIGCHLD;
        args.cgroup = (uint64_t)c->cg_dir_fd;
        stage1 = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    } else {
        stage1 = raw_clone(SIGCHLD);
    }
    if (stage1 != 0) return stage1;  // parent (or -1 with errno)

    // Stage 1: single-threaded copy of the caller. Its copy of the caller's end goes first:
    // while it stays open, a read of sync_fd cannot see the caller die.
    if (c->peer_fd > 2) syscall(SYS_close, c->peer_fd);
    // Stdio of the caller's choosing (the daemon's pipes of one exec): in place before anything
    // runs in the container's namespaces, so the caller's own fds 0-2 never get there.
    if (c->stdio_set) {
        for (int i = 0; i < 3; i++) {
            if (syscall(SYS_dup3, c->stdio_fds[i], i, 0) < 0) fail(c->sync_fd, SS_STEP_STDIO);
        }
    }
    // Then non-dumpable, before it joins anything (runc's nsexec does the same): a dumpable
    // process in a container's PID namespace lets the container open
    // /proc/PID/{exe,root,cwd,fd,mem} of a host process. Stage 2 inherits it; execve(2) resets
    // it unless the real and effective ids differ (below), and `init` sets it again first thing
    // (Init.swift). The parent is root with CAP_SYS_PTRACE: its /proc/PID writes (uid_map,
    // oom_score_adj) still work.
    if (syscall(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) fail(c->sync_fd, SS_STEP_DUMPABLE);
    int joined_user = 0;
    for (int i = 0; i < c->ns_count; i++) {
        if (syscall(SYS_setns, c->ns_fds[i], c->ns_types[i]) < 0) fail(c->sync_fd, SS_STEP_SETNS);
        if (c->ns_types[i] == CLONE_NEWUSER) joined_user = 1;
    }
    int flags = c->unshare_flags;
    if (flags & CLONE_NEWUSER) {
        if (syscall(SYS_unshare, CLONE_NEWUSER) < 0) fail(c->sync_fd, SS_STEP_UNSHARE_USER);
        char m = SS_MSG_USERNS;
        if (write_all(c->sync_fd, &m, 1) < 0) syscall(SYS_exit_group, 1);
        char ack = 0;
        ssize_t n;
        do { n = syscall(SYS_read, c->sync_fd, &ack, 1); } while (n < 0 && errno == EINTR);
        if (n != 1 || ack != 1) { errno = EPIPE; fail(c->sync_fd, SS_STEP_WAIT_MAPS); }
        flags &= ~CLONE_NEWUSER;
    }
    if ((c->unshare_flags & CLONE_NEWUSER) || joined_user) {
        // Become root of the (new or joined) user namespace so that execve keeps capabilities.
        if (syscall(SYS_setresgid, 0, 0, 0) < 0) fail(c->sync_fd, SS_STEP_SETID);
        if (syscall(SYS_setresuid, 0, 0, 0) < 0) fail(c->sync_fd, SS_STEP_SETID);
    }
    if (flags != 0 && syscall(SYS_unshare, flags) < 0) fail(c->sync_fd, SS_STEP_UNSHARE);
    // execve(2) makes a process dumpable again unless its real and effective ids differ
    // (begin_new_exec: then fs.suid_dumpable, 0 or 2, both refuse ptrace access). A real gid
    // other than the effective one keeps stage 2's exec non-dumpable from its first
    // instruction until `init` restores it (Init.swift); capabilities and file access follow
    // the effective and fs ids, which stay.
    if (c->nondump_gid >= 0 && syscall(SYS_setresgid, c->nondump_gid, -1, -1) < 0) fail(c->sync_fd, SS_STEP_NONDUMP_GID);

    pid_t stage2;
    int v2_by_write = 0;
    if (c->cg_join && c->cg_dir_fd >= 0 && !stage1_into) {
        // Born in the v2 cgroup. clone3 wants exit_signal 0 with CLONE_PARENT: the child
        // gets stage 1's own (SIGCHLD, to the caller).
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_PARENT | CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)c->cg_dir_fd;
        stage2 = (pid_t)syscall(SYS_clone3, &args, sizeof args);
        if (stage2 < 0 && errno == ENOSYS) {
            v2_by_write = 1;
            stage2 = raw_clone(CLONE_PARENT | SIGCHLD);
            if (stage2 < 0) fail(c->sync_fd, SS_STEP_CLONE);
        } else if (stage2 < 0) {
            fail(c->sync_fd, SS_STEP_CLONE_INTO_CGROUP);
        }
    } else {
        stage2 = raw_clone(CLONE_PARENT | SIGCHLD);
        if (stage2 < 0) fail(c->sync_fd, SS_STEP_CLONE);
    }
    if (stage2 > 0) {
        char msg[5];
        int32_t pid = stage2;
        msg[0] = SS_MSG_PID;
        memcpy(msg + 1, &pid, 4);
        write_all(c->sync_fd, msg, sizeof msg);
        syscall(SYS_exit_group, 0);
    }

    // Stage 2: the container's first process; becomes `safespace-runtime init`. First into
    // its cgroups, by itself and single-threaded (see cg_join), before it runs anything else.
    if (c->cg_join) {
        for (int i = 0; i < c->cg_tasks_count && i < SS_MAX_CGROUP; i++) {
            if (write_all(c->cg_tasks_fds[i], "0", 1) < 0) fail(c->sync_fd, SS_STEP_CGROUP_TASKS + i);
        }
        if (v2_by_write) {
            int procs = (int)syscall(SYS_openat, c->cg_dir_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
            if (procs < 0 || write_all(procs, "0", 1) < 0) fail(c->sync_fd, SS_STEP_CGROUP_PROCS);
            syscall(SYS_close, procs);
        }
        char joined = SS_MSG_JOINED;
        if (write_all(c->sync_fd, &joined, 1) < 0) syscall(SYS_exit_group, 1);
    }
    // Whatever the caller left open without O_CLOEXEC (a pipe of its own parent, say) must not
    // live on in a created container's init: mark all of it close-on-exec, except the preserved fds.
    syscall(SYS_close_range, 3 + c->keep_fds, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
    // A session of its own, as runc does for every container process (CVE-2017-5226): without
    // it a container started from a shell keeps that shell's controlling terminal and can
    // push input into it (TIOCSTI) or open /dev/tty. With process.terminal the console then
    // becomes its controlling terminal (Console.swift). Stage 2 is never a group leader
    // (a fresh child), so setsid(2) cannot fail.
    syscall(SYS_setsid);
    int fdflags = (int)syscall(SYS_fcntl, c->sync_fd, F_GETFD);
    if (fdflags >= 0) syscall(SYS_fcntl, c->sync_fd, F_SETFD, fdflags & ~FD_CLOEXEC);
    syscall(SYS_execveat, c->exe_fd, "", c->argv, c->envp, AT_EMPTY_PATH);
    // execveat failed: the parent sees EOF on the socket before any init message.
    syscall(SYS_exit_group, 127);
    return -1;
}
