"""Node groups: a layer of coagents split into agents that own a few units each, down to one agent
per unit.

Units of a layer are conditionally independent given the layer's input (§1.1: the layer's policy
factorises over its units), and under a broadcast-reward rule each unit's update needs only the
layer input, its own action and the reward. So a layer can be cut into groups of units, each a
:class:`~async_coagents.core.layers.CoagentLayer` over the same input with its own block of
weights, its own optimizer state, its own copy of the layer's rule (and so of its baseline) and its
own sampling stream. With
the same weights the split layer computes exactly the greedy forward of the whole layer. Critic
rules need a whole layer's action and subsets draw units across the whole layer, so neither splits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from async_coagents.core.layers import CoagentLayer
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.mlp import MLP
from async_coagents.errors import CheckpointError, ConfigError, ProtocolError


def split_layer(layer: CoagentLayer, units_per_group: int,
                sampling_rng: Callable[[int], np.random.Generator],
                firing_rng: Callable[[int], np.random.Generator] | None = None) -> GroupedLayer:
    """Cut ``layer`` into groups of ``units_per_group`` units (the last group may be smaller).

    Each group starts from the layer's own weights for its units; ``sampling_rng(g)`` gives group
    ``g`` its sampling stream and, under a random firing schedule, ``firing_rng(g)`` its firing
    stream (each node group fires on its own, as each coagent of Kostas et al. 2020 has its own
    execution function). The layer must not have learnt yet (its optimizer state is not split).
    """
    if type(layer.rule).sends_feedback or layer.listens_to_feedback:
        raise ConfigError(f"{layer.name}: a layer under a critic rule cannot be split into node "
                          "groups (its critic needs the whole layer's action)")
    if layer.subset_size is not None:
        raise ConfigError(f"{layer.name}: a subset layer cannot be split into node groups")
    if len(layer.policy.sizes) != 2:
        raise ConfigError(f"{layer.name}: only a single affine policy can be split into node groups "
                          "(a partition group with deterministic layers cannot)")
    if np.any(layer.version) or layer.stats.forwards:
        raise ConfigError(f"{layer.name}: split a layer before it learns")
    k = layer.unit.n_logits
    groups = []
    for g, start in enumerate(range(0, layer.n_units, units_per_group)):
        units = slice(start, min(start + units_per_group, layer.n_units))
        cols = slice(units.start * k, units.stop * k)
        policy = MLP([layer.policy.n_in, (units.stop - units.start) * k], "identity",
                     dtype=layer.dtype, zero_init=True, replicas=layer.replicas)
        policy.weights[0][...] = layer.policy.weights[0][..., cols]
        policy.biases[0][...] = layer.policy.biases[0][..., cols]
        optimizer = layer.optimizer.fresh(policy.params.shape)
        groups.append(CoagentLayer(
            f"{layer.name}.g{g}", policy, layer.unit, optimizer, sampling_rng=sampling_rng(g),
            rule=copy.deepcopy(layer.rule),  # a rule that has not learnt yet: a fresh copy
            options=layer.options,
            firing_rng=firing_rng(g) if firing_rng is not None and layer.fire.random else None))
    return GroupedLayer(layer.name, groups)


class GroupedLayer:
    """One layer made of node-group agents: the same protocol as a layer, messages fanned out to
    every group, outputs concatenated in unit order. In process it is a simulation of node-level
    agents; the Ray backend places every group in its own actor."""

    kind = "grouped"
    listens_to_feedback = False
    sends_feedback = False
    needs_reward = True
    needs_labels = False

    def __init__(self, name: str, groups: list[CoagentLayer]) -> None:
        if not groups:
            raise ConfigError(f"{name}: a grouped layer needs at least one group")
        self.name = name
        self.groups = groups
        self.unit = groups[0].unit

    @property
    def n_units(self) -> int:
        return sum(g.n_units for g in self.groups)

    def forward(self, sid: int, x: np.ndarray) -> np.ndarray:
        return np.concatenate([g.forward(sid, x) for g in self.groups], axis=-1)

    def reward(self, sid: int, r: np.ndarray, labels: np.ndarray | None = None) -> None:
        for g in self.groups:
            g.reward(sid, r, labels)
        return None

    def feedback(self, sid: int, message) -> None:
        raise ProtocolError(f"{self.name} is split into node groups and takes no feedback")

    def forget(self, sid: int) -> bool:
        return any([g.forget(sid) for g in self.groups])

    def act(self, x: np.ndarray, rows: slice | None = None) -> np.ndarray:
        return self.measure(x, rows)[0]

    def measure(self, x: np.ndarray, rows: slice | None = None
                ) -> tuple[np.ndarray, LayerActivity]:
        outputs, activities = zip(*(g.measure(x, rows) for g in self.groups), strict=True)
        return np.concatenate(outputs, axis=-1), concatenate_activity(list(activities))

    def state_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name,
                "groups": [g.state_dict() for g in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind or len(state.get("groups", ())) != len(self.groups):
            raise CheckpointError(f"checkpoint does not hold the {len(self.groups)} node groups "
                                  f"of {self.name}")
        for group, group_state in zip(self.groups, state["groups"], strict=True):
            group.load_state_dict(group_state)


def concatenate_activity(parts: list[LayerActivity]) -> LayerActivity:
    """The activity of a layer from the activities of its groups (units side by side)."""
    if len(parts) == 1:
        return parts[0]
    return LayerActivity(parts[0].n, np.concatenate([p.entropy_sum for p in parts], axis=-1),
                         sum(p.activity_sum for p in parts),
                         sum(p.activity_count for p in parts))
