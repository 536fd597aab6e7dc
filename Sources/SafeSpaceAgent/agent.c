/*
 * safespace-agent: PID 1 of a safespaced sandbox at the standard level (and custom levels on
 * the native backend). Linked statically against the host's libc, so it runs in any rootfs
 * (glibc, musl or none); it needs no file of the rootfs.
 *
 *   safespace-agent --dir DIR [--python PROGRAM [--preload MODULE]...]
 *
 * It runs as the sandbox's process (user, groups, seccomp filter, no capabilities,
 * no_new_privs: the runtime set them before exec) and
 *  - listens on DIR/agent.sock (DIR: the sandbox's own host directory, bind-mounted by the
 *    daemon) for exec requests (safespace_agent_protocol.h), each on a connection of its own;
 *    forks the process with the request's stdio fds, environment, cwd and rlimits as the
 *    leader of a new session (setsid(2)), every other fd closed, and reports its pid and its
 *    wait status; a KILL record or the daemon closing the connection kills its process group;
 *  - with --python, starts the warm interpreter (forkserver.py, embedded) listening on
 *    DIR/python.sock, importing the --preload modules first;
 *  - reaps every orphan of the sandbox, as an init must (wait(2) on SIGCHLD);
 *  - exits 0 on SIGTERM from outside the sandbox (sent by the runtime: si_pid is 0 in the
 *    sandbox's PID namespace); a SIGTERM from a process of the sandbox is ignored, since a
 *    PID 1 only gets the signals it handles (pid_namespaces(7)).
 *
 * It is not dumpable (PR_SET_DUMPABLE 0, prctl(2)): no process of the sandbox may write its
 * memory or trace it, though they share its uid.
 *
 * Nothing here trusts the peer more than the sandbox: a malformed request is refused, a
 * request that does not arrive within 2 s is dropped, and the fds of a request are closed
 * whatever happens to it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safespace_agent_protocol.h"
#include "forkserver.h"

#define MAX_CONNECTIONS 1024

struct connection {
    int fd;
    pid_t pid; /* the exec's process; 0 once reaped or never started */
};

static struct connection connections[MAX_CONNECTIONS];
static int connection_count;
static pid_t python_pid;
/* --dir, --python and --preload, kept for START_PYTHON. */
static const char *agent_dir;
static const char *python_program;
static char *python_preload[256];
static int python_preload_count;
extern char **environ;

static void say(const char *format, const char *detail) {
    char line[512];
    int n = snprintf(line, sizeof line, format, detail);
    if (n > 0) {
        ssize_t ignored = write(2, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1));
        (void)ignored;
    }
}

