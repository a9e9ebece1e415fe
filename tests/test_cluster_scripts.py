"""The cluster kit's scripts on one machine (cluster/README.md): start-head.sh and start-worker.sh
make a two-node Ray cluster with token authentication on loopback addresses, `ray job submit`
runs training jobs on it, and stop.sh stops exactly those two nodes while another Ray instance on
the same host keeps running.

Needs Linux (setsid, /proc) and takes about 40 s. The job tests need `ray[default]==2.60.0` (the
Jobs API); without it they are skipped and say so. Every Ray process started here is stopped in a
finalizer, by session id, never with `ray stop` (which would stop every Ray on the host).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
BIN = Path(sys.executable).parent  # the environment running the tests: its ray and coagents
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"  # loopback: Ray maps 127.0.0.1 to the host's address
UPDATES = 300

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("setsid") is None
    or not (BIN / "ray").exists(),
    reason="the cluster scripts need Linux with setsid, and Ray's `ray` command next to python")

DECOY = r"""
import sys
import ray

ray.init(num_cpus=1, include_dashboard=False, dashboard_port=int(sys.argv[1]),
         _temp_dir=sys.argv[2], logging_level="ERROR", log_to_driver=False)

@ray.remote
def ping():
    return "pong"

print("ready", flush=True)
for _ in sys.stdin:
    print(ray.get(ping.remote(), timeout=60), flush=True)
ray.shutdown()
"""


# ---- processes, read from /proc ------------------------------------------------------------------
def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, state) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            table[int(entry)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def session_tree(sid: int) -> set[int]:
    """The processes of session ``sid`` and all their descendants."""
    table = proc_table()
    mine = {pid for pid, (_, s, _) in table.items() if s == sid}
    while True:
        more = {pid for pid, (ppid, _, _) in table.items() if ppid in mine and pid not in mine}
        if not more:
            return mine
        mine |= more


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies waiting to be reaped count as gone)."""
    table = proc_table()
    return {pid for pid in pids if pid in table and table[pid][2] != "Z"}


def naming(text: str) -> set[int]:
    """Live processes whose command line contains ``text``."""
    found = set()
    for pid in alive(set(proc_table())):
        try:
            if text.encode() in Path("/proc", str(pid), "cmdline").read_bytes():
                found.add(pid)
        except OSError:
            pass
    return found


def kill_session(sid: int) -> None:
    """Last resort in a finalizer: SIGKILL a session this test created, and its descendants."""
    for pid in alive(session_tree(sid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- helpers ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict, timeout: float = 120, cwd: Path | None = None):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)
    proc.output = f"$ {' '.join(cmd)}\n[exit {proc.returncode}]\n{proc.stdout}\n{proc.stderr}"
    return proc


def state(state_dir: Path, name: str) -> dict[str, str]:
    lines = (state_dir / f"{name}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def decoy():
    """Another Ray instance on this host (as another user's `ray.init()` would be); it must survive."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ckd-", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-c", DECOY, str(free_port()), str(temp_dir)],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready", "the decoy Ray instance did not start"
        yield proc
    finally:
        try:
            proc.stdin.close()
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            pass
        kill_session(proc.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(decoy):
    """A head and a worker node started with the kit's scripts; stopped in any case at the end."""
    state_dir = Path(tempfile.mkdtemp(prefix="ck-", dir="/tmp"))  # short: Ray's socket paths
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RAY_", "COAGENTS_RAY_"))}  # e.g. RAY_ADDRESS, RAY_AUTH_MODE
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
               COAGENTS_RAY_STATE_DIR=str(state_dir))
    port, dashboard_port = free_port(), free_port()
    head_args = ["--port", str(port), "--num-cpus", "1", "--node-ip", HEAD_IP,
                 "--dashboard-port", str(dashboard_port)]
    if importlib.util.find_spec("grpc") is not None:  # Ray Client present: not on its default port
        head_args += ["--client-port", str(free_port())]
    info = {"env": env, "state_dir": state_dir, "address": f"{HEAD_IP}:{port}",
            "dashboard": f"http://127.0.0.1:{dashboard_port}", "sessions": []}
    try:
        start = time.monotonic()
        head = run([str(CLUSTER / "start-head.sh"), *head_args,
                    "--", "--dashboard-agent-listen-port=0"], env)
        info["head_s"] = time.monotonic() - start
        assert head.returncode == 0, head.output
        info["sessions"].append(int(state(state_dir, f"head-{port}")["sid"]))
        start = time.monotonic()
        worker = run([str(CLUSTER / "start-worker.sh"), "--address", info["address"],
                      "--num-cpus", "1", "--node-ip", WORKER_IP,
                      "--", "--dashboard-agent-listen-port=0"], env)
        info["worker_s"] = time.monotonic() - start
        assert worker.returncode == 0, worker.output
        info["sessions"].append(int(state(state_dir, "worker")["sid"]))
        yield info
    finally:
        run([str(CLUSTER / "stop.sh"), "--grace", "5"], env, timeout=60)
        for sid in info["sessions"]:
            kill_session(sid)
        shutil.rmtree(state_dir, ignore_errors=True)


