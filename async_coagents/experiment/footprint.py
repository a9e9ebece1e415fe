"""What a validated config will allocate, estimated before anything is built, and the check that
it fits in this machine's memory; plus the backstop that turns a ``MemoryError`` while building
into a :class:`ConfigError`. The layer agents and critics counted are those of the
``NetworkSpec.layer_plan`` the config implies (:func:`estimated_spec`: sizes from the data config,
nothing loaded).

The estimate is an upper bound of the big arrays, not an accounting of every byte:

* parameters x dtype size, for every layer agent, critic and the pre-training twin, times the
  copies of a parameter vector that exist at once (weights, gradient, optimizer scratch and
  moments, the accumulated step of a slow clock, the state and the encoded bytes of a checkpoint);
* batch x layer widths x dtype size, for every batch in flight (at most ``backend.window``, at most
  the 1,024 a layer remembers) and for an evaluation chunk of 8,192 examples;
* the data the run generates or loads (the correlated stream's evaluation sets of
  ``means * segments * batch / 100`` points, a stream chunk, the multiplexer's truth table).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from async_coagents.core.network import NetworkSpec
from async_coagents.core.rules import RULES
from async_coagents.data.datasets import IMAGE_SHAPE, N_CLASSES
from async_coagents.errors import ConfigError
from async_coagents.experiment.workload import spec_fields

#: Images of the official MNIST / Fashion-MNIST files (60,000 training and 10,000 test).
IDX_IMAGES = 70_000
#: Examples per evaluation chunk (``core.metrics.evaluate``) and batches a layer remembers.
EVAL_CHUNK, MAX_PENDING = 8192, 1024
#: Samples a stream draws at once (``data.streams.CHUNK_SAMPLES``).
STREAM_CHUNK = 1 << 15
_OPTIMIZER_SLOTS = {"sgd": 0, "rmsprop": 1, "adam": 2}


@dataclass(frozen=True)
class Part:
    """One share of the estimate: the keys that set it, their values, what it is, its bytes."""

    keys: tuple[str, ...]
    what: str
    bytes: int


def estimate(config: dict) -> list[Part]:
    """The estimated allocations of a validated ``config``, largest first."""
    net, data, backend = config["network"], config["data"], config["backend"]
    n_in, n_out, n_eval, data_bytes = data_shape(data)
    item = np.dtype(net["dtype"]).itemsize
    slots = _OPTIMIZER_SLOTS[net["optimizer"]]
    slow_clock = backend["update_every"] != 1
    copies = 3 + slots + int(slow_clock) + 2 * (1 + slots)
    layers, critics = _plan(estimated_spec(config))
    if config["run"]["pretrain_updates"]:
        layers.append([n_in, *net["hidden"], n_out])
    batch = data["batch"]
    in_flight = min(backend["window"], MAX_PENDING) + 1
    widths = sum(sum(sizes) for sizes in layers)
    critic_widths = sum(w for _, w in critics)
    parts = [
        Part(("network.hidden",), "of parameters and optimizer state",
             sum(_n_params(s) for s in layers) * item * copies),
        Part(("network.critic_units", "network.critic_layers"),
             "of critic parameters and optimizer state", sum(p for p, _ in critics) * item * copies),
        Part(("network.hidden", "data.batch", "backend.window"),
             "of activations of the batches in flight",
             batch * (3 * widths + critic_widths) * item * in_flight),
        Part(("network.hidden",), "of activations of an evaluation chunk",
             min(n_eval, EVAL_CHUNK) * widths * item * 2),
        Part(_data_keys(data), "of data", data_bytes + max(batch, STREAM_CHUNK) * 24),
    ]
    return sorted((p for p in parts if p.bytes), key=lambda p: -p.bytes)


def estimated_spec(config: dict) -> NetworkSpec:
    """The :class:`NetworkSpec` of a validated ``config`` with the sizes its data config implies
    (:func:`data_shape`; nothing is loaded). Epoch-based settings count one batch per epoch: they
    change no size and no valid combination. Raises the spec's :class:`ConfigError`."""
    n_inputs, n_outputs, _, _ = data_shape(config["data"])
    task = "regression" if config["data"]["dataset"] == "correlated" else "classification"
    return NetworkSpec(**spec_fields(config, n_inputs, n_outputs, task, batches_per_epoch=1))


