"""Fuzzing the run checkpoint, seeded and bounded: (a) random byte mutations of a valid checkpoint
(flip, truncate, insert, duplicate a range), loaded with ``load_checkpoint``; the same mutations
of the payload with its length and checksum recomputed, loaded as ``resume`` and ``eval`` load;
(b) mutations of the decoded structure (delete an entry, change its type, negative or huge ints,
wrong array shapes and dtypes, an unexpected entry) saved again as a valid file, loaded as
``resume`` and ``eval`` load. Every case must end in a project error or a valid load: any other
exception, or a case that does not end within its watchdog, fails the test with its seed."""

import contextlib
import signal
import struct
import zlib

import numpy as np
import pytest

from async_coagents.checkpoint import MAGIC, encode, load_checkpoint
from async_coagents.errors import CoagentsError
from async_coagents.experiment.run import Run, RunDirectory, evaluate_run
from tests.test_run import quick_config, stopped_run

CASES = {"bytes": 100, "payload": 60, "structure": 200}  # per run below
# Mutated weights (a flipped exponent bit) are a valid load whose continuation overflows: that
# is divergence, reported by the run, not a loading error; its numpy warnings are expected here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
CONTINUE_BATCHES = 5  # more than any window below: every batch in flight completes
WATCHDOG_S = 20  # a case is a load of a few kB: anything near this is a hang

