# The warm Python interpreter of a sandbox: started by safespace-agent (PID 1) as
# `python3 -c <this> <socket> [module ...]`, it imports the modules, listens on <socket> and
# forks a fresh child per exec request (the protocol of safespace_agent_protocol.h, kind
# CODE): the child takes the request's stdio fds, env, cwd and rlimits and runs the code as
# `python3 -c` would (__name__ "__main__", sys.argv ["-c"], SystemExit's code, a traceback
# and exit 1 for an uncaught exception).
#
# What a child inherits from this warm parent: the imported modules and their state (the
# preloaded ones and the standard library's this file imports: os, sys, socket, struct,
# signal, selectors, random, resource, traceback, io), sys.path and sys.flags, the user,
# groups, seccomp filter, capabilities (none), rlimits, cgroup and namespaces of the sandbox.
# What it does not: open fds (all but its stdio are closed), the environment (replaced by the
# agent's environment with the request's variables), the working directory (the request's,
# else the sandbox's), the random state (random is re-seeded from os.urandom after the fork,
# as CPython's own at-fork hook does), signal handlers (SIGCHLD back to SIG_DFL, no wakeup
# fd; SIGINT raises KeyboardInterrupt and SIGPIPE is ignored, as in any `python3 -c`),
# threads (this server starts none, so the child has only its main thread), the session and
# process group (the child is the leader of its own, so a timeout kills all it started).
import gc, os, random, resource, selectors, signal, socket, struct, sys, traceback

REQUEST_MAGIC = 0x51415353
RECORD_MAGIC = 0x52415353
KIND_CODE = 2
MAX_PAYLOAD = 8 << 20
STARTED, EXITED, FAILED, REFUSED, KILL = 1, 2, 3, 4, 5
STAGE_CWD, STAGE_RLIMIT = 1, 3


def record(kind, value=0, detail=0):
    return struct.pack("<IIii", RECORD_MAGIC, kind, value, detail)


def read_exact(conn, n):
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ValueError("short request")
        out += chunk
    return bytes(out)


def parse(payload):
    at = 0

    def u32():
        nonlocal at
        if at + 4 > len(payload):
            raise ValueError("truncated")
        (v,) = struct.unpack_from("<I", payload, at)
        at += 4
        return v

    def u64():
        nonlocal at
        if at + 8 > len(payload):
            raise ValueError("truncated")
        (v,) = struct.unpack_from("<Q", payload, at)
        at += 8
        return v

    def string():
        nonlocal at
        n = u32()
        if at + n > len(payload):
            raise ValueError("truncated")
        s = payload[at : at + n]
        at += n
        return s

    argv = [string() for _ in range(u32())]
    env = [string() for _ in range(u32())]
    cwd = string()
    limits = [(u32(), u64(), u64()) for _ in range(u32())]
    if at != len(payload) or len(argv) != 1:
        raise ValueError("malformed")
    return argv[0], env, cwd, limits


def run_child(conn, fds, code, env, cwd, limits, listener, wake):
    # In the child: nothing of the server survives but the modules.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    gc.enable()
    # The sockets' objects let go of their fds (closed below): none may close a later fd.
    listener.detach()
    conn.detach()
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
    status = 1
    try:
        for res, soft, hard in limits:
            try:
                resource.setrlimit(res, (soft if soft < (1 << 63) else resource.RLIM_INFINITY,
                                         hard if hard < (1 << 63) else resource.RLIM_INFINITY))
            except (OSError, ValueError) as e:
                os.write(2, ("setrlimit %d: %s\n" % (res, e)).encode())
                os._exit(126)
        merged = dict(os.environ)
        for entry in env:
            name, _, value = entry.partition(b"=")
            merged[os.fsdecode(name)] = os.fsdecode(value)
        os.environ.clear()
        os.environ.update(merged)
        if cwd:
            try:
                os.chdir(os.fsdecode(cwd))
            except OSError as e:
                os.write(2, ("cannot change to %s: %s\n" % (os.fsdecode(cwd), e.strerror)).encode())
                os._exit(126)
        random.seed()
        sys.argv = ["-c"]
        # sys.stdin, sys.stdout and sys.stderr stay: they wrap fds 0, 1 and 2, now the
        # request's, with empty buffers (nothing was read, and both were flushed before the
        # fork) and the buffering `python3 -c` chooses for a pipe.
        main = type(sys)("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        try:
            exec(compile(code, "<string>", "exec"), main.__dict__)
            status = 0
        except SystemExit as e:
            if e.code is None:
                status = 0
            elif isinstance(e.code, int):
                status = e.code & 0xFF
            else:
                print(e.code, file=sys.stderr)
                status = 1
        except BaseException as e:
            # Without this function's frame, as `python3 -c` prints it.
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)
            status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)


def main():
    gc.disable()
    path = sys.argv[1]
    for module in sys.argv[2:]:
        try:
            __import__(module)
        except BaseException as e:
            print("safespace-agent: cannot preload %s: %s" % (module, e), file=sys.stderr)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(128)
    listener.setblocking(False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "listen")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children = {}  # pid -> connection

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = children.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(record(EXITED, status))
                except OSError:
                    pass
                try:
                    sel.unregister(conn)
                except (KeyError, ValueError):
                    pass
                conn.close()

    def accept():
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        fds = []
        try:
            conn.settimeout(2)
            msg, fds, _, _ = socket.recv_fds(conn, 12, 3)
            if len(msg) < 12:
                msg += read_exact(conn, 12 - len(msg))
            magic, kind, length = struct.unpack("<III", msg)
            if magic != REQUEST_MAGIC or kind != KIND_CODE or length > MAX_PAYLOAD or len(fds) != 3:
                raise ValueError("bad header")
            code, env, cwd, limits = parse(read_exact(conn, length))
        except (OSError, ValueError, struct.error):
            for fd in fds:
                os.close(fd)
            try:
                conn.sendall(record(REFUSED))
            except OSError:
                pass
            conn.close()
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # The gc module's advice for a forking server: the parent's objects are frozen
        # before fork(), so that a collection in the child does not touch (and copy) them.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            run_child(conn, fds, code, env, cwd, limits, listener, wake_r)
        for fd in fds:
            os.close(fd)
        conn.settimeout(None)
        conn.setblocking(False)
        children[pid] = conn
        sel.register(conn, selectors.EVENT_READ, pid)
        try:
            conn.sendall(record(STARTED, pid))
        except OSError:
            pass

    while True:
        for key, _ in sel.select():
            if key.data == "listen":
                accept()
            elif key.data == "wake":
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                reap()
            else:
                pid = key.data
                try:
                    data = key.fileobj.recv(16)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data or (len(data) >= 8 and struct.unpack_from("<II", data)[1] == KILL):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                    if not data:
                        sel.unregister(key.fileobj)
                        # The exit is still reaped; nobody is told.
                        children[pid] = _Closed(key.fileobj)


class _Closed:
    def __init__(self, conn):
        conn.close()

    def sendall(self, _):
        pass

    def close(self):
        pass


main()
