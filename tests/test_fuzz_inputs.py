"""Seeded, bounded fuzzers of the two input readers a user feeds files to: the IDX reader and
dataset loader (mutated headers, dimensions, truncations, gzip framing) and the TOML configs
(every built-in config with keys and sections dropped, duplicated and retyped, random byte edits,
huge and negative numbers), loaded and validated, a share of them built as a run builds them.

The outcome of every case must be a valid result or a project error (``CoagentsError``); any other
exception is a bug, reported with the case's seed and mutation so it can be replayed.
"""

import gzip
import math
import random
import struct
import tomllib
from importlib import resources

import numpy as np

from async_coagents.data import datasets
from async_coagents.data.datasets import IDX_FILES, load_dataset
from async_coagents.data.idx import IDX_DTYPES, read_idx
from async_coagents.errors import CoagentsError
from async_coagents.experiment import config as cfg
from async_coagents.experiment.footprint import estimate
from async_coagents.experiment.run import Run, RunDirectory

IDX_CASES = 400
LOADER_CASES = 80
TOML_CASES = 600
BUILD_SHARE = 0.3  # of the configs that validate, built as a run builds them (tiny ones only)
TINY_BYTES = 16 << 20


def _report(bugs: list[str], cases: int) -> str:
    return f"{len(bugs)} of {cases} cases raised a non-project exception:\n" + "\n".join(bugs[:8])


# ---- IDX ---------------------------------------------------------------------------------------
def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def _valid_idx(rng: random.Random) -> bytes:
    code = rng.choice(list(IDX_DTYPES))
    shape = tuple(rng.randint(0, 5) for _ in range(rng.randint(1, 4)))
    array = np.arange(math.prod(shape)).reshape(shape) % 100
    return _idx_bytes(array, code)


