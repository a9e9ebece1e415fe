"""Experiment configs: the documented TOML schema, validation that names the offending key and why,
sweeps (list values form a Cartesian product), ``--set key=value`` overrides and the built-in
named configs shipped inside the package.

A config has top-level ``name`` and ``description`` and five sections: ``[network]`` (what to build
and how it learns), ``[data]`` (dataset and stream), ``[run]`` (length, evaluation, seed,
checkpoints), ``[backend]`` (where and how asynchronously the agents run) and ``[sweep]`` (where
the members of a sweep run: it changes no run's numbers, and cannot itself be swept). :data:`SCHEMA` holds
the defaults, types and the documentation printed by ``coagents configs --schema``; its network
keys (and ``backend.update_every``, ``backend.units_per_actor``) are derived from the one table of
network settings, ``core.settings.SETTINGS``, and checked by its ``check_value``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from async_coagents.core.settings import (
    LIST_VALUED,
    SETTINGS,
    TYPE_NAMES,
    Setting,
    check_value,
    config_default,
    kind,
    short,
)
from async_coagents.errors import ConfigError
from async_coagents.experiment.footprint import check_fits, estimated_spec

#: One config key: its type, default, allowed values or range, and what it means. The network's
#: keys are the settings of ``core.settings`` (one definition for config and spec); the other
#: sections' keys are declared here.
Key = Setting


def _key(name: str) -> Key:
    """The config key of setting ``name``: the same definition, the default as a config spells
    it (``""`` or ``0`` for None, a list for a tuple)."""
    setting = SETTINGS[name]
    return replace(setting, default=config_default(setting))


def _derived(section: str, config_only: dict[str, tuple[str, Key]]) -> dict[str, Key]:
    """The keys of ``section`` derived from :data:`~async_coagents.core.settings.SETTINGS`, with
    each ``config_only`` key ``{name: (after, key)}`` placed after the key it belongs to."""
    keys = {setting.config.split(".")[1]: _key(name) for name, setting in SETTINGS.items()
            if setting.config is not None and setting.config.split(".")[0] == section}
    for extra, (after, key) in config_only.items():
        names = list(keys)
        names.insert(names.index(after) + 1, extra)
        keys = {n: key if n == extra else keys[n] for n in names}
    return keys


#: Config-level spellings that ``workload.network_spec`` turns into spec fields: epochs become
#: batches (reinforce_epochs -> reinforce_updates, subset_redraw -> subset_every, staged ->
#: freeze_at) once the data says how many batches an epoch has.
_NETWORK_CONFIG_ONLY = {
    "reinforce_epochs": ("reinforce_updates", Key(
        "int", 0, "the same in epochs of the stream (the paper's epochsReinforce); exclusive "
        "with reinforce_updates", minimum=0)),
    "subset_redraw": ("subset", Key("str", "batch", "redraw the subset every batch or every epoch",
                                    choices=("batch", "epoch"))),
    "staged": ("subset_redraw", Key("bool", False, "freeze layers bottom-up on the paper's "
                                    "schedule over run.epochs (§2.4)")),
}

SCHEMA: dict[str, dict[str, Key]] = {
    "network": _derived("network", _NETWORK_CONFIG_ONLY),
    "data": {
        "dataset": Key("str", "multiplexer", "multiplexer, correlated (generated, no download), "
                       "fashion-mnist or mnist",
                       choices=("multiplexer", "correlated", "fashion-mnist", "mnist")),
        "stream": Key("str", "", "uniform (i.i.d. draws), shuffled (i.i.d. epochs), class-blocked, "
                      "or correlated; empty = the dataset's natural stream",
                      choices=("", "uniform", "shuffled", "class-blocked", "correlated")),
        "batch": Key("int", 32, "examples per minibatch (episodes per batch id)", minimum=1),
        "address_bits": Key("int", 2, "multiplexer address bits (2 = the 6-bit multiplexer)",
                            minimum=1, maximum=4),
        "difficulty": Key("float", 0.0, "correlated stream: d in [0, 1] (§5.3)", minimum=0,
                          maximum=1),
        "means": Key("int", 200, "correlated stream: M mean-blocks", minimum=1),
        "segments": Key("int", 1600, "correlated stream: S batches per mean-block", minimum=1),
        "run_length": Key("int", 10, "class-blocked stream: batches per class block", minimum=1),
        "purity": Key("float", 1.0, "class-blocked stream: share of examples from the block's "
                      "class (0 = i.i.d., 1 = one class at a time)", minimum=0, maximum=1),
        "data_dir": Key("str", "", "where to look for dataset files first (then "
                        "$COAGENTS_DATA_DIR, then /usr/share/datasets)"),
    },
    "run": {
        "updates": Key("int", 0, "updates (batches) to train; 0 = from epochs or the stream's "
                       "length", minimum=0),
        "epochs": Key("int", 0, "epochs of a shuffled or fixed-length stream; 0 = use updates",
                      minimum=0),
        "eval_every": Key("int", 0, "updates between evaluations; 0 = once per epoch, per "
                          "mean-block, or 20 times per run", minimum=0),
        "eval_train": Key("bool", False, "also evaluate on the training split (the paper does; "
                          "costs a pass over it)"),
        "seed": Key("int", 0, "seed of every random stream (data, init, sampling)", minimum=0),
        "replicas": Key("int", 1, "R > 1: train the seeds run.seed .. run.seed + R - 1 as one "
                        "network of R replicas on a leading array axis (bit for bit the R separate "
                        "runs, each in its own run directory of a sweep; sets sweep.replicas)",
                        minimum=1),
        "checkpoint_every": Key("int", 0, "updates between checkpoints; 0 = at every evaluation",
                                minimum=0),
        "record_grad_variance": Key("bool", False, "record grad_variance in metrics.jsonl: per "
                                    "layer agent, the trace of the covariance of its per-example "
                                    "gradient estimates, mean over the batches since the last "
                                    "evaluation (None for a partition group or a read-out)"),
        "online_metrics": Key("bool", False, "online metrics (experiment/online.py): every "
                              "metrics row gets the prequential (test-then-train) loss and "
                              "accuracy of the run so far and the accuracy since the last row; "
                              "a class-blocked stream also writes blocks.jsonl: per-class test "
                              "accuracy after every block, forgetting (Avalanche) and backward "
                              "transfer (GEM); the correlated stream the same with each "
                              "mean-block's own test MSE"),
        "pretrain_updates": Key("int", 0, "backprop pre-training updates, then copy and SGD with "
                                "lr/128 (§5.4)", minimum=0),
        "diverge_factor": Key("float", 1000.0, "the run stops as diverged at a training loss that "
                              "is not finite or above max(1e6, this x the step-0 evaluation "
                              "loss); 0 = only a loss that is not finite", minimum=0),
    },
    "backend": {
        "kind": Key("str", "local", "local (in process, deterministic) or ray (one actor per "
                    "layer)", choices=("local", "ray")),
        "window": Key("int", 1, "batches in flight at once", minimum=1),
        "reward_delay": Key("int|ints", 0, "the reward of batch t arrives after the forward of "
                            "batch t+D: one D for every layer agent, or one per layer agent "
                            "(bottom to top, e.g. its distance from the output); a sweep of "
                            "per-layer delays is a list of lists", minimum=0),
        "schedule": Key("str", "ordered", "ordered (the coordinator's fixed order of window "
                        "and reward_delay: deterministic), free (ray: a reward is delivered when "
                        "its prediction arrives and a batch is forwarded when the first layer took "
                        "the previous one; not reproducible, the order is recorded) or replay "
                        "(send a free run's recorded order again: backend.replay)",
                        choices=("ordered", "free", "replay")),
        "free_rate": Key("float", 0.0, "schedule = free: batches per second the stream sends; "
                         "0 = as fast as the first layer takes them", minimum=0),
        "replay": Key("str", "", "schedule = replay: the recorded schedule to send again (a free "
                      "run's schedule.ckpt; `coagents replay RUN_DIR` sets it)"),
        "update_every": _key("update_every"),
        "fire": _key("fire"),
        "units_per_actor": _key("units_per_agent"),
        "address": Key("str", "", "Ray cluster address; empty = start a local Ray instance"),
        "placement": Key("str", "default", "where Ray places the layer actors: default (Ray "
                         "decides), nodes (layer i on the i-th node, round robin; elsewhere if that "
                         "node dies), spread (Ray spreads, best effort) or resources (layer i needs "
                         "the custom resource node_resources[i], a hard constraint)",
                         choices=("default", "nodes", "spread", "resources")),
        "node_resources": Key("strs", [], "placement = resources: one custom resource name per "
                              "layer (declared with `ray start --resources`)"),
        "max_restarts": Key("int", -1, "ray: restarts of a dead layer actor (-1 = no limit, "
                            "0 = none); a restarted actor continues from its own checkpoint",
                            minimum=-1),
        "checkpoint_every": Key("int", 200, "ray: each layer actor saves its state every this "
                                "many updates (and at every run checkpoint); 0 = run "
                                "checkpoints only. A trade: each save writes the agent's state; "
                                "the driver keeps the messages since the last one, to send "
                                "them again to a restarted actor", minimum=0),
        "checkpoint_dir": Key("str", "", "ray: where layer actors save (shared storage on a "
                              "cluster); empty = <run directory>/agents"),
    },
    "sweep": {
        "executor": Key("str", "local", "where a sweep's members run: local (in this process, one "
                        "after another; local processes when jobs > 1), processes (local worker "
                        "processes) or ray (Ray tasks on the cluster at sweep.address; the sweep "
                        "directory must be on storage every node sees)",
                        choices=("local", "processes", "ray")),
        "jobs": Key("int", 0, "members run at once (coagents train --jobs N; local with N > 1 "
                    "runs local processes); 0 = the executor's own: local one at a time, processes "
                    "one per CPU of this machine, ray as many as the cluster's CPUs hold",
                    minimum=0),
        "cpus_per_member": Key("float", 1.0, "ray: the CPUs Ray reserves for each member's task",
                               exclusive_minimum=0),
        "max_retries": Key("int", 2, "processes and ray: times a member whose worker died (killed, "
                           "out of memory, its node removed) is resumed from its own last "
                           "checkpoint before it is marked failed", minimum=0),
        "address": Key("str", "", "ray: the cluster the members run on; empty = a private local "
                       "Ray instance"),
        "replicas": Key("int", 1, "members that differ only in run.seed run up to this many at a "
                        "time as one network of replicas (experiment/replicated.py; the numbers "
                        "are those of separate runs)", minimum=1),
    },
}
TOP_LEVEL = {"name": Key("str", "experiment", "name of the experiment, one path component: letters, "
                         "digits, '.', '_' and '-', starting with a letter or digit, at most 100 "
                         "characters (run directories are named after it)"),
             "description": Key("str", "", "one line saying what the experiment shows")}
SECTIONS = tuple(SCHEMA)
#: Sections that say where runs execute, never what they compute: not sweep axes, and not part of
#: what makes two runs (or a run and its checkpoint) the same experiment.
EXECUTION_SECTIONS = ("sweep",)
#: A run name is one safe path component (it names directories under runs/ and sweep members).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: The most runs one sweep may expand to (the product of its axes is checked before expanding).
MAX_SWEEP_RUNS = 10_000


def defaults() -> dict:
    """A complete config holding every default."""
    config = {key: k.default for key, k in TOP_LEVEL.items()}
    for section, keys in SCHEMA.items():
        config[section] = {key: copy.deepcopy(k.default) for key, k in keys.items()}
    return config


# ---- loading ---------------------------------------------------------------------------------
def builtin_names() -> list[str]:
    """The built-in config names (files shipped in ``async_coagents/experiment/configs``)."""
    folder = resources.files("async_coagents.experiment") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_config(source: str | Path) -> tuple[dict, str]:
    """Read a built-in config by name, or a TOML file by path: ``(raw dict, where from)``.

    A config file is UTF-8 TOML; anything else (unreadable, not UTF-8, not TOML, nested deeper
    than the parser can follow) is a :class:`ConfigError` naming the file.
    """
    if "\0" in str(source):
        raise ConfigError(f"config {str(source)!r}: a file name cannot contain a NUL character")
    path = Path(source)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} " + (
                "is not a file" if path.exists() else "does not exist"))
        origin = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    else:
        if source not in builtin_names():
            raise ConfigError(
                f"no built-in config called {source!r} and no such file; built-in configs: "
                f"{', '.join(builtin_names())}"
            )
        folder = resources.files("async_coagents.experiment") / "configs"
        data, origin = (folder / f"{source}.toml").read_bytes(), f"built-in {source}"
    return parse_toml(data, origin), origin


def parse_toml(data: bytes, origin: str) -> dict:
    """The table of a TOML document given as bytes; ``origin`` names it in errors."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin}: not UTF-8 text (a TOML file is UTF-8): byte "
                          f"0x{data[exc.start]:02x} at offset {exc.start} is {exc.reason}") from None
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: a decimal of > 4300 digits
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: not a usable config: arrays or tables nested too deeply") \
            from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """``section.key=value`` -> ``(dotted key, value)``; the value is read as TOML (numbers,
    booleans, lists, quoted strings) and otherwise taken as a bare string."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, text = (part.strip() for part in assignment.split("=", 1))
    if not key:
        raise ConfigError(f"--set {assignment!r}: the key before '=' is empty; use section.key=value")
    try:
        parsed = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        parsed = {}
    # one TOML value, or else the bare string (never extra keys smuggled in after a newline)
    value = parsed["v"] if list(parsed) == ["v"] else text
    return key, value


