#ifndef CSAFESPACE_H
#define CSAFESPACE_H
// The syscalls Swift cannot call (variadic or missing from Glibc) and the code that runs
// between clone(2) and execve(2). Every symbol is prefixed `ss_`.
#include <sys/types.h>
#include <stdint.h>

#define SS_MAX_NS 8
#define SS_MAX_CGROUP 16

/// What `ss_spawn` does in its single-threaded stages (see spawn.c for the protocol).
struct ss_spawn_config {
    int ns_fds[SS_MAX_NS];     // namespaces to join with setns(2), in joinOrder (network, then user)
    int ns_types[SS_MAX_NS];   // CLONE_NEW* of each fd (0: let the kernel check nothing)
    int ns_count;
    int unshare_flags;         // CLONE_NEW* to create in stage 1 (CLONE_NEWUSER first)
    int sync_fd;               // stage 1's end of a SOCK_STREAM socketpair, kept in stage 2
    int peer_fd;               // the caller's end of that socketpair, closed first in stage 1 so
                               // a caller killed mid-spawn reads as EOF, not a wait for ever
                               // (ignored unless > 2: a zeroed config names no peer)
    int exe_fd;                // the sealed binary stage 2 runs (SealedExecutable; execveat AT_EMPTY_PATH)
    int keep_fds;              // fds 3..3+keep_fds-1 stay open across the exec (--preserve-fds)
    int nondump_gid;           // >= 0: stage 1 sets its real gid to this (egid unchanged) so that
                               // the exec'd helper is non-dumpable from its first instruction
    int stdio_set;             // nonzero: stage 1 first dup2s stdio_fds[0..2] onto fds 0, 1, 2
    int stdio_fds[3];          // (each > 2) so that no fd of the caller's own stdio reaches the
                               // helper or the process it starts (the daemon's exec pipes)
    int cg_join;               // nonzero: the new process joins its cgroups itself (Cgroups'
                               // CgroupSelfJoin), no one moves it, so the global cgroup attach
                               // lock's RCU wait is never paid:
    int cg_tasks_fds[SS_MAX_CGROUP]; // v1: each hierarchy's `tasks` file (O_WRONLY); stage 2
    int cg_tasks_count;              // writes "0" (itself) to each before anything else
    int cg_dir_fd;             // v2 cgroup directory (O_PATH) or -1: stage 1 clones stage 2 into
                               // it (clone3 CLONE_INTO_CGROUP; where clone3 is ENOSYS, stage 2
                               // writes "0" to its cgroup.procs)
    int cg_stage1_into;        // nonzero (with cg_join and cg_dir_fd): the caller clones stage 1
                               // itself into cg_dir_fd and stage 2 inherits it, for a stage 1
                               // that enters a user namespace, whose credentials the kernel would
                               // check for stage 2's CLONE_INTO_CGROUP; ENOSYS from clone3 is
                               // returned, not worked around
    char *const *argv;
    char *const *envp;
};

/// Stage message kinds written by stage 1 on `sync_fd`: one byte, then the payload.
#define SS_MSG_USERNS 'U'   // stage 1 unshared CLONE_NEWUSER: parent writes maps, answers 1 byte
#define SS_MSG_PID 'P'      // payload: int32 pid of stage 2 (the container process)
#define SS_MSG_ERROR 'E'    // payload: int32 step, int32 errno
#define SS_MSG_JOINED 'J'   // from stage 2 (cg_join): it is in every cgroup of the config

/// Steps reported with SS_MSG_ERROR.
#define SS_STEP_SETNS 1
#define SS_STEP_UNSHARE_USER 2
#define SS_STEP_WAIT_MAPS 3
#define SS_STEP_SETID 4
#define SS_STEP_UNSHARE 5
#define SS_STEP_CLONE 6
#define SS_STEP_DUMPABLE 7
#define SS_STEP_STDIO 9
#define SS_STEP_NONDUMP_GID 8
#define SS_STEP_CLONE_INTO_CGROUP 10 // stage 1's clone3(CLONE_INTO_CGROUP)
#define SS_STEP_CGROUP_PROCS 11      // stage 2's write of "0" to cgroup.procs (no clone3)
#define SS_STEP_CGROUP_TASKS 100     // + i: stage 2's write of "0" to cg_tasks_fds[i]

