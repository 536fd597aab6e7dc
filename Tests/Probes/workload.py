"""A representative Python workload for the seccomp profiles (seccomp/README.md).

Imports much of the standard library, then exercises threads, a thread and a process pool,
subprocess (sh, a pipe to cat), sockets on lo (TCP, UDP, a unix socketpair), select/poll/
epoll through selectors and asyncio, file I/O in a temp dir (read, write, rename, stat,
listdir, chmod, mmap, fsync, symlink), sqlite3, hashlib, zlib, json, time and signals.
Prints WORKLOAD-OK last; any failure raises.
"""
import importlib
import sys

MODULES = """abc argparse array ast asyncio base64 bisect binascii bz2 calendar cmath codecs
collections concurrent.futures configparser contextlib contextvars copy csv ctypes dataclasses
datetime decimal difflib dis email enum errno fcntl filecmp fnmatch fractions functools gc
getopt getpass gettext glob gzip hashlib heapq hmac html html.parser http.client http.server
inspect io ipaddress itertools json keyword locale logging lzma math mimetypes mmap
multiprocessing numbers operator os pathlib pickle pkgutil platform plistlib pprint queue
quopri random re resource sched secrets select selectors shelve shlex shutil signal socket
socketserver sqlite3 ssl stat statistics string struct subprocess sysconfig tarfile tempfile
textwrap threading time timeit token tokenize traceback types typing unicodedata unittest
urllib.parse urllib.request uuid warnings weakref xml.dom.minidom xml.etree.ElementTree
zipfile zlib zoneinfo""".split()
for name in MODULES:
    importlib.import_module(name)

import asyncio, concurrent.futures, hashlib, json, mmap, os, selectors, signal, socket
import sqlite3, subprocess, tempfile, threading, time, zlib, multiprocessing

# Threads and pools.
results = []
threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert sorted(results) == [i * i for i in range(8)]
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
lock, event, cond = threading.Lock(), threading.Event(), threading.Condition()
with lock: event.set()
assert event.wait(1)

def square(x): return x * x
if __name__ == "__main__":
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        assert list(pool.map(square, [1, 2, 3])) == [1, 4, 9]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(square, [4, 5]) == [16, 25]

# Subprocess: sh with a pipeline, output captured; environment and cwd.
out = subprocess.run(["sh", "-c", "echo hello | cat; ls / > /dev/null; id -u"], capture_output=True, text=True, check=True)
assert out.stdout.startswith("hello"), out
subprocess.run(["true"], check=True, cwd="/")
p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert p.communicate(b"abc")[0] == b"ABC"

# Sockets on lo: TCP echo through a thread, UDP, unix socketpair, getaddrinfo of localhost.
srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]
def echo():
    conn, _ = srv.accept()
    with conn:
        conn.sendall(conn.recv(100))
threading.Thread(target=echo).start()
with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
    c.sendall(b"ping")
    assert c.recv(100) == b"ping"
srv.close()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u2.sendto(b"dgram", u1.getsockname())
assert u1.recvfrom(100)[0] == b"dgram"
a, b = socket.socketpair(); a.sendall(b"x"); assert b.recv(1) == b"x"
socket.getaddrinfo("localhost", 80)
socket.gethostname()
sel = selectors.DefaultSelector(); sel.register(b, selectors.EVENT_READ); a.send(b"y"); assert sel.select(1)

async def main():
    reader, writer = await asyncio.open_connection(sock=a)
    await asyncio.sleep(0.01)
    await asyncio.gather(*(asyncio.sleep(0.001) for _ in range(10)))
    writer.close()
asyncio.run(main())

# Files: a temp dir with the usual operations.
d = tempfile.mkdtemp()
path = os.path.join(d, "f.txt")
with open(path, "w") as f:
    f.write("data" * 1000); f.flush(); os.fsync(f.fileno())
os.rename(path, path + ".2"); os.symlink(path + ".2", path); os.chmod(path + ".2", 0o600)
assert os.stat(path).st_size == 4000 and os.listdir(d)
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), 0); assert m[:4] == b"data"; m.close()
os.utime(path + ".2"); os.truncate(path + ".2", 10); os.unlink(path); os.unlink(path + ".2"); os.rmdir(d)
db = sqlite3.connect(os.path.join(tempfile.gettempdir(), "wl.db"))
db.execute("create table if not exists t(x)"); db.execute("insert into t values (1)"); db.commit(); db.close()

# Misc: hashes, compression, json, clocks, signals, resource, uname, random.
hashlib.sha256(b"x").hexdigest(); zlib.decompress(zlib.compress(b"x" * 100))
json.loads(json.dumps({"a": [1, 2]})); time.monotonic(); time.sleep(0.001); time.process_time()
signal.signal(signal.SIGUSR1, lambda *a: None); os.kill(os.getpid(), signal.SIGUSR1)
signal.setitimer(signal.ITIMER_REAL, 0); os.urandom(16); os.uname(); os.getloadavg(); os.cpu_count()
import resource; resource.getrlimit(resource.RLIMIT_NOFILE); resource.getrusage(resource.RUSAGE_SELF)
os.times(); os.sched_getaffinity(0); os.sched_yield(); os.getpriority(os.PRIO_PROCESS, 0); os.nice(1)
os.getgroups(); os.getresuid(); os.getpgid(0); os.getsid(0); os.umask(0o022); os.get_terminal_size if False else None

