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
#
# The exit is reported before the exit's teardown: a child that ran its code to the end (its
# atexit functions run and its streams flushed) connects to the server's socket and says its
# exit status (kind EXITING, from the child itself: the server checks SO_PEERCRED's pid, unix(7),
# against the request's child), then calls os._exit; the server passes it on as EXITED at once,
# so the exec's answer does not wait for the kernel to tear down the child's copy of this
# interpreter's address space (exit_mm, about half a millisecond), nor for SIGCHLD. A child
# that does not say it (killed, exec'd, out of fds, or its code unlinked the socket) is
# reported by its wait status as before. The child's own code can say a status early and run
# on: that is no more than a background process it could start anyway (os.fork, then exit),
# which an exec does not wait for either; its process group is no longer the exec's from then
# on, the same as after an EXITED reaped from the kernel.
#
# The fork is made before the request: the server keeps one spare child, forked while it is idle,
# which waits on a socketpair of its own with nothing else open; a request's payload and stdio
# fds go to it there, and the server forks the next spare once it is idle again and no request's
# child has been running for less than SPARE_DELAY (so that the fork does not compete with it for
# the CPU); a request that finds no spare, such as a second one at the same time, is forked for on
# the spot. A spare
# forked before the request holds no more than a child forked after it: the request's data is
# read only once it is taken, and the random state is re-seeded in the spare after its fork.
# After each fork, the server and the spare share every page copy-on-write, so the first write
# of either to a page (a reference count of an object a request touches) copies it: both
# rehearse a request's hand-over on a socketpair of their own while idle (rehearse_hand_over),
# so that those copies are not made while a request waits.
import atexit, gc, os, random, resource, select, selectors, signal, socket, struct, sys, time, traceback

REQUEST_MAGIC = 0x51415353
RECORD_MAGIC = 0x52415353
KIND_CODE = 2
KIND_EXITING = 5
MAX_PAYLOAD = 8 << 20
STARTED, EXITED, FAILED, REFUSED, KILL = 1, 2, 3, 4, 5
STAGE_CWD, STAGE_RLIMIT = 1, 3
SPARE_DELAY = 0.05
SPARE_QUIET = 0.005
SOCKET_PATH = None  # the server's socket (main's argument): where a child says its exit


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


def max_fds():
    n = os.sysconf("SC_OPEN_MAX")
    return n if n > 0 else 65536


def spare_child(channel, detach):
    # In the spare: nothing of the server survives but the modules and `channel`.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # The server's socket objects let go of their fds (closed below): none may close a later fd.
    for sock in detach:
        sock.detach()
    os.setsid()
    keep = channel.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, max_fds())
    # While it waits, the spare does what each child does before its code runs: it re-seeds
    # random from os.urandom (a fresh seed of this process, which never serves a second
    # request), and it runs the request parser, compile and exec once on nothing, so that the
    # copy-on-write faults of the pages those touch (reference counts of the objects shared
    # with the server) are taken now, not while a request waits. The warm-up steps stop as
    # soon as a request is there: a request that came right after the spare's fork is served,
    # not kept waiting for them.
    random.seed()
    for step in (lambda: rehearse_hand_over(),
                 lambda: exec(compile("pass", "<string>", "exec"), {"__builtins__": __builtins__}),
                 lambda: (sys.stdout.flush(), sys.stderr.flush(), socket.socket(socket.AF_UNIX).close())):
        if select.select([channel], [], [], 0)[0]:
            break
        try:
            step()
        except Exception:
            pass
    fds = []
    try:
        # The request: its payload's length with the three stdio fds, then the payload.
        msg, fds, _, _ = socket.recv_fds(channel, 4, 3)
        if len(msg) < 4:
            msg += read_exact(channel, 4 - len(msg))
        (length,) = struct.unpack("<I", msg)
        if len(fds) != 3 or length > MAX_PAYLOAD:
            raise ValueError("bad hand-over")
        code, env, cwd, limits = parse(read_exact(channel, length))
    except (OSError, ValueError, struct.error):
        # The server is gone (or stopping): nothing to run.
        os._exit(0)
    channel.close()
    run_child(fds, code, env, cwd, limits)


def rehearse_hand_over():
    # The hand-over of a request (its header with three fds, then its payload, parsed) over a
    # socketpair of its own, so that the copy-on-write faults of what it touches are taken
    # while idle; the fds it passes are the pair's own, and all of them are closed after.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        payload = struct.pack("<5I", 1, 0, 0, 0, 0)
        socket.send_fds(ours, [struct.pack("<III", REQUEST_MAGIC, KIND_CODE, len(payload))], [theirs.fileno()] * 3)
        ours.sendall(payload)
        theirs.settimeout(2)
        msg, fds, _, _ = socket.recv_fds(theirs, 12, 3)
        for fd in fds:
            os.close(fd)
        struct.unpack("<III", msg)
        parse(read_exact(theirs, len(payload)))
        theirs.settimeout(None)
        theirs.setblocking(False)
        ours.sendall(record(STARTED, 0))
        theirs.recv(16)
    except (OSError, ValueError, struct.error):
        pass
    finally:
        ours.close()
        theirs.close()


