"""From a network specification to wired-up layer agents.

:class:`NetworkSpec` says what to build (units, rule, critic, optimizer, options); its fields, their
defaults and per-field checks are the one table of ``core.settings``, and it holds the rules that
combine several fields, which a config's validation reaches through it;
:func:`build_network` turns it into a :class:`Network`: the layer agents bottom to top, the
objective that turns predictions into rewards, and, for the input-state baseline (§3.4), the agent
that turns rewards into advantages before they are broadcast.

Learners (``learner``):

* ``coagent`` — stochastic hidden layers, each an agent, and an output that is a supervised
  read-out (discrete units, §1.2) or a Gaussian coagent (Gaussian units, §3.3). With Gaussian
  units a ``partition`` string over ``d``/``s`` groups deterministic layers with the stochastic
  layer above them into one agent that backpropagates inside the group only (§2.6).
* ``backprop`` — a plain MLP trained end to end (§2.8); ``straight-through`` — the same with
  stochastic binary units and the straight-through gradient (§2.7); ``policy-gradient`` — a ReLU
  MLP whose output is the mean of a Gaussian policy, REINFORCE through backprop (§3.11).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from async_coagents.core import seeding
from async_coagents.core.baselines import StateBaseline
from async_coagents.core.firing import FiringSchedule, parse_schedule
from async_coagents.core.groups import split_layer
from async_coagents.core.input_baseline import InputBaselineAgent
from async_coagents.core.layers import BackpropNetwork, CoagentLayer, Readout, replica_step
from async_coagents.core.metrics import LayerActivity
from async_coagents.core.mlp import MLP
from async_coagents.core.objectives import Classification, Regression, make_objective
from async_coagents.core.optim import make_optimizer
from async_coagents.core.rules import RuleSettings, get_rule
from async_coagents.core.settings import SETTINGS, LayerOptions, check_value, default
from async_coagents.core.units import Gaussian, OneHotCategorical, make_unit
from async_coagents.errors import CheckpointError, ConfigError

OUTPUTS = ("readout", "gaussian", "categorical")  # the setting's choices without the config's "" for None
# Components of a layer that draw their own initialisation stream.
_POLICY, _CRITIC = 0, 1


@dataclass(frozen=True)
class NetworkSpec:
    """Everything that defines a network and how its agents learn. Defaults follow the paper's
    MNIST experiments (§6.3): 64 binary units per layer, RMSprop with lr 2^-11."""

    n_inputs: int
    n_outputs: int
    task: str = default("task")
    learner: str = default("learner")
    hidden: tuple[int, ...] = default("hidden")
    units: str = default("units")
    n_actions: int = default("n_actions")
    normalisation: str = default("normalisation")
    sigma: float = default("sigma")
    normals: str = default("normals")
    activation: str | None = default("activation")
    partition: str | None = default("partition")
    output: str | None = default("output")
    miss_reward: float = default("miss_reward")
    rule: str = default("rule")
    baseline_decay: float = default("baseline_decay")
    optimizer: str = default("optimizer")
    lr: float = default("lr")
    layer_lr: tuple[float, ...] | None = default("layer_lr")
    rmsprop_beta: float = default("rmsprop_beta")
    adam_beta1: float = default("adam_beta1")
    adam_beta2: float = default("adam_beta2")
    eps: float = default("eps")
    critic_layers: int = default("critic_layers")
    critic_units: int = default("critic_units")
    critic_lr_ratio: float = default("critic_lr_ratio")
    reinforce_updates: int = default("reinforce_updates")
    subset: int | None = default("subset")
    subset_every: int = default("subset_every")
    freeze_at: tuple[int | None, ...] | None = default("freeze_at")
    update_every: int | tuple[int, ...] = default("update_every")
    fire: str | tuple[str, ...] = default("fire")
    importance_cap: float | None = default("importance_cap")
    dtype: str = default("dtype")
    max_pending: int = default("max_pending")
    units_per_agent: int = default("units_per_agent")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.freeze_at is not None:
            object.__setattr__(self, "freeze_at", tuple(self.freeze_at))
        if not isinstance(self.update_every, int):
            object.__setattr__(self, "update_every", tuple(self.update_every))
        if not isinstance(self.fire, str):
            object.__setattr__(self, "fire", tuple(self.fire))
        if isinstance(self.layer_lr, list | tuple):  # () is the config's "unset"
            object.__setattr__(self, "layer_lr", tuple(self.layer_lr) or None)
        self._validate()

    # ---- validation -------------------------------------------------------------------------
    def _validate(self) -> None:
        """Each field against its one definition (``core.settings``), then the combinations."""
        self._validate_network()
        self._validate_asynchrony(get_rule(self.rule))

    def _validate_network(self) -> None:
        for f in fields(self):
            setting, value = SETTINGS[f.name], getattr(self, f.name)
            if value is None and setting.default is None and f.name not in ("n_inputs",
                                                                             "n_outputs"):
                continue  # an optional setting left unset
            check_value(f.name, setting, value)
        rule = get_rule(self.rule)
        if self.learner == "coagent":
            rule.check_network(self)
        make_objective(self.task, self.n_outputs, self.resolved_output, self.miss_reward)
        if rule.sends_feedback and max(self.lrs()) * self.critic_lr_ratio == math.inf:
            raise ConfigError(f"the critics' learning rate lr x critic_lr_ratio ({self.lr!r} x "
                              f"{self.critic_lr_ratio!r}) is not finite")
        if self.layer_lr is not None and len(self.layer_lr) != len(self.layer_plan()):
            raise ConfigError(f"layer_lr needs one entry per layer agent "
                              f"({len(self.layer_plan())}, bottom to top), got "
                              f"{len(self.layer_lr)}")
        if self.reinforce_updates and not rule.reinforce_phase:
            raise ConfigError(
                f"reinforce_updates applies only to the rules with a REINFORCE phase "
                f"(ac-reinforce, ac-offpolicy-reinforce), not to {self.rule!r}"
            )
        if self.learner in ("backprop", "straight-through"):
            if self.activation is not None:
                allowed = ("relu", "tanh", "sigmoid") if self.learner == "backprop" else ()
                if self.activation not in allowed:
                    raise ConfigError(
                        f"activation for learner {self.learner!r} must be one of {allowed}, "
                        f"got {self.activation!r}"
                    )
            return
        if self.activation not in (None, "identity", "relu"):
            raise ConfigError(
                f"activation of Gaussian units must be 'identity' or 'relu', got {self.activation!r}"
            )
        if self.normals != "ziggurat" and "gaussian" not in (self.units, self.resolved_output):
            raise ConfigError(f"normals applies to Gaussian units (network.units or "
                              f"network.output gaussian), not to {self.units!r} units with a "
                              f"{self.resolved_output!r} output")
        if self.activation is not None and self.units != "gaussian":
            raise ConfigError(f"activation applies to Gaussian units, not to {self.units!r} units")
        if self.learner == "policy-gradient":
            if self.rule not in ("reinforce", "baseline"):
                raise ConfigError(
                    "policy-gradient through backprop (§3.11) takes rule 'reinforce' or "
                    f"'baseline', got {self.rule!r}"
                )
            return
        if self.output is not None:
            _choice("output", self.output, OUTPUTS)
        if self.units_per_agent:
            if rule.sends_feedback:
                raise ConfigError(f"units_per_agent: layers under the critic rule {self.rule!r} "
                                  "cannot be split into node groups (a critic needs the whole "
                                  "layer's action)")
            if self.subset is not None:
                raise ConfigError("units_per_agent: subset layers cannot be split into node groups")
            if self.partition and "d" in self.partition:
                raise ConfigError("units_per_agent: partition groups with deterministic layers "
                                  "cannot be split into node groups")
        if self.units == "categorical" and (not isinstance(self.n_actions, int)
                                            or self.n_actions < 2):
            raise ConfigError(f"n_actions must be an integer >= 2, got {self.n_actions!r}")
        if self.partition is not None:
            if self.units != "gaussian":
                raise ConfigError("partition applies only to Gaussian units (§2.6)")
            if len(self.partition) != len(self.hidden) or set(self.partition) - {"d", "s"}:
                raise ConfigError(
                    f"partition must be one letter 'd' or 's' per hidden layer "
                    f"({len(self.hidden)} here), got {self.partition!r}"
                )
        if self.subset is not None:  # 0 is the config's spelling of None
            _positive_int("subset", self.subset)
            if self.subset > min(self.hidden, default=0):
                raise ConfigError(
                    f"subset ({self.subset}) exceeds the narrowest hidden layer "
                    f"({min(self.hidden)} units)"
                )
        if self.freeze_at is not None:
            n_hidden = sum(kind == "coagent" for kind, _ in self.layer_plan())
            if len(self.freeze_at) != n_hidden:
                raise ConfigError(
                    f"freeze_at needs one entry per stochastic hidden layer ({n_hidden}), "
                    f"got {len(self.freeze_at)}"
                )
        if not isinstance(self.update_every, int):
            n_layers = len(self.layer_plan())
            if len(self.update_every) != n_layers:
                raise ConfigError(
                    f"update_every needs one entry per layer agent ({n_layers}), got "
                    f"{len(self.update_every)}"
                )

    def _validate_asynchrony(self, rule) -> None:
        """Firing schedules (``core/firing.py``): one per layer agent or one for all, ``always``
        for a supervised learner, and a rule whose message reads its own sampled action (HNCA,
        Weight Maximization) only fires always."""
        plan = self.layer_plan()
        schedules = [self.fire] if isinstance(self.fire, str) else list(self.fire)
        if not isinstance(self.fire, str) and len(schedules) != len(plan):
            raise ConfigError(f"fire needs one entry per layer agent ({len(plan)}, bottom to "
                              f"top), got {len(schedules)}")
        for index in range(len(plan)):
            schedule = self.fire_for(index)
            if schedule.always:
                continue
            if self.learner != "coagent":
                raise ConfigError(f"fire: the {self.learner} learner is not a network of "
                                  f"coagents; it fires always (got {schedule.spelling()!r})")
            if plan[index][0] == "readout":
                raise ConfigError(f"fire[{index}]: the supervised read-out fires always; got "
                                  f"{schedule.spelling()!r}")
            if not rule.supports_firing:
                raise ConfigError(f"fire: the rule {self.rule!r} computes its message from its "
                                  "own sampled action, which a layer that holds does not send; "
                                  "its layers fire always")
        if self.importance_cap is not None and self.learner != "coagent":
            raise ConfigError(f"importance_cap corrects coagent layers' policy steps; the "
                              f"{self.learner} learner has none")

    def fire_for(self, index: int) -> FiringSchedule:
        """The execution function of layer agent ``index`` of :meth:`layer_plan`; one schedule
        for all applies to the coagent layers (a supervised read-out fires always)."""
        if isinstance(self.fire, str) and self.layer_plan()[index][0] == "readout":
            return FiringSchedule()
        text = self.fire if isinstance(self.fire, str) else self.fire[index]
        where = "fire" if isinstance(self.fire, str) else f"fire[{index}]"
        return parse_schedule(text, where)

    # ---- derived ----------------------------------------------------------------------------
    @property
    def resolved_output(self) -> str:
        """``readout`` or ``gaussian``: the explicit choice, else the paper's default (§1.2)."""
        if self.output is not None:
            return self.output
        return "gaussian" if self.units == "gaussian" else "readout"

    @property
    def resolved_activation(self) -> str:
        if self.activation is not None:
            return self.activation
        return "relu" if self.learner in ("backprop", "policy-gradient") else "identity"

    def layer_plan(self) -> list[tuple[str, list[int]]]:
        """Each layer agent as ``(kind, policy MLP sizes)``, bottom to top; kinds are
        ``coagent`` (hidden), ``gaussian-output``, ``categorical-output`` and ``readout``."""
        if self.learner in ("backprop", "straight-through"):
            return [("readout", [self.n_inputs, *self.hidden, self.n_outputs])]
        if self.learner == "policy-gradient":
            return [("gaussian-output", [self.n_inputs, *self.hidden, self.n_outputs])]
        k = 1 if self.units == "gaussian" else (2 if self.units == "bernoulli" else self.n_actions)
        partition = self.partition or "s" * len(self.hidden)
        plan, sizes = [], [self.n_inputs]
        for width, letter in zip(self.hidden, partition, strict=True):
            if letter == "d":
                sizes.append(width)
                continue
            plan.append(("coagent", [*sizes, width * k]))
            sizes = [width]
        kind = {"readout": "readout", "gaussian": "gaussian-output",
                "categorical": "categorical-output"}[self.resolved_output]
        plan.append((kind, [*sizes, self.n_outputs]))
        return plan

    def lrs(self) -> tuple[float, ...]:
        """The learning rates of the layer agents: ``layer_lr``, or ``lr`` for all."""
        return self.layer_lr if self.layer_lr is not None else (self.lr,)

    def lr_of(self, index: int) -> float:
        """The learning rate of layer agent ``index`` of :meth:`layer_plan`."""
        return self.layer_lr[index] if self.layer_lr is not None else self.lr

    def update_every_for(self, index: int) -> int:
        if isinstance(self.update_every, int):
            return self.update_every
        return self.update_every[index]

    def layer_options(self, index: int) -> LayerOptions:
        """The options of layer agent ``index`` of :meth:`layer_plan`: its clock rate and
        ``max_pending``, and for a stochastic hidden layer its subset and freezing batch."""
        plan = self.layer_plan()
        common = {"update_every": self.update_every_for(index), "max_pending": self.max_pending,
                  "subset_every": self.subset_every}
        if plan[index][0] == "readout":
            return LayerOptions(**common)
        asynchrony = {"fire": self.fire_for(index), "importance_cap": self.importance_cap}
        if plan[index][0] != "coagent":
            return LayerOptions(**common, **asynchrony)
        hidden_index = sum(kind == "coagent" for kind, _ in plan[:index])
        return LayerOptions(
            **common, **asynchrony, subset=self.subset,
            freeze_at=None if self.freeze_at is None else self.freeze_at[hidden_index])

    def to_dict(self) -> dict:
        """Plain types only (lists for tuples), for configs and checkpoints."""
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown network setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def pretraining_twin(self) -> NetworkSpec:
        """The backprop MLP of the same widths that pre-trains this network (§5.4)."""
        if self.layer_lr is not None:
            raise ConfigError("backprop pre-training (run.pretrain_updates) trains one network "
                              "at one learning rate, network.lr: leave network.layer_lr empty")
        return replace(self, learner="backprop", activation="relu", partition=None, output=None,
                       rule="reinforce", freeze_at=None, subset=None, reinforce_updates=0,
                       update_every=1, units_per_agent=0, fire=default("fire"),
                       importance_cap=None)


