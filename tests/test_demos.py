"""The demos run (short; in process, and the asynchrony section once on Ray): a demo that no
longer runs is a broken promise of the README."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from async_coagents.cli import main
from async_coagents.experiment.demo import ASYNCHRONY, FREE, run_demo

DEMOS = Path(__file__).resolve().parent.parent / "demos"


def test_async_learning_demo_runs_and_plots(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(DEMOS / "async_learning.py"), "--out", str(out),
                             "--updates", "300", "--no-ray"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "window 4, delay 3" in result.stdout and "3.0/3" in result.stdout
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert (out / "staleness.png").exists()


def test_the_demo_will_not_mix_its_runs_into_a_used_directory(tmp_path, capsys):
    (tmp_path / "old-run").mkdir()
    assert main(["demo", "--out", str(tmp_path), "--no-ray"]) == 1
    assert f"coagents demo: error: {tmp_path} is not empty; choose another --out" in \
        capsys.readouterr().err


ASYNCHRONY_LABELS = ["fire p=1", "fire p=0.5", "fire p=0.1", "window 3, no delay",
                     "window 3, delay 2", "window 3, delays [2,1,0]", "window 32, delay 31",
                     "window 32, delay 31, cap 1"]


def _table_rows(lines):
    """{(setting, backend): the rest of its line} of the asynchrony table (columns as printed)."""
    rows = {}
    for line in lines:
        label, backend = line[:28].strip(), line[28:36].strip()
        if label in ASYNCHRONY_LABELS and backend in ("local", "ray"):
            rows[label, backend] = line[36:].split()
    return rows


def _over_run(rows, column, agent):
    """The run's mean of an interval column of one agent, each row weighted by its updates."""
    total = weight = previous = 0
    for row in rows:
        span, previous = row["step"] - previous, row["step"]
        value = (row.get(column) or [None] * (agent + 1))[agent]
        if value is not None:
            total, weight = total + value * span, weight + span
    return total / weight if weight else None


def _expected_cells(directory):
    """The table's cells of one run, computed here from its run directory."""
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((directory / "summary.json").read_text())
    agents = summary["accounting"]["agents"]
    last = rows[-1]

    def per_agent(column, text):
        values = [_over_run(rows, column, i) for i in range(len(agents))]
        return ["-"] if all(v is None for v in values) else [
            "-" if v is None else text(v, i) for i, v in enumerate(values)]

    return [str(last["step"]), f"{last['test_accuracy']:.3f}",
            f"{last['prequential_accuracy']:.3f}",
            *per_agent("fired", lambda v, i: f"{v:.2f}"),
            *per_agent("importance_mean", lambda v, i: f"{v:.3f}/"
                       f"{_over_run(rows, 'importance_truncated', i):.2f}"),
            *(f"{a['staleness_mean']:.1f}/{a['staleness_max']}" for a in agents)]


def test_asynchrony_section_runs_quick_and_its_table_is_read_from_the_run_directories(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(DEMOS / "async_learning.py"), "--out", str(out),
                             "--section", "asynchrony", "--quick", "--no-ray"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = _table_rows(lines)
    assert sorted(rows) == sorted((label, "local") for label in ASYNCHRONY_LABELS)
    runs = {label: out / "asynchrony" / f"{name}-local"
            for label, (_, name, _) in zip(ASYNCHRONY_LABELS, ASYNCHRONY, strict=True)}
    for label, directory in runs.items():
        assert rows[label, "local"] == _expected_cells(directory), label
    assert not (out / "synchronous-local").exists()  # only the section asked for
    # what each knob shows, as the run directories recorded it
    fired = {label: rows[label, "local"][3:6] for label in ASYNCHRONY_LABELS[:3]}
    assert fired["fire p=1"] == ["1.00", "1.00", "-"]
    assert all(abs(float(v) - 0.5) < 0.05 for v in fired["fire p=0.5"][:2])
    assert all(abs(float(v) - 0.1) < 0.03 for v in fired["fire p=0.1"][:2])
    assert rows["window 3, delays [2,1,0]", "local"][-3:] == ["2.0/2", "1.0/1", "0.0/0"]
    assert rows["window 3, delay 2", "local"][-3:] == ["2.0/2"] * 3
    assert rows["window 32, delay 31", "local"][3:5] == ["-", "-"]  # no firing, no correction
    assert all("/" in cell for cell in rows["window 32, delay 31, cap 1", "local"][4:6])
    assert any(line.startswith("free-running Ray") for line in lines)
    for figure in ("learning_curves.png", "online_accuracy.png", "staleness.png"):
        assert (out / "asynchrony" / figure).stat().st_size > 10_000, figure


@pytest.mark.usefixtures("ray_session")
def test_asynchrony_section_on_ray_equals_local_for_every_setting(tmp_path):
    lines = []
    assert run_demo(tmp_path / "demo", sections=["asynchrony"], quick=True, ray_updates=40,
                    report=lambda text: lines.extend(text.splitlines()))
    rows = _table_rows(lines)
    assert sorted(rows) == sorted((label, backend) for label in ASYNCHRONY_LABELS
                                  for backend in ("local", "ray"))
    for label, (_, name, _) in zip(ASYNCHRONY_LABELS, ASYNCHRONY, strict=True):
        assert rows[label, "ray"][-1] == "yes", label
        ray_dir = tmp_path / "demo" / "asynchrony" / f"{name}-ray"
        assert rows[label, "ray"][:-1] == _expected_cells(ray_dir), label
        assert _expected_cells(tmp_path / "demo" / "asynchrony" / f"{name}-local-40") == \
            rows[label, "ray"][:-1]
    # the free-running Ray run, and its recorded order replayed in process to the same end
    label, name, _ = FREE
    free = {line[28:36].strip(): line[36:].split() for line in lines
            if line[:28].strip() == label}
    assert set(free) == {"free", "replay"}
    assert free["replay"][-1] == "yes"
    assert free["free"] == _expected_cells(tmp_path / "demo" / "asynchrony" / f"{name}-ray")
    assert any(line.startswith("free row: Ray with backend.schedule") for line in lines)
