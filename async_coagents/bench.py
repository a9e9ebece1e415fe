"""Benchmarks (``coagents bench``): updates per second of the engine on one core, seed-updates
per second of replicated networks (``run.replicas``) with each sampler of Gaussian noise and
against this core's float32 matrix-multiply peak, and of the backends; and, only when named
(``--only soak``), the soak of exactly-once recovery on Ray.
Benchmarks print measurements; they are never tests with time limits.

Each benchmark builds its network and stream, warms up, then times a fixed number of updates of
the local backend with one batch in flight (the engine: the synchronous step, as runs take it) or
of a backend with a window.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from async_coagents.allocator import keep_freed_memory
from async_coagents.backends.local import LocalBackend
from async_coagents.core import seeding
from async_coagents.core.metrics import evaluate
from async_coagents.core.network import NetworkSpec, build_network
from async_coagents.core.normals import SAMPLERS, standard_normal
from async_coagents.core.replicas import ReplicaGenerator
from async_coagents.data import CorrelatedStream
from async_coagents.data.streams import ReplicaStreams


@dataclass
class Result:
    name: str
    what: str
    updates: int
    seconds: float
    batch: int
    details: dict | None = None  # further figures (the soak's), printed and reported

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds

    def as_dict(self) -> dict:
        return {"name": self.name, "what": self.what, "updates": self.updates,
                "seconds": round(self.seconds, 4), "batch": self.batch,
                "updates_per_s": round(self.updates_per_s, 1),
                "samples_per_s": round(self.updates_per_s * self.batch, 1),
                **({"details": self.details} if self.details is not None else {})}


def _time(step: Callable[[int], None], warmup: int, updates: int) -> float:
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, warmup + updates):
        step(i)
    return time.perf_counter() - start


def correlated_spec() -> NetworkSpec:
    """The paper's correlated-stream network (§6.5): 1 hidden layer of 50 Gaussian ReLU units,
    Gaussian output, REINFORCE with the EMA baseline, RMSprop."""
    return NetworkSpec(n_inputs=1, n_outputs=1, task="regression", hidden=(50,),
                       units="gaussian", activation="relu", sigma=2.0, rule="baseline",
                       optimizer="rmsprop", lr=2.0 ** -9)


def mnist_offpolicy_spec() -> NetworkSpec:
    """The paper's MNIST off-policy configuration (§3.8): 3 hidden layers of 64 Bernoulli units,
    critics with one hidden layer of 1024, RMSprop 2^-11."""
    return NetworkSpec(n_inputs=784, n_outputs=10, hidden=(64, 64, 64), units="bernoulli",
                       rule="ac-offpolicy", critic_layers=1, critic_units=1024,
                       optimizer="rmsprop", lr=2.0 ** -11)


def bench_correlated(quick: bool) -> Result:
    """Engine updates/s on the correlated stream, data generation included (d = 0.95)."""
    updates = 10_000 if quick else 50_000
    backend = LocalBackend(build_network(correlated_spec(), 0))
    stream = CorrelatedStream(0.95, 200, 1600, 32, seed=0)

    def step(i: int) -> None:
        batch = next(stream)
        backend.submit(batch.sid, batch.x, batch.y)

    seconds = _time(step, 1000, updates)
    return Result("correlated-engine", "1x50 Gaussian ReLU, batch 32, RMSprop, EMA baseline, "
                  "stream included (local backend, one batch in flight)", updates, seconds, 32)


#: The replica counts of the replicas benchmark (issue 12: the target is R = 200 >= 8x R = 1).
REPLICA_COUNTS = (1, 8, 64, 200)


def bench_replicas(quick: bool) -> list[Result]:
    """Seed-updates/s of the correlated network with R replicas (``run.replicas``), each fed its
    own correlated stream (d = 0.95), for both samplers of the Gaussian noise (``network.normals``);
    R = 1 is a plain network and stream, as a run alone. ``updates`` counts seed-updates."""
    keep_freed_memory()  # as a replicated run does
    results = []
    for normals in SAMPLERS:
        spec = dataclasses.replace(correlated_spec(), normals=normals)
        for replicas in REPLICA_COUNTS:
            seeds = list(range(replicas))
            updates = max(100, (4000 if quick else 20_000) // replicas)
            backend = LocalBackend(build_network(spec, seeds if replicas > 1 else 0))
            own = [CorrelatedStream(0.95, 200, 1600, 32, seed=s) for s in seeds]
            stream = ReplicaStreams(own) if replicas > 1 else own[0]

            def step(i: int, backend=backend, stream=stream) -> None:
                batch = next(stream)
                backend.submit(batch.sid, batch.x, batch.y)

            seconds = _time(step, max(20, updates // 10), updates)
            results.append(Result(f"replicas-{normals}-r{replicas}",
                                  f"correlated 1x50 Gaussian, batch 32, {replicas} replica(s), "
                                  f"{normals} normals, streams included", updates * replicas,
                                  seconds, 32))
    return results


def bench_replica_evaluation(quick: bool) -> list[Result]:
    """One evaluation of the correlated network (its validation set of 102,400 points per seed,
    each seed its own) with R = 1 and R = 200 replicas: "updates" counts seed-evaluations."""
    spec = correlated_spec()
    results = []
    for replicas in (1, 200):
        seeds = list(range(replicas))
        sets = [CorrelatedStream(0.95, 200, 1600, 32, seed=s).eval_sets()[0] for s in seeds]
        network = build_network(spec, seeds if replicas > 1 else 0)
        x = sets[0].x if replicas == 1 else np.stack([split.x for split in sets])
        y = sets[0].y if replicas == 1 else np.stack([split.y for split in sets])
        count = 1 if quick or replicas > 1 else 10
        seconds = _time(lambda i, n=network, x=x, y=y: evaluate(n, x, y), 1, count)
        results.append(Result(f"replicas-eval-r{replicas}", f"correlated network, one evaluation "
                              f"of {len(sets[0].x):,} points per seed, {replicas} replica(s)",
                              count * replicas, seconds, len(sets[0].x)))
    return results


def bench_normals(quick: bool) -> list[Result]:
    """Standard normals per second (reported as "updates": one draw of 200 x 32 x 50 float32
    normals, the correlated network's hidden noise at R = 200) for each sampler."""
    rng = ReplicaGenerator([seeding.generator(s, "sampling", 0) for s in range(200)])
    shape = (200, 32, 50)
    results = []
    for normals in SAMPLERS:
        draws = 20 if quick else 100
        seconds = _time(lambda i, n=normals: standard_normal(rng, shape, np.float32, n), 3, draws)
        results.append(Result(f"normals-{normals}", f"{normals}: 200 x 32 x 50 float32 normals "
                              "per draw (one per replica generator)", draws, seconds,
                              math.prod(shape)))
    return results


#: The paper's nine seeds of each critic configuration (§6.3), as replicas.
MNIST_REPLICAS = (1, 9)


def matmul_flops_per_update(network, batch: int) -> float:
    """A lower bound on the matrix-multiply FLOPs of one update: a forward and a backward pass
    (three products of ``2 B n_in n_out`` FLOPs per weight matrix) of every layer's policy and
    critic per replica; the off-policy critic's extra forwards at the greedy actions are not
    counted."""
    nets = []
    for layer in network.layers:
        for agent in getattr(layer, "groups", [layer]):
            nets.append(agent.net)
            critic = getattr(getattr(agent, "rule", None), "critic", None)
            if critic is not None:
                nets.append(critic.net)
    per_replica = sum(6 * batch * n_in * n_out for net in nets
                      for n_in, n_out in itertools.pairwise(net.sizes))
    return per_replica * (network.replicas or 1)


def matmul_peak(quick: bool) -> float:
    """float32 FLOP/s of a large numpy matrix product (2048 x 2048) on this core."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    b = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    seconds = _time(lambda i: a @ b, 2, 5 if quick else 20)
    return 2 * 2048**3 * (5 if quick else 20) / seconds


def bench_mnist_replicas(quick: bool) -> list[Result]:
    """The MNIST off-policy configuration with R = 1 and R = 9 replicas (seed-updates/s), and the
    fraction of this core's float32 matrix-multiply peak the engine's products reach."""
    peak = matmul_peak(quick)
    rng = np.random.default_rng(0)
    results = []
    for replicas in MNIST_REPLICAS:
        updates = max(30, (300 if quick else 1500) // replicas)
        seeds = list(range(replicas))
        network = build_network(mnist_offpolicy_spec(), seeds if replicas > 1 else 0)
        backend = LocalBackend(network)
        lead = (replicas,) if replicas > 1 else ()
        xs = rng.uniform(-1, 1, size=(16, *lead, 32, 784)).astype(np.float32)
        ys = rng.integers(0, 10, size=(16, *lead, 32))

        def step(i: int, backend=backend, xs=xs, ys=ys) -> None:
            backend.submit(i, xs[i % 16], ys[i % 16])

        seconds = _time(step, 10, updates)
        flops = matmul_flops_per_update(network, 32) * updates / seconds
        results.append(Result(f"mnist-offpolicy-r{replicas}",
                              f"3x64 Bernoulli, critics 1x1024, batch 32, {replicas} replica(s)",
                              updates * replicas, seconds, 32,
                              {"matmul_gflops": round(flops / 1e9, 2),
                               "peak_gflops": round(peak / 1e9, 2),
                               "fraction_of_peak": round(flops / peak, 4)}))
    return results


def bench_mnist_offpolicy(quick: bool) -> Result:
    """Engine updates/s of the paper's MNIST off-policy configuration on MNIST-shaped inputs."""
    updates = 300 if quick else 2000
    backend = LocalBackend(build_network(mnist_offpolicy_spec(), 0))
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, size=(64, 32, 784)).astype(np.float32)
    ys = rng.integers(0, 10, size=(64, 32))

    def step(i: int) -> None:
        backend.submit(i, xs[i % 64], ys[i % 64])

    seconds = _time(step, 50, updates)
    return Result("mnist-offpolicy-engine", "3x64 Bernoulli, critics 1x1024, batch 32, RMSprop "
                  "(local backend, one batch in flight)", updates, seconds, 32)