/// Clones stage 1 (a fork without atfork handlers). Returns its pid, or -1 with errno.
/// Stage 1 makes itself non-dumpable (prctl(2) PR_SET_DUMPABLE 0), joins `ns_fds`, unshares
/// `unshare_flags`, sets its real gid to `nondump_gid` (when >= 0), clones stage 2 with CLONE_PARENT so that stage 2 (in the new PID
/// namespace) is the caller's child (with `cg_join`, into `cg_dir_fd`), reports its pid, exits.
/// Stage 2 (with `cg_join`) joins its v1 cgroups and sends SS_MSG_JOINED, starts a new session
/// (setsid(2)), clears FD_CLOEXEC on `sync_fd` and execveat(2)s `exe_fd`. The two stages'
/// messages on `sync_fd` come in either order.
pid_t ss_spawn(const struct ss_spawn_config *config);

// --- exeseal.c: the binary the helpers run in a container's namespaces (CVE-2019-5736) ---
/// An O_PATH fd of `name` in the directory `dir_fd`, reached through a detached read-only
/// overlayfs mount (lowerdir: that directory over the empty directory `empty_dir_fd`):
/// reopening it for writing (/proc/PID/exe, /proc/self/fd/N) fails with EROFS, and there is
/// no path from it back to the host's file. Needs CAP_SYS_ADMIN, fsopen(2) (Linux 5.2) and
/// overlayfs. Returns the fd, or -1 with errno.
int ss_exe_overlay(int dir_fd, int empty_dir_fd, const char *name);
/// A copy of the file `src_fd` in a memfd named `name`, mode 0511, sealed with F_SEAL_SEAL,
/// F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_WRITE (and F_SEAL_EXEC where the kernel has it):
/// memfd_create(2), fcntl(2) "File Sealing". Returns the fd (O_CLOEXEC), or -1 with errno.
int ss_exe_memfd(int src_fd, const char *name);

int ss_pivot_root(const char *new_root, const char *put_old);
int ss_close_range_cloexec(unsigned int first);
int ss_set_cloexec(int fd, int on);
int ss_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);
/// prctl(2) PR_SET_DUMPABLE: 0 makes /proc/PID of this process root-owned and its exe, root,
/// cwd, fd, mem and ptrace(2) refused to anyone without CAP_SYS_PTRACE over it.
int ss_set_dumpable(int on);
int ss_ioctl_int(int fd, unsigned long request, int arg);
int ss_set_winsize(int fd, unsigned short rows, unsigned short cols);
/// ioctl(2) TIOCGWINSZ: the terminal's window size in character cells; 0, or -1 with errno.
int ss_get_winsize(int fd, unsigned short *rows, unsigned short *cols);
/// Blocks `sigs` in the calling thread (and so in the threads it starts) and returns a
/// signalfd(2) for them (non-blocking, close-on-exec), or -1 with errno.
int ss_signalfd_block(const int *sigs, int n);
/// Reads one signal from a signalfd: its number, or -1 (none pending: EAGAIN).
int ss_signalfd_next(int fd);
/// accept4(2) with SOCK_CLOEXEC, EINTR retried.
int ss_accept_cloexec(int fd);
int ss_join_session_keyring(const char *name);
int ss_loopback_up(void);
int ss_mount_setattr_idmap(int dfd, const char *path, int userns_fd, int recursive);
int ss_open_tree_clone(const char *path, int recursive);
int ss_move_mount(int from_fd, const char *to_path);
/// move_mount(2) of the detached tree `from_fd` onto the file or directory `to_fd` refers to
/// (an O_PATH fd: the exact inode that was checked, no path walked again).
int ss_move_mount_to_fd(int from_fd, int to_fd);
/// mount_setattr(2) with AT_RECURSIVE on the mount at `path` (not following a final symlink):
/// sets `attr_set` and clears `attr_clr` (MOUNT_ATTR_*) on it and every mount below it.
int ss_mount_setattr_recursive(const char *path, unsigned long long attr_set, unsigned long long attr_clr);
/// personality(2): sets the execution domain; returns the previous one, or -1 with errno.
int ss_personality(unsigned long persona);
int ss_send_fds(int sock, const void *data, size_t len, const int *fds, int nfds);
/// Receives one message of at most `cap` bytes and up to `maxfds` fds; returns bytes read.
ssize_t ss_recv_fds(int sock, void *data, size_t cap, int *fds, int maxfds, int *nfds);
int ss_setresuid(uid_t r, uid_t e, uid_t s);
int ss_setresgid(gid_t r, gid_t e, gid_t s);
int ss_setgroups(size_t n, const gid_t *groups);
int ss_pidfd_open(pid_t pid);
int ss_pidfd_send_signal(int pidfd, int sig);
int ss_open(const char *path, int flags, unsigned int mode);
int ss_openat(int dirfd, const char *path, int flags, unsigned int mode);
int ss_ptsname(int fd, char *buf, size_t len);
int ss_unlockpt(int fd);
int ss_sigmask_all(int block);
int ss_ignore_sigpipe(void);
int ss_exit_status(int status);
#endif
/// Installs handlers that forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
/// SIGWINCH to `pid` (kill(2) is async-signal-safe). pid <= 0 restores the defaults.
int ss_forward_signals(pid_t pid);
int ss_setns(int fd, int nstype);
int ss_unshare(int flags);
int ss_pipe2_cloexec(int fds[2]);
/// clone(2) with CLONE_PARENT|SIGCHLD and no new stack: a fork whose child is the caller's
/// parent's child (so the runtime waits for it), without atfork handlers. Only for a
/// single-threaded caller (the exec helper). Returns the child's pid in the caller's PID
/// namespace, 0 in the child, -1 with errno.
pid_t ss_clone_parent(void);
unsigned long ss_makedev(unsigned int major, unsigned int minor);
/// seccomp(SECCOMP_SET_MODE_FILTER, flags, prog) with `len` bytes of struct sock_filter.
int ss_seccomp_load(const void *bpf, size_t len, unsigned int flags);