static int send_record(int fd, uint32_t type, int32_t value, int32_t detail) {
    unsigned char out[SSA_RECORD_SIZE];
    uint32_t magic = SSA_RECORD_MAGIC;
    memcpy(out, &magic, 4);
    memcpy(out + 4, &type, 4);
    memcpy(out + 8, &value, 4);
    memcpy(out + 12, &detail, 4);
    size_t done = 0;
    while (done < sizeof out) {
        ssize_t n = send(fd, out + done, sizeof out - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

static int read_exact(int fd, void *buffer, size_t size) {
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, (char *)buffer + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

/* A parsed request; the strings point into `payload` (NUL-terminated in place). */
struct request {
    uint32_t kind;
    unsigned char *payload;
    char **argv;
    char **env;
    uint32_t envc;
    char *cwd;
    uint32_t rlimit_count;
    struct {
        uint32_t resource;
        uint64_t soft, hard;
    } rlimits[SSA_MAX_RLIMITS];
};

static void free_request(struct request *request) {
    free(request->payload);
    free(request->argv);
    free(request->env);
}

struct cursor {
    unsigned char *at, *end;
};

static int take_u32(struct cursor *c, uint32_t *out) {
    if (c->end - c->at < 4) return -1;
    memcpy(out, c->at, 4);
    c->at += 4;
    return 0;
}

static int take_u64(struct cursor *c, uint64_t *out) {
    if (c->end - c->at < 8) return -1;
    memcpy(out, c->at, 8);
    c->at += 8;
    return 0;
}

/* A string: moved 4 bytes back over its length field, so that a NUL fits after it. */
static int take_string(struct cursor *c, char **out) {
    uint32_t length;
    if (take_u32(c, &length) != 0 || (uint64_t)(c->end - c->at) < length) return -1;
    if (memchr(c->at, 0, length) != NULL) return -1;
    char *start = (char *)c->at - 4;
    memmove(start, c->at, length);
    start[length] = 0;
    c->at += length;
    *out = start;
    return 0;
}

static int take_strings(struct cursor *c, char ***out, uint32_t *count) {
    uint32_t n;
    if (take_u32(c, &n) != 0 || n > SSA_MAX_STRINGS || n > (uint64_t)(c->end - c->at) / 4) return -1;
    char **list = calloc((size_t)n + 1, sizeof *list);
    if (list == NULL) return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (take_string(c, &list[i]) != 0) {
            free(list);
            return -1;
        }
    }
    *out = list;
    if (count) *count = n;
    return 0;
}

/* Reads the request of `fd` and its 3 fds; -1 (fds closed) when anything is off. */
static int read_request(int fd, struct request *request, int fds[3]) {
    memset(request, 0, sizeof *request);
    uint32_t header[3];
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int) * 8)];
    } control;
    struct iovec iov = {.iov_base = header, .iov_len = sizeof header};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
    ssize_t n;
    do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    int received = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *passed = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            if (received < 3 && !(msg.msg_flags & MSG_CTRUNC)) fds[received] = passed[i];
            else close(passed[i]);
            received++;
        }
    }
    if (received != 3 || (msg.msg_flags & MSG_CTRUNC)) goto refuse_fds;
    if (n <= 0) goto refuse;
    if ((size_t)n < sizeof header && read_exact(fd, (char *)header + n, sizeof header - (size_t)n) != 0) goto refuse;
    if (header[0] != SSA_REQUEST_MAGIC || header[1] < SSA_KIND_COMMAND || header[1] > SSA_KIND_START_PYTHON ||
        header[2] > SSA_MAX_PAYLOAD)
        goto refuse;
    request->kind = header[1];
    request->payload = malloc((size_t)header[2] + 1);
    if (request->payload == NULL || read_exact(fd, request->payload, header[2]) != 0) goto refuse;
    struct cursor c = {request->payload, request->payload + header[2]};
    uint32_t argc;
    if (take_strings(&c, &request->argv, &argc) != 0 || argc == 0 || request->argv[0][0] == 0) goto refuse;
    if (take_strings(&c, &request->env, &request->envc) != 0) goto refuse;
    for (uint32_t i = 0; i < request->envc; i++)
        if (strchr(request->env[i], '=') == NULL || request->env[i][0] == '=') goto refuse;
    if (take_string(&c, &request->cwd) != 0) goto refuse;
    if (take_u32(&c, &request->rlimit_count) != 0 || request->rlimit_count > SSA_MAX_RLIMITS) goto refuse;
    for (uint32_t i = 0; i < request->rlimit_count; i++) {
        if (take_u32(&c, &request->rlimits[i].resource) != 0 || take_u64(&c, &request->rlimits[i].soft) != 0 ||
            take_u64(&c, &request->rlimits[i].hard) != 0)
            goto refuse;
    }
    if (c.at != c.end) goto refuse;
    if (request->kind == SSA_KIND_CODE && argc != 1) goto refuse;
    return 0;
refuse:
    for (int i = 0; i < 3; i++) close(fds[i]);
refuse_fds:
    if (received > 0 && received != 3) {
        for (int i = 0; i < received && i < 3; i++) close(fds[i]);
    }
    free_request(request);
    memset(request, 0, sizeof *request);
    return -1;
}

