"""Free-running schedules (``backend.schedule = "free"``) and their deterministic replay
(``backend.schedule = "replay"``): the two coordinators besides the ordered one of
``coordinator.py``, and the recorded schedule that joins them.

Free running. No fixed order: the coordinator forwards a batch as soon as the first layer has
taken the previous one (or, with ``backend.free_rate`` r > 0, at the stream's rate: batch k not
before k / r seconds after the first), and delivers a batch's reward as soon as its prediction
has arrived — top-down to every layer at once, the feedback of critic rules chained as in the
ordered schedule; at most ``backend.window`` batches are in flight (a full window waits for the
oldest prediction). How late each reward comes (in forwards, the unit of ``reward_delay``) is
whatever the actors' speeds make it, so a free run is not reproducible: its summary says so and
gives the distribution of those delays, which every layer saw (a reward reaches all layers at
one moment).

What is recorded. Each actor handles its messages in the order the driver sent them (one
submitter, FIFO actors: ``reference/ray_notes.md`` §3), and predictions arrive oldest first (an
actor answers its forwards in order), so the whole message order of a free run is one number per
forward: how many rewards the coordinator delivered, oldest first, just before that forward
(``rewards_before``; the rest are delivered at the end of the stream). The run writes it to
``schedule.ckpt`` in its directory (the project's checksummed msgpack file, kind ``schedule``)
at every checkpoint, and a resumed free run continues the record from its checkpoint's forward.

Replay. A run with ``backend.schedule = "replay"`` and ``backend.replay`` = a recorded schedule
sends exactly that order of messages, on the local backend (or on Ray), so it ends with the free
run's weights bit for bit (`coagents replay RUN_DIR`): a free run beside a deterministic run of
the same staleness.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.coordinator import Completed, Coordinator
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError

SCHEDULE_FILE = "schedule.ckpt"
SCHEDULE_KIND = "schedule"
#: Seconds between two looks at the actors while the coordinator waits (ray.wait returns sooner
#: when a reply arrives, or when an actor died: the call then fails and recovery runs).
POLL_S = 1.0
NOT_REPRODUCIBLE = ("free-running: each reward was delivered when its prediction arrived, so the "
                    "message order depended on the actors' speeds and a rerun differs; "
                    "`coagents replay` reruns this order deterministically")


class RecordedSchedule:
    """The message order of a free run: ``rewards_before[k]`` rewards delivered, oldest batch
    first, just before forward ``k``; the rest at the end of the stream. ``window`` is the run's
    bound on batches in flight."""

    def __init__(self, rewards_before: Sequence[int] | np.ndarray = (), window: int = 1) -> None:
        self.rewards_before = [int(n) for n in rewards_before]
        self.window = int(window)

    def __len__(self) -> int:
        return len(self.rewards_before)

    def append(self, delivered: int) -> None:
        self.rewards_before.append(int(delivered))

    def truncate(self, forwards: int) -> None:
        """Keep the first ``forwards`` forwards (a resume from that point)."""
        if forwards > len(self.rewards_before):
            raise CheckpointError(f"the recorded schedule holds {len(self.rewards_before)} "
                                  f"forwards, and the checkpoint is at forward {forwards}: the "
                                  f"schedule file is older than the checkpoint")
        del self.rewards_before[forwards:]

    def delays(self) -> list[int]:
        """Per rewarded batch (oldest first), the forwards after its own before its reward was
        delivered: the ``reward_delay`` it had (the batches rewarded at the end of the stream
        included)."""
        out, batch = [], 0
        for k, n in enumerate(self.rewards_before):
            for _ in range(n):
                out.append(k - 1 - batch)
                batch += 1
        out.extend(len(self) - 1 - b for b in range(batch, len(self)))
        return out

    def describe(self) -> dict:
        """The reward delays every layer saw: mean, max and their histogram ``{delay: batches}``."""
        delays = self.delays()
        if not delays:
            return {"batches": 0, "delay_mean": None, "delay_max": None, "delay_histogram": {}}
        counts = Counter(delays)
        return {"batches": len(delays), "delay_mean": sum(delays) / len(delays),
                "delay_max": max(delays),
                "delay_histogram": {str(d): counts[d] for d in sorted(counts)}}

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {"window": self.window, "forwards": len(self),
                               "rewards_before": np.asarray(self.rewards_before, np.uint32)},
                        kind=SCHEDULE_KIND)

    @classmethod
    def load(cls, path: str | Path) -> RecordedSchedule:
        """Read and check a recorded schedule; a :class:`CheckpointError` names what is wrong."""
        state = load_checkpoint(path, kind=SCHEDULE_KIND)
        where = f"{path}: recorded schedule"
        if not isinstance(state, dict) or set(state) != {"window", "forwards", "rewards_before"}:
            raise CheckpointError(f"{where}: expected the fields forwards, rewards_before, window")
        counts, window, forwards = state["rewards_before"], state["window"], state["forwards"]
        if (not isinstance(counts, np.ndarray) or counts.ndim != 1 or counts.dtype.kind != "u"
                or not isinstance(window, int) or window < 1
                or not isinstance(forwards, int) or forwards != counts.size):
            raise CheckpointError(f"{where}: rewards_before must be one unsigned count per "
                                  f"forward ({forwards}) and window an integer >= 1")
        schedule = cls(counts.tolist(), window)
        schedule.check(where)
        return schedule

    def check(self, where: str) -> None:
        """Every count possible: no reward of a batch not yet forwarded, never more than
        ``window`` batches in flight at a forward."""
        rewarded = 0
        for k, n in enumerate(self.rewards_before):
            rewarded += n
            if rewarded > k:
                raise CheckpointError(f"{where}: before forward {k} it delivers {rewarded} "
                                      f"rewards, of {k} batches forwarded")
            if k - rewarded >= self.window:
                raise CheckpointError(f"{where}: forward {k} would have {k - rewarded + 1} "
                                      f"batches in flight, over its window of {self.window}")


class FreeCoordinator(Coordinator):
    """The free-running schedule (module docstring) over a transport that can say whether a
    reply has arrived (``ready``) and wait for one (``wait``). ``path``: where the recorded
    schedule is saved with every checkpoint (:meth:`state_dict`)."""

    kind = "free"

    def __init__(self, transport, objective, *, input_baseline=None, window: int = 1,
                 replicas: int | None = None, rate: float = 0.0, path: str | Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(transport, objective, input_baseline=input_baseline, window=window,
                         replicas=replicas)
        if rate < 0:
            raise ConfigError(f"backend.free_rate must be >= 0 batches per second, got {rate}")
        self.rate = rate
        self.path = None if path is None else Path(path)
        self.record = RecordedSchedule(window=window)
        self.clock = clock
        self._started: float | None = None
        self._first: Any = None  # the handle of the first layer's latest forward

    def submit(self, sid: int, x: np.ndarray, labels: np.ndarray) -> list[Completed]:
        """Deliver every reward whose prediction has arrived while waiting until batch ``sid``
        may go (the first layer took the previous one, or its time at ``rate``; and room in the
        window); then forward it."""
        x = np.asarray(x)
        labels = self.objective.check_target(labels, x.shape[:-1])
        done: list[Completed] = []
        delivered = 0
        while True:
            while self.inflight and self.transport.ready(self.inflight[0].output):
                delivered += self._deliver_oldest(done)
            if len(self.inflight) >= self.window:
                delivered += self._deliver_oldest(done)  # waits for its prediction
                continue
            wait = self._wait_before_forward()
            if wait == 0:
                break
            oldest = [self.inflight[0].output] if self.inflight else []
            first = [] if self.rate or self._first is None else [self._first]
            self.transport.wait([*first, *oldest], timeout=min(wait, POLL_S))
        if self._started is None:
            self._started = self.clock()
        self.record.append(delivered)
        self._first = self._forward(sid, x, labels)
        self.forwards += 1
        return done

    def _wait_before_forward(self) -> float:
        """Seconds until the next forward may go (0: now)."""
        if self.rate:
            if self._started is None:
                return 0.0
            return max(0.0, self._started + self.forwards / self.rate - self.clock())
        return 0.0 if self._first is None or self.transport.ready(self._first) else POLL_S

    def describe(self) -> dict:
        return {"kind": self.kind, "reproducible": False, "why": NOT_REPRODUCIBLE,
                "window": self.window, "free_rate": self.rate, **self.record.describe()}

    def state_dict(self) -> dict:
        """The ordered coordinator's state; the recorded schedule goes to its own file."""
        if self.path is not None:
            self.record.save(self.path)
        return super().state_dict()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.path is None:
            return
        if not self.path.exists():
            raise CheckpointError(f"{self.path}: the free run's recorded schedule is missing, so "
                                  f"it cannot continue recording from its checkpoint")
        record = RecordedSchedule.load(self.path)
        record.truncate(self.forwards)
        if sum(record.rewards_before) != self.forwards - len(self.inflight):
            raise CheckpointError(f"{self.path}: the recorded schedule delivers "
                                  f"{sum(record.rewards_before)} rewards by forward "
                                  f"{self.forwards}, and the checkpoint has "
                                  f"{len(self.inflight)} batches in flight of {self.forwards}")
        self.record = record