def check_fits(config: dict, origin: str, limit: int | None = None) -> None:
    """Raise :class:`ConfigError` if the estimate of ``config`` exceeds ``limit`` bytes (default:
    this machine's physical memory; no check where it cannot be read)."""
    limit = physical_memory() if limit is None else limit
    if limit is None:
        return
    parts = estimate(config)
    total = sum(p.bytes for p in parts)
    if total <= limit:
        return
    shown = "; ".join(f"{_values(config, p.keys)}: {human(p.bytes)} {p.what}" for p in parts[:3])
    raise ConfigError(f"{origin}: the run would allocate an estimated {human(total)} ({shown}), "
                      f"more than the {human(limit)} of memory of this machine; make "
                      f"{' or '.join(parts[0].keys)} smaller")


@contextmanager
def memory_backstop(what: str) -> Iterator[None]:
    """Turn a ``MemoryError`` (numpy's ``_ArrayMemoryError`` too) raised while building ``what``
    into a :class:`ConfigError`: the estimate of :func:`check_fits` let through a run that does
    not fit after all."""
    try:
        yield
    except MemoryError as exc:
        raise ConfigError(f"not enough memory to build {what} ({exc or 'MemoryError'}); make "
                          "network.hidden, network.critic_units or data.batch smaller") from None


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def human(n: int) -> str:
    """``n`` bytes as a short readable size (``56.0 GB``)."""
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# ---- the pieces ----------------------------------------------------------------------------
def data_shape(data: dict) -> tuple[int, int, int, int]:
    """(inputs, outputs, examples of the largest evaluation set, bytes of the data)."""
    name = data["dataset"]
    if name == "multiplexer":
        n = data["address_bits"] + 2 ** data["address_bits"]
        return n, 2, 2**n, 2**n * n * 12  # the truth table: bits int64, x float32
    if name == "correlated":
        n_eval = data["means"] * data["segments"] * data["batch"] // 100
        return 1, 1, n_eval, 2 * n_eval * 16 + 16 * data["means"]
    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    return pixels, N_CLASSES, 10_000, IDX_IMAGES * pixels * 5  # uint8 files, float32 inputs


def _data_keys(data: dict) -> tuple[str, ...]:
    if data["dataset"] == "correlated":
        return "data.means", "data.segments", "data.batch"
    return ("data.batch",)


def _plan(spec: NetworkSpec) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """MLP sizes of every layer agent (``NetworkSpec.layer_plan``) and (parameters, summed
    widths) of every critic: one per stochastic layer above the bottom one, on its input and its
    units' actions, when the rule sends feedback."""
    plan = spec.layer_plan()
    has_critic = spec.learner == "coagent" and RULES[spec.rule].sends_feedback
    k = {"gaussian": 1, "bernoulli": 2, "categorical": spec.n_actions}[spec.units]
    critics = []
    for index, (kind, sizes) in enumerate(plan):
        if has_critic and index > 0 and kind in ("coagent", "gaussian-output"):
            n_units = sizes[-1] // (k if kind == "coagent" else 1)
            critics.append(_critic(sizes[0] + n_units, spec.critic_units, spec.critic_layers))
    return [sizes for _, sizes in plan], critics


def _critic(n_first: int, units: int, depth: int) -> tuple[int, int]:
    """(parameters, summed widths) of the MLP ``[n_first, units x depth, 1]``."""
    if depth == 0:
        return n_first + 1, n_first + 1
    params = (n_first * units + units) + (depth - 1) * (units * units + units) + units + 1
    return params, n_first + units * depth + 1


def _n_params(sizes: list[int]) -> int:
    return sum(i * o + o for i, o in itertools.pairwise(sizes))


def _values(config: dict, dotted: tuple[str, ...]) -> str:
    """``section.key = value`` for each key (long values cut)."""
    shown = []
    for key in dotted:
        section, name = key.split(".")
        text = repr(config[section][name])
        shown.append(f"{key} = {text if len(text) <= 40 else text[:37] + '...'}")
    return ", ".join(shown)
