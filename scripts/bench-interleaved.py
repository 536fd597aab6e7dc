#!/usr/bin/env python3
"""bench-interleaved: issue 17's start-up ratios measured round-robin (python3 stdlib, root).

scripts/bench times each runtime in a block of its own (hyperfine), so on a shared, loaded host
the load can change between one runtime's block and the next, and the ratios move by 2x from
run to run. Here every round runs each runtime once on each workload, in an order rotated per
round, so load drift reaches all of them alike; the medians of the rounds give the ratios.

Runtimes: safespace-runtime (--binary) and, with --baseline, another build of it, each on a
bundle without and with the default seccomp profile (seccomp/default.json, resolved as
scripts/bench resolves it); runc on the bundle without. Bundles: `runc spec`, the root read-only
at --rootfs, terminal off, hostname bench; workloads /bin/true and python3 -c pass. Each run is
a complete `run` (create, start, wait, delete) with a root of its own per runtime.

    scripts/bench-interleaved.py [--runs N] [--binary PATH] [--baseline PATH] [--rootfs DIR]

A benchmark, not a test: it prints numbers and does not judge them.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_profile(native="SCMP_ARCH_X86_64"):
    """seccomp/default.json as linux.seccomp: comments dropped, the native archMap entry."""
    with open(os.path.join(REPO, "seccomp", "default.json")) as f:
        prof = json.load(f)
    out = {
        "defaultAction": prof["defaultAction"],
        "syscalls": [{k: v for k, v in s.items() if k != "comment"} for s in prof["syscalls"]],
        "architectures": [
            a
            for m in prof.get("archMap", [])
            if m["architecture"] == native
            for a in [m["architecture"]] + m.get("subArchitectures", [])
        ],
    }
    if "defaultErrnoRet" in prof:
        out["defaultErrnoRet"] = prof["defaultErrnoRet"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=30, help="timed rounds (default 30; 2 untimed first)")
    p.add_argument("--binary", default=os.path.join(REPO, ".build-release/release/safespace-runtime"))
    p.add_argument("--baseline", help="another safespace-runtime build, for a before/after in one run")
    p.add_argument("--rootfs", default="/var/lib/safespace/rootfs/python-3.11/rootfs")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-interleaved: run as root (OCI runtimes need it)")
    runc = shutil.which("runc")
    if not runc:
        sys.exit("bench-interleaved: runc is not installed (the ratios are to runc)")
    for path in [args.binary] + ([args.baseline] if args.baseline else []):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench-interleaved: {path} is not an executable")
    arch = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(os.uname().machine, "")
    work = tempfile.mkdtemp(prefix="safespace-bench-il.")
    try:
        subprocess.run([runc, "spec"], cwd=work, check=True)
        with open(os.path.join(work, "config.json")) as f:
            base = json.load(f)
        seccomp = default_profile(arch)
        workloads = {"true": ["/bin/true"], "python": ["python3", "-c", "pass"]}

        def bundle(name, argv, with_seccomp):
            d = os.path.join(work, "bundle-" + name)
            os.makedirs(d, exist_ok=True)
            c = json.loads(json.dumps(base))
            c["root"] = {"path": args.rootfs, "readonly": True}
            c["process"]["terminal"] = False
            c["process"]["args"] = argv
            c["hostname"] = "bench"
            if with_seccomp:
                c["linux"]["seccomp"] = seccomp
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(c, f)
            return d

        runtimes = {"safespace": (args.binary, False), "safespace-seccomp": (args.binary, True)}
        if args.baseline:
            runtimes["safespace-base"] = (args.baseline, False)
            runtimes["safespace-base-seccomp"] = (args.baseline, True)
        runtimes["runc"] = (runc, False)
        bundles = {(r, w): bundle(f"{r}-{w}", argv, sc) for r, (_, sc) in runtimes.items() for w, argv in workloads.items()}
        times = {(r, w): [] for r in runtimes for w in workloads}
        names = list(runtimes)
        n = 0
        for i in range(args.runs + 2):
            order = names[i % len(names):] + names[: i % len(names)]
            for w in workloads:
                for r in order:
                    n += 1
                    cmd = [runtimes[r][0], "--root", os.path.join(work, "state-" + r), "run", "--bundle", bundles[(r, w)], f"il-{os.getpid()}-{n}"]
                    t0 = time.perf_counter()
                    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    t = (time.perf_counter() - t0) * 1000
                    if done.returncode != 0:
                        sys.exit(f"bench-interleaved: {r} failed on {w}: {done.stderr.decode(errors='replace')[-500:]}")
                    if i >= 2:
                        times[(r, w)].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{'runtime':24s} {'workload':16s} {'median ms':>10s} {'vs runc':>8s}")
        for w in workloads:
            label = "/bin/true" if w == "true" else "python3 -c pass"
            for r in runtimes:
                print(f"{r:24s} {label:16s} {med[(r, w)]:10.1f} {med[(r, w)] / med[('runc', w)]:8.2f}")
        print()
        print("issue 17 goals (ratio of medians to runc's, interleaved rounds)")

        def ratio(r, w):
            return f"{med[(r, w)] / med[('runc', w)]:.2f}" if (r, w) in med else "-"

        print(f"{'goal':44s} {'after':>8s} {'before':>8s} {'target':>8s}")
        rows = [
            ("run /bin/true, cgroups + seccomp, vs runc", "safespace-seccomp", "true", "<= 0.50"),
            ("run python3 -c pass vs runc", "safespace", "python", "<= 0.90"),
            ("run python3 -c pass, seccomp, vs runc", "safespace-seccomp", "python", "<= 0.90"),
        ]
        for label, r, w, target in rows:
            before = ratio(r.replace("safespace", "safespace-base", 1), w) if args.baseline else "-"
            print(f"{label:44s} {ratio(r, w):>8s} {before:>8s} {target:>8s}")
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"\n{args.runs} rounds (+2 untimed), load {load} at the end, {os.cpu_count()} CPUs; binary {args.binary}")
    finally:
        for r in ("safespace", "safespace-seccomp", "safespace-base", "safespace-base-seccomp", "runc"):
            root = os.path.join(work, "state-" + r)
            if os.path.isdir(root):
                for cid in os.listdir(root):
                    if cid.startswith("il-"):
                        binary = runc if r == "runc" else (args.baseline if "base" in r else args.binary)
                        subprocess.run([binary, "--root", root, "delete", "--force", cid], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