// --- bpf.c: the cgroup v2 device filter (Cgroups/DeviceFilter.swift) ---
/// bpf(BPF_PROG_LOAD) of a BPF_PROG_TYPE_CGROUP_DEVICE program of `count` 8-byte instructions;
/// the verifier's log goes to `log` (may be NULL). Returns the program fd, or -1 with errno.
int ss_bpf_device_prog_load(const uint64_t *insns, uint32_t count, char *log, uint32_t log_size);
/// Attaches `prog_fd` to the cgroup (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI); with `replace`,
/// then detaches the device programs that were attached before. 0, -1 (attach failed) or
/// -2 (a detach failed), errno set.
int ss_bpf_device_prog_attach(int cgroup_fd, int prog_fd, int replace);
/// How many device programs are attached to the cgroup itself, or -1 with errno.
int ss_bpf_device_prog_count(int cgroup_fd);

// --- loop.c: loop devices for disk-backed ephemeral storage (Resources/EphemeralStorage.swift) ---
/// Attaches `image_fd` to a free loop device with LO_FLAGS_AUTOCLEAR and writes its path
/// (`/dev/loopN`) to `path`. Returns an open fd of the device (close it after mounting), or
/// -1 with errno.
int ss_loop_attach(int image_fd, int readonly, char *path, size_t path_len);
/// LOOP_CLR_FD (loop(4)) on `device` (`/dev/loopN`): detaches its backing file now, or, while
/// the device is still open or mounted, marks it to detach on its last close (autoclear).
/// Returns 0 or -1 with errno (ENXIO: nothing attached).
int ss_loop_clear(const char *device);
/// Blocks (1) or unblocks (0) SIGINT, SIGTERM, SIGHUP and SIGQUIT in the calling thread:
/// `create` must not die half-way; `run` forwards them once the container has started.
int ss_block_stop_signals(int block);

/// fork(2) + execve(2) of `path` with default signal dispositions and an empty mask; fds 0-2
/// from `in_fd`/`out_fd`/`err_fd` (-1: inherited). With `netns_fd` >= 0 the child first takes a
/// private mount namespace (unshare(2) CLONE_NEWNS, MS_REC|MS_PRIVATE on /) and mounts an empty
/// read-only tmpfs on that network namespace's /proc/sys/net/core (setns(2) there and back):
/// runsc before release-20240801 takes "/proc/sys/net/core/rmem_default exists" for "this is
/// the host's network namespace" (gVisor issue 10704), which kernels since ~6.11 show in every
/// network namespace. Returns the child's pid, or -1 with errno and `*failed_step` (0 signals,
/// 1 dup2, 2 unshare, 3 make-private, 4 open own netns, 5 setns pod, 6 mount, 7 setns back,
/// 8 execve; -1 when fork or pipe2 failed).
pid_t ss_spawn_hiding_net_core(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd,
                               int err_fd, int netns_fd, int *failed_step);
/// Whether `path` exists when looked up from a new network namespace (a forked child that
/// unshares CLONE_NEWNET): 1 yes, 0 no, -1 when the probe failed.
int ss_new_netns_shows(const char *path);
/// posix_spawn_file_actions_addclosefrom_np(3) (glibc 2.34+): the child closes every fd from
/// `fd` up. 0 or an errno.
#include <spawn.h>
int ss_spawn_add_closefrom(posix_spawn_file_actions_t *actions, int fd);
