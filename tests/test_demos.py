"""The demos run (short, in process only): a demo that no longer runs is a broken promise of the
README."""

import subprocess
import sys
from pathlib import Path

from async_coagents.cli import main

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
