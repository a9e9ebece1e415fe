"""The results page (``coagents study --page``): ``docs/results.md`` gathered from the report of
every study found under the results root (``docs/results/NAME/report.md``), with a table of the
verdicts on top and each report's figure links pointing into its own directory. Studies with no
report yet are listed as not run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from async_coagents.experiment.rundir import write_text
from async_coagents.study import STUDIES
from async_coagents.study.report import REPORT, VERDICTS

__all__ = ["write_page"]


def write_page(root: Path, page: Path | None = None) -> Path:
    """Write the page (default: ``root``'s parent / ``results.md``) and return its path."""
    page = page or root.parent / "results.md"
    lines = ["# Reproduction study: results", "",
             "Every number below is read from the committed compact results under "
             f"`{root.as_posix()}/` by the command printed above it; `coagents study --page` "
             "writes this page again from them.", "",
             "| study | claim | verdict |", "| --- | --- | --- |"]
    sections, missing = [], []
    for name in STUDIES:
        directory = root / name
        if not (directory / REPORT).is_file():
            missing.append(name)
            continue
        verdicts = json.loads((directory / VERDICTS).read_text(encoding="utf-8"))
        for v in verdicts.get("verdicts", []):
            lines.append(f"| {name} (budget {verdicts.get('budget')}) | {v['claim']} | "
                         f"{v['verdict']} |")
        text = (directory / REPORT).read_text(encoding="utf-8")
        prefix = directory.relative_to(page.parent).as_posix() if directory.is_relative_to(
            page.parent) else directory.as_posix()
        sections.append(re.sub(r"\]\(([^)/]+\.png)\)", rf"]({prefix}/\1)", text))
    lines.append("")
    if missing:
        lines += ["Not run yet: " + ", ".join(f"`{n}`" for n in missing) + ".", ""]
    write_text(page, "\n".join(lines + sections).rstrip() + "\n")
    return page