def ray_status(cluster) -> str:
    return run([str(BIN / "ray"), "status", "--address", cluster["address"]], cluster["env"],
               timeout=60).output


# ---- tests ---------------------------------------------------------------------------------------
def test_two_nodes_join_with_token_auth(cluster):
    head, worker = (state(cluster["state_dir"], name) for name in
                    (f"head-{cluster['address'].split(':')[1]}", "worker"))
    assert (head["role"], head["node_ip"], head["address"]) == ("head", HEAD_IP, cluster["address"])
    assert (worker["role"], worker["node_ip"]) == ("worker", WORKER_IP)
    assert head["sid"] != worker["sid"]

    deadline = time.monotonic() + 30  # the autoscaler's view is refreshed every few seconds
    while True:
        output = ray_status(cluster)
        active = output.split("Active:")[-1].split("Pending:")[0]
        if len(re.findall(r"^\s*1 node_[0-9a-f]+", active, flags=re.MULTILINE)) == 2:
            break
        assert time.monotonic() < deadline, f"ray status never showed 2 active nodes:\n{output}"
        time.sleep(1)
    assert "2.0 CPU" in output, output

    wrong = run([str(BIN / "ray"), "status", "--address", cluster["address"]],
                {**cluster["env"], "RAY_AUTH_TOKEN": "not-the-token"}, timeout=60)
    assert wrong.returncode != 0 and "InvalidAuthToken" in wrong.output, wrong.output


def submit(cluster, job_id: str, out: Path, *train_args: str):
    pytest.importorskip("aiohttp", reason="`ray job submit` needs ray[default]==2.60.0 "
                                          "(pip install 'ray[default]==2.60.0'); skipping the job")
    start = time.monotonic()
    job = run([str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"],
               "--runtime-env", "cluster/runtime_env.yaml", "--submission-id", job_id, "--",
               "coagents", "train", "quickstart", "--out", str(out), "--no-progress",
               "--set", f"run.updates={UPDATES}", *train_args], cluster["env"], timeout=300,
              cwd=ROOT)
    print(f"{job_id}: {time.monotonic() - start:.1f} s")
    assert job.returncode == 0, job.output
    assert f"Job '{job_id}' succeeded" in job.output, job.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["updates"]) == ("completed", UPDATES), summary
    assert (out / "config.json").is_file() and (out / "checkpoint.ckpt").is_file()
    return summary


COMPARED = ("train_loss", "valid_accuracy", "valid_ce", "test_accuracy", "test_ce", "entropy",
            "sparsity")