def backend_spec() -> NetworkSpec:
    """The backend comparison network: 784-256-256-10, Bernoulli units, REINFORCE + EMA baseline."""
    return NetworkSpec(n_inputs=784, n_outputs=10, hidden=(256, 256), units="bernoulli",
                       rule="baseline", optimizer="rmsprop", lr=2.0 ** -11)


def _drive(backend, xs: np.ndarray, ys: np.ndarray, updates: int, warmup: int) -> float:
    n = len(xs)
    for sid in range(warmup):
        backend.submit(sid, xs[sid % n], ys[sid % n])
    backend.finish()
    start = time.perf_counter()
    for sid in range(warmup, warmup + updates):
        backend.submit(sid, xs[sid % n], ys[sid % n])
    backend.finish()
    return time.perf_counter() - start


@contextmanager
def ray_instance():
    """A local Ray instance for the backend benchmarks (or the one already running)."""
    from async_coagents.backends import ray_env

    ray_env.prepare()
    from async_coagents.backends.ray_backend import connect, disconnect

    started = connect()
    try:
        yield
    finally:
        if started:
            disconnect()


def _random_batches(batch: int, n_inputs: int = 784, n_classes: int = 10, count: int = 64):
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, size=(count, batch, n_inputs)).astype(np.float32)
    ys = rng.integers(0, n_classes, size=(count, batch))
    return xs, ys