/* The environment of an exec: the agent's own, each variable of the request replacing the
 * one of the same name. */
static char **merged_environment(struct request *request) {
    size_t own = 0;
    while (environ[own] != NULL) own++;
    char **env = calloc(own + request->envc + 1, sizeof *env);
    if (env == NULL) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < own; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t name = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int replaced = 0;
        for (uint32_t j = 0; j < request->envc && !replaced; j++)
            replaced = strncmp(request->env[j], environ[i], name) == 0 && request->env[j][name] == '=';
        if (!replaced) env[n++] = environ[i];
    }
    for (uint32_t j = 0; j < request->envc; j++) env[n++] = request->env[j];
    env[n] = NULL;
    return env;
}

/* execvpe(3) over the PATH of `env` (the default search path when it has none). */
static void exec_search(char **argv, char **env) {
    if (strchr(argv[0], '/') != NULL) {
        execve(argv[0], argv, env);
        return;
    }
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char **e = env; *e != NULL; e++)
        if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
    int saw_eacces = 0;
    size_t length = strlen(argv[0]);
    while (*path) {
        const char *end = strchrnul(path, ':');
        size_t dir = (size_t)(end - path);
        char candidate[4096];
        if (dir + 1 + length + 1 <= sizeof candidate) {
            memcpy(candidate, path, dir);
            size_t at = dir;
            if (dir == 0) candidate[at++] = '.';
            candidate[at++] = '/';
            memcpy(candidate + at, argv[0], length + 1);
            execve(candidate, argv, env);
            if (errno == EACCES) saw_eacces = 1;
        }
        path = *end ? end + 1 : end;
    }
    errno = saw_eacces ? EACCES : ENOENT;
}

/* In the child: the exec's process. Reports a failure as (stage, errno) on `report`. */
static void run_child(struct request *request, int fds[3], int report) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    setsid();
    int stage = 0;
    /* stdio: moved above 2 first, so that one dup2 cannot overwrite another's source. */
    int high[3];
    for (int i = 0; i < 3; i++) high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
    report = fcntl(report, F_DUPFD_CLOEXEC, 10);
    for (int i = 0; i < 3; i++) dup2(high[i], i);
    int top = dup3(report, 3, O_CLOEXEC) == 3 ? 3 : report;
    if (syscall(SYS_close_range, top + 1, ~0U, 0) != 0) {
        for (int fd = top + 1; fd < 65536; fd++) close(fd);
    }
    report = top;
    for (uint32_t i = 0; i < request->rlimit_count; i++) {
        struct rlimit limit = {(rlim_t)request->rlimits[i].soft, (rlim_t)request->rlimits[i].hard};
        if (setrlimit((int)request->rlimits[i].resource, &limit) != 0) {
            stage = SSA_STAGE_RLIMIT;
            goto failed;
        }
    }
    if (request->cwd[0] != 0 && chdir(request->cwd) != 0) {
        stage = SSA_STAGE_CWD;
        goto failed;
    }
    char **env = merged_environment(request);
    if (env == NULL) {
        stage = SSA_STAGE_EXEC;
        goto failed;
    }
    exec_search(request->argv, env);
    stage = SSA_STAGE_EXEC;
failed:;
    int32_t failure[2] = {stage, errno};
    ssize_t ignored = write(report, failure, sizeof failure);
    (void)ignored;
    _exit(127);
}

static void remove_connection(int index) {
    close(connections[index].fd);
    connections[index] = connections[--connection_count];
}

static void start_python(const char *dir, const char *python, char **preload, int preload_count);

/* System V IPC objects of the sandbox's IPC namespace: shm segments, message queues,
 * semaphore sets (their *_INFO counts: shmctl(2), msgctl(2), semctl(2)); -1 when unreadable. */