# Small runs that stopped with batches in flight, covering every kind of saved state: critics,
# node groups, clock rates (gradient accumulators), adam, the layer and input baselines.
CONFIGS = {
    "ac": {"backend.window": 4, "backend.reward_delay": 3, "network.rule": '"ac"'},
    "grouped-clocks": {"backend.window": 3, "backend.reward_delay": 2,
                       "network.optimizer": '"adam"', "backend.update_every": "[2, 1, 3]",
                       "backend.units_per_actor": 4, "network.rule": '"layer-baseline"'},
    "input-baseline": {"backend.window": 2, "backend.reward_delay": 1, "network.optimizer": '"sgd"',
                       "network.rule": '"input-baseline"'},
}


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds):
    def on_alarm(signum, frame):
        raise Hang(f"did not end within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def saved_run(request, tmp_path_factory):
    """(run directory, its valid checkpoint bytes, a Run built on it to load as resume does)."""
    out = tmp_path_factory.mktemp("fuzz") / request.param
    config = quick_config(**CONFIGS[request.param])
    stopped_run(config, out, stop_after=57)
    run = Run(config, RunDirectory(out), progress=False)
    yield out, (out / "checkpoint.ckpt").read_bytes(), run
    run.close()


def load_as_resume_and_eval(out, run):
    """Load as eval does, and as resume does, continuing the run for a few batches (the batches
    in flight then complete): each must end in a project error or a valid result."""
    with contextlib.suppress(CoagentsError):
        evaluate_run(out)
    with contextlib.suppress(CoagentsError):
        run.load_checkpoint()
        for _ in range(CONTINUE_BATCHES):
            run._train_one(next(run.workload.stream))
        run.backend.finish()


def run_cases(n, seed, case):
    """Run ``case(rng, note)`` ``n`` times (``note(text)`` says what the case did); a list of the
    failures (case index, what, exception)."""
    failures = []
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        what = []
        try:
            with watchdog(WATCHDOG_S):
                case(rng, what.append)
        except CoagentsError:
            pass
        except Exception as exc:  # the point: anything else is a finding
            failures.append(f"case {index} ({'; '.join(what)}): {type(exc).__name__}: {exc}"[:300])
    return failures


# ---- (a) bytes -------------------------------------------------------------------------------
def mutate_bytes(data: bytes, rng) -> tuple[bytes, str]:
    data = bytearray(data)
    op = rng.choice(["flip", "truncate", "insert", "duplicate"])
    at = int(rng.integers(0, len(data)))
    if op == "flip":
        for i in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[i] ^= int(rng.integers(1, 256))
    elif op == "truncate":
        del data[at:]
    elif op == "insert":
        data[at:at] = rng.bytes(int(rng.integers(1, 16)))
    else:
        start = int(rng.integers(0, len(data)))
        data[at:at] = data[start:start + int(rng.integers(1, 64))]
    return bytes(data), f"{op} at {at}"


def header_size(data: bytes) -> int:
    return len(MAGIC) + 3 + data[len(MAGIC) + 2] + 12


def with_payload(data: bytes, payload: bytes) -> bytes:
    """The checkpoint ``data`` holding ``payload``, its length and CRC32 recomputed."""
    fields_end = header_size(data) - 12
    fields = data[len(MAGIC):fields_end] + struct.pack("<Q", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(fields))
    return MAGIC + fields + struct.pack("<I", crc) + payload


def test_byte_mutations_of_a_checkpoint_are_project_errors(saved_run, tmp_path):
    _, valid, _ = saved_run
    path = tmp_path / "checkpoint.ckpt"

    def case(rng, note):
        data, what = mutate_bytes(valid, rng)
        note(what)
        path.write_bytes(data)
        load_checkpoint(path, kind="run")

    failures = run_cases(CASES["bytes"], 1, case)
    assert failures == [], "\n".join(failures)


def test_payload_mutations_with_a_valid_checksum_load_or_are_project_errors(saved_run):
    out, valid, run = saved_run
    start = header_size(valid)

    def case(rng, note):
        payload, what = mutate_bytes(valid[start:], rng)
        note(what)
        (out / "checkpoint.ckpt").write_bytes(with_payload(valid, payload))
        load_as_resume_and_eval(out, run)

    try:
        failures = run_cases(CASES["payload"], 2, case)
        assert failures == [], "\n".join(failures)
    finally:
        (out / "checkpoint.ckpt").write_bytes(valid)


# ---- (b) structure ---------------------------------------------------------------------------
def nodes(obj, path=()):
    """Every (path, value) of a decoded checkpoint, containers included."""
    yield path, obj
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from nodes(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from nodes(value, (*path, i))


OTHER_VALUES = [None, True, 0, -1, 7, 1.5, float("nan"), "x", b"x", [], {}, [1, 2],
                np.zeros(2, np.float32), np.zeros((2, 2), np.int64)]
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_]


def mutated(value, rng):
    """(a wrong value in place of ``value``, what was done), or None to delete the entry."""
    if isinstance(value, np.ndarray):
        op = rng.choice(["dtype", "shape", "shrink", "grow", "other"])
        if op == "dtype":
            return value.astype(DTYPES[int(rng.integers(len(DTYPES)))]), "dtype"
        if op == "shape":
            return value.reshape(-1), "flattened"
        if op == "shrink":
            return value.reshape(-1)[: max(0, value.size - 1)], "shrunk"
        if op == "grow":
            return np.concatenate([value.reshape(-1), value.reshape(-1)[:1]]), "grown"
    elif type(value) is int:
        op = rng.choice(["negative", "huge", "other"])
        if op == "negative":
            return -value - 1 - int(rng.integers(0, 10)), "negative"
        if op == "huge":
            return [2**63 - 1, 2**63, 2**64 - 1][int(rng.integers(3))], "huge"
    elif type(value) is float and rng.random() < 0.5:
        return [float("nan"), float("inf"), -1e308][int(rng.integers(3))], "non-finite"
    return OTHER_VALUES[int(rng.integers(len(OTHER_VALUES)))], "retyped"


def mutate_structure(state, rng) -> str:
    candidates = [(path, value) for path, value in nodes(state) if path and path[0] != "config"]
    path, value = candidates[int(rng.integers(len(candidates)))]
    *parents, last = path
    parent = state
    for key in parents:
        parent = parent[key]
    op = rng.random()
    where = ".".join(map(str, path))
    if op < 0.2:
        del parent[last]
        return f"deleted {where}"
    if op < 0.25 and isinstance(value, dict):
        value["unexpected"] = 1
        return f"extra entry in {where}"
    parent[last], what = mutated(value, rng)
    return f"{what} {where}"


def test_structure_mutations_load_or_are_project_errors_in_resume_and_eval(saved_run):
    out, valid, run = saved_run
    path = out / "checkpoint.ckpt"

    def case(rng, note):
        path.write_bytes(valid)
        state = load_checkpoint(path, kind="run")
        note(mutate_structure(state, rng))
        path.write_bytes(with_payload(valid, encode(state)))  # the codec; no fsync per case
        load_as_resume_and_eval(out, run)

    try:
        failures = run_cases(CASES["structure"], 3, case)
        assert failures == [], "\n".join(failures)
    finally:
        path.write_bytes(valid)


def test_the_fuzzed_run_is_valid_before_mutation(saved_run):
    """The loads the fuzzer exercises succeed on the unmutated checkpoint (so a case that raises
    a project error does so because of its mutation)."""
    out, valid, run = saved_run
    (out / "checkpoint.ckpt").write_bytes(valid)
    run.load_checkpoint()
    assert run.state.updates == 57 and evaluate_run(out)["step"] == 57
