#!/usr/bin/env python3
"""A CRI v1 client for SafeSpace's CRI end-to-end test: the calls kubelet makes, over
containerd's gRPC socket, printed as one JSON document on stdout.

    cri_client.py --socket SOCK version
    cri_client.py --socket SOCK image-status IMAGE
    cri_client.py --socket SOCK pod --handler H --image IMG --log-dir D --command JSON \
        [--exec JSON] [--annotation K=V]... [--cgroup-parent P] [--probe JSON] [--log-until TEXT]...
    cri_client.py --socket SOCK bench --handlers runc,safespace --image IMG --command JSON -n N
    cri_client.py --socket SOCK cleanup

`pod` runs RunPodSandbox -> CreateContainer -> StartContainer -> ExecSync -> (the workload exits)
-> ContainerStatus -> container log -> StopContainer/RemoveContainer -> StopPodSandbox/
RemovePodSandbox and reports every answer; `--probe` is a host command run while the pod is up.
`bench` times RunPodSandbox to container exit per handler, alternating handlers, after one
untimed warm-up each. `cleanup` stops and removes every pod and container the daemon knows.

The stubs are generated from api.proto (next to this file) with grpcio-tools into a temporary
directory at start-up; needs `pip install grpcio grpcio-tools`.
"""

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs():
    """Compiles api.proto with grpcio-tools and imports the generated modules."""
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="safespace-cri-stubs-")
    try:
        include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rc = protoc.main(["protoc", "-I" + HERE, "-I" + include, "--python_out=" + out,
                          "--grpc_python_out=" + out, os.path.join(HERE, "api.proto")])
        if rc != 0:
            sys.exit("cri_client: protoc failed on api.proto (%d)" % rc)
        sys.path.insert(0, out)
        import api_pb2
        import api_pb2_grpc
        sys.path.remove(out)
        return api_pb2, api_pb2_grpc
    finally:
        shutil.rmtree(out, ignore_errors=True)


import grpc  # noqa: E402  (after the docstring; a missing module fails here, clearly)

pb, pb_grpc = load_stubs()


class CRI:
    def __init__(self, socket, timeout):
        self.channel = grpc.insecure_channel("unix://" + socket)
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.images = pb_grpc.ImageServiceStub(self.channel)
        self.timeout = timeout

    def call(self, service, method, request, timeout=None):
        return getattr(service, method)(request, timeout=timeout or self.timeout)

    def rt(self, method, request, timeout=None):
        return self.call(self.runtime, method, request, timeout)


def rpc_error(e):
    return {"code": e.code().name, "details": e.details()}


def info_json(info):
    """containerd's verbose `info` map: {"info": "<json>"}."""
    try:
        return json.loads(info.get("info", "{}"))
    except ValueError:
        return {"unparsed": dict(info)}


def spec_summary(info):
    """The runtime-spec fields the test checks, from a verbose status."""
    spec = info.get("runtimeSpec") or {}
    linux = spec.get("linux") or {}
    return {
        "pid": info.get("pid"),
        "runtimeType": info.get("runtimeType"),
        "runtimeOptions": info.get("runtimeOptions"),
        "namespaces": linux.get("namespaces"),
        "cgroupsPath": linux.get("cgroupsPath"),
        "annotations": spec.get("annotations"),
        "hostname": spec.get("hostname"),
        "seccomp": linux.get("seccomp") is not None,
    }


def pod_config(args, name):
    mode = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
    annotations = dict(a.split("=", 1) for a in args.annotation)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=str(uuid.uuid4()), namespace="safespace-cri-test"),
        hostname=name,
        log_directory=os.path.join(args.log_dir, name),
        labels={"app": "safespace-cri-test"},
        annotations=annotations,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=args.cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=mode)))


def container_config(args, command):
    profile = {"runtime-default": pb.SecurityProfile.RuntimeDefault,
               "unconfined": pb.SecurityProfile.Unconfined}[args.seccomp]
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="main"),
        image=pb.ImageSpec(image=args.image),
        command=command,
        envs=[pb.KeyValue(key="SAFESPACE_CRI_TEST", value="1")],
        log_path="main/0.log",
        labels={"app": "safespace-cri-test"},
        linux=pb.LinuxContainerConfig(
            # What kubelet sends for a Burstable container with limits.memory 256Mi, cpu 500m.
            resources=pb.LinuxContainerResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                                 memory_limit_in_bytes=256 << 20, oom_score_adj=999),
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=args.uid),
                run_as_group=pb.Int64Value(value=args.uid),
                no_new_privs=True,
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD),
                seccomp=pb.SecurityProfile(profile_type=profile))))