def bench_backends(quick: bool) -> list[Result]:
    """The same network through the local backend and the Ray backend, batch 32 and batch 1,
    one batch in flight and a pipelined window of 8 (reward delay 7)."""

    results = []
    with ray_instance():
        from async_coagents.backends.ray_backend import RayBackend

        for batch in (32, 1):
            xs, ys = _random_batches(batch)
            scale = (1 if quick else 4) * (4 if batch == 1 else 1)
            for window in (1, 8):
                settings = {"window": window, "reward_delay": window - 1}
                with one_core():
                    local = LocalBackend(build_network(backend_spec(), 0), **settings)
                    n = 250 * scale
                    results.append(Result(f"local-b{batch}-w{window}",
                                          f"784-256-256-10 Bernoulli, batch {batch}, window "
                                          f"{window}, local backend (one core)",
                                          n, _drive(local, xs, ys, n, 20), batch))
                remote = RayBackend(build_network(backend_spec(), 0), settings)
                try:
                    n = 150 * scale
                    results.append(Result(f"ray-b{batch}-w{window}",
                                          f"784-256-256-10 Bernoulli, batch {batch}, window "
                                          f"{window}, Ray backend (all cores)",
                                          n, _drive(remote, xs, ys, n, 20), batch))
                finally:
                    remote.close()
        results.append(bench_call_overhead(quick))
    return results


