#!/usr/bin/env python3
"""The safespaced rows of scripts/bench: a client of the daemon's API (HTTP/1.1 over its unix
socket, python3 stdlib only) that times requests and measures memory. scripts/bench starts
the daemon (its own socket, roots and audit log), calls this, and stops and cleans up after.

  bench-daemon.py --socket S cycle --runs N --warmup W --prefix P --out FILE
      N x (create a sandbox, exec `python3 -c print(1)` in it, delete it); each cycle's wall
      time in seconds, one a line, to FILE. Every exec must print "1\\n" and exit 0.
  bench-daemon.py --socket S exec --runs N --warmup W --prefix P --out FILE
      one sandbox, N execs of `python3 -c print(1)` into it; each exec's wall time.
  bench-daemon.py --socket S rss --pid PID --sandboxes N --prefix P
      the daemon's VmRSS (/proc/PID/status) with no sandbox (after the timed runs), then with
      N sandboxes (each has run one exec): (with - before) / N is its cost per sandbox; and per sandbox the
      memory of its own processes (Rss and Pss of /proc/PID/smaps_rollup, summed over the
      processes of its cgroup) and its cgroup's memory.current (the API's usage.memoryBytes).
      Prints one JSON object.
  bench-daemon.py --socket S pool --runs N --warmup W --prefix P --out FILE [--size M]
      a warm pool P-pool (minSize M, the default sandbox's template; root only), filled; then
      N x (claim `POST /v1/sandboxes?pool=`, exec {"code": "print(1)", "language": "python"}
      (issue 14's run_code in the claimed sandbox's warm interpreter), untimed delete),
      waiting for a ready sandbox before each claim: each claim + exec wall time to FILE,
      each claim alone to FILE.claim; prints the refill rate (sandboxes/s) of the first fill
      as JSON. Every claim must be warm.
  bench-daemon.py --socket S soak --runs N --prefix P [--size M]
      N x (claim, exec, delete) of a pool, as fast as the pool serves (cold when empty);
      prints warm/cold counts as JSON. The soak of issue 14 is N=500; check the node for
      leftovers after (DaemonHarness.leftovers lists what to look at).

  bench-daemon.py --socket S paths --runs N --warmup W --prefix P
      one sandbox, N execs of each of `/bin/true`, `python3 -c print(1)` (commands) and
      {"code": "print(1)", "language": "python"}; prints one JSON object of p50/p90/p99 (ms) each.
      Against a daemon with its exec agent (the default) these are the agent's and the warm
      interpreter's; against one started with SAFESPACE_AGENT=off, the runtime exec path's
      (and `code` is `python3 -c` through it). With each, the p50 of the daemon's own
      durationMs (the exec from its start to its exit, without HTTP, JSON and the audit log).
  bench-daemon.py --socket S numpy --runs N --warmup W --prefix P [--package numpy==2.1.3]
      `import numpy` cold vs preloaded (issue 14): a warm pool P-np whose spec.preloadPackages
      is the package (the daemon's packages.allowlist must list it and packages.advisoryDatabase
      must exist; the layer's build time is printed), one claimed sandbox, then N x each of
      `python3 -c "import numpy"` (a fresh interpreter importing from the layer: cold) and
      {"code": "import numpy", "language": "python"} (the warm interpreter, which imported it
      before forking), and N x (claim + that code exec) with a ready sandbox each time;
      prints one JSON object of p50/p99 (ms) each.
  bench-daemon.py runc-exec --runs N --warmup W --rootfs DIR [--runc PATH]
      `runc exec` of the same two commands into a runc container of DIR (read-only root,
      `runc spec` defaults, running `sleep`), timed around the runc process; one JSON object.

Times are taken in this process (time.perf_counter_ns) around the requests, so they are the
daemon's latency as an SDK sees it, without the start-up of a client process. Sandboxes this
run made are deleted before it returns, also on errors (the daemon is told to remove the rest
at its shutdown: shutdown.sandboxes: remove).
"""