def _mutate_idx(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of an uncompressed IDX file, and its name (for the failure message)."""
    data = bytearray(data)
    ndim = data[3]
    kind = rng.choice(["header byte", "dimension", "ndim", "type code", "truncate", "append",
                       "payload byte", "huge dims", "none"])
    if kind == "header byte":
        data[rng.randrange(min(len(data), 4 + 4 * ndim))] = rng.randrange(256)
    elif kind == "dimension":
        i = rng.randrange(ndim)
        value = rng.choice([0, 1, 2**31 - 1, 2**31, 2**32 - 1, rng.randrange(2**32)])
        data[4 + 4 * i:8 + 4 * i] = struct.pack(">I", value)
    elif kind == "huge dims":  # products that overflow int64 (and any file)
        for i in range(ndim):
            data[4 + 4 * i:8 + 4 * i] = struct.pack(">I", rng.choice([0, 2**32 - 1, 2**31 + 1]))
    elif kind == "ndim":
        data[3] = rng.choice([0, 1, 2, 3, 4, 5, 255])
    elif kind == "type code":
        data[2] = rng.randrange(256)
    elif kind == "truncate":
        del data[rng.randrange(len(data) + 1):]
    elif kind == "append":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    elif kind == "payload byte" and len(data) > 4 + 4 * ndim:
        data[rng.randrange(4 + 4 * ndim, len(data))] = rng.randrange(256)
    return bytes(data), kind


def _frame(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Plain, or gzip with damaged or unusual framing."""
    kind = rng.choice(["plain", "gzip", "gzip flip", "gzip truncate", "gzip garbage",
                       "gzip members", "gzip empty member", "gzip bomb"])
    if kind == "plain":
        return data, kind
    if kind == "gzip bomb":  # a small file that inflates far beyond what its header declares
        return gzip.compress(data + bytes(1 << 20), mtime=0), kind
    packed = bytearray(gzip.compress(data, mtime=0))
    if kind == "gzip flip":
        packed[rng.randrange(len(packed))] ^= 1 << rng.randrange(8)
    elif kind == "gzip truncate":
        del packed[rng.randrange(2, len(packed)):]
    elif kind == "gzip garbage":
        packed += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    elif kind == "gzip members":
        cut = rng.randrange(len(data) + 1)
        packed = bytearray(gzip.compress(data[:cut], mtime=0) + gzip.compress(data[cut:], mtime=0))
    elif kind == "gzip empty member":
        packed = bytearray(gzip.compress(b"", mtime=0)) + packed
    return bytes(packed), kind


def test_fuzz_idx_reader(tmp_path):
    rng = random.Random(9)
    path = tmp_path / "fuzz.idx"
    outcomes, bugs = {"array": 0, "error": 0}, []
    for case in range(IDX_CASES):
        data, mutation = _mutate_idx(_valid_idx(rng), rng)
        data, framing = _frame(data, rng)
        path.write_bytes(data)
        try:
            array = read_idx(path)
        except CoagentsError:
            outcomes["error"] += 1
            continue
        except Exception as exc:
            bugs.append(f"case {case} ({mutation}, {framing}): {type(exc).__name__}: {exc}")
            continue
        assert isinstance(array, np.ndarray) and 1 <= array.ndim <= 4
        outcomes["array"] += 1
    assert not bugs, _report(bugs, IDX_CASES)
    assert outcomes["array"] and outcomes["error"]  # the mutations reach both outcomes


def _fake_arrays(rng: random.Random) -> dict[str, np.ndarray]:
    n_train, n_test = rng.choice([0, 1, 2, 3, 12]), rng.choice([0, 1, 2, 5])
    gen = np.random.default_rng(rng.randrange(2**32))
    return {
        "train_images": gen.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": gen.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": gen.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": gen.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_fuzz_dataset_loader(tmp_path, monkeypatch):
    monkeypatch.delenv("COAGENTS_DATA_DIR", raising=False)
    rng = random.Random(90)
    loaded, bugs = 0, []
    for case in range(LOADER_CASES):
        monkeypatch.setattr(datasets, "_cache", {})
        directory = tmp_path / f"case{case}" / "fashion-mnist"
        directory.mkdir(parents=True)
        arrays = _fake_arrays(rng)
        victim = rng.choice([*IDX_FILES, None])  # one file mutated, or none
        for role, stem in IDX_FILES.items():
            data = _idx_bytes(arrays[role], 0x08)
            mutation = framing = "none"
            if role == victim:
                data, mutation = _mutate_idx(data, rng)
            data, framing = _frame(data, rng) if role == victim else (data, "plain")
            (directory / (stem + (".gz" if framing != "plain" else ""))).write_bytes(data)
        try:
            dataset = load_dataset("fashion-mnist", data_dir=directory.parent)
        except CoagentsError:
            continue
        except Exception as exc:
            bugs.append(f"case {case} ({victim}: {mutation}, {framing}): "
                        f"{type(exc).__name__}: {exc}")
            continue
        assert len(dataset.train) >= 1 and len(dataset.valid) >= 1 and len(dataset.test) >= 1
        loaded += 1
    assert not bugs, _report(bugs, LOADER_CASES)
    assert loaded


# ---- TOML configs ------------------------------------------------------------------------------
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(value)


def _toml_text(raw: dict) -> str:
    """A TOML document of ``raw`` (top-level values, then tables, arrays of tables)."""
    lines = [f'"{k}" = {_toml_value(v)}' for k, v in raw.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v
                                                 and all(isinstance(t, dict) for t in v))]
    for key, value in raw.items():
        if isinstance(value, dict):
            lines.append(f'["{key}"]')
            lines += [f'"{k}" = {_toml_value(v)}' for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
            for table in value:
                lines.append(f'[["{key}"]]')
                lines += [f'"{k}" = {_toml_value(v)}' for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _random_value(rng: random.Random):
    return rng.choice([
        lambda: rng.choice([0, 1, -1, 2, 3, 7, 64, -5]),
        lambda: rng.choice([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400, 10**9, 10**12]),
        lambda: rng.choice([0.0, -0.5, 0.5, 1.0, 1e-300, 1e300, float("nan"), float("inf"),
                            float("-inf")]),
        lambda: rng.choice([True, False]),
        lambda: rng.choice(["", "x", "../../escape", "a/b", "relu", "ray", "dd", "\u00e9", "a\u0000b",
                            "uniform", "shuffled", "correlated", "categorical", "gaussian"]),
        lambda: rng.choice([[], [1], [4, 4], [0], [-1], [10**9], [[4], [8]], [[[4]]], [1.5],
                            ["a"], [True], [[]], [{}], [0, 1, 2]]),
        lambda: rng.choice([{}, {"a": 1}]),
    ])()


def _mutate_config(raw: dict, rng: random.Random) -> str:
    sections = list(cfg.SCHEMA)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["drop key", "drop section", "retype", "retype section", "unknown key",
                           "duplicate key", "schema key", "array of tables", "huge"])
        section = rng.choice(sections)
        table = raw.get(section)
        if kind == "drop section":
            raw.pop(section, None)
        elif kind == "retype section":
            raw[section] = _random_value(rng)
        elif kind == "array of tables":
            raw[section] = [dict(table) if isinstance(table, dict) else {}]
        elif kind == "unknown key":
            target = table if isinstance(table, dict) and rng.random() < 0.7 else raw
            target["bogus"] = _random_value(rng)
        elif kind == "retype" and rng.random() < 0.2:
            raw[rng.choice(list(cfg.TOP_LEVEL))] = _random_value(rng)
        elif not isinstance(table, dict):
            continue
        elif kind == "drop key" and table:
            table.pop(rng.choice(list(table)))
        elif kind in ("retype", "schema key"):
            table[rng.choice(list(cfg.SCHEMA[section]))] = _random_value(rng)
        elif kind == "duplicate key" and table:  # the same key in another section
            key = rng.choice(list(table))
            other = raw.get(rng.choice(sections))
            if isinstance(other, dict):
                other[key] = table[key]
        elif kind == "huge":
            key = rng.choice([k for k, spec in cfg.SCHEMA[section].items()
                              if spec.type in ("int", "float", "ints", "int|ints")] or ["x"])
            big = rng.choice([10**9, 10**12, 2**62, 2**70, -(10**9)])
            table[key] = [big] if cfg.SCHEMA[section].get(key, cfg.Key("int", 0, "")).is_list \
                else big
    return _toml_text(raw)


def _edit_bytes(text: str, rng: random.Random) -> bytes:
    data = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["replace", "insert", "delete", "duplicate line", "drop line", "non-utf8"])
        at = rng.randrange(len(data) + 1)
        if kind == "replace" and at < len(data):
            data[at] = rng.choice(b"[]{}=\"'.,#\n 0123456789-+eE_abcxyz")
        elif kind == "insert":
            data[at:at] = bytes([rng.choice(b"[]{}=\"'.,#\n 09-+e_x")])
        elif kind == "delete":
            del data[at:at + rng.randint(1, 6)]
        elif kind == "non-utf8":
            data[at:at] = bytes([rng.choice([0x80, 0xC3, 0xFF, 0xFE, 0xED])])
        else:
            lines = bytes(data).split(b"\n")
            i = rng.randrange(len(lines))
            if kind == "duplicate line":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def _tiny(config: dict) -> bool:
    """Small enough to build in the fuzzer: generated data, the local backend, an estimated
    footprint of a few megabytes."""
    return (config["backend"]["kind"] == "local"
            and config["data"]["dataset"] in ("multiplexer", "correlated")
            and sum(part.bytes for part in estimate(config)) < TINY_BYTES)


def test_fuzz_toml_configs(tmp_path):
    rng = random.Random(99)
    folder = resources.files("async_coagents.experiment") / "configs"
    texts = {name: (folder / f"{name}.toml").read_text(encoding="utf-8")
             for name in cfg.builtin_names()}
    path = tmp_path / "fuzz.toml"
    outcomes, bugs = {"valid": 0, "error": 0, "built": 0}, []
    for case in range(TOML_CASES):
        name = rng.choice(list(texts))
        if rng.random() < 0.5:
            data, mutation = _mutate_config(tomllib.loads(texts[name]), rng).encode(), "structure"
        else:
            data, mutation = _edit_bytes(texts[name], rng), "bytes"
        path.write_bytes(data)
        try:
            runs = cfg.load(path)
            outcomes["valid"] += 1
            for config, _ in runs[:2]:
                if _tiny(config) and rng.random() < BUILD_SHARE:
                    Run(config, RunDirectory(tmp_path / "never-written"), progress=False).close()
                    outcomes["built"] += 1
        except CoagentsError:
            outcomes["error"] += 1
        except Exception as exc:
            bugs.append(f"case {case} ({name}, {mutation}): {type(exc).__name__}: {exc}\n"
                        f"--- config ---\n{data.decode('utf-8', 'replace')}")
    assert not bugs, _report(bugs, TOML_CASES)
    assert outcomes["valid"] and outcomes["error"] and outcomes["built"]
    assert not (tmp_path / "never-written").exists()