def pipeline_spec() -> NetworkSpec:
    """Wide layers, where the work of one batch outweighs the cost of a message: 784-2048-1024-10
    Bernoulli coagents, REINFORCE + EMA baseline, RMSprop."""
    return NetworkSpec(n_inputs=784, n_outputs=10, hidden=(2048, 1024), units="bernoulli",
                       rule="baseline", optimizer="rmsprop", lr=2.0 ** -11)


def local_pipeline_seconds(updates: int) -> float:
    """Seconds for ``updates`` batches of the wide network through the local backend, in this
    process as it is (its CPU affinity and BLAS threads)."""

    xs, ys = _random_batches(32, count=16)
    local = LocalBackend(build_network(pipeline_spec(), 0), window=1, reward_delay=0)
    return _drive(local, xs, ys, updates, 5)


def _local_pipeline_all_cores(updates: int) -> float:
    """:func:`local_pipeline_seconds` in a fresh process whose BLAS may use every CPU (the
    benchmark process has loaded numpy with one BLAS thread)."""
    threads = str(os.cpu_count() or 1)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    code = ("from async_coagents.bench import local_pipeline_seconds; "
            f"print(local_pipeline_seconds({updates}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def bench_pipeline(quick: bool) -> list[Result]:
    """Pipeline parallelism: the wide network in one process (one core; all cores through BLAS)
    and on the Ray backend (one actor per layer, all cores), with one batch and with 8 batches in
    flight."""
    n = 40 if quick else 300
    what = "784-2048-1024-10 Bernoulli, batch 32"
    results = []
    with one_core():
        results.append(Result("pipeline-local-1cpu", f"{what}, local backend (one core)", n,
                              local_pipeline_seconds(n), 32))
    results.append(Result("pipeline-local-blas", f"{what}, local backend (BLAS on all cores)", n,
                          _local_pipeline_all_cores(n), 32))
    xs, ys = _random_batches(32, count=16)
    with ray_instance():
        from async_coagents.backends.ray_backend import RayBackend

        for window in (1, 8):
            remote = RayBackend(build_network(pipeline_spec(), 0),
                                {"window": window, "reward_delay": window - 1})
            try:
                results.append(Result(f"pipeline-ray-w{window}",
                                      f"{what}, window {window}, Ray backend (all cores)", n,
                                      _drive(remote, xs, ys, n, 5), 32))
            finally:
                remote.close()
    return results


def bench_call_overhead(quick: bool) -> Result:
    """One actor call and its reply, one at a time: the fixed cost of every Ray message."""
    from async_coagents.backends.ray_backend import call_round_trips

    n = 300 if quick else 1000
    seconds = call_round_trips(n)
    return Result("ray-call-round-trip", "an empty actor call and its reply, sequential "
                  "(updates/s = calls/s)", n, seconds, 1)


def bench_soak(quick: bool) -> Result:
    """Exactly-once recovery under chaos (``experiment/chaos.py``): the multiplexer on Ray, 20,000
    updates without faults, then again with 24 strikes of SIGKILL at seeded moments (a fifth of
    them kill both actors at once); kills, restarts, messages replayed, updates lost, whether it
    ended bit for bit like the run without faults, and the slowdown."""
    from async_coagents.experiment.chaos import soak

    updates, strikes = (2000, 5) if quick else (20_000, 24)
    figures = soak(updates=updates, strikes=strikes)
    what = (f"multiplexer on Ray, window 4, reward delay 2, {figures['kills']} SIGKILLs of layer "
            "actors (with faults)")
    return Result("soak", what, updates, figures["chaos_s"], 32, details=figures)


BENCHMARKS: dict[str, Callable[[bool], Result | list[Result]]] = {
    "correlated-engine": bench_correlated,
    "mnist-offpolicy-engine": bench_mnist_offpolicy,
    "replicas": bench_replicas,
    "mnist-replicas": bench_mnist_replicas,
    "normals": bench_normals,
    "replicas-eval": bench_replica_evaluation,
    "backends": bench_backends,
    "pipeline": bench_pipeline,
    "soak": bench_soak,
}
ENGINE = ("correlated-engine", "mnist-offpolicy-engine", "replicas", "mnist-replicas",
          "normals", "replicas-eval")
#: Benchmarks that run only when ``--only`` names them (minutes long, or not a speed).
NAMED_ONLY = ("soak",)


@contextmanager
def one_core():
    """Run on one CPU (Linux affinity) so that "one core" means one core."""
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(before)})
    except (AttributeError, OSError):
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _report_soak(figures: dict, report: Callable[[str], None]) -> None:
    report(f"  {figures['kills']} kills in {figures['strikes']} strikes, {figures['restarts']} "
           f"restarts, {figures['replayed']} messages replayed, {figures['updates_lost']} "
           f"updates lost, {figures['recovery_s']:.1f} s recovering")
    identical = "yes" if figures["identical"] else f"no ({'; '.join(figures['differences'])})"
    report(f"  bit-identical to the run without faults: {identical}")
    report(f"  {figures['chaos_s']:.1f} s against {figures['clean_s']:.1f} s without faults "
           f"(slowdown {figures['slowdown']:.2f}x); replay log peak "
           f"{figures['replay_log_peak_bytes'] / 1e6:.2f} MB "
           f"({figures['replay_log_peak_messages']} messages)")