def apply_overrides(raw: dict, overrides: list[str], origin: str = "config") -> dict:
    """A copy of ``raw`` (read from ``origin``) with each ``--set section.key=value`` applied."""
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        key, value = parse_override(assignment)
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in TOP_LEVEL:
            raw[parts[0]] = value
            continue
        if len(parts) != 2 or parts[0] not in SCHEMA:
            raise ConfigError(
                f"--set {key}: keys are section.key with section one of {list(SCHEMA)} "
                f"(or a top-level {list(TOP_LEVEL)})"
            )
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{origin}: [{parts[0]}] must be a table, got {kind(section)} "
                              f"{short(section)}, so --set {key} has nowhere to go")
        section[parts[1]] = value
    return raw


# ---- sweeps ----------------------------------------------------------------------------------
def expand_sweep(raw: dict, origin: str = "config") -> list[tuple[dict, dict]]:
    """Every combination of the sweep axes: ``[(config, {dotted key: value}), ...]``.

    A list where the schema expects one value is a sweep axis; for list-valued keys (``hidden``)
    a list of lists is. ``run.seed = [0, 1, 2]`` runs three seeds. Raises :class:`ConfigError`
    for a section that is not a table, an empty or nested sweep, and a sweep of more than
    :data:`MAX_SWEEP_RUNS` runs.
    """
    check_tables(raw, origin)
    raw = _replicas_as_seeds(raw, origin)
    axes: list[tuple[str, list]] = []
    for section, keys in SCHEMA.items():
        for key, value in (raw.get(section) or {}).items():
            spec = keys.get(key)
            if spec is None:
                continue  # reported by validate()
            if _is_sweep(spec, value):
                if section in EXECUTION_SECTIONS:
                    raise ConfigError(f"{origin}: {section}.{key} is a list, but [{section}] says "
                                      "how a sweep runs, not what it runs: it cannot be a sweep "
                                      "axis")
                _check_axis(f"{origin}: {section}.{key}", spec, value)
                axes.append((f"{section}.{key}", value))
    if not axes:
        return [(raw, {})]
    n_runs = math.prod(len(values) for _, values in axes)
    if n_runs > MAX_SWEEP_RUNS:
        shape = " x ".join(f"{dotted} ({len(values)})" for dotted, values in axes)
        raise ConfigError(f"{origin}: the sweep {shape} makes {n_runs} runs, more than the "
                          f"{MAX_SWEEP_RUNS} one sweep may hold")
    combos = []
    for values in itertools.product(*(v for _, v in axes)):
        config = copy.deepcopy(raw)
        point = {}
        for (dotted, _), value in zip(axes, values, strict=True):
            section, key = dotted.split(".")
            config[section][key] = value
            point[dotted] = value
        combos.append((config, point))
    return combos