static int ipc_objects(void) {
    struct shm_info shm;
    struct msginfo msg;
    struct seminfo sem;
    union {
        int val;
        struct semid_ds *buf;
        unsigned short *array;
        struct seminfo *__buf;
    } arg = {.__buf = &sem};
    if (shmctl(0, SHM_INFO, (struct shmid_ds *)&shm) < 0 || msgctl(0, MSG_INFO, (struct msqid_ds *)&msg) < 0 ||
        semctl(0, 0, SEM_INFO, arg) < 0)
        return -1;
    return shm.used_ids + msg.msgpool + sem.semusz;
}

/* STOP_PYTHON / START_PYTHON (pool recycling): answered at once, no process of the request. */
static void control_request(int fd, uint32_t kind) {
    int32_t value = 0;
    if (kind == SSA_KIND_STOP_PYTHON) {
        if (python_pid > 0) {
            kill(python_pid, SIGKILL);
            int status;
            while (waitpid(python_pid, &status, 0) < 0 && errno == EINTR) {}
            python_pid = 0;
        }
        if (agent_dir != NULL) {
            char path[4096];
            snprintf(path, sizeof path, "%s/python.sock", agent_dir);
            unlink(path);
        }
        value = ipc_objects();
    } else if (python_program != NULL && python_pid == 0) {
        start_python(agent_dir, python_program, python_preload, python_preload_count);
        value = python_pid;
    }
    send_record(fd, SSA_RECORD_DONE, value, 0);
}

/* A connection on the listening socket: one exec. */
static void serve(int listener) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    struct timeval timeout = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connection_count >= MAX_CONNECTIONS) {
        send_record(fd, SSA_RECORD_REFUSED, 0, 0);
        close(fd);
        return;
    }
    struct request request;
    int fds[3] = {-1, -1, -1};
    if (read_request(fd, &request, fds) != 0) {
        send_record(fd, SSA_RECORD_REFUSED, 0, 0);
        close(fd);
        return;
    }
    if (request.kind == SSA_KIND_STOP_PYTHON || request.kind == SSA_KIND_START_PYTHON) {
        for (int i = 0; i < 3; i++) close(fds[i]);
        free_request(&request);
        control_request(fd, request.kind);
        close(fd);
        return;
    }
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        send_record(fd, SSA_RECORD_FAILED, errno, SSA_STAGE_FORK);
        goto done;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        close(listener);
        run_child(&request, fds, report[1]);
    }
    int fork_errno = errno;
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        send_record(fd, SSA_RECORD_FAILED, fork_errno, SSA_STAGE_FORK);
        goto done;
    }
    int32_t failure[2];
    ssize_t n;
    do n = read(report[0], failure, sizeof failure);
    while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof failure) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        send_record(fd, SSA_RECORD_FAILED, failure[1], failure[0]);
        goto done;
    }
    if (send_record(fd, SSA_RECORD_STARTED, pid, 0) != 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    for (int i = 0; i < 3; i++) close(fds[i]);
    free_request(&request);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    connections[connection_count].fd = fd;
    connections[connection_count].pid = pid;
    connection_count++;
    return;
done:
    for (int i = 0; i < 3; i++) close(fds[i]);
    free_request(&request);
    close(fd);
}

static void reap(void) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        if (pid == python_pid) {
            python_pid = 0;
            say("safespace-agent: the warm interpreter ended%s\n", "");
        }
        for (int i = 0; i < connection_count; i++) {
            if (connections[i].pid == pid) {
                send_record(connections[i].fd, SSA_RECORD_EXITED, status, 0);
                remove_connection(i);
                break;
            }
        }
    }
}