class ReplayCoordinator(Coordinator):
    """Sends the message order of a recorded free run: before forward ``k``, the rewards of the
    ``rewards_before[k]`` oldest batches in flight; the rest at the end of the stream."""

    kind = "replay"

    def __init__(self, transport, objective, *, schedule: RecordedSchedule, source: str = "",
                 input_baseline=None, window: int = 1, replicas: int | None = None) -> None:
        if schedule.window > window:
            raise ConfigError(f"the recorded schedule had up to {schedule.window} batches in "
                              f"flight; backend.window is {window}")
        super().__init__(transport, objective, input_baseline=input_baseline, window=window,
                         replicas=replicas)
        self.schedule = schedule
        self.source = source

    def submit(self, sid: int, x: np.ndarray, labels: np.ndarray) -> list[Completed]:
        k = self.forwards
        if k >= len(self.schedule):
            raise ProtocolError(f"the recorded schedule {self.source} holds "
                                f"{len(self.schedule)} forwards; this run goes on past them")
        x = np.asarray(x)
        labels = self.objective.check_target(labels, x.shape[:-1])
        done: list[Completed] = []
        for _ in range(self.schedule.rewards_before[k]):
            self._deliver_oldest(done)
        self._forward(sid, x, labels)
        self.forwards += 1
        return done

    def describe(self) -> dict:
        return {"kind": self.kind, "reproducible": True, "replays": self.source,
                "window": self.window, **self.schedule.describe()}


def make_coordinator(transport, network, backend: dict, schedule_path: str | Path | None
                     ) -> Coordinator:
    """The coordinator that ``backend.schedule`` names, around ``transport``."""
    common = {"input_baseline": network.input_baseline, "window": backend["window"],
              "replicas": network.replicas}
    kind = backend.get("schedule", "ordered")
    if kind == "free":
        return FreeCoordinator(transport, network.objective, rate=backend.get("free_rate", 0.0),
                               path=schedule_path, **common)
    if kind == "replay":
        source = backend.get("replay", "")
        if not source:
            raise ConfigError("backend.schedule = 'replay' needs backend.replay, the recorded "
                              f"schedule ({SCHEDULE_FILE} in a free run's directory)")
        return ReplayCoordinator(transport, network.objective,
                                 schedule=RecordedSchedule.load(source), source=source, **common)
    return Coordinator(transport, network.objective, reward_delay=backend["reward_delay"],
                       **common)