import argparse
import json
import os
import socket
import sys
import time

COMMAND = ["python3", "-c", "print(1)"]
# The sandbox `safespace run` makes by default (python:3.11, default resources), with a
# lifetime so that nothing outlives a crashed bench for long.
SPEC = {"runtime": "python:3.11", "timeoutSeconds": 600}
# The small sandboxes of the RSS measurement, so that N of them fit the node's allocatable.
SMALL = {"runtime": "python:3.11", "timeoutSeconds": 600,
         "resources": {"cpu": "100m", "memory": "128Mi", "ephemeralStorage": "64Mi"}}


class Client:
    """HTTP/1.1 over the unix socket, one connection kept alive between requests (as an SDK
    would), reopened when the daemon closes it. Written on the socket directly rather than with
    http.client, whose per-response header parsing (the email package) is bench overhead: each
    request is one write of the request line, headers and body; each response is read by its
    Content-Length, or its chunks (Transfer-Encoding: chunked), or to EOF when it has neither
    (RFC 9112 section 6.3)."""

    def __init__(self, path, timeout=120):
        self.path = path
        self.timeout = timeout
        self.sock = None
        self.buffer = b""

    def _connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)
        self.buffer = b""

    def _close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        self.buffer += chunk

    def _line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exact(self, n):
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _response(self):
        while True:
            status_line = self._line()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ConnectionResetError(f"not an HTTP response: {status_line!r}")
            status = int(parts[1])
            headers = {}
            while True:
                line = self._line()
                if not line:
                    break
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode()] = value.strip().decode()
            if 100 <= status < 200:
                continue
            if "chunked" in headers.get("transfer-encoding", "").lower():
                payload = b""
                while True:
                    size = int(self._line().split(b";")[0], 16)
                    if size == 0:
                        while self._line():
                            pass
                        break
                    payload += self._exact(size)
                    self._exact(2)
            elif "content-length" in headers:
                payload = self._exact(int(headers["content-length"]))
            else:
                while True:
                    try:
                        self._fill()
                    except ConnectionResetError:
                        break
                payload, self.buffer = self.buffer, b""
                headers["connection"] = "close"
            return status, headers, payload

    def request(self, method, url, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {url} HTTP/1.1\r\nHost: localhost\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if body is not None or method in ("POST", "PUT"):
            head += f"Content-Length: {len(data)}\r\n"
        message = head.encode() + b"\r\n" + data
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(message)
                status, headers, payload = self._response()
                if headers.get("connection", "").lower() == "close":
                    self._close()
                return status, payload
            except (BrokenPipeError, ConnectionResetError):
                self._close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method, url, body=None, status=200):
        got, payload = self.request(method, url, body)
        if got != status:
            raise SystemExit(f"bench-daemon: {method} {url}: {got} {payload.decode(errors='replace')}")
        return json.loads(payload) if payload else None

    def create(self, name, spec):
        self.ok("POST", "/v1/sandboxes", {"metadata": {"name": name}, "spec": spec}, status=201)

    def exec(self, name):
        result = self.ok("POST", f"/v1/sandboxes/{name}/exec", {"command": COMMAND})
        if result.get("exitCode") != 0 or result.get("stdout") != "1\n":
            raise SystemExit(f"bench-daemon: exec in {name}: {result}")

    def run_code(self, name):
        result = self.ok("POST", f"/v1/sandboxes/{name}/exec", {"code": "print(1)", "language": "python"})
        if result.get("exitCode") != 0 or result.get("stdout") != "1\n":
            raise SystemExit(f"bench-daemon: code in {name}: {result}")

    def delete(self, name):
        self.ok("DELETE", f"/v1/sandboxes/{name}")


def timed(fn):
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def write_times(path, times):
    with open(path, "w") as out:
        for t in times:
            out.write(f"{t:.6f}\n")