def _replicas_as_seeds(raw: dict, origin: str) -> dict:
    """``run.replicas = R`` is the sweep ``run.seed = [seed .. seed + R - 1]`` packed R at a time
    (``sweep.replicas = R``, unless set); each member is a plain run (``run.replicas = 1``)."""
    run = raw.get("run") or {}
    replicas = run.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas <= 1:
        return raw  # 1, or an error validate() names
    seed = run.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{origin}: run.replicas = {replicas} trains the seeds run.seed .. "
                          f"run.seed + {replicas - 1}; run.seed must then be one integer >= 0, "
                          f"got {seed!r} (to pack a sweep of seeds, set sweep.replicas)")
    raw = copy.deepcopy(raw)
    raw["run"].update(seed=list(range(seed, seed + replicas)), replicas=1)
    sweep = raw.setdefault("sweep", {})
    sweep.setdefault("replicas", replicas)
    return raw


def check_tables(raw: Any, origin: str) -> None:
    """The shape every later step relies on: the config is a table and each section is a table
    (``network = 5`` and ``[[network]]`` are not)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a config is a TOML table, got {kind(raw)}")
    for section in SCHEMA:
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"{origin}: [{section}] must be a table, got {kind(raw[section])} "
                              f"{short(raw[section])}")


def _is_sweep(spec: Key, value: Any) -> bool:
    if not isinstance(value, list):
        return False
    if spec.type in LIST_VALUED:  # a list is the value; a list of lists a sweep
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _check_axis(where: str, spec: Key, values: list) -> None:
    """A sweep axis lists values of the key, one level deep (no lists of sweeps)."""
    if not values:
        raise ConfigError(f"{where}: an empty list is not a sweep")
    for i, value in enumerate(values):
        items = value if spec.type in LIST_VALUED else [value]
        if any(isinstance(item, list | dict) for item in items):
            raise ConfigError(f"{where}: sweep value [{i}] is {short(value)}; a sweep lists "
                              f"single values of the key ({TYPE_NAMES[spec.type]}), not "
                              "nested lists or tables")


# ---- validation ------------------------------------------------------------------------------
def validate(raw: dict, origin: str = "config") -> dict:
    """Check one (non-sweep) config against :data:`SCHEMA` and fill the defaults.

    Raises :class:`ConfigError` naming the key and why: unknown key or section, wrong type,
    impossible value, an integer beyond 64 bits, a name that is not one path component, a run
    that cannot fit in this machine's memory (``footprint.check_fits``), a network that
    ``NetworkSpec`` rejects (its combination rules, reported as ``[network] ...``).
    """
    check_tables(raw, origin)
    config = defaults()
    for key, value in raw.items():
        if key in TOP_LEVEL:
            config[key] = _check(key, TOP_LEVEL[key], value, origin)
        elif key in SCHEMA:
            for sub, sub_value in value.items():
                spec = SCHEMA[key].get(sub)
                if spec is None:
                    raise ConfigError(
                        f"{origin}: unknown key {key}.{sub}{_suggest(sub, SCHEMA[key])}; "
                        f"known keys of [{key}]: {', '.join(SCHEMA[key])}"
                    )
                config[key][sub] = _check(f"{key}.{sub}", spec, sub_value, origin)
        else:
            raise ConfigError(
                f"{origin}: unknown key or section {key!r}{_suggest(key, {**SCHEMA, **TOP_LEVEL})}; "
                f"sections: {', '.join(SCHEMA)}; top-level keys: {', '.join(TOP_LEVEL)}"
            )
    if not NAME_PATTERN.fullmatch(config["name"]):
        raise ConfigError(f"{origin}: name {config['name']!r} must be one path component: "
                          "letters, digits, '.', '_' and '-', starting with a letter or digit, "
                          "at most 100 characters")
    _check_combinations(config, origin)
    _check_network(config, origin)
    check_fits(config, origin)
    return config


def _check(dotted: str, spec: Key, value: Any, origin: str) -> Any:
    return check_value(f"{origin}: {dotted}", spec, value)


def _check_combinations(config: dict, origin: str) -> None:
    """Rules that involve several keys (single keys are checked by the schema)."""
    net, data, run, backend = (config[s] for s in ("network", "data", "run", "backend"))
    natural = {"multiplexer": "uniform", "correlated": "correlated", "fashion-mnist": "shuffled",
               "mnist": "shuffled"}[data["dataset"]]
    stream = data["stream"] or natural
    if (data["dataset"] == "correlated") != (stream == "correlated"):
        raise ConfigError(f"{origin}: data.stream 'correlated' goes with data.dataset 'correlated' "
                          f"only (got dataset {data['dataset']!r}, stream {stream!r})")
    if run["updates"] and run["epochs"]:
        raise ConfigError(f"{origin}: set run.updates or run.epochs, not both")
    endless = stream in ("uniform", "class-blocked")
    if endless and not run["updates"]:
        raise ConfigError(f"{origin}: a {stream} stream is endless: set run.updates")
    if stream == "correlated" and run["epochs"]:
        raise ConfigError(f"{origin}: the correlated stream is one pass; use run.updates to stop "
                          "early, not run.epochs")
    if net["staged"] and not run["epochs"]:
        raise ConfigError(f"{origin}: network.staged follows the paper's schedule over epochs: "
                          "set run.epochs")
    if net["reinforce_updates"] and net["reinforce_epochs"]:
        raise ConfigError(f"{origin}: set network.reinforce_updates or network.reinforce_epochs, "
                          "not both")
    if (net["subset_redraw"] == "epoch" or net["reinforce_epochs"]) and stream not in (
            "shuffled",):
        raise ConfigError(f"{origin}: epochs-based network settings need a shuffled stream")
    if backend["placement"] == "resources" and not backend["node_resources"]:
        raise ConfigError(f"{origin}: backend.placement = 'resources' needs "
                          "backend.node_resources (one resource name per layer)")
    # a config-level rule: NetworkSpec, for library users, ignores them for other unit families
    if net["units"] != "categorical" and (net["n_actions"] != 2 or net["normalisation"] != "unit"):
        raise ConfigError(f"{origin}: network.n_actions and network.normalisation apply to "
                          f"categorical units only, and network.units is {net['units']!r}")
    if backend["address"] and backend["kind"] != "ray":
        raise ConfigError(f"{origin}: backend.address ({backend['address']!r}) is for the Ray "
                          f"backend, and backend.kind is {backend['kind']!r}")
    _check_schedule(backend, config["sweep"]["replicas"], origin)
    longest = max(delays(backend["reward_delay"]))
    if longest >= backend["window"]:
        raise ConfigError(f"{origin}: backend.reward_delay ({backend['reward_delay']}) needs "
                          f"backend.window >= {longest + 1} batches in flight "
                          f"(window is {backend['window']})")
    if data["dataset"] == "correlated" and data["means"] * data["segments"] * data["batch"] < 100:
        raise ConfigError(f"{origin}: the correlated evaluation sets hold data.means x "
                          "data.segments x data.batch / 100 points, and "
                          f"{data['means']} x {data['segments']} x {data['batch']} / 100 is less "
                          "than one: make the product at least 100")
    sweep = config["sweep"]
    if sweep["address"] and sweep["executor"] != "ray":
        raise ConfigError(f"{origin}: sweep.address ({sweep['address']!r}) is for the Ray "
                          f"executor, and sweep.executor is {sweep['executor']!r}")
    if backend["units_per_actor"] and run["pretrain_updates"]:
        raise ConfigError(f"{origin}: backend.units_per_actor cannot be combined with "
                          "run.pretrain_updates (pre-training copies whole layers)")


def _check_schedule(backend: dict, replicas: int, origin: str) -> None:
    """backend.schedule with the keys it goes with (and runs that are not replicas)."""
    schedule = backend["schedule"]
    if schedule != "ordered" and replicas > 1:
        raise ConfigError(f"{origin}: backend.schedule = {schedule!r} records or replays the "
                          "message order of one run: set sweep.replicas = 1 (run.replicas trains "
                          "replicas)")
    if schedule == "free" and backend["kind"] != "ray":
        raise ConfigError(f"{origin}: backend.schedule = 'free' runs on the Ray backend (in "
                          "process every reply is there at once: that is the synchronous "
                          "schedule); set backend.kind = 'ray'")
    if schedule != "ordered" and any(delays(backend["reward_delay"])):
        raise ConfigError(f"{origin}: backend.reward_delay ({backend['reward_delay']}) is the "
                          f"ordered schedule's; with backend.schedule = {schedule!r} each reward "
                          "comes when it comes (free) or when it came (replay)")
    if schedule == "replay" and not backend["replay"]:
        raise ConfigError(f"{origin}: backend.schedule = 'replay' needs backend.replay, a free "
                          "run's recorded schedule (coagents replay RUN_DIR sets it)")
    if schedule != "replay" and backend["replay"]:
        raise ConfigError(f"{origin}: backend.replay ({backend['replay']!r}) goes with "
                          f"backend.schedule = 'replay', and it is {schedule!r}")
    if schedule != "free" and backend["free_rate"]:
        raise ConfigError(f"{origin}: backend.free_rate goes with backend.schedule = 'free', "
                          f"and it is {schedule!r}")


def _check_network(config: dict, origin: str) -> None:
    """The network's combination rules, written once in :class:`NetworkSpec`, reached here by
    constructing the spec with the sizes the data config implies (``footprint.estimated_spec``;
    no data is loaded)."""
    try:
        spec = estimated_spec(config)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: [network] {exc}") from None
    delay = config["backend"]["reward_delay"]
    agents = len(spec.layer_plan())
    if not isinstance(delay, int) and len(delay) != agents:
        raise ConfigError(f"{origin}: backend.reward_delay needs one entry per layer agent "
                          f"({agents}, bottom to top), got {len(delay)}")


def delays(reward_delay: int | list[int]) -> list[int]:
    """The delays of ``backend.reward_delay``: one for all layer agents, or one each."""
    return [reward_delay] if isinstance(reward_delay, int) else list(reward_delay)


def _suggest(key: str, known: dict) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load(source: str | Path, overrides: list[str] | None = None) -> list[tuple[dict, dict]]:
    """Read, override, expand and validate: ``[(validated config, sweep point), ...]``."""
    raw, origin = read_config(source)
    raw = apply_overrides(raw, overrides or [], origin)
    return [(validate(config, origin), point) for config, point in expand_sweep(raw, origin)]


def schema_text() -> str:
    """The schema as readable text (``coagents configs --schema``)."""
    lines = []
    for key, spec in TOP_LEVEL.items():
        lines.append(f"{key} ({TYPE_NAMES[spec.type]}, default {spec.default!r}): {spec.doc}")
    for section, keys in SCHEMA.items():
        lines.append(f"\n[{section}]")
        for key, spec in keys.items():
            extra = f"; one of {[c for c in spec.allowed if c]}" if spec.allowed else ""
            lines.append(f"  {key} ({TYPE_NAMES[spec.type]}, default {spec.default!r}{extra})")
            lines.append(f"      {spec.doc}")
    lines.append("\nA list where one value is expected is a sweep (a list of lists for list keys);")
    lines.append("the runs are the Cartesian product of all sweep axes, e.g. run.seed = [0, 1, 2].")
    return "\n".join(lines)