def wait_exited(cri, cid, timeout):
    """Polls ContainerStatus every 5 ms until the container has exited."""
    deadline = time.monotonic() + timeout
    while True:
        status = cri.rt("ContainerStatus", pb.ContainerStatusRequest(container_id=cid)).status
        if status.state == pb.CONTAINER_EXITED:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError("container %s did not exit within %ss (state %s)"
                               % (cid, timeout, pb.ContainerState.Name(status.state)))
        time.sleep(0.005)


def teardown(cri, sid, cid, report):
    """StopContainer/RemoveContainer, then StopPodSandbox/RemovePodSandbox; errors recorded."""
    steps = []
    if cid:
        steps += [("StopContainer", pb.StopContainerRequest(container_id=cid, timeout=10)),
                  ("RemoveContainer", pb.RemoveContainerRequest(container_id=cid))]
    if sid:
        steps += [("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid)),
                  ("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid))]
    for method, request in steps:
        start = time.monotonic()
        try:
            cri.rt(method, request, timeout=60)
            report["steps"].append({"call": method, "ok": True, "ms": ms(start)})
        except grpc.RpcError as e:
            report["steps"].append({"call": method, "ok": False, "error": rpc_error(e)})


def ms(start):
    return round((time.monotonic() - start) * 1000, 2)


def cmd_pod(cri, args):
    report = {"handler": args.handler, "steps": []}
    sid = cid = None
    name = "cri-%s-%s" % (args.handler, uuid.uuid4().hex[:8])
    sandbox = pod_config(args, name)
    os.makedirs(sandbox.log_directory, exist_ok=True)

    def call(method, request, timeout=None):
        start = time.monotonic()
        try:
            response = cri.rt(method, request, timeout)
        except grpc.RpcError as e:
            report["steps"].append({"call": method, "ok": False, "error": rpc_error(e)})
            raise
        report["steps"].append({"call": method, "ok": True, "ms": ms(start)})
        return response

    flow_start = time.monotonic()
    try:
        sid = call("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox, runtime_handler=args.handler), 120).pod_sandbox_id
        report["sandbox_id"] = sid
        st = call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True))
        report["sandbox"] = {"state": pb.PodSandboxState.Name(st.status.state), "ip": st.status.network.ip,
                             "runtime_handler": st.status.runtime_handler, **spec_summary(info_json(st.info))}
        cid = call("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=container_config(args, json.loads(args.command)), sandbox_config=sandbox), 120).container_id
        report["container_id"] = cid
        call("StartContainer", pb.StartContainerRequest(container_id=cid), 120)
        st = call("ContainerStatus", pb.ContainerStatusRequest(container_id=cid, verbose=True))
        report["container"] = {"state": pb.ContainerState.Name(st.status.state), **spec_summary(info_json(st.info))}
        if args.probe:
            # {sandbox_id} {container_id} {sandbox_pid} {container_pid} in the command are filled in.
            fill = {"{sandbox_id}": sid, "{container_id}": cid, "{sandbox_pid}": str(report["sandbox"].get("pid")),
                    "{container_pid}": str(report["container"].get("pid"))}
            probe = [functools.reduce(lambda a, kv: a.replace(*kv), fill.items(), arg) for arg in json.loads(args.probe)]
            p = subprocess.run(probe, capture_output=True, text=True, timeout=60)
            report["probe"] = {"status": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
        if args.exec:
            r = call("ExecSync", pb.ExecSyncRequest(container_id=cid, cmd=json.loads(args.exec), timeout=60), 90)
            report["exec"] = {"exit_code": r.exit_code, "stdout": r.stdout.decode(errors="replace"),
                              "stderr": r.stderr.decode(errors="replace")}
        status = wait_exited(cri, cid, args.timeout)
        report["flow_ms"] = ms(flow_start)
        report["exited"] = {"state": pb.ContainerState.Name(status.state), "exit_code": status.exit_code,
                            "reason": status.reason, "message": status.message,
                            "finished": status.finished_at > 0, "log_path": status.log_path}
        log = os.path.join(sandbox.log_directory, "main/0.log")
        # containerd writes the log from the shim's pipes; the last line can land just after exit.
        for _ in range(100):
            report["log"] = open(log, errors="replace").read() if os.path.exists(log) else None
            if report["log"] and report["log"].endswith("\n") and all(t in report["log"] for t in args.log_until):
                break
            time.sleep(0.02)
    except (grpc.RpcError, TimeoutError, subprocess.SubprocessError, ValueError) as e:
        if not isinstance(e, grpc.RpcError):
            report["error"] = str(e)
    finally:
        teardown(cri, sid, cid, report)
        shutil.rmtree(sandbox.log_directory, ignore_errors=True)
    return report


def one_timed_pod(cri, args, handler, command):
    """RunPodSandbox .. exit, timed; teardown not timed. Returns seconds."""
    a = argparse.Namespace(**vars(args))
    a.handler = handler
    sandbox = pod_config(a, "bench-%s-%s" % (handler, uuid.uuid4().hex[:8]))
    os.makedirs(sandbox.log_directory, exist_ok=True)
    sid = cid = None
    try:
        start = time.monotonic()
        sid = cri.rt("RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox, runtime_handler=handler), 120).pod_sandbox_id
        cid = cri.rt("CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=container_config(a, command), sandbox_config=sandbox), 120).container_id
        cri.rt("StartContainer", pb.StartContainerRequest(container_id=cid), 120)
        status = wait_exited(cri, cid, args.timeout)
        elapsed = time.monotonic() - start
        if status.exit_code != 0:
            raise RuntimeError("%s: workload exited %d: %s" % (handler, status.exit_code, status.message))
        return elapsed
    finally:
        report = {"steps": []}
        teardown(cri, sid, cid, report)
        shutil.rmtree(sandbox.log_directory, ignore_errors=True)
        failed = [s for s in report["steps"] if not s["ok"]]
        if failed:
            raise RuntimeError("%s: teardown failed: %s" % (handler, failed))


def cmd_bench(cri, args):
    handlers = args.handlers.split(",")
    command = json.loads(args.command)
    times = {h: [] for h in handlers}
    for h in handlers:
        one_timed_pod(cri, args, h, command)  # warm-up: page cache, image snapshot, shim binary
    for i in range(args.n):
        order = handlers if i % 2 == 0 else list(reversed(handlers))
        for h in order:
            times[h].append(one_timed_pod(cri, args, h, command))
    out = {"iterations": args.n, "command": command, "seconds": times,
           "median": {h: statistics.median(t) for h, t in times.items()}}
    if len(handlers) > 1:
        base = out["median"][handlers[0]]
        out["ratio_to_" + handlers[0]] = {h: out["median"][h] / base for h in handlers}
    return out


def cmd_cleanup(cri, args):
    report = {"steps": []}
    for c in cri.rt("ListContainers", pb.ListContainersRequest()).containers:
        teardown(cri, None, c.id, report)
    for p in cri.rt("ListPodSandbox", pb.ListPodSandboxRequest()).items:
        teardown(cri, p.id, None, report)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--rpc-timeout", type=float, default=60)
    sub = ap.add_subparsers(dest="verb", required=True)
    sub.add_parser("version")
    s = sub.add_parser("image-status")
    s.add_argument("image")
    for verb in ("pod", "bench"):
        s = sub.add_parser(verb)
        if verb == "pod":
            s.add_argument("--handler", required=True)
            s.add_argument("--exec", help="ExecSync command, JSON array")
            s.add_argument("--probe", help="host command run while the pod is up, JSON array")
            s.add_argument("--log-until", action="append", default=[], help="wait until the container log holds this text")
        else:
            s.add_argument("--handlers", required=True)
            s.add_argument("-n", type=int, default=5)
        s.add_argument("--image", required=True)
        s.add_argument("--command", required=True, help="the container's command, JSON array")
        s.add_argument("--log-dir", default=tempfile.gettempdir())
        s.add_argument("--annotation", action="append", default=[], help="pod annotation K=V")
        s.add_argument("--cgroup-parent", default="")
        s.add_argument("--seccomp", choices=["runtime-default", "unconfined"], default="runtime-default")
        s.add_argument("--uid", type=int, default=1000)
        s.add_argument("--timeout", type=float, default=120, help="seconds to wait for the workload to exit")
    sub.add_parser("cleanup")
    args = ap.parse_args()

    cri = CRI(args.socket, args.rpc_timeout)
    try:
        if args.verb == "version":
            v = cri.rt("Version", pb.VersionRequest(version="v1"))
            out = {"runtime_name": v.runtime_name, "runtime_version": v.runtime_version,
                   "runtime_api_version": v.runtime_api_version}
        elif args.verb == "image-status":
            img = cri.call(cri.images, "ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=args.image))).image
            out = {"id": img.id, "repo_tags": list(img.repo_tags), "size": img.size}
        elif args.verb == "pod":
            out = cmd_pod(cri, args)
        elif args.verb == "bench":
            out = cmd_bench(cri, args)
        else:
            out = cmd_cleanup(cri, args)
    except grpc.RpcError as e:
        print(json.dumps({"error": rpc_error(e)}))
        return 1
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