def cycle(client, args):
    times = []
    for i in range(args.warmup + args.runs):
        name = f"{args.prefix}-c{i}"

        def one():
            client.create(name, SPEC)
            try:
                client.exec(name)
            finally:
                client.delete(name)

        t = timed(one)
        if i >= args.warmup:
            times.append(t)
    write_times(args.out, times)


def execs(client, args):
    name = f"{args.prefix}-exec"
    client.create(name, SPEC)
    try:
        times = []
        for i in range(args.warmup + args.runs):
            t = timed(lambda: client.exec(name))
            if i >= args.warmup:
                times.append(t)
    finally:
        client.delete(name)
    write_times(args.out, times)


POOL_TEMPLATE = {"runtime": "python:3.11"}


def make_pool(client, name, size, max_size=None):
    spec = {"minSize": size, "maxSize": max_size or size * 2, "whenEmpty": "create", "template": POOL_TEMPLATE}
    client.ok("POST", "/v1/warmpools", {"apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool",
                                         "metadata": {"name": name}, "spec": spec}, status=201)


def wait_ready(client, name, count, limit=300):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = client.ok("GET", f"/v1/warmpools/{name}")["status"]
        if status["ready"] >= count:
            return status
        time.sleep(0.005)
    raise SystemExit(f"bench-daemon: pool {name} did not reach {count} ready: {status}")


def claim(client, pool):
    got, payload = client.request("POST", f"/v1/sandboxes?pool={pool}")
    if got != 201:
        raise SystemExit(f"bench-daemon: claim of {pool}: {got} {payload.decode(errors='replace')}")
    view = json.loads(payload)
    return view["metadata"]["name"], view["status"].get("warm") is True


def pool_bench(client, args):
    pool = f"{args.prefix}-pool"
    t0 = time.perf_counter_ns()
    make_pool(client, pool, args.size)
    try:
        wait_ready(client, pool, args.size)
        fill = (time.perf_counter_ns() - t0) / 1e9
        times, claims = [], []
        for i in range(args.warmup + args.runs):
            wait_ready(client, pool, 1)
            t_start = time.perf_counter_ns()
            name, warm = claim(client, pool)
            t_claimed = time.perf_counter_ns()
            try:
                client.run_code(name)
                t_done = time.perf_counter_ns()
            finally:
                client.delete(name)
            if not warm:
                raise SystemExit(f"bench-daemon: claim {i} of {pool} was not warm")
            if i >= args.warmup:
                times.append((t_done - t_start) / 1e9)
                claims.append((t_claimed - t_start) / 1e9)
        write_times(args.out, times)
        write_times(args.out + ".claim", claims)
        print(json.dumps({"pool_size": args.size, "first_fill_seconds": round(fill, 3),
                          "refill_rate_per_second": round(args.size / fill, 2)}))
    finally:
        client.ok("DELETE", f"/v1/warmpools/{pool}")


def numpy_bench(client, args):
    pool = f"{args.prefix}-np"
    spec = {"minSize": 1, "maxSize": 3, "whenEmpty": "create", "template": POOL_TEMPLATE,
            "preloadPackages": [args.package]}
    t0 = time.perf_counter_ns()
    client.ok("POST", "/v1/warmpools", {"apiVersion": "llmsafespace.dev/v1", "kind": "WarmPool",
                                         "metadata": {"name": pool}, "spec": spec}, status=201)
    build = (time.perf_counter_ns() - t0) / 1e9
    module = args.package.split("==")[0].replace("-", "_")
    made = []

    def run(name, body):
        result = client.ok("POST", f"/v1/sandboxes/{name}/exec", body)
        if result.get("exitCode") != 0:
            raise SystemExit(f"bench-daemon: exec in {name}: {result}")

    try:
        wait_ready(client, pool, 1)
        name, _ = claim(client, pool)
        made.append(name)
        cold, warm, claimed = [], [], []
        for i in range(args.warmup + args.runs):
            c = timed(lambda: run(name, {"command": ["python3", "-c", f"import {module}"]}))
            w = timed(lambda: run(name, {"code": f"import {module}", "language": "python"}))
            if i >= args.warmup:
                cold.append(c)
                warm.append(w)
        for i in range(args.warmup + args.runs):
            wait_ready(client, pool, 1)
            t_start = time.perf_counter_ns()
            other, is_warm = claim(client, pool)
            made.append(other)
            run(other, {"code": f"import {module}", "language": "python"})
            t_done = time.perf_counter_ns()
            client.delete(other)
            made.remove(other)
            if not is_warm:
                raise SystemExit(f"bench-daemon: claim {i} of {pool} was not warm")
            if i >= args.warmup:
                claimed.append((t_done - t_start) / 1e9)
        out = {"package": args.package, "layer_build_seconds": round(build, 2)}
        for key, times in (("import_cold_interpreter", cold), ("import_warm_interpreter", warm),
                           ("claim_and_import_warm", claimed)):
            out[key] = percentiles(times)
        print(json.dumps(out))
    finally:
        for name in made:
            client.request("DELETE", f"/v1/sandboxes/{name}")
        client.ok("DELETE", f"/v1/warmpools/{pool}")


