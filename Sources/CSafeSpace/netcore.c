// runsc start-up in a pod's network namespace on kernels where runsc misreads that namespace
// as the host's (GVisorBackend.swift, "net.core workaround").
#define _GNU_SOURCE
#include "CSafeSpace.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sys/syscall.h>

/* In the child, after fork(2): only async-signal-safe calls. Reports (step, errno) on
   report_fd and exits 127 on failure. */
static void child(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd, int err_fd,
                  int netns_fd, int report_fd) {
    int step = 0;
    sigset_t none;
    sigemptyset(&none);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    }
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) goto fail;
    step = 1;
    if (in_fd >= 0 && dup2(in_fd, 0) < 0) goto fail;
    if (out_fd >= 0 && dup2(out_fd, 1) < 0) goto fail;
    if (err_fd >= 0 && dup2(err_fd, 2) < 0) goto fail;
    if (netns_fd >= 0) {
        /* A mount namespace of its own (private, so nothing propagates back to the host). */
        step = 2;
        if (unshare(CLONE_NEWNS) != 0) goto fail;
        step = 3;
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) goto fail;
        step = 4;
        int own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (own < 0) goto fail;
        /* /proc/sys/net/<x> resolves per network namespace of the looking task: the empty
           tmpfs goes on the pod namespace's own directory, then this task goes back. */
        step = 5;
        if (setns(netns_fd, CLONE_NEWNET) != 0) goto fail;
        step = 6;
        if (mount("safespace-net-core", "/proc/sys/net/core", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=4k,mode=0555") != 0)
            goto fail;
        step = 7;
        if (setns(own, CLONE_NEWNET) != 0) goto fail;
        close(own);
    }
    /* Only stdio: whatever else the caller leaked would live on in runsc's sandbox and gofer. */
    step = 1;
    if (syscall(SYS_close_range, 3, ~0U, 0) != 0 && errno != ENOSYS) goto fail;
    step = 8;
    execve(path, argv, envp);
fail:;
    int report[2] = {step, errno};
    ssize_t ignored = write(report_fd, report, sizeof report);
    (void)ignored;
    _exit(127);
}

pid_t ss_spawn_hiding_net_core(const char *path, char *const argv[], char *const envp[], int in_fd, int out_fd,
                               int err_fd, int netns_fd, int *failed_step) {
    int report[2];
    *failed_step = -1;
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) child(path, argv, envp, in_fd, out_fd, err_fd, netns_fd, report[1]);
    close(report[1]);
    int got[2];
    ssize_t n;
    do { n = read(report[0], got, sizeof got); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof got) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        *failed_step = got[0];
        errno = got[1];
        return -1;
    }
    *failed_step = -1;
    return pid;
}

int ss_new_netns_shows(const char *path) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (unshare(CLONE_NEWNET) != 0) _exit(2);
        _exit(access(path, F_OK) == 0 ? 0 : 1);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) return -1;
    return WEXITSTATUS(status) == 0 ? 1 : 0;
}

int ss_spawn_add_closefrom(posix_spawn_file_actions_t *actions, int fd) {
    return posix_spawn_file_actions_addclosefrom_np(actions, fd);
}
