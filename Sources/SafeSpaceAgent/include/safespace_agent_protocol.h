/*
 * The exec protocol between safespaced and the in-sandbox agent (safespace-agent, PID 1 of a
 * standard-level sandbox) and its warm Python fork server. One unix stream connection per
 * exec; every integer little-endian (the daemon and the sandbox share the host's CPU).
 *
 * Request (daemon -> agent), once, right after connect; the exec's stdio travels with its
 * first byte as SCM_RIGHTS (unix(7)): exactly 3 fds, stdin, stdout, stderr.
 *   u32 magic SSA_REQUEST_MAGIC, u32 kind (SSA_KIND_*), u32 payload length (<= SSA_MAX_PAYLOAD)
 *   payload: u32 argc, argc x (u32 length, bytes)   -- kind CODE: argc 1, the source text
 *            u32 envc, envc x (u32 length, "NAME=value") -- replacing the agent's own of NAME
 *            u32 length, cwd bytes                   -- 0: the sandbox's working directory
 *            u32 count, count x (u32 resource, u64 soft, u64 hard) -- setrlimit(2)
 * Records (both ways, fixed size): u32 SSA_RECORD_MAGIC, u32 type (SSA_RECORD_*), i32 value,
 * i32 detail.
 *   agent -> daemon: STARTED (value: pid in the sandbox's PID namespace), then EXITED (value:
 *   the wait status, wait(2)), or FAILED (value: errno, detail: SSA_STAGE_*), or REFUSED (the
 *   request was malformed; value: 0).
 *   daemon -> agent: KILL (SIGKILL to the process group of the exec). The daemon closing the
 *   connection kills the process group as well.
 *
 * Pool recycling (safespaced's PoolRecycle), same request format (argv: one word, the 3 fds
 * /dev/null), answered by one DONE record and no process:
 *   STOP_PYTHON: the warm interpreter is killed (SIGKILL) and waited for, its socket
 *   unlinked; DONE's value: the System V IPC objects (shm segments + message queues +
 *   semaphore sets) that exist in the sandbox's IPC namespace (SHM_INFO, MSG_INFO, SEM_INFO:
 *   shmctl(2), msgctl(2), semctl(2)), detail: 0.
 *   START_PYTHON: a fresh warm interpreter is started (when the agent runs with --python and
 *   none runs); DONE's value: its pid in the sandbox (0: none started).
 *
 * The warm interpreter only (forkserver.py), from a child it forked for a CODE request to its
 * own socket, no fds: EXITING, payload 4 bytes, i32 the child's wait status (an exit status,
 * (code & 0xff) << 8), sent right before the child's _exit. Believed only from the pid of that
 * request's child (SO_PEERCRED, unix(7)) while its request is open: the server sends EXITED
 * with it at once, without waiting for the child's teardown and SIGCHLD. No answer. The agent
 * refuses this kind.
 */
#ifndef SAFESPACE_AGENT_PROTOCOL_H
#define SAFESPACE_AGENT_PROTOCOL_H

#define SSA_REQUEST_MAGIC 0x51415353u /* "SSAQ" */
#define SSA_RECORD_MAGIC 0x52415353u  /* "SSAR" */
#define SSA_KIND_COMMAND 1u
#define SSA_KIND_CODE 2u
#define SSA_KIND_STOP_PYTHON 3u
#define SSA_KIND_START_PYTHON 4u
#define SSA_KIND_EXITING 5u /* forkserver.py only */
#define SSA_MAX_PAYLOAD (8u << 20)
#define SSA_MAX_STRINGS 65536u
#define SSA_MAX_RLIMITS 16u
#define SSA_RECORD_SIZE 16

#define SSA_RECORD_STARTED 1u
#define SSA_RECORD_EXITED 2u
#define SSA_RECORD_FAILED 3u
#define SSA_RECORD_REFUSED 4u
#define SSA_RECORD_KILL 5u
#define SSA_RECORD_DONE 6u

#define SSA_STAGE_CWD 1
#define SSA_STAGE_EXEC 2
#define SSA_STAGE_RLIMIT 3
#define SSA_STAGE_FORK 4

#endif