def run_child(fds, code, env, cwd, limits):
    gc.enable()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    status = 1
    try:
        for res, soft, hard in limits:
            try:
                resource.setrlimit(res, (soft if soft < (1 << 63) else resource.RLIM_INFINITY,
                                         hard if hard < (1 << 63) else resource.RLIM_INFINITY))
            except (OSError, ValueError) as e:
                os.write(2, ("setrlimit %d: %s\n" % (res, e)).encode())
                os._exit(126)
        # The server's environment (the agent's), each variable of the request replacing the
        # one of its name: os.environ is a copy of the server's, so only those are set.
        for entry in env:
            name, _, value = entry.partition(b"=")
            os.environ[os.fsdecode(name)] = os.fsdecode(value)
        if cwd:
            try:
                os.chdir(os.fsdecode(cwd))
            except OSError as e:
                os.write(2, ("cannot change to %s: %s\n" % (os.fsdecode(cwd), e.strerror)).encode())
                os._exit(126)
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
        # As `python3 -c` ends: the atexit functions, then the streams flushed.
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        say_exit(status)
        os._exit(status)


def say_exit(status):
    # The exit status, to the server, before the exit's teardown (see the top of this file);
    # nothing waits for an answer, and a failure leaves the report to SIGCHLD.
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as report:
            report.connect(SOCKET_PATH)
            report.sendall(struct.pack("<IIIi", REQUEST_MAGIC, KIND_EXITING, 4, (status & 0xFF) << 8))
    except (OSError, TypeError):
        pass


def main():
    global SOCKET_PATH
    gc.disable()
    path = SOCKET_PATH = sys.argv[1]
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
    spare = None  # (pid, socket to it) of the child forked ahead of the next request

    def fork_spare():
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # The gc module's advice for a forking server: the parent's objects are frozen
        # before fork(), so that a collection in the child does not touch (and copy) them.
        gc.freeze()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            spare_child(theirs, [listener, ours] + [key.fileobj for key in sel.get_map().values()
                                                    if isinstance(key.fileobj, socket.socket)])
        theirs.close()
        return pid, ours

    def take_spare():
        # The spare, if it is still alive (one killed from inside the sandbox and not yet
        # reaped is reaped here); else a new one.
        nonlocal spare
        while True:
            if spare is None:
                spare = fork_spare()
            (pid, channel), spare = spare, None
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done == 0:
                return pid, channel
            channel.close()

    def reap():
        nonlocal spare
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if spare is not None and pid == spare[0]:
                # The spare died before a request (killed from inside the sandbox): another
                # is forked when the server is idle.
                spare[1].close()
                spare = None
                continue
            nonlocal ended
            ended = time.monotonic()
            conn = children.pop(pid, None)
            if conn is not None:
                tell_exited(conn, status)

    def tell_exited(conn, status):
        # A request's connection: EXITED with the child's wait status, then closed.
        try:
            conn.sendall(record(EXITED, status))
        except OSError:
            pass
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def exiting(conn):
        # A child says its exit status: believed only from the process itself (the pid of the
        # connection's peer, SO_PEERCRED), once, and only while its request's connection is
        # open; the daemon is told EXITED and the connection closed, as when it is reaped.
        try:
            peer, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            (status,) = struct.unpack("<i", read_exact(conn, 4))
        except (OSError, ValueError, struct.error):
            conn.close()
            return
        conn.close()
        target = children.get(peer)
        if target is None or isinstance(target, _Closed) or status & ~0xFF00:
            return
        tell_exited(target, status)
        # Still reaped when it has exited; nobody is told again.
        children[peer] = _Closed(None)

    def refuse(conn, fds):
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(record(REFUSED))
        except OSError:
            pass
        conn.close()

    def accept():
        nonlocal handed
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
            if magic == REQUEST_MAGIC and kind == KIND_EXITING and length == 4 and not fds:
                exiting(conn)
                return
            if magic != REQUEST_MAGIC or kind != KIND_CODE or length > MAX_PAYLOAD or len(fds) != 3:
                raise ValueError("bad header")
            payload = read_exact(conn, length)
            parse(payload)
        except (OSError, ValueError, struct.error):
            refuse(conn, fds)
            return
        pid = None
        for _ in range(2):
            pid, channel = take_spare()
            try:
                socket.send_fds(channel, [struct.pack("<I", len(payload))], fds)
                channel.sendall(payload)
                channel.close()
                break
            except OSError:
                # It died as it was handed the request: ended and reaped, and another one.
                channel.close()
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                pid = None
        if pid is None:
            refuse(conn, fds)
            return
        for fd in fds:
            os.close(fd)
        conn.settimeout(None)
        conn.setblocking(False)
        children[pid] = conn
        handed = time.monotonic()
        sel.register(conn, selectors.EVENT_READ, pid)
        try:
            conn.sendall(record(STARTED, pid))
        except OSError:
            pass

    handed = 0.0  # when the last request was handed to a child (time.monotonic())
    ended = 0.0  # when the last child was reaped
    while True:
        timeout = None
        if spare is None:
            # The next request's child is forked once the server is idle, but not while a
            # request's child runs its first SPARE_DELAY seconds: the fork (a copy of the whole
            # interpreter's page tables) would take the CPU that child needs; nor within
            # SPARE_QUIET of a child's end: execs that come back to back are forked for on the
            # spot rather than wait behind a spare's fork and warm-up.
            now = time.monotonic()
            timeout = max(0.0, ended + SPARE_QUIET - now, 0 if not children else handed + SPARE_DELAY - now)
        events = sel.select(timeout)
        now = time.monotonic()
        if not events and spare is None and now >= ended + SPARE_QUIET:
            if not children or now >= handed + SPARE_DELAY:
                spare = fork_spare()
                # The fork left every page of the server shared with the spare: the server's
                # first write to each copies it. A request's path is rehearsed now, while idle,
                # so that those copies are not made while a request waits.
                rehearse_hand_over()
            continue
        for key, _ in events:
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
        if conn is not None:
            conn.close()

    def sendall(self, _):
        pass

    def close(self):
        pass


main()
