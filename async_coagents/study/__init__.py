"""The reproduction study (``coagents study NAME``): named studies shipped in the package, each a
set of arms (configurations run over seeds) at a budget, and the analysis that turns their runs
into a Markdown report with tables, figures, Welch tests and a verdict per claim of the paper
(``paper_method.md`` §8). ``coagents study --page`` gathers the reports into ``docs/results.md``.

- :mod:`~async_coagents.study.spec`: what a study is (arms, budgets, the interface);
- :mod:`~async_coagents.study.runner`: running a study and resuming it from its compact results;
- :mod:`~async_coagents.study.compact`: the compact per-run results that are committed;
- :mod:`~async_coagents.study.report`: the report of one study; :mod:`~.page`: the results page;
- :mod:`~async_coagents.study.welch`: Welch's t-test;
- :mod:`async_coagents.study.studies`: the studies themselves.
"""

from __future__ import annotations

from async_coagents.errors import ConfigError
from async_coagents.study.spec import Study
from async_coagents.study.studies.asynchrony import Asynchrony
from async_coagents.study.studies.correlated import Correlated
from async_coagents.study.studies.critics import Critics
from async_coagents.study.studies.fashion_depth import FashionDepth
from async_coagents.study.studies.representation import Representation
from async_coagents.study.studies.rule_family import RuleFamily

__all__ = ["STUDIES", "get"]

#: Every shipped study by name, in the order of the results page.
STUDIES: dict[str, type[Study]] = {s.name: s for s in (Correlated, FashionDepth, Critics,
                                                       Representation, Asynchrony, RuleFamily)}


def get(name: str) -> Study:
    """The study called ``name``."""
    try:
        return STUDIES[name]()
    except KeyError:
        raise ConfigError(f"unknown study {name!r}; the studies are: "
                          + ", ".join(STUDIES)) from None
