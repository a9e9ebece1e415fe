"""The input-state baseline of §3.4 as an agent at the network input.

It sees each batch's input ``x`` at forward time (and keeps it, in its saved state too, while the
batch is in flight); when the reward arrives it answers the advantage ``r - V(x)`` with the
pre-update ``V``, which the coordinator broadcasts to the layers instead of ``r``, then regresses
``V`` to ``r``. Layers above the first never see ``x``, so this is the one place the advantage can
be formed.
"""

from __future__ import annotations

import numpy as np

from async_coagents.core.agent import AgentBase, PendingBatch
from async_coagents.core.baselines import StateBaseline
from async_coagents.errors import CheckpointError, ProtocolError


class InputBaselineAgent(AgentBase):
    """``V(x) = x v + v_0`` on the network input (§3.4); ``reward`` returns ``r - V(x)`` ``(B,)``.

    Its messages: ``forward(sid, x)`` (returns nothing: nothing flows on from it) and
    ``reward(sid, r)`` (returns the advantage to broadcast, ``None`` for an unknown batch).
    """

    kind = "input-baseline"

    def __init__(self, baseline: StateBaseline, max_pending: int = 1024,
                 name: str = "input-baseline") -> None:
        super().__init__(name, baseline.value_fn, baseline.optimizer, max_pending=max_pending)
        self.baseline = baseline

    def forward(self, sid: int, x: np.ndarray) -> None:
        if sid in self._pending:  # a retry with the same input (counted), else an error
            self._repeated_forward(sid, x)
            return None
        x = self._check_input(sid, x)
        self._remember(sid, PendingBatch(x, [], None, self.version))
        return None

    def reward(self, sid: int, r: np.ndarray, labels: np.ndarray | None = None
               ) -> np.ndarray | None:
        """``G = r - V(x)`` for batch ``sid`` (§3.4), then one step of ``V`` toward ``r``."""
        entry = self._lookup(sid)
        if entry is None:
            return None
        r = self._check_message(sid, "reward", r, entry.x.shape[:-1])
        del self._pending[sid]
        self.stats.record_staleness(self.version - entry.version)
        g = self.baseline.advantage(r, entry.x)  # (3.4) G = r - V(x), pre-update V
        self.baseline.learn(r, entry.x)  # V <- one step on mean_b (V(x_b) - r_b)^2
        self.version += 1
        self._settle(sid)
        return g

    def _pending_layout(self, x: np.ndarray) -> dict:
        return {"out": None, "cache": [], "dist": None, "action": None, "mask": None}

    def feedback(self, sid: int, message: np.ndarray | None) -> None:
        raise ProtocolError(f"{self.name} takes no feedback")

    def act(self, x: np.ndarray) -> None:
        return None

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise CheckpointError("checkpoint has no input-baseline state")
        super().load_state_dict(state)