# More file system: copies, walks, fifos, locks, xattrs, statvfs, sendfile, scandir, pipes.
import fcntl, shutil, glob, pathlib, pwd, grp, faulthandler, ctypes, multiprocessing.shared_memory
work = tempfile.mkdtemp()
src = os.path.join(work, "src"); os.makedirs(os.path.join(src, "sub"))
pathlib.Path(src, "sub", "a.txt").write_text("x" * 100000)
shutil.copytree(src, os.path.join(work, "dst")); shutil.copyfile(os.path.join(src, "sub", "a.txt"), os.path.join(work, "b.txt"))
list(os.walk(work)); glob.glob(work + "/**/*.txt", recursive=True); [e.stat() for e in os.scandir(work)]
os.mkfifo(os.path.join(work, "fifo")); os.statvfs(work); os.access(work, os.W_OK, effective_ids=True)
with open(os.path.join(work, "lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX); fcntl.lockf(f, fcntl.LOCK_UN); os.posix_fallocate(f.fileno(), 0, 4096); os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
with open(os.path.join(work, "b.txt"), "rb") as fin, open(os.path.join(work, "c.txt"), "wb") as fout:
    os.sendfile(fout.fileno(), fin.fileno(), 0, 1000); os.copy_file_range(fin.fileno(), fout.fileno(), 1000, 0)
r, w = os.pipe2(os.O_CLOEXEC); os.write(w, b"z"); os.read(r, 1); os.close(r); os.close(w)
fd = os.memfd_create("m"); os.write(fd, b"m"); os.close(fd)
os.chown(os.path.join(work, "c.txt"), os.getuid(), os.getgid()); os.link(os.path.join(work, "c.txt"), os.path.join(work, "d.txt"))
try: os.setxattr(os.path.join(work, "c.txt"), "user.k", b"v"); os.listxattr(os.path.join(work, "c.txt"))
except OSError: pass
shutil.rmtree(work)
pwd.getpwuid(os.getuid()); grp.getgrgid(os.getgid()); faulthandler.enable(); faulthandler.disable()
ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)()
ctypes.CDLL(None).getpid()
shm = multiprocessing.shared_memory.SharedMemory(create=True, size=4096); shm.close(); shm.unlink()
sem = multiprocessing.get_context("fork").Semaphore(1); sem.acquire(); sem.release()
if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue(); pr = ctx.Process(target=os.getpid); pr.start(); pr.join()
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        assert pool.apply(abs, (-3,)) == 3

# Processes: sessions, groups, posix_spawn, waitid, pidfd, pass_fds, a shell with common tools.
subprocess.run(["true"], start_new_session=True, check=True)
subprocess.run(["true"], process_group=0, check=True, pass_fds=[1], close_fds=True)
pid = os.posix_spawn("/bin/true", ["true"], os.environ); os.waitpid(pid, 0)
child = subprocess.Popen(["sleep", "0.05"]); pidfd = os.pidfd_open(child.pid); os.waitid(os.P_PIDFD, pidfd, os.WEXITED); os.close(pidfd)
async def run_sub():
    proc = await asyncio.create_subprocess_exec("echo", "x", stdout=asyncio.subprocess.PIPE)
    await proc.communicate()
asyncio.run(run_sub())
shell = "set -e; cd /tmp; ls -la / >/dev/null; cat /etc/os-release >/dev/null; sort /etc/passwd | head -1 >/dev/null; " \
        "find /usr/lib/python3.11/json -name '*.py' | wc -l >/dev/null; tar cf t.tar -C /etc hostname 2>/dev/null || tar cf t.tar -C /etc os-release; " \
        "gzip -f t.tar; rm -f t.tar.gz; date >/dev/null; sleep 0.01; grep -c root /etc/passwd >/dev/null; " \
        "cp /etc/os-release x && mv x y && rm y; mkdir -p d/e && rmdir d/e d; echo $((1+2)) >/dev/null; env >/dev/null"
subprocess.run(["sh", "-c", shell], check=True)
subprocess.run(["bash", "-c", "for i in 1 2; do echo $i; done | while read l; do :; done; ulimit -n >/dev/null"], check=True)

# Sockets: IPv6 and unix socket files, non-blocking connects, sendmsg/recvmsg with fds.
try:
    s6 = socket.socket(socket.AF_INET6); s6.bind(("::1", 0)); s6.close()
except OSError: pass
upath = os.path.join(tempfile.gettempdir(), "wl.sock")
us = socket.socket(socket.AF_UNIX); us.bind(upath); us.listen(); uc = socket.socket(socket.AF_UNIX); uc.setblocking(False)
try: uc.connect(upath)
except BlockingIOError: pass
conn, _ = us.accept(); socket.send_fds(conn, [b"f"], [0]); socket.recv_fds(uc, 10, 1) if uc.setblocking(True) is None else None
conn.close(); uc.close(); us.close(); os.unlink(upath)
print("WORKLOAD-OK")