def staged_freeze_epochs(epochs: int, n_layers: int) -> list[int | None]:
    """The paper's staged schedule (§2.4): layer k acts greedily from the first 0-indexed epoch
    e > floor((k+1) E / L); ``None`` for a layer that never freezes within ``epochs`` (the top one).

    >>> staged_freeze_epochs(150, 3)
    [51, 101, None]
    """
    schedule: list[int | None] = []
    for k in range(n_layers):
        first = (k + 1) * epochs // n_layers + 1
        schedule.append(first if first < epochs else None)
    return schedule


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


class Network:
    """The layer agents of one network, bottom to top, and what the coordinator needs besides."""

    def __init__(self, spec: NetworkSpec, layers: list, objective: Classification | Regression,
                 input_baseline: InputBaselineAgent | None = None) -> None:
        self.spec = spec
        self.layers = layers
        self.objective = objective
        self.input_baseline = input_baseline

    @property
    def output(self):
        return self.layers[-1]

    @property
    def replicas(self) -> int | None:
        """R for a network of R replicas on a leading axis (``core/replicas.py``), else None."""
        return self.output.replicas

    @property
    def agents(self) -> list:
        """Every agent, bottom to top: each layer, or each node group of a split layer."""
        return [agent for layer in self.layers for agent in getattr(layer, "groups", [layer])]

    def act(self, x: np.ndarray) -> np.ndarray:
        """Greedy prediction (§4.2): argmax units, Gaussian means, deterministic output."""
        h = x
        for layer in self.layers:
            h = layer.act(h)
        return h

    def record_grad_variance(self) -> None:
        """Every coagent layer agent measures its per-example gradient variance from now on
        (:meth:`CoagentLayer.record_grad_variance`); the others report ``None``."""
        for agent in self.agents:
            if isinstance(agent, CoagentLayer):
                agent.record_grad_variance()

    def measure(self, x: np.ndarray) -> tuple[np.ndarray, list[LayerActivity]]:
        """Greedy prediction and each hidden layer's entropy and activity sums.

        With replicas, depth first: each block of replicas whose widest temporaries fit in cache
        goes through every layer before the next block starts, so no layer's output for all R
        replicas (R x 8,192 x U numbers a chunk) is ever written out and read back. Each
        replica's numbers are those of the layer-by-layer pass, replica by replica (the same
        products on the same slices)."""
        replicas = self.replicas
        step = None if replicas is None else replica_step(x.shape[-2], self._widest())
        if step is None or step >= replicas:
            return self._measure(x, None)
        shared = x.ndim == 2  # one input for every replica (a dataset's split)
        predictions, blocks = [], []
        for lo in range(0, replicas, step):
            rows = slice(lo, lo + step)
            prediction, activity = self._measure(x if shared else x[rows], rows)
            predictions.append(prediction)
            blocks.append(activity)
        return np.concatenate(predictions), [LayerActivity.stack(list(layer))
                                             for layer in zip(*blocks, strict=True)]

    def _measure(self, x: np.ndarray, rows: slice | None) -> tuple[np.ndarray, list]:
        h, activity = x, []
        for layer in self.layers[:-1]:
            h, measured = layer.measure(h, rows)
            activity.append(measured)
        return self.output.act(h, rows), activity

    def _widest(self) -> int:
        """The most numbers per example any agent's network computes (its widest layer)."""
        return max(max(agent.net.sizes) for agent in self.agents)

    def state_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "layers": [layer.state_dict() for layer in self.layers],
            "input_baseline": None if self.input_baseline is None
            else self.input_baseline.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["layers"]) != len(self.layers):
            raise CheckpointError(
                f"checkpoint has {len(state['layers'])} layers, the network has {len(self.layers)}"
            )
        for layer, layer_state in zip(self.layers, state["layers"], strict=True):
            layer.load_state_dict(layer_state)
        if (state["input_baseline"] is None) != (self.input_baseline is None):
            raise CheckpointError("checkpoint and network disagree on the input baseline")
        if self.input_baseline is not None:
            self.input_baseline.load_state_dict(state["input_baseline"])


