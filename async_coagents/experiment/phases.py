"""The phases of a run, each a stretch of updates on one backend: backprop pre-training (§5.4),
then coagent training. The run's loop (:mod:`async_coagents.experiment.run`) only asks the phase
of the current update to take a batch, and to evaluate.

Pre-training runs the backprop twin (``NetworkSpec.pretraining_twin``) on a backend of the run's
own kind — in process, or as a Ray actor — with one batch in flight and no reward delay: §5.4 is
a synchronous supervised phase. At the hand-over the twin's weights are read back from where it
ran, copied into the coagent network and every optimizer becomes SGD with ``lr / 128``
(:mod:`async_coagents.core.pretraining`); the twin's backend is then closed. A run resumed after
the hand-over never starts it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from async_coagents.coordinator import Completed
from async_coagents.core.network import Network


class CoagentTraining:
    """The coagent network on the run's backend, from the hand-over (or the start) to the end."""

    name = "coagent"

    def __init__(self, backend) -> None:
        self.backend = backend

    def submit(self, sid, x, labels) -> list[Completed]:
        return self.backend.submit(sid, x, labels)

    def evaluate(self, x, labels) -> dict:
        return self.backend.evaluate(x, labels)


class Pretraining:
    """The backprop twin, for the run's first ``run.pretrain_updates`` updates (see the module
    docstring).
    ``make_backend(network, subdirectory)`` builds a backend of the run's kind; the twin's backend
    is built at its first use, so a resumed run builds it only while it still pre-trains."""

    name = "pretrain"

    def __init__(self, twin: Network, make_backend: Callable[[Network, str], object]) -> None:
        self.twin = twin
        self._make_backend = make_backend
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._make_backend(self.twin, str(Path("agents") / "pretrain"))
        return self._backend

    def submit(self, sid, x, labels) -> list[Completed]:
        return self.backend.submit(sid, x, labels)

    def evaluate(self, x, labels) -> dict:
        return self.backend.evaluate(x, labels)

    def hand_over(self, backend) -> list[Completed]:
        """End the phase: the twin's last rewards delivered, its weights read back from where it
        ran and handed to the coagent network on ``backend`` (§5.4); returns the batches that
        completed."""
        done = []
        if self._backend is not None:
            done = self._backend.finish()
            self.twin.load_state_dict(self._backend.state_dict()["network"])
            self.close()
        backend.load_pretrained(self.twin)
        return done

    def state_dict(self) -> dict:
        """The twin's state (read back from its backend while it runs)."""
        if self._backend is not None:
            self.twin.load_state_dict(self._backend.state_dict()["network"])
        return self.twin.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the twin; before its backend is built (it is built from the twin)."""
        self.close()
        self.twin.load_state_dict(state)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
