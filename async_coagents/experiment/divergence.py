"""The divergence criterion of a run: when a training loss says that the network has diverged.

A batch's training loss ``L`` is the batch mean of ``-reward``: the cross-entropy of a
classification task, the squared error of a regression task, in the same units as the ``*_ce`` or
``*_mse`` of the evaluations. With ``L0`` the loss of the step-0 evaluation (the untrained network
on the test split, else the validation split) and ``factor`` the config key ``run.diverge_factor``
(default 1000), the run diverges at the first batch whose loss is

    not finite (NaN or inf),   or   L > max(1e6, factor * L0).

The floor of 1e6 keeps losses that start at (or near) 0 from diverging on noise, and no healthy
run gets near it: the built-in classification tasks start at a cross-entropy near ln K and the
regression tasks at their targets' mean square. ``run.diverge_factor = 0`` keeps only the
non-finite test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from async_coagents.errors import DivergedError

#: A finite loss at or below this never counts as divergence, whatever the step-0 loss.
FLOOR = 1e6


@dataclass(frozen=True)
class DivergenceCriterion:
    """``check`` raises :class:`DivergedError` for a loss that diverges (see module docstring)."""

    factor: float
    reference: float | None = None  # L0, the step-0 evaluation loss (None: unknown)

    @property
    def limit(self) -> float:
        """The largest finite loss that is not divergence."""
        if not self.factor:
            return math.inf
        reference = self.reference if self.reference is not None and math.isfinite(
            self.reference) else 0.0
        return max(FLOOR, self.factor * abs(reference))

    def check(self, update: int, sid: int, loss: float) -> None:
        """Raise :class:`DivergedError` if the training loss of batch ``sid``, known at
        ``update``, diverges."""
        if math.isfinite(loss) and loss <= self.limit:
            return
        why = "is not finite" if not math.isfinite(loss) else (
            f"exceeds {self.limit:.4g} = max({FLOOR:.0e}, run.diverge_factor {self.factor:g} x "
            f"the step-0 loss {self.reference if self.reference is not None else 0:.4g})")
        raise DivergedError(f"diverged at update {update}: the training loss of batch {sid} is "
                            f"{loss:.4g}, which {why}; lower the learning rate",
                            update=update, value=loss)


def reference_loss(row: dict) -> float | None:
    """L0 from the step-0 evaluation row: its test loss, else its validation loss."""
    for split in ("test", "valid"):
        for metric in ("ce", "mse"):
            value = row.get(f"{split}_{metric}")
            if isinstance(value, int | float):
                return float(value)
    return None