def build_network(spec: NetworkSpec, seed: int | Sequence[int]) -> Network:
    """Build every layer agent of ``spec`` with its own init and sampling streams of ``seed``.

    A sequence of seeds builds R replicas on a leading axis (``core/replicas.py``): replica r is,
    bit for bit, the network this function builds for ``seed[r]``.
    """
    replicas = None if isinstance(seed, int | np.integer) else len(seed)
    if replicas is not None and replicas < 1:
        raise ConfigError("replicas need at least one seed")
    objective = make_objective(spec.task, spec.n_outputs, spec.resolved_output, spec.miss_reward)
    rule = get_rule(spec.rule)
    dtype = np.dtype(spec.dtype)
    plan = spec.layer_plan()

    def optimizer(size: int, lr: float):
        hyper = {"eps": spec.eps}
        if spec.optimizer == "rmsprop":
            hyper["beta"] = spec.rmsprop_beta
        elif spec.optimizer == "adam":
            hyper.update(beta1=spec.adam_beta1, beta2=spec.adam_beta2)
        else:
            hyper = {}
        return make_optimizer(spec.optimizer, size, lr, dtype, **hyper)

    layers: list = []
    names = _layer_names(plan)
    for index, (kind, sizes) in enumerate(plan):
        init_rng = seeding.generator(seed, "init", index, _POLICY)
        sampling_rng = seeding.generator(seed, "sampling", index)
        options = spec.layer_options(index)
        if replicas is not None and options.fire.random and options.update_every > 1:
            raise ConfigError(  # a replica that fires on no stream skips a batch: own clocks
                f"fire[{index}]: {options.fire.spelling()!r} with update_every > 1 is not "
                "supported with run.replicas (each replica would need its own clock); run the "
                "seeds separately")
        activation = spec.resolved_activation
        if kind == "readout":
            if spec.learner == "straight-through":
                activation = "straight_through"
            net = MLP(sizes, activation, rng=init_rng, dtype=dtype)
            learner = Readout if len(sizes) == 2 else BackpropNetwork
            layers.append(learner(names[index], net, objective,
                                  optimizer(net.params.shape, spec.lr_of(index)),
                                  sampling_rng=sampling_rng, options=options))
            continue
        if kind == "gaussian-output":
            unit = Gaussian(spec.sigma, "identity", spec.normals)
        elif kind == "categorical-output":  # one unit, a softmax over the classes
            unit = OneHotCategorical(spec.n_outputs)
        else:
            unit = make_unit(spec.units, n_actions=spec.n_actions,
                             normalisation=spec.normalisation, sigma=spec.sigma,
                             activation=activation, normals=spec.normals)
        # A partition group's deterministic layers use the units' activation (§2.6).
        net = MLP(sizes, activation, rng=init_rng, dtype=dtype)
        settings = RuleSettings(
            n_state=sizes[0], n_units=unit.width(sizes[-1] // unit.n_logits), dtype=dtype,
            credits_below=index > 0, optimizer=optimizer, lr=spec.lr_of(index),
            baseline_decay=spec.baseline_decay, reinforce_updates=spec.reinforce_updates,
            critic_layers=spec.critic_layers, critic_units=spec.critic_units,
            critic_lr_ratio=spec.critic_lr_ratio,
            critic_rng=lambda index=index: seeding.generator(seed, "init", index, _CRITIC),
            replicas=replicas)
        firing_rng = (seeding.generator(seed, "firing", index) if options.fire.random
                      else None)
        layers.append(CoagentLayer(
            names[index], net, unit, optimizer(net.params.shape, spec.lr_of(index)),
            sampling_rng=sampling_rng, rule=rule.build(settings), options=options,
            firing_rng=firing_rng))
    for lower, upper in itertools.pairwise(layers):  # routing follows from the rules (§3.6)
        if isinstance(lower, CoagentLayer):
            lower.listen_to(upper)
    if spec.units_per_agent:
        for index, layer in enumerate(layers[:-1]):
            if layer.n_units > spec.units_per_agent:
                layers[index] = split_layer(
                    layer, spec.units_per_agent,
                    lambda g, index=index: seeding.generator(seed, "sampling", index, g),
                    lambda g, index=index: seeding.generator(seed, "firing", index, g))
    input_baseline = None
    if rule.broadcasts_advantage:
        input_baseline = InputBaselineAgent(
            StateBaseline(spec.n_inputs,
                          optimizer(StateBaseline.shape(spec.n_inputs, replicas), spec.lr_of(0)),
                          dtype, replicas),
            spec.max_pending)
    return Network(spec, layers, objective, input_baseline)


def _layer_names(plan: list[tuple[str, list[int]]]) -> list[str]:
    return [f"layer{i}" if kind == "coagent" else "output" for i, (kind, _) in enumerate(plan)]
