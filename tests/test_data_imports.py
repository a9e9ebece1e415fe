"""The data layer is pure numpy: importing it must never load ray (DESIGN.md, layers)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_data_does_not_import_ray():
    code = (
        "import sys, async_coagents.data, async_coagents.data.streams; "
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
