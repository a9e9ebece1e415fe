"""What a validated config asks to train on and with: the data stream, the evaluation sets, the
run length and evaluation interval, and the :class:`NetworkSpec` completed with what only the data
knows (input and output sizes, batches per epoch for epoch-based settings)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from async_coagents.core import seeding
from async_coagents.core.network import NetworkSpec, staged_freeze_epochs
from async_coagents.core.settings import SETTINGS, from_config
from async_coagents.data import (
    ClassBlockedStream,
    CorrelatedStream,
    ShuffledEpochs,
    Split,
    Stream,
    UniformPatterns,
    load_dataset,
    multiplexer,
)
from async_coagents.errors import ConfigError

NATURAL_STREAM = {"multiplexer": "uniform", "correlated": "correlated",
                  "fashion-mnist": "shuffled", "mnist": "shuffled"}


@dataclass
class Workload:
    """The data side of a run."""

    stream: Stream
    eval_sets: dict[str, Split]
    task: str
    n_inputs: int
    n_outputs: int
    updates: int
    eval_every: int
    batches_per_epoch: int | None


def data_seed(seed: int) -> np.random.SeedSequence:
    """The data layer's seed: its own branch of the run seed, so data never depend on the model."""
    return np.random.SeedSequence(seed, spawn_key=(seeding.PURPOSES["data"],))


def build_workload(config: dict, data_dir: str | None = None) -> Workload:
    """Build the stream and evaluation sets of ``config`` (a validated config)."""
    data, run = config["data"], config["run"]
    seed = data_seed(run["seed"])
    dataset_name = data["dataset"]
    stream_kind = data["stream"] or NATURAL_STREAM[dataset_name]
    batch = data["batch"]
    batches_per_epoch = None
    if dataset_name == "correlated":
        stream = CorrelatedStream(data["difficulty"], data["means"], data["segments"], batch, seed)
        valid, test = stream.eval_sets()
        eval_sets = {"valid": valid, "test": test}
        task, n_inputs, n_outputs = "regression", 1, 1
        train = None
    else:
        if dataset_name == "multiplexer":
            dataset = multiplexer(data["address_bits"])
        else:
            dataset = load_dataset(dataset_name, data_dir or data["data_dir"] or None)
        train = dataset.train
        eval_sets = {"valid": dataset.valid, "test": dataset.test}
        task, n_inputs, n_outputs = dataset.kind, dataset.n_features, dataset.n_classes
        if stream_kind == "uniform":
            stream = UniformPatterns(train, batch, seed)
        elif stream_kind == "shuffled":
            stream = ShuffledEpochs(train, batch, run["epochs"] or None, seed)
            batches_per_epoch = stream.batches_per_epoch
        else:
            stream = ClassBlockedStream(train, batch, data["run_length"], data["purity"], seed,
                                        total_batches=run["updates"] or None)
    if run["eval_train"] and train is not None:
        eval_sets = {"train": train, **eval_sets}
    updates = run["updates"] or stream.total_batches
    if not updates:
        raise ConfigError("the run has no length: set run.updates or run.epochs")
    if stream.total_batches is not None and updates > stream.total_batches:
        raise ConfigError(f"run.updates = {updates} exceeds the stream's {stream.total_batches} "
                          "batches")
    eval_every = run["eval_every"] or _default_eval_every(config, updates, batches_per_epoch)
    return Workload(stream, eval_sets, task, n_inputs, n_outputs, updates, eval_every,
                    batches_per_epoch)


def _default_eval_every(config: dict, updates: int, batches_per_epoch: int | None) -> int:
    if batches_per_epoch:
        return batches_per_epoch  # once per epoch, as the paper (§5.1)
    if config["data"]["dataset"] == "correlated":
        data = config["data"]  # every ceil(M S / 200) updates: 201 points per run (§5.3)
        return max(1, -(-data["means"] * data["segments"] // 200))
    return max(1, updates // 20)


def spec_fields(config: dict, n_inputs: int, n_outputs: int, task: str,
                batches_per_epoch: int | None) -> dict:
    """The :class:`NetworkSpec` fields of ``config`` (all but ``freeze_at``): every setting a
    config holds copied from where ``core.settings`` says (``""`` / ``0`` read as None), the sizes
    given, and the config-level spellings turned into spec fields (epoch-based settings into
    batches of ``batches_per_epoch``)."""
    net = config["network"]
    fields = {}
    for name, setting in SETTINGS.items():
        if setting.config is not None:
            section, key = setting.config.split(".")
            fields[name] = from_config(setting, config[section][key])
    fields.update(
        n_inputs=n_inputs, n_outputs=n_outputs, task=task,
        subset_every=batches_per_epoch if net["subset_redraw"] == "epoch" else 1,
        reinforce_updates=net["reinforce_updates"]
        or net["reinforce_epochs"] * (batches_per_epoch or 0),
    )
    return fields


def network_spec(config: dict, workload: Workload) -> NetworkSpec:
    """The network of ``config`` for ``workload``: :func:`spec_fields` with the data's sizes and
    batches per epoch, and ``staged`` turned into ``freeze_at``."""
    per_epoch = workload.batches_per_epoch
    fields = spec_fields(config, workload.n_inputs, workload.n_outputs, workload.task, per_epoch)
    try:
        spec = NetworkSpec(**fields)
    except ConfigError as exc:
        raise ConfigError(f"[network] {exc}") from None
    if config["network"]["staged"]:
        n_hidden = sum(kind == "coagent" for kind, _ in spec.layer_plan())
        epochs = staged_freeze_epochs(config["run"]["epochs"], n_hidden)
        spec = NetworkSpec(**{**fields, "freeze_at": tuple(
            None if e is None else e * per_epoch for e in epochs)})
    return spec
