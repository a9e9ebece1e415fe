"""The engine benchmarks of issue 12 (``coagents bench --only replicas / normals / mnist-replicas
/ replicas-eval``) run in their quick form and report every figure their README table quotes.
Speeds are printed, never asserted."""

from async_coagents.bench import MNIST_REPLICAS, REPLICA_COUNTS, run_benchmarks
from async_coagents.core.normals import SAMPLERS


def test_the_replica_benchmarks_report_every_figure_the_readme_quotes():
    lines = []
    out = run_benchmarks(quick=True, only=["replicas", "normals"], report=lines.append)
    names = {r["name"] for r in out["results"]}
    assert names >= {f"replicas-{n}-r{r}" for n in SAMPLERS for r in REPLICA_COUNTS}
    assert names >= {f"normals-{n}" for n in SAMPLERS}
    assert names >= {f"mnist-offpolicy-r{r}" for r in MNIST_REPLICAS}
    assert names >= {"replicas-eval-r1", "replicas-eval-r200"}
    summary = out["summary"]
    for n in SAMPLERS:
        assert summary[f"replicas_{n}_r200_over_r1"] > 0 and summary[f"ns_per_normal_{n}"] > 0
    assert summary["replicas_box-muller_r200_over_ziggurat_r1"] > 0
    assert 0 < summary["mnist_offpolicy_r9_fraction_of_peak"] < 1
    assert set(summary["evaluation_ms_per_seed"]) == {"1", "200"}
    assert any("200 replicas (box-muller)" in line for line in lines)