def soak(client, args):
    pool = f"{args.prefix}-soak"
    make_pool(client, pool, args.size)
    warm = cold = 0
    try:
        wait_ready(client, pool, args.size)
        for _ in range(args.runs):
            name, was_warm = claim(client, pool)
            try:
                client.exec(name)
            finally:
                client.delete(name)
            warm += was_warm
            cold += not was_warm
        status = client.ok("GET", f"/v1/warmpools/{pool}")["status"]
    finally:
        client.ok("DELETE", f"/v1/warmpools/{pool}")
    print(json.dumps({"cycles": args.runs, "warm": warm, "cold": cold, "pool_status": status}))


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"bench-daemon: no VmRSS for pid {pid}")


def cgroup_processes(name):
    """Pids whose cgroup (/proc/PID/cgroup) is the sandbox's (cgroupsPath safespace/NAME) or below it."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        paths = [line.split(":", 2)[-1] for line in text.splitlines()]
        if any(p == f"/safespace/{name}" or p.startswith(f"/safespace/{name}/") for p in paths):
            pids.append(int(entry))
    return pids


def rollup_kib(pid):
    """Rss and Pss (KiB) of smaps_rollup (proc(5)); zeros when the process is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def rss(client, args):
    before = vm_rss_kib(args.pid)
    names = [f"{args.prefix}-r{i}" for i in range(args.sandboxes)]
    made = []
    try:
        for name in names:
            client.create(name, SMALL)
            made.append(name)
            client.exec(name)  # each sandbox has run one exec, as a used one has
        time.sleep(1)
        loaded = vm_rss_kib(args.pid)
        procs = rss_sum = pss_sum = cg_sum = 0
        for name in names:
            pids = cgroup_processes(name)
            procs += len(pids)
            for pid in pids:
                r, p = rollup_kib(pid)
                rss_sum += r
                pss_sum += p
            usage = (client.ok("GET", f"/v1/sandboxes/{name}").get("status") or {}).get("usage") or {}
            cg_sum += usage.get("memoryBytes") or 0
    finally:
        for name in made:
            client.delete(name)
    n = args.sandboxes
    print(json.dumps({
        "daemon_rss_before_kib": before,
        "daemon_rss_with_sandboxes_kib": loaded,
        "sandboxes": n,
        "daemon_rss_per_sandbox_kib": round((loaded - before) / n, 1),
        "sandbox_processes": round(procs / n, 2),
        "sandbox_processes_rss_kib": round(rss_sum / n, 1),
        "sandbox_processes_pss_kib": round(pss_sum / n, 1),
        "sandbox_cgroup_memory_kib": round(cg_sum / n / 1024, 1),
    }))


def percentiles(times):
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
    return {"p50_ms": round(pick(0.5), 3), "p90_ms": round(pick(0.9), 3), "p99_ms": round(pick(0.99), 3),
            "runs": len(ordered)}


