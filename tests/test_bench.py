"""The engine benchmarks of issue 12 (``coagents bench --only replicas / normals / mnist-replicas
/ replicas-eval``) run in their quick form and report every figure their README table quotes.
Speeds are printed, never asserted. The benchmark against the paper's code
(``--only paper-code``) runs here with a stand-in for the paper's Python."""

import sys

import pytest

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


def _fake_paper_python(tmp_path):
    """A stand-in for the Python with torch: imports succeed, and the driver's run prints the
    driver's JSON line (2 s whole, 1 s without evaluations) for the updates it was asked for."""
    script = tmp_path / "paper-python"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
if args[0] == "-c":
    sys.exit(0)
segments = int(args[args.index("--segments") + 1])
print("the paper's own output")
print(json.dumps({{"total_s": 1.0 if "--no-eval" in args else 2.0, "updates": 200 * segments,
                  "final_test_mse": 0.25, "eval_s": 0.0}}))
""")
    script.chmod(0o755)
    return str(script)


def _fake_checkout(tmp_path):
    from async_coagents.experiment.paper_bench import EXPERIMENTS

    root = tmp_path / "paper"
    for experiment, _ in EXPERIMENTS.values():
        (root / experiment).parent.mkdir(parents=True, exist_ok=True)
        (root / experiment).write_text("{}")
    return root


def test_the_paper_code_benchmark_alternates_both_codes_and_reports_each_ratio(tmp_path):
    from async_coagents.experiment.paper_bench import paper_code

    lines = []
    out = paper_code(_fake_checkout(tmp_path), _fake_paper_python(tmp_path), segments=2,
                     rounds=2, report=lines.append)
    assert out["updates"] == 400 and set(out["figures"]) == {
        "pg-whole", "pg-update-only", "bp-whole", "bp-update-only"}
    for name, row in out["figures"].items():
        assert row["paper_s"] == ([2.0, 2.0] if "whole" in name else [1.0, 1.0])
        assert len(row["ours_s"]) == 2 and all(s > 0 for s in row["ours_s"])
        assert row["ratios"] == [p / o for p, o in zip(row["paper_s"], row["ours_s"],
                                                                    strict=True)]
    assert sum("round" in line and "400 updates" in line for line in lines) == 8


def test_the_paper_code_benchmark_names_what_is_missing(tmp_path):
    from async_coagents.errors import ConfigError
    from async_coagents.experiment.paper_bench import check_checkout

    with pytest.raises(ConfigError, match="no regression/experiments"):
        check_checkout(tmp_path, sys.executable)
    with pytest.raises(ConfigError, match="cannot import torch"):
        check_checkout(_fake_checkout(tmp_path), str(tmp_path / "no-such-python"))
