"""Execution functions: when a layer agent fires (samples a new output) on each of its streams.

Kostas, Nota and Thomas, "Asynchronous Coagent Networks" (ICML 2020): a coagent executes only at
the time steps its *execution function* selects; at the others it holds its previous output. Each
of the ``B`` examples of a batch is one of ``B`` parallel streams and every forward of a batch is
one time step ``t`` of all of them (``t`` = the layer's forwards before this one). A schedule is
spelt in a config as one string (``backend.fire``, one value or one per layer agent):

* ``"always"`` — fire at every step (the default; the synchronous network of today);
* ``"every:N"`` / ``"every:N:PHASE"`` — fire at the steps ``t`` with ``t % N == PHASE`` (all
  streams at once; PHASE defaults to 0, so the first step fires);
* ``"p:P"`` — fire on each stream independently with probability ``P`` at every step, drawn from
  the layer's own firing stream (``seeding`` purpose ``"firing"``; per replica with replicas).

The execution function depends on the step and on its own random stream only, never on the
layer's parameters: the condition of the asynchronous coagent policy gradient theorem (Kostas et
al. 2020), under which updating each coagent only at the steps where it fired, with its own local
policy gradient, follows the gradient of the network's objective.

What a layer outputs where it does not fire (its *hold*) is defined by :class:`Hold`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from async_coagents.core.arrays import owned
from async_coagents.errors import CheckpointError, ConfigError

ALWAYS = "always"


@dataclass(frozen=True)
class FiringSchedule:
    """A parsed execution function: ``kind`` is ``always``, ``every`` (``n``, ``phase``) or
    ``random`` (``p``)."""

    kind: str = ALWAYS
    n: int = 1
    phase: int = 0
    p: float = 1.0

    @property
    def always(self) -> bool:
        return self.kind == ALWAYS

    @property
    def random(self) -> bool:
        return self.kind == "random"

    def fired(self, t: int, lead: tuple[int, ...], batch: int,
              rng: np.random.Generator | None) -> np.ndarray | None:
        """Which streams fire at step ``t``: a bool array ``(*lead, B)``, or ``None`` for
        ``always`` (every stream fires; the layer's arithmetic is then exactly today's)."""
        if self.kind == ALWAYS:
            return None
        if self.kind == "every":
            return np.full((*lead, batch), t % self.n == self.phase)
        return rng.random((*lead, batch)) < self.p

    def spelling(self) -> str:
        if self.kind == ALWAYS:
            return ALWAYS
        if self.kind == "every":
            return f"every:{self.n}" + (f":{self.phase}" if self.phase else "")
        return f"p:{self.p!r}"


def parse_schedule(text: str, where: str = "fire") -> FiringSchedule:
    """The schedule spelt ``text`` (see the module docstring); a :class:`ConfigError` naming
    ``where`` and the value otherwise.

    >>> parse_schedule("every:4:1")
    FiringSchedule(kind='every', n=4, phase=1, p=1.0)
    >>> parse_schedule("p:0.25").p
    0.25
    """
    usage = ('"always", "every:N", "every:N:PHASE" (0 <= PHASE < N) or "p:P" (0 <= P <= 1)')
    if not isinstance(text, str):
        raise ConfigError(f"{where} must be a firing schedule, {usage}; got {text!r}")
    parts = text.strip().split(":")
    try:
        if parts == [ALWAYS]:
            return FiringSchedule()
        if parts[0] == "every" and len(parts) in (2, 3):
            n = int(parts[1])
            phase = int(parts[2]) if len(parts) == 3 else 0
            if n >= 1 and 0 <= phase < n:
                return FiringSchedule() if n == 1 else FiringSchedule("every", n, phase)
        if parts[0] == "p" and len(parts) == 2:
            p = float(parts[1])
            if math.isfinite(p) and 0.0 <= p <= 1.0:
                return FiringSchedule("random", p=p)
    except ValueError:
        pass
    raise ConfigError(f"{where} must be a firing schedule, {usage}; got {text!r}")


class Hold:
    """The last output a layer sent on each stream, which it sends again where it does not fire.

    **At a stream's start the hold is 0** (the zero vector of the layer's output width): a layer
    whose schedule does not fire at a stream's first step sends zeros there. This keeps the
    execution function exactly the schedule written (no forced first firing, which would make it
    depend on where each stream starts) and makes a layer that never fires a clean null case: its
    parameters never change and it always sends its initial hold, 0 (for Bernoulli units and
    ReLU Gaussian units 0 is the "off" output). **Across a block boundary** of a blocked stream
    (class-blocked, the correlated stream's mean-blocks) the hold carries on: a block change is a
    change of what the stream shows, not a new stream. A batch narrower than the widest seen so
    far (the last batch of an epoch) has streams ``0..B'-1`` only; the others keep their hold for
    the next batch that has them, and a wider batch starts its new streams at 0.
    """

    def __init__(self, lead: tuple[int, ...], width: int, dtype: np.dtype) -> None:
        self.lead, self.width, self.dtype = lead, width, np.dtype(dtype)
        self.value = np.zeros((*lead, 0, width), dtype=self.dtype)  # (*lead, streams, width)
        self.fired = np.zeros(lead, dtype=np.int64)  # stream-steps fired, per replica
        self.steps = 0  # stream-steps seen (the same for every replica)
        self.interval_fired = np.zeros(lead, dtype=np.int64)  # the same since the last take()
        self.interval_steps = 0

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(owned(state))  # counts and holds are updated in place (Ray)

    def apply(self, fired: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out`` ``(*lead, B, width)`` where ``fired`` ``(*lead, B)``, the hold elsewhere; the
        result becomes the hold of streams ``0..B-1``."""
        batch = out.shape[-2]
        if self.value.shape[-2] < batch:
            grown = np.zeros((*self.lead, batch, self.width), dtype=self.dtype)
            grown[..., :self.value.shape[-2], :] = self.value
            self.value = grown
        sent = np.where(fired[..., None], out, self.value[..., :batch, :]).astype(out.dtype)
        self.value[..., :batch, :] = sent
        counted = fired.sum(axis=-1)
        self.fired += counted
        self.interval_fired += counted
        self.steps += batch
        self.interval_steps += batch
        return sent

    def take(self) -> float | np.ndarray | None:
        """The fraction of stream-steps fired since the last call (``(R,)`` with replicas;
        ``None`` without steps); starts a new interval."""
        if not self.interval_steps:
            return None
        fraction = self.interval_fired / self.interval_steps
        self.interval_fired, self.interval_steps = np.zeros(self.lead, dtype=np.int64), 0
        return float(fraction) if not self.lead else fraction

    def state_dict(self) -> dict:
        def number(counts: np.ndarray):
            return int(counts) if not self.lead else counts.copy()
        return {"value": self.value.copy(), "fired": number(self.fired), "steps": self.steps,
                "interval_fired": number(self.interval_fired),
                "interval_steps": self.interval_steps}

    def load_state_dict(self, state: object, owner: str) -> None:
        value = state.get("value") if isinstance(state, dict) else None
        if (not isinstance(value, np.ndarray) or value.dtype != self.dtype or value.ndim
                != len(self.lead) + 2 or value.shape[:len(self.lead)] != self.lead
                or value.shape[-1] != self.width):
            raise CheckpointError(f"{owner}: hold must be a {self.dtype} array of shape "
                                  f"{(*self.lead, 'streams', self.width)}".replace("'", "")
                                  + f", got {type(value).__name__}")
        try:
            fired, interval = (np.broadcast_to(np.asarray(state[key], dtype=np.int64),
                                               self.lead).copy()
                               for key in ("fired", "interval_fired"))
            steps, interval_steps = int(state["steps"]), int(state["interval_steps"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{owner}: hold must count fired, steps, interval_fired and "
                                  "interval_steps") from None
        self.value, self.fired, self.steps = value.copy(), fired, steps
        self.interval_fired, self.interval_steps = interval, interval_steps
