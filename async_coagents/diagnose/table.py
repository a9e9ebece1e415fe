"""The instrument's rows as text (``coagents diagnose``) and as CSV."""

from __future__ import annotations

import math
from collections.abc import Sequence

from async_coagents.diagnose.stats import LayerReport

COLUMNS = {
    "cosine": "cosine between the mean estimate m and the exact gradient g",
    "rel. bias ± s.e.": "|m - g| / |g| and its delta-method standard error",
    "floor": "sqrt(tr S / n) / |g|: the relative bias an unbiased estimator shows from noise alone",
    "variance": "tr S, S the covariance of one draw's estimate (one batch of every input)",
    "z, p": "Hotelling's T^2 = n (m - g)' S^+ (m - g) against chi^2(rank S), as a z-score and "
            "its p-value",
    "verdict": "unbiased if p >= alpha, else BIASED",
}


def _number(value: float, width: int, digits: int = 3) -> str:
    if math.isinf(value):
        return f"{'inf' if value > 0 else '-inf':>{width}}"
    if math.isnan(value):
        return f"{'nan':>{width}}"
    return f"{value:>{width}.{digits}f}"


def format_table(reports: Sequence[LayerReport]) -> list[str]:
    """The table of :func:`diagnose` rows, one line per layer, with a header line."""
    width = max([len(r.rule) for r in reports] + [4])
    lines = [f"{'rule':<{width}}  {'layer':<7} {'cosine':>7} {'rel. bias ± s.e.':>17} "
             f"{'floor':>6} {'variance':>10} {'z':>7} {'p':>8}  verdict"]
    for r in reports:
        lines.append(
            f"{r.rule:<{width}}  {r.layer:<7} {_number(r.cosine, 7)} "
            f"{_number(r.relative_bias, 8)} ± {_number(r.relative_bias_se, 6)} "
            f"{_number(r.noise_floor, 6)} {r.variance:>10.4g} {_number(r.z, 7, 2)} "
            f"{r.p:>8.2g}  {r.verdict}")
    return lines


def format_depths(reports: Sequence[LayerReport], what: str = "variance") -> list[str]:
    """``what`` (``variance`` ``tr S``, or ``relative_variance`` ``tr S / |g|^2``) per layer of
    :func:`diagnose` rows for several depths: one line per rule and hidden shape, one column per
    layer."""
    hidden_layers = max(len(r.hidden) for r in reports)
    names = [f"layer{i}" for i in range(hidden_layers)] + ["output"]
    width = max([len(r.rule) for r in reports] + [4])
    lines = [f"{'rule':<{width}}  {'hidden':<14}" + "".join(f"{n:>10}" for n in names)]
    rows: dict[tuple[str, tuple[int, ...]], dict[str, float]] = {}
    for r in reports:
        rows.setdefault((r.rule, r.hidden), {})[r.layer] = getattr(r, what)
    for (rule, hidden), values in rows.items():
        cells = "".join(f"{values[n]:>10.4g}" if n in values else f"{'':>10}" for n in names)
        lines.append(f"{rule:<{width}}  {list(hidden)!s:<14}{cells}")
    return lines


CSV_FIELDS = ("rule", "hidden", "layer", "n", "params", "exact_norm", "cosine", "relative_bias",
              "relative_bias_se", "noise_floor", "variance", "relative_variance", "t2", "dof", "z",
              "p", "verdict")


def csv_rows(reports: Sequence[LayerReport]) -> list[dict]:
    """The rows as plain values for a CSV file (``hidden`` as ``3-3``)."""
    return [{**{f: getattr(r, f) for f in CSV_FIELDS}, "hidden": "-".join(map(str, r.hidden))}
            for r in reports]


def describe(spec, point, *, n: int, warmup: int, labels: str, seed: int) -> list[str]:
    """What the table measured: the network, the task, the fixed point and the draws."""
    units = "Bernoulli" if spec.units == "bernoulli" else f"{spec.n_actions}-action categorical"
    task = ("a balanced random labelling" if labels == "random"
            else "the parity of the first two bits")
    return [
        f"network: {spec.n_inputs} binary inputs (all {len(point.x)} patterns, labelled by {task}, "
        f"seed {seed}), hidden {list(spec.hidden)} {units}, a categorical output over "
        f"{spec.n_outputs} classes (reward 1 right, {spec.miss_reward:g} wrong), {spec.dtype}",
        f"fixed point: E[R] = {point.expected_reward:.3f} after {point.ascent_steps} steps of "
        "exact gradient ascent from the initialisation",
        f"draws: {n} per rule, each one batch of the {len(point.x)} patterns, after {warmup} "
        "warm-up batches of the rule's baselines and critics",
        "the rules score log(pi + 1e-5), the exact gradient log pi: a relative bias of order "
        "1e-5, far below the floor column",
    ]


def legend() -> list[str]:
    """One line per column of :func:`format_table`."""
    width = max(len(name) for name in COLUMNS)
    return [f"  {name:<{width}}  {text}" for name, text in COLUMNS.items()]
