// bpf(2) for the cgroup v2 device filter: load a BPF_PROG_TYPE_CGROUP_DEVICE program and
// attach it to a cgroup, replacing the programs attached there before (as runc and crun do).
#define _GNU_SOURCE
#include "CSafeSpace.h"
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>

static long ss_bpf(int cmd, union bpf_attr *attr) {
    return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

int ss_bpf_device_prog_load(const uint64_t *insns, uint32_t count, char *log, uint32_t log_size) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = count;
    attr.license = (uint64_t)(uintptr_t)"Apache";
    if (log && log_size > 0) {
        log[0] = 0;
        attr.log_buf = (uint64_t)(uintptr_t)log;
        attr.log_size = log_size;
        attr.log_level = 1;
    }
    long fd = ss_bpf(BPF_PROG_LOAD, &attr);
    if (fd < 0 && errno == ENOSPC && log) {
        // The verifier log did not fit; load again without it for the real errno.
        attr.log_buf = 0;
        attr.log_size = 0;
        attr.log_level = 0;
        fd = ss_bpf(BPF_PROG_LOAD, &attr);
    }
    return (int)fd;
}

int ss_bpf_device_prog_count(int cgroup_fd) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = cgroup_fd;
    attr.query.attach_type = BPF_CGROUP_DEVICE;
    if (ss_bpf(BPF_PROG_QUERY, &attr) < 0) return -1;
    return (int)attr.query.prog_cnt;
}

int ss_bpf_device_prog_attach(int cgroup_fd, int prog_fd, int replace) {
    uint32_t old_ids[64];
    uint32_t old_count = 0;
    if (replace) {
        union bpf_attr q;
        memset(&q, 0, sizeof(q));
        q.query.target_fd = cgroup_fd;
        q.query.attach_type = BPF_CGROUP_DEVICE;
        q.query.prog_ids = (uint64_t)(uintptr_t)old_ids;
        q.query.prog_cnt = 64;
        if (ss_bpf(BPF_PROG_QUERY, &q) < 0) return -1;
        old_count = q.query.prog_cnt;
    }
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.target_fd = cgroup_fd;
    attr.attach_bpf_fd = prog_fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    // ALLOW_MULTI: programs of ancestors still run too (every one must allow), and the old
    // program can be detached only after the new one is in place, so no window is open.
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    if (ss_bpf(BPF_PROG_ATTACH, &attr) < 0) return -1;
    for (uint32_t i = 0; i < old_count; i++) {
        union bpf_attr g;
        memset(&g, 0, sizeof(g));
        g.prog_id = old_ids[i];
        long old_fd = ss_bpf(BPF_PROG_GET_FD_BY_ID, &g);
        if (old_fd < 0) continue;
        union bpf_attr d;
        memset(&d, 0, sizeof(d));
        d.target_fd = cgroup_fd;
        d.attach_bpf_fd = (uint32_t)old_fd;
        d.attach_type = BPF_CGROUP_DEVICE;
        int rc = (int)ss_bpf(BPF_PROG_DETACH, &d);
        int saved = errno;
        close((int)old_fd);
        if (rc < 0) {
            errno = saved;
            return -2;
        }
    }
    return 0;
}