def paths(client, args):
    name = f"{args.prefix}-paths"
    client.create(name, SPEC)
    out = {}
    try:
        bodies = {
            "command /bin/true": ({"command": ["/bin/true"]}, ""),
            "command python3 -c print(1)": ({"command": COMMAND}, "1\n"),
            "code print(1)": ({"code": "print(1)", "language": "python"}, "1\n"),
        }
        for label, (body, expected) in bodies.items():
            times = []
            inside = []
            for i in range(args.warmup + args.runs):
                t0 = time.perf_counter_ns()
                result = client.ok("POST", f"/v1/sandboxes/{name}/exec", body)
                inside.append(result.get("durationMs", 0))
                t = (time.perf_counter_ns() - t0) / 1e9
                if result.get("exitCode") != 0 or result.get("stdout") != expected:
                    raise SystemExit(f"bench-daemon: {label} in {name}: {result}")
                if i >= args.warmup:
                    times.append(t)
            out[label] = percentiles(times)
            # The daemon's own durationMs (start of the exec to its exit, whole ms).
            out[label]["durationMs_p50"] = sorted(inside[args.warmup:])[len(inside[args.warmup:]) // 2]
    finally:
        client.delete(name)
    print(json.dumps(out))


def runc_exec(args):
    import subprocess
    import tempfile

    work = tempfile.mkdtemp(prefix="bench-runc-exec-")
    cid = f"bench-exec-{os.getpid()}"
    state = f"{work}/state"
    subprocess.run([args.runc, "spec"], cwd=work, check=True)
    with open(f"{work}/config.json") as f:
        spec = json.load(f)
    spec["root"] = {"path": args.rootfs, "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "3600"]
    with open(f"{work}/config.json", "w") as f:
        json.dump(spec, f)
    out = {}
    try:
        subprocess.run([args.runc, "--root", state, "run", "-d", "--bundle", work, cid], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for label, command, expected in (("runc exec /bin/true", ["/bin/true"], b""),
                                         ("runc exec python3 -c print(1)", COMMAND, b"1\n")):
            times = []
            for i in range(args.warmup + args.runs):
                t0 = time.perf_counter_ns()
                done = subprocess.run([args.runc, "--root", state, "exec", cid] + command,
                                      stdin=subprocess.DEVNULL, capture_output=True)
                t = (time.perf_counter_ns() - t0) / 1e9
                if done.returncode != 0 or done.stdout != expected:
                    raise SystemExit(f"bench-daemon: {label}: {done}")
                if i >= args.warmup:
                    times.append(t)
            out[label] = percentiles(times)
    finally:
        subprocess.run([args.runc, "--root", state, "delete", "--force", cid],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket")
    sub = parser.add_subparsers(dest="what", required=True)
    for what in ("cycle", "exec"):
        p = sub.add_parser(what)
        p.add_argument("--runs", type=int, required=True)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--prefix", required=True)
        p.add_argument("--out", required=True)
    p = sub.add_parser("paths")
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--prefix", required=True)
    p = sub.add_parser("runc-exec")
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rootfs", required=True)
    p.add_argument("--runc", default="runc")
    p = sub.add_parser("pool")
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--prefix", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=2)
    p = sub.add_parser("numpy")
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--prefix", required=True)
    p.add_argument("--package", default="numpy==2.1.3")
    p = sub.add_parser("soak")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--prefix", required=True)
    p.add_argument("--size", type=int, default=2)
    p = sub.add_parser("rss")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--sandboxes", type=int, default=10)
    p.add_argument("--prefix", required=True)
    args = parser.parse_args()
    if args.what == "runc-exec":
        return runc_exec(args)
    if not args.socket:
        parser.error("--socket is required")
    client = Client(args.socket)
    {"cycle": cycle, "exec": execs, "rss": rss, "paths": paths, "pool": pool_bench, "soak": soak,
     "numpy": numpy_bench}[args.what](
        client, args
    )


if __name__ == "__main__":
    sys.exit(main())