def run_benchmarks(quick: bool = False, only: list[str] | None = None,
                   report: Callable[[str], None] = print) -> dict:
    """Run the benchmarks whose names contain one of ``only`` (all if empty); print a table."""
    threads = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                               "MKL_NUM_THREADS")}
    setting = (f"{os.cpu_count()} CPUs; engine and local backend pinned to one CPU; "
               f"BLAS threads {threads}")
    report(f"async_coagents bench on {platform.machine()}, python {platform.python_version()}, "
           f"numpy {np.__version__}; {setting}")
    results: list[dict] = []
    for name, bench in BENCHMARKS.items():
        if only and not any(part in name for part in only):
            continue
        if name in NAMED_ONLY and not (only and name in only):
            continue
        if name in ENGINE:
            with one_core():
                outcome = bench(quick)
        else:
            outcome = bench(quick)
        for result in outcome if isinstance(outcome, list) else [outcome]:
            results.append(result.as_dict())
            report(f"{result.name:<26} {result.updates_per_s:>10,.0f} updates/s "
                   f"{result.updates_per_s * result.batch:>12,.0f} samples/s   {result.what}")
            if result.name == "soak":
                _report_soak(result.details, report)
    by_name = {r["name"]: r for r in results}
    summary: dict = {}
    for normals in SAMPLERS:
        one = by_name.get(f"replicas-{normals}-r1")
        for replicas in REPLICA_COUNTS[1:]:
            many = by_name.get(f"replicas-{normals}-r{replicas}")
            if one and many:
                ratio = many["updates_per_s"] / one["updates_per_s"]
                summary[f"replicas_{normals}_r{replicas}_over_r1"] = round(ratio, 2)
                report(f"{replicas} replicas ({normals}): {ratio:.1f}x the seed-updates/s of one "
                       "network")
        plain = by_name.get("replicas-ziggurat-r1")
        many = by_name.get(f"replicas-{normals}-r{REPLICA_COUNTS[-1]}")
        if normals != "ziggurat" and plain and many:
            ratio = many["updates_per_s"] / plain["updates_per_s"]
            summary[f"replicas_{normals}_r{REPLICA_COUNTS[-1]}_over_ziggurat_r1"] = round(ratio, 2)
            report(f"{REPLICA_COUNTS[-1]} replicas ({normals}) against one network (ziggurat, "
                   f"as every run before network.normals): {ratio:.1f}x")
        drawn = by_name.get(f"normals-{normals}")
        if drawn:
            ns = 1e9 / drawn["samples_per_s"]
            summary[f"ns_per_normal_{normals}"] = round(ns, 2)
            report(f"{normals}: {ns:.1f} ns per float32 normal")
    one, many = by_name.get("replicas-eval-r1"), by_name.get("replicas-eval-r200")
    if one and many:
        per = {r: 1e3 / m["updates_per_s"] for r, m in ((1, one), (200, many))}
        summary["evaluation_ms_per_seed"] = {str(r): round(v, 1) for r, v in per.items()}
        report(f"evaluation per seed: {per[1]:.0f} ms alone, {per[200]:.0f} ms in 200 replicas")
    mnist = [by_name.get(f"mnist-offpolicy-r{r}") for r in MNIST_REPLICAS]
    if all(mnist):
        ratio = mnist[1]["updates_per_s"] / mnist[0]["updates_per_s"]
        summary["mnist_offpolicy_r9_over_r1"] = round(ratio, 2)
        report(f"MNIST off-policy, 9 replicas: {ratio:.1f}x the seed-updates/s of one network")
        for r, m in zip(MNIST_REPLICAS, mnist, strict=True):
            d = m["details"]
            summary[f"mnist_offpolicy_r{r}_fraction_of_peak"] = d["fraction_of_peak"]
            report(f"MNIST off-policy, R = {r}: matrix products at {d['matmul_gflops']} GFLOP/s "
                   f"(at least), {100 * d['fraction_of_peak']:.0f} % of this core's float32 "
                   f"matmul peak ({d['peak_gflops']} GFLOP/s)")
    for batch in (32, 1):
        local, ray_ = by_name.get(f"local-b{batch}-w1"), by_name.get(f"ray-b{batch}-w8")
        if local and ray_:
            ratio = ray_["samples_per_s"] / local["samples_per_s"]
            summary[f"ray_w8_over_local_b{batch}"] = round(ratio, 3)
            report(f"batch {batch}: Ray backend (window 8) / local engine = {ratio:.2f}")
    for local in ("1cpu", "blas"):
        one, ray_ = by_name.get(f"pipeline-local-{local}"), by_name.get("pipeline-ray-w8")
        if one and ray_:
            ratio = ray_["samples_per_s"] / one["samples_per_s"]
            summary[f"pipeline_ray_w8_over_local_{local}"] = round(ratio, 3)
            report(f"wide layers: Ray backend (window 8) / one process ({local}) = {ratio:.2f}")
    if "soak" in by_name:
        summary["soak"] = by_name["soak"]["details"]
    if "ray-call-round-trip" in by_name:
        per_call = 1e3 / by_name["ray-call-round-trip"]["updates_per_s"]
        summary["ray_call_round_trip_ms"] = round(per_call, 3)
        report(f"Ray actor call round trip: {per_call:.2f} ms")
    return {"setting": setting, "results": results, "summary": summary}