/* The daemon's side of an exec: a KILL record, or the connection closed. */
static void control(int index) {
    unsigned char buffer[SSA_RECORD_SIZE * 4];
    ssize_t n = read(connections[index].fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    pid_t pid = connections[index].pid;
    if (pid > 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    if (n <= 0) {
        /* Nobody to tell: the exit is reaped all the same. */
        connections[index].pid = 0;
        remove_connection(index);
    }
}

static void start_python(const char *dir, const char *python, char **preload, int preload_count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/python.sock", dir);
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (syscall(SYS_close_range, 3, ~0U, 0) != 0)
            for (int fd = 3; fd < 65536; fd++) close(fd);
        char **argv = calloc((size_t)preload_count + 5, sizeof *argv);
        if (argv == NULL) _exit(127);
        argv[0] = (char *)python;
        argv[1] = "-c";
        argv[2] = (char *)safespace_forkserver_py;
        argv[3] = path;
        for (int i = 0; i < preload_count; i++) argv[4 + i] = preload[i];
        exec_search(argv, environ);
        say("safespace-agent: cannot start the warm interpreter %s\n", python);
        _exit(127);
    }
    if (pid > 0) python_pid = pid;
}

int main(int argc, char **argv) {
    /* Not dumpable: the sandbox's processes run with this uid, and a dumpable PID 1 would let
     * them open /proc/1/mem for writing or ptrace it (ptrace access mode checks, ptrace(2));
     * the agent outlives a claimant when its pool recycles the sandbox. execve(2) of an exec's
     * program makes that process dumpable again; only the agent itself stays out of reach. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        say("safespace-agent: PR_SET_DUMPABLE: %s\n", strerror(errno));
        return 1;
    }
    const char *dir = NULL;
    const char *python = NULL;
    char *preload[256];
    int preload_count = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--python") == 0 && i + 1 < argc) python = argv[++i];
        else if (strcmp(argv[i], "--preload") == 0 && i + 1 < argc && preload_count < 256)
            preload[preload_count++] = argv[++i];
        else {
            say("safespace-agent: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (dir == NULL) {
        say("usage: safespace-agent --dir DIR [--python PROGRAM [--preload MODULE]...]%s\n", "");
        return 2;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGPIPE);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int signals = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signals < 0) {
        say("safespace-agent: signalfd: %s\n", strerror(errno));
        return 1;
    }
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (snprintf(address.sun_path, sizeof address.sun_path, "%s/agent.sock", dir) >= (int)sizeof address.sun_path) {
        say("safespace-agent: %s: path too long\n", dir);
        return 1;
    }
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    unlink(address.sun_path);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 ||
        chmod(address.sun_path, 0600) != 0 || listen(listener, 128) != 0) {
        say("safespace-agent: cannot listen: %s\n", strerror(errno));
        return 1;
    }
    agent_dir = dir;
    python_program = python;
    for (int i = 0; i < preload_count; i++) python_preload[i] = preload[i];
    python_preload_count = preload_count;
    if (python != NULL) start_python(dir, python, preload, preload_count);

    struct pollfd polled[MAX_CONNECTIONS + 2];
    for (;;) {
        polled[0] = (struct pollfd){.fd = signals, .events = POLLIN};
        polled[1] = (struct pollfd){.fd = listener, .events = POLLIN};
        int count = connection_count;
        for (int i = 0; i < count; i++) polled[2 + i] = (struct pollfd){.fd = connections[i].fd, .events = POLLIN};
        if (poll(polled, (nfds_t)(count + 2), -1) < 0) {
            if (errno == EINTR) continue;
            say("safespace-agent: poll: %s\n", strerror(errno));
            return 1;
        }
        if (polled[0].revents) {
            struct signalfd_siginfo info;
            while (read(signals, &info, sizeof info) == (ssize_t)sizeof info) {
                if ((info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) && info.ssi_pid == 0) return 0;
            }
            reap();
        }
        /* Connections by fd, since reap() and control() reorder the table. */
        for (int i = count - 1; i >= 0; i--) {
            if (polled[2 + i].revents == 0) continue;
            for (int j = 0; j < connection_count; j++) {
                if (connections[j].fd == polled[2 + i].fd) {
                    control(j);
                    break;
                }
            }
        }
        if (polled[1].revents) serve(listener);
    }
}
