// seccomp_probe: what a seccomp filter answers, seen from inside a sandbox. Built by the
// integration tests with `cc -static -pthread` (SeccompSupport.swift), run as
//
//   seccomp_probe thread              pthread_create(3) (glibc: clone3, then clone on ENOSYS)
//   seccomp_probe faccessat           faccessat(AT_FDCWD, "/", R_OK, AT_EACCESS) (glibc: faccessat2 first)
//   seccomp_probe syscall NR [ARG]    syscall(NR, ARG) with every other argument 0
//   seccomp_probe ioctl CMD           ioctl(0, CMD, &byte) through syscall(2): CMD is all 64 bits
//   seccomp_probe socket FAMILY TYPE  socket(FAMILY, TYPE, 0) through syscall(2): FAMILY is all 64 bits
//   seccomp_probe syscalls NR...      syscall(NR) with every argument 0, for each NR
//   seccomp_probe int80 NR            a 32-bit syscall NR through `int $0x80` (x86_64 only)
//   seccomp_probe denied              every syscall of the denied set, harmless arguments
//
// Each prints one line per call: `<what> ok` or `<what> <ERRNO name>`, and exits 0.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    if (rc >= 0) printf("%s ok\n", what);
    else printf("%s %s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
}

static void *nothing(void *arg) { return arg; }

static int thread(void) {
    pthread_t t;
    int rc = pthread_create(&t, NULL, nothing, NULL);
    if (rc == 0) {
        pthread_join(t, NULL);
        printf("thread ok\n");
    } else {
        printf("thread %s\n", strerrorname_np(rc));
    }
    return 0;
}

static long int80(long nr) {
#if defined(__x86_64__)
    long rc;
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(nr), "b"(0), "c"(0), "d"(0) : "memory");
    return rc;
#else
    (void)nr;
    return -ENOSYS;
#endif
}

static void denied(void) {
    struct { const char *name; long nr; long a0, a1, a2; } calls[] = {
        {"mount", SYS_mount, 0, 0, 0},
        {"umount2", SYS_umount2, 0, 0, 0},
        {"ptrace", SYS_ptrace, 0, 0, 0},
        {"process_vm_readv", SYS_process_vm_readv, 1, 0, 0},
        {"unshare", SYS_unshare, CLONE_NEWUSER, 0, 0},
        {"setns", SYS_setns, -1, 0, 0},
        {"keyctl", SYS_keyctl, 0, 0, 0},
        {"add_key", SYS_add_key, 0, 0, 0},
        {"bpf", SYS_bpf, 0, 0, 0},
        {"perf_event_open", SYS_perf_event_open, 0, 0, 0},
        {"userfaultfd", SYS_userfaultfd, 0, 0, 0},
        {"io_uring_setup", SYS_io_uring_setup, 1, 0, 0},
        {"kexec_load", SYS_kexec_load, 0, 0, 0},
        {"init_module", SYS_init_module, 0, 0, 0},
        {"pivot_root", SYS_pivot_root, 0, 0, 0},
        {"open_tree", SYS_open_tree, -1, 0, 0},
        {"fsopen", SYS_fsopen, 0, 0, 0},
        {"syslog", SYS_syslog, 3, 0, 0},
        // clone(CLONE_NEWUSER): the flag masked out of a full register.
        {"clone-newuser", SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0},
        {"clone3", SYS_clone3, 0, 0, 0},
        {"personality-addr-no-randomize", SYS_personality, 0x0040000, 0, 0},
        {"ioctl-tiocsti", SYS_ioctl, 0, 0x5412, 0},
        // The kernel truncates the command to 32 bits: these are TIOCSTI and TIOCLINUX too.
        {"ioctl-tiocsti-high", SYS_ioctl, 0, 0x100005412L, 0},
        {"ioctl-tioclinux-high", SYS_ioctl, 0, (long)0xffffffff0000541cUL, 0},
        // AF_VSOCK (40) is not namespaced; the family is an int, truncated from the register.
        {"socket-vsock", SYS_socket, 40, SOCK_STREAM, 0},
        {"socket-vsock-high", SYS_socket, 0x100000028L, SOCK_STREAM, 0},
        // NUMA policy: in no profile's allowlist (moby: CAP_SYS_NICE only).
        {"get_mempolicy", SYS_get_mempolicy, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        errno = 0;
        long rc = syscall(calls[i].nr, calls[i].a0, calls[i].a1, calls[i].a2, 0, 0, 0);
        if (rc == 0 && calls[i].nr == SYS_clone) _exit(0);  // the child, should the clone pass
        report(calls[i].name, rc);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: seccomp_probe thread|faccessat|syscall NR [ARG]|syscalls NR...|ioctl CMD|socket FAMILY TYPE|int80 NR|denied\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "thread") == 0) return thread();
    if (strcmp(cmd, "faccessat") == 0) {
        report("faccessat", faccessat(AT_FDCWD, "/", R_OK, AT_EACCESS));
        return 0;
    }
    if (strcmp(cmd, "syscall") == 0 && argc >= 3) {
        long nr = strtol(argv[2], NULL, 0);
        unsigned long arg = argc >= 4 ? strtoul(argv[3], NULL, 0) : 0;
        char what[64];
        snprintf(what, sizeof what, "syscall %ld", nr);
        report(what, syscall(nr, arg, 0, 0, 0, 0, 0));
        return 0;
    }
    if (strcmp(cmd, "ioctl") == 0 && argc >= 3) {
        unsigned long request = strtoul(argv[2], NULL, 0);
        char byte = 'x', what[64];
        snprintf(what, sizeof what, "ioctl %#lx", request);
        report(what, syscall(SYS_ioctl, 0, request, &byte));
        return 0;
    }
    if (strcmp(cmd, "socket") == 0 && argc >= 4) {
        unsigned long family = strtoul(argv[2], NULL, 0), type = strtoul(argv[3], NULL, 0);
        char what[64];
        snprintf(what, sizeof what, "socket %#lx", family);
        report(what, syscall(SYS_socket, family, type, 0));
        return 0;
    }
    if (strcmp(cmd, "syscalls") == 0) {
        for (int i = 2; i < argc; i++) {
            long nr = strtol(argv[i], NULL, 0);
            char what[64];
            snprintf(what, sizeof what, "syscall %ld", nr);
            errno = 0;
            report(what, syscall(nr, 0, 0, 0, 0, 0, 0));
        }
        return 0;
    }
    if (strcmp(cmd, "int80") == 0 && argc >= 3) {
        long rc = int80(strtol(argv[2], NULL, 0));
        if (rc < 0 && rc > -4096) {
            errno = (int)-rc;
            rc = -1;
        }
        report("int80", rc);
        return 0;
    }
    if (strcmp(cmd, "denied") == 0) {
        denied();
        return 0;
    }
    fprintf(stderr, "seccomp_probe: unknown command %s\n", cmd);
    return 2;
}
