/*
 * pause: the pod sandbox's process for the CRI test's pause image (the role of
 * registry.k8s.io/pause). It holds the pod's namespaces open, reaps orphans as PID 1 and
 * exits 0 on SIGINT or SIGTERM. Built at test time with `cc -static -O2`, so the image is
 * this one file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (SafeSpace CRI test)");
        return 0;
    }
    if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1\n");

    struct sigaction term = {.sa_handler = on_terminate};
    sigemptyset(&term.sa_mask);
    if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&child.sa_mask);
    if (sigaction(SIGCHLD, &child, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) pause();
}