@pytest.fixture(scope="module")
def local_job(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "local"
    return submit(cluster, "coagents-kit-local", out, "--backend", "local")


def test_job_submit_trains_with_the_local_backend(local_job):
    assert local_job["backend"] == "local"


def test_job_submit_trains_on_both_nodes_with_the_ray_backend(cluster, local_job,
                                                              tmp_path_factory):
    """The documented way: the job's driver joins the cluster it runs on (--address auto)."""
    out = tmp_path_factory.mktemp("jobs") / "ray"
    summary = submit(cluster, "coagents-kit-ray", out, "--backend", "ray", "--address", "auto",
                     "--set", "backend.placement=nodes")
    assert json.loads((out / "config.json").read_text())["backend"]["kind"] == "ray"
    assert {key: summary["final"][key] for key in COMPARED} == \
        {key: local_job["final"][key] for key in COMPARED}
    assert {agent["ip"] for agent in summary["placement"]} == {HEAD_IP, WORKER_IP}


def test_ray_job_stop_stops_a_run_with_its_checkpoint_written(cluster, tmp_path_factory):
    """`ray job stop` sends SIGTERM and kills the driver 3 s later (RAY_JOB_STOP_WAIT_TIME_S): the
    run stops at the next batch boundary with its checkpoint and summary, ready to resume."""
    pytest.importorskip("aiohttp", reason="`ray job submit` needs ray[default]==2.60.0")
    out, job_id = tmp_path_factory.mktemp("jobs") / "stopped", "coagents-kit-stop"
    ray_cli = [str(BIN / "ray"), "job"]
    job = run([*ray_cli, "submit", "--no-wait", "--address", cluster["dashboard"],
               "--runtime-env", "cluster/runtime_env.yaml", "--submission-id", job_id, "--",
               "coagents", "train", "quickstart", "--out", str(out), "--no-progress",
               "--backend", "ray", "--address", "auto", "--set", "run.updates=1000000",
               "--set", "run.eval_every=100"], cluster["env"], timeout=120, cwd=ROOT)
    assert job.returncode == 0, job.output
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 300
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 2:
        assert time.monotonic() < deadline, "the job wrote no evaluation after step 0"
        time.sleep(0.2)
    stop = run([*ray_cli, "stop", "--address", cluster["dashboard"], job_id], cluster["env"],
               timeout=120)
    assert stop.returncode == 0, stop.output
    logs = run([*ray_cli, "logs", "--address", cluster["dashboard"], job_id], cluster["env"],
               timeout=60).output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["updates"] < 1000000, logs
    assert summary["accounting"]["complete"], summary["accounting"]
    assert f"coagents resume {out}" in logs and "SIGTERM received" not in logs, logs
    assert (out / "checkpoint.ckpt").is_file()


def daemons(pids: set[int]) -> set[int]:
    """The GCS servers and raylets among ``pids``: what must not die while a Ray instance lives."""
    found = set()
    for pid in pids:
        try:
            exe = Path("/proc", str(pid), "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if exe.endswith((b"/gcs_server", b"/raylet")):
            found.add(pid)
    return found


def test_stop_stops_exactly_this_cluster(cluster, decoy):
    ours = alive(set().union(*(session_tree(sid) for sid in cluster["sessions"])))
    theirs = daemons(session_tree(decoy.pid)) | {decoy.pid}
    assert len(daemons(ours)) == 3, "expected the head's GCS and raylet and the worker's raylet"
    assert len(theirs) == 3 and not ours & theirs

    start = time.monotonic()
    stop = run([str(CLUSTER / "stop.sh")], cluster["env"], timeout=120)
    print(f"stop.sh: {time.monotonic() - start:.1f} s")
    assert stop.returncode == 0, stop.output
    assert stop.output.count("stopped node") == 2, stop.output

    deadline = time.monotonic() + 10
    while alive(ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(ours), f"still running after stop.sh: {sorted(alive(ours))}"
    assert not naming(str(cluster["state_dir"])), "a process still names the cluster's temp dir"
    assert not list(cluster["state_dir"].glob("*.env")), "stop.sh kept a state file"

    assert alive(theirs) == theirs, "stop.sh stopped part of the other Ray instance"
    decoy.stdin.write("ping\n")
    decoy.stdin.flush()
    assert decoy.stdout.readline().strip() == "pong", "the other Ray instance stopped answering"

    again = run([str(CLUSTER / "stop.sh")], cluster["env"], timeout=60)
    assert again.returncode == 0 and "nothing to stop" in again.output, again.output
