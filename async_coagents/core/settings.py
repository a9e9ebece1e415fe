"""The one definition of every network setting and the one function that checks a value of it.

:data:`SETTINGS` holds, per :class:`~async_coagents.core.network.NetworkSpec` field, its type,
default, allowed values or range and documentation. Everything else is derived from it:
``NetworkSpec``'s defaults and per-field checks, the ``[network]`` section of the config schema
(``experiment/config.py``, printed by ``coagents configs --schema``) and the generic copy of a
config into a spec (``experiment/workload.network_spec``). :func:`check_value` is the per-key check
(type, range, choices) that both a config's validation and ``NetworkSpec`` construction run, so no
per-key rule is written twice.

A setting's ``config`` names where a config holds it (``network.lr``, ``backend.update_every``);
``None`` means the spec takes it from elsewhere (the data's sizes, an epoch-based config key).
``unset`` is the config's spelling of the spec's ``None`` (``""`` or ``0``): a TOML file cannot
write ``None``.

:class:`LayerOptions` is the per-layer slice of the settings that one layer agent is built with
(``NetworkSpec.layer_options(i)``), passed to the layer as one object and copied as one by
``core/groups.split_layer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from async_coagents.core.firing import FiringSchedule
from async_coagents.core.rules import RULES
from async_coagents.errors import ConfigError

# Types a key may have: "int", "float" (an int is accepted), "str", "bool", "ints" (list of int),
# "int|ints" (one int or a list of int, e.g. per-layer clock rates), "floats" (list of numbers),
# "strs" (list of str), "str|strs" (one str or a list of str, e.g. per-layer firing schedules).
TYPE_NAMES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean",
              "ints": "list of integers", "int|ints": "integer or list of integers",
              "floats": "list of numbers", "strs": "list of strings",
              "str|strs": "string or list of strings"}
#: The types whose value is itself a list (a list of lists is then a sweep of them).
LIST_VALUED = ("ints", "strs", "int|ints", "floats", "str|strs")
#: Every integer of a config is stored in the run's checkpoints as a 64-bit msgpack int.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Setting:
    """One setting: its type, default, allowed values or range, and what it means.

    ``choices`` is a tuple or a function returning one (read when checking, so that a learning
    rule registered at run time is allowed); ``optional_items`` lets a list hold ``None``
    (``freeze_at``: a layer that never freezes).
    """

    type: str
    default: Any
    doc: str
    choices: tuple | Callable[[], tuple] | None = None
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: float | None = None
    config: str | None = None
    unset: Any = None
    optional_items: bool = False

    @property
    def is_list(self) -> bool:
        return self.type in ("ints", "strs", "floats")

    @property
    def allowed(self) -> tuple | None:
        """The allowed values, or None for any value of the type."""
        return self.choices() if callable(self.choices) else self.choices


def _rule_names() -> tuple[str, ...]:
    return tuple(RULES)


_UNIT_INTERVAL = {"minimum": 0, "exclusive_maximum": 1}

#: Every field of ``NetworkSpec``, in the order the config schema documents them. Defaults follow
#: the paper's MNIST experiments (§6.3): 64 binary units per layer, RMSprop with lr 2^-11.
SETTINGS: dict[str, Setting] = {
    "n_inputs": Setting("int", None, "inputs of the network (from the data)", minimum=1),
    "n_outputs": Setting("int", None, "outputs of the network (from the data)", minimum=1),
    "task": Setting("str", "classification", "classification or regression (from the data)"),
    "learner": Setting("str", "coagent", "coagent (every layer an agent), backprop, "
                       "straight-through or policy-gradient (REINFORCE through a backprop MLP, "
                       "§3.11)", choices=("coagent", "backprop", "straight-through",
                                          "policy-gradient"), config="network.learner"),
    "hidden": Setting("ints", (64,), "units per hidden layer, bottom to top, e.g. [64, 64, 64]",
                      minimum=1, config="network.hidden"),
    "units": Setting("str", "bernoulli", "unit family of the hidden layers (§2.1, §2.2, §2.5)",
                     choices=("bernoulli", "categorical", "gaussian"), config="network.units"),
    "n_actions": Setting("int", 2, "K, actions per categorical unit (§2.2)", minimum=2,
                         config="network.n_actions"),
    "normalisation": Setting("str", "unit", "state passed on by a categorical unit: index a, unit "
                             "a/(K-1) or symmetric 2a/(K-1)-1 (§2.2 modes 1-3)",
                             choices=("index", "unit", "symmetric"),
                             config="network.normalisation"),
    "sigma": Setting("float", 0.5, "fixed standard deviation of Gaussian units (§2.5), "
                     "1e-18 .. 1e18 (sigma^2 and 1/sigma^2 finite in float32)",
                     minimum=1e-18, maximum=1e18, config="network.sigma"),
    "normals": Setting("str", "ziggurat", "Gaussian units: how the sampling stream draws the "
                       "noise (core/normals.py): ziggurat (numpy's standard_normal, as every "
                       "earlier run) or box-muller (2-3x faster, vectorised over replicas; "
                       "the same distribution, other numbers)",
                       choices=("ziggurat", "box-muller"), config="network.normals"),
    "activation": Setting("str", None, "Gaussian units: identity or relu after the sample; "
                          "backprop: relu, tanh or sigmoid; empty for the default",
                          choices=("", "identity", "relu", "tanh", "sigmoid"),
                          config="network.activation", unset=""),
    "partition": Setting("str", None, "Gaussian units: one letter per hidden layer, d "
                         "deterministic or s stochastic; groups backprop inside only (§2.6); "
                         "empty = all s", config="network.partition", unset=""),
    "output": Setting("str", None, "readout (supervised), gaussian (a Gaussian output coagent) or "
                      "categorical (a softmax output coagent over the classes, rewarded 1 for the "
                      "right class and miss_reward otherwise); empty = readout for discrete "
                      "units, gaussian for Gaussian units",
                      choices=("", "readout", "gaussian", "categorical"), config="network.output",
                      unset=""),
    "miss_reward": Setting("float", -1.0, "categorical output: the reward of a wrong class (the "
                           "right one earns 1): -1 as in Chung's multiplexer, 0 as in Young's "
                           "bandit MNIST", minimum=-1e6, maximum=1.0, config="network.miss_reward"),
    "rule": Setting("str", "baseline", "learning rule, a registered one (the README's rule "
                    "table: REINFORCE and its baselines, the critics, weight-max, hnca...)",
                    choices=_rule_names,
                    config="network.rule"),
    "baseline_decay": Setting("float", 0.99, "decay of the EMA baseline (§3.2)",
                              **_UNIT_INTERVAL, config="network.baseline_decay"),
    "optimizer": Setting("str", "rmsprop", "sgd, rmsprop or adam (§6.1)",
                         choices=("sgd", "rmsprop", "adam"), config="network.optimizer"),
    "lr": Setting("float", 2.0 ** -11, "learning rate of every layer", exclusive_minimum=0,
                  config="network.lr"),
    "layer_lr": Setting("floats", None, "one learning rate per layer agent, bottom to top, in "
                        "place of lr (Chung's multiplexer: [0.01, 0.001, 0.0001]); a layer's "
                        "critic and baselines learn at its rate; empty = lr everywhere",
                        exclusive_minimum=0, config="network.layer_lr", unset=[]),
    "rmsprop_beta": Setting("float", 0.99, "RMSprop smoothing constant", **_UNIT_INTERVAL,
                            config="network.rmsprop_beta"),
    "adam_beta1": Setting("float", 0.9, "Adam beta1", **_UNIT_INTERVAL,
                          config="network.adam_beta1"),
    "adam_beta2": Setting("float", 0.999, "Adam beta2", **_UNIT_INTERVAL,
                          config="network.adam_beta2"),
    "eps": Setting("float", 1e-8, "optimizer epsilon", exclusive_minimum=0, config="network.eps"),
    "critic_layers": Setting("int", 1, "hidden layers of each critic (§3.6)", minimum=0,
                             config="network.critic_layers"),
    "critic_units": Setting("int", 1024, "units per critic hidden layer", minimum=1,
                            config="network.critic_units"),
    "critic_lr_ratio": Setting("float", 2.0, "critic learning rate / lr", exclusive_minimum=0,
                               config="network.critic_lr_ratio"),
    "reinforce_updates": Setting("int", 0, "ac-reinforce rules: batches of REINFORCE before the "
                                 "critic signal takes over (§3.9)", minimum=0,
                                 config="network.reinforce_updates"),
    "subset": Setting("int", None, "units per layer that sample and learn, the rest greedy; "
                      "0 = all (§2.3)", minimum=0, config="network.subset", unset=0),
    "subset_every": Setting("int", 1, "batches between redraws of the subset (from "
                            "network.subset_redraw)", minimum=1),
    "freeze_at": Setting("ints", None, "per stochastic hidden layer, the batch from which it acts "
                         "greedily, or None (from network.staged)", minimum=0,
                         optional_items=True),
    "update_every": Setting("int|ints", 1, "clock rate: a layer steps every n of its batches "
                            "(one value, or one per layer agent)", minimum=1,
                            config="backend.update_every"),
    "fire": Setting("str|strs", "always", "execution function (Kostas et al. 2020): when a "
                    "coagent layer samples a new output on each of the B streams of a batch; "
                    "\"always\", \"every:N\" or \"every:N:PHASE\" (steps t with t % N == PHASE), "
                    "or \"p:P\" (each stream with probability P, from the layer's own random "
                    "stream); where it does not fire it holds its last output (0 at a stream's "
                    "start) and takes no update (one value, or one per layer agent; a supervised "
                    "read-out fires always)", config="backend.fire"),
    "importance_cap": Setting("float", None, "staleness correction: weight each unit's policy "
                              "step by its importance ratio pi_now(a|s) / pi_sampled(a|s), "
                              "truncated at this cap (V-trace's rho-bar, Espeholt et al. 2018); "
                              "0 = off", minimum=0, config="network.importance_cap", unset=0),
    "dtype": Setting("str", "float32", "floating point type of the network",
                     choices=("float32", "float64"), config="network.dtype"),
    "max_pending": Setting("int", 1024, "batches a layer agent remembers between its forward "
                           "and its reward", minimum=1),
    "units_per_agent": Setting("int", 0, "split each hidden layer into node groups of this many "
                               "units, each its own agent (an actor on ray); 0 = whole layers",
                               minimum=0, config="backend.units_per_actor"),
}


@dataclass(frozen=True)
class LayerOptions:
    """The options of one layer agent: its clock rate (steps every ``update_every`` of its
    batches), the batches it remembers (``max_pending``), the ``subset`` of its units that sample
    and learn, redrawn every ``subset_every`` batches (§2.3, ``None`` = all), and the batch
    ``freeze_at`` from which it acts greedily and stops learning (§2.4, ``None`` = never); its
    execution function ``fire`` (``core/firing.py``) and the cap of its staleness correction
    ``importance_cap`` (``None`` = no correction)."""

    update_every: int = 1
    max_pending: int = 1024
    subset: int | None = None
    subset_every: int = 1
    freeze_at: int | None = None
    fire: FiringSchedule = field(default_factory=FiringSchedule)
    importance_cap: float | None = None


#: The options of a layer agent built without any (every option at its default).
DEFAULT_OPTIONS = LayerOptions()


def default(name: str) -> Any:
    """The default of setting ``name`` (for ``NetworkSpec``'s field declarations)."""
    return SETTINGS[name].default


def config_default(setting: Setting) -> Any:
    """The default as a config spells it: ``unset`` for None, a list for a tuple."""
    if setting.default is None and setting.config is not None:
        return setting.unset
    return list(setting.default) if isinstance(setting.default, tuple) else setting.default


def from_config(setting: Setting, value: Any) -> Any:
    """A config's value as the spec takes it: ``unset`` is None, a list is a tuple."""
    if setting.unset is not None and value == setting.unset:
        return None
    return tuple(value) if isinstance(value, list) else value


def check_value(where: str, setting: Setting, value: Any) -> Any:
    """Check ``value`` of ``setting`` (type, 64-bit integers, choices, range) and return it (a
    float for a float setting, a list for a list). ``where`` starts the message of the
    :class:`ConfigError` (``"t.toml: network.lr"`` or ``"lr"``)."""
    expected = TYPE_NAMES[setting.type]
    is_sequence = isinstance(value, list | tuple)
    if setting.type in ("ints", "int|ints") and is_sequence:
        if not value:
            raise ConfigError(f"{where} must be a non-empty {expected}")
        for i, item in enumerate(value):
            if item is None and setting.optional_items:
                continue
            if not is_int(item):
                raise ConfigError(f"{where}[{i}] must be an integer, got {short(item)}")
            _check_range(f"{where}[{i}]", setting, item)
        return list(value)
    if setting.type == "floats":
        if setting.unset is not None and value == setting.unset:
            return list(value)
        if not is_sequence:
            raise ConfigError(f"{where} must be a {expected}, got {short(value)}")
        if not value:
            raise ConfigError(f"{where} must be a non-empty {expected}")
        return [check_value(f"{where}[{i}]", Setting("float", None, "", **_bounds(setting)), item)
                for i, item in enumerate(value)]
    if setting.type == "str|strs" and is_sequence:
        if not value:
            raise ConfigError(f"{where} must be a non-empty {expected}")
        return check_value(where, replace(setting, type="strs"), value)
    if setting.type == "strs":
        if not is_sequence or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a {expected}, got {short(value)}")
        for i, item in enumerate(value):
            check_text(f"{where}[{i}]", item)
        return list(value)
    if setting.type == "ints":
        raise ConfigError(f"{where} must be a {expected}, got {short(value)}")
    if setting.type in ("int", "int|ints"):
        if not is_int(value):
            if isinstance(value, list):
                raise ConfigError(f"{where} must be one {expected}; a list here is a sweep, which "
                                  "expand_sweep() resolves first")
            raise ConfigError(f"{where} must be an {expected}, got {short(value)}")
    elif setting.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a {expected}, got {short(value)}")
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            raise ConfigError(f"{where} must be finite, got {short(value)}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
    elif setting.type in ("str", "str|strs"):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a {expected}, got {short(value)}")
        check_text(where, value)
    elif setting.type == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {short(value)}")
    allowed = setting.allowed
    if allowed is not None and value not in allowed:
        shown = [c for c in allowed if c != ""]
        raise ConfigError(f"{where} must be one of {shown}, got {value!r}")
    _check_range(where, setting, value)
    return value


def _bounds(setting: Setting) -> dict:
    return {key: getattr(setting, key) for key in ("minimum", "exclusive_minimum", "maximum",
                                                   "exclusive_maximum")}


def _check_range(where: str, setting: Setting, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise ConfigError(f"{where} must fit in 64 bits ({INT_MIN} .. {INT_MAX}: run checkpoints "
                          f"store it as int64), got {short(value)}")
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{where} must be >= {setting.minimum}, got {value!r}")
    if setting.exclusive_minimum is not None and value <= setting.exclusive_minimum:
        raise ConfigError(f"{where} must be > {setting.exclusive_minimum}, got {value!r}")
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(f"{where} must be <= {setting.maximum}, got {value!r}")
    if setting.exclusive_maximum is not None and value >= setting.exclusive_maximum:
        raise ConfigError(f"{where} must be < {setting.exclusive_maximum}, got {value!r}")


def check_text(where: str, value: str) -> None:
    if "\0" in value:
        raise ConfigError(f"{where} must not contain a NUL character, got {value!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kind(value: Any) -> str:
    """What a TOML value is, in TOML's words."""
    if isinstance(value, list):
        return "an array of tables" if value and all(isinstance(v, dict) for v in value) \
            else "an array"
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            dict: "a table"}.get(type(value), type(value).__name__)


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 10**400 or a huge list stays readable)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except ValueError:  # holds an integer too long to print
        return f"{kind(value)} holding an integer of thousands of digits"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."
