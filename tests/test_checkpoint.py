"""The checkpoint format: payload round trips, refusals with paths, the file layout, every
corruption case, atomic saves, and loading that never executes code."""

import ast
import gzip
import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest

import async_coagents.checkpoint as ckpt
from async_coagents.checkpoint import (
    CHECKPOINT_VERSION,
    MAGIC,
    decode,
    encode,
    load_checkpoint,
    save_checkpoint,
)
from async_coagents.errors import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def nan_with_payload(dtype, bits):
    return np.array([bits], dtype=f"u{np.dtype(dtype).itemsize}").view(dtype)


def training_state():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    return {
        "step": 12345,
        "layers": [
            {
                "W": w.T,  # non-contiguous view
                "b": np.zeros(3, np.float64),
                "mask": np.array([True, False, True]),
                "counts": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
                "pixels": np.array([0, 7, 255], np.uint8),
                "empty": np.zeros((0,), np.float32),
                "scalar": np.array(2.5),
                "big_endian": np.array([1, -2, 3], dtype=">i4"),
                "nan_payloads": np.concatenate([nan_with_payload(np.float64, 0x7FF8000000000123),
                                                np.array([np.inf, -np.inf, -0.0])]),
                "nan32": nan_with_payload(np.float32, 0x7FC00001),
                "every_other": np.arange(10, dtype=np.int16)[::2],
            },
            None,
        ],
        "flags": [True, False, None],
        "ints": [2**63 - 1, -(2**63), 2**64 - 1, 0, -1],
        "floats": [math.nan, math.inf, -math.inf, -0.0, 1e-310],
        "text": "coagents é ∂",
        "blob": b"\x00\xff\x80",
        "pair": (1, (2, "three")),
        7: "int key",
        "numpy_scalars": [np.float32(1.5), np.int64(-3), np.uint64(2**64 - 1), np.bool_(True), np.str_("s")],
    }


def float_bits(x):
    return struct.pack("<d", x)


def assert_same(expected, got, where="obj"):
    """Equal in value and type after the documented conversions (tuple -> list, numpy scalar ->
    Python scalar); arrays bitwise equal with the same dtype and shape, writable and C-ordered."""
    if isinstance(expected, np.ndarray):
        assert type(got) is np.ndarray, where
        assert got.dtype == expected.dtype and got.dtype.str == expected.dtype.str, where
        assert got.shape == expected.shape, where
        assert got.tobytes() == expected.tobytes(), where
        assert got.flags.writeable and got.flags.c_contiguous and got.flags.owndata, where
    elif isinstance(expected, np.generic):
        assert_same(expected.item(), got, where)
    elif isinstance(expected, tuple | list):
        assert type(got) is list and len(got) == len(expected), where
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert_same(e, g, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert type(got) is dict and list(got) == list(expected), where
        for k in expected:
            assert_same(expected[k], got[k], f"{where}[{k!r}]")
    elif isinstance(expected, float):
        assert type(got) is float and float_bits(got) == float_bits(expected), where
    else:
        assert type(got) is type(expected) and got == expected, where


# ----------------------------------------------------------------------------- payload codec


def test_round_trip_of_a_training_state():
    state = training_state()
    got = decode(encode(state))
    assert_same(state, got)
    nans = state["layers"][0]["nan_payloads"]
    assert np.array_equal(got["layers"][0]["nan_payloads"], nans, equal_nan=True)
    assert np.isnan(got["floats"][0])


def test_decoded_arrays_can_be_updated_in_place_even_from_read_only_inputs():
    w = np.ones((2, 3), np.float32)
    w.setflags(write=False)  # arrays out of Ray's object store are read-only
    got = decode(encode({"W": w}))["W"]
    got += 1.0
    got[0, 0] = 7.0
    np.testing.assert_array_equal(got, [[7, 2, 2], [2, 2, 2]])
    assert not w.flags.writeable and w[0, 0] == 1.0


@pytest.mark.parametrize(("dtype", "shape"), [
    ("|u1", (7,)),          # ext body of exactly 16 bytes: fixext 16
    ("|b1", ()),            # 0-d
    ("<f4", (0, 3)),        # empty
    ("<f8", (30,)),         # bin 8, ext 8 (body 249 bytes)
    ("<f8", (31,)),         # bin 8, ext 16 (body 257 bytes)
    ("<i2", (200,)),        # bin 16, ext 16
    (">f8", (8190,)),       # bin 16, ext 16 (body 65,532 bytes)
    (">f8", (8191,)),       # bin 16, ext 32 (body 65,540 bytes)
    ("<u2", (40000,)),      # bin 32, ext 32
])
def test_array_ext_is_the_documented_msgpack_layout(dtype, shape):
    a = (np.arange(math.prod(shape)) % 3).astype(dtype).reshape(shape)
    reference = msgpack.packb(msgpack.ExtType(1, msgpack.packb([a.dtype.str, list(a.shape), a.tobytes()])))
    assert encode(a) == reference
    assert_same(a, decode(reference))


def test_rng_state_needs_its_128_bit_ints_as_str():
    raw = np.random.default_rng(5).bit_generator.state
    with pytest.raises(CheckpointError, match=r"state\.layers\[0\]\.rng\.state\.state: int \d+ is outside"):
        encode({"layers": [{"rng": raw}]}, root="state")

    def to_safe(x):
        if isinstance(x, dict):
            return {k: to_safe(v) for k, v in x.items()}
        return str(x) if isinstance(x, int) and not -(2**63) <= x < 2**64 else x

    def from_safe(x):
        if isinstance(x, dict):
            return {k: from_safe(v) for k, v in x.items()}
        return int(x) if isinstance(x, str) and x.isdigit() else x

    gen = np.random.default_rng(5)
    gen.random(3)
    restored = from_safe(decode(encode(to_safe(gen.bit_generator.state))))
    assert restored == gen.bit_generator.state
    twin = np.random.default_rng()
    twin.bit_generator.state = restored
    np.testing.assert_array_equal(twin.random(4), gen.random(4))


class Custom:
    pass


@pytest.mark.parametrize(("value", "message"), [
    (np.array([None, 1], dtype=object), r"obj\.layers\[1\]\.x: numpy array of dtype object"),
    (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), r"obj\.layers\[1\]\.x: numpy array of dtype .*'\|V8'"),
    (np.zeros(2, np.complex128), r"obj\.layers\[1\]\.x: numpy array of dtype complex128"),
    (np.zeros(2, "datetime64[s]"), r"obj\.layers\[1\]\.x: numpy array of dtype datetime64"),
    (np.array(["a", "b"]), r"obj\.layers\[1\]\.x: numpy array of dtype <U1"),
    (np.complex64(1j), r"obj\.layers\[1\]\.x: numpy scalar of dtype complex64"),
    (1j, r"obj\.layers\[1\]\.x: unsupported type complex"),
    ({1, 2}, r"obj\.layers\[1\]\.x: unsupported type set"),
    (Custom(), r"obj\.layers\[1\]\.x: unsupported type (tests\.)?test_checkpoint\.Custom"),
    (bytearray(b"x"), r"obj\.layers\[1\]\.x: unsupported type bytearray"),
    (2**64, r"obj\.layers\[1\]\.x: int 18446744073709551616 is outside the 64-bit range"),
    (-(2**63) - 1, r"obj\.layers\[1\]\.x: int -9223372036854775809 is outside"),
    ([0.5, "ok", 2**64], r"obj\.layers\[1\]\.x\[2\]: int 18446744073709551616 is outside"),
    (("ok", "\udc80"), r"obj\.layers\[1\]\.x\[1\]: str is not valid unicode"),
    ("\udc80", r"obj\.layers\[1\]\.x: str is not valid unicode"),
    ({(1, 2): 3}, r"obj\.layers\[1\]\.x: dict key \(1, 2\) of type tuple: keys must be str or int"),
    ({True: 3}, r"obj\.layers\[1\]\.x: dict key True of type bool"),
    ({"ok": {"not an identifier": [0, {2.5: 1}]}}, r"obj\.layers\[1\]\.x\.ok\['not an identifier'\]\[1\]: "
                                                   r"dict key 2\.5 of type float"),
])
def test_encode_refuses_with_type_and_path(value, message):
    with pytest.raises(CheckpointError, match=message):
        encode({"layers": [None, {"x": value}]})


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="longdouble is float64 here")
def test_encode_refuses_platform_dependent_longdouble():
    with pytest.raises(CheckpointError, match=r"obj: numpy array of dtype (float128|longdouble)"):
        encode(np.zeros(2, np.longdouble))


def test_encode_refuses_reference_cycles():
    loop = []
    loop.append(loop)
    with pytest.raises(CheckpointError, match=r"nested deeper than 512 levels \(a reference cycle\?\)"):
        encode({"a": loop})


def test_numpy_integer_dict_keys_become_ints():
    assert decode(encode({np.int64(3): "x"})) == {3: "x"}


def ext(code, body):
    return msgpack.packb(msgpack.ExtType(code, body))


def array_ext(dtype, shape, raw):
    return ext(1, msgpack.packb([dtype, shape, raw]))


@pytest.mark.parametrize(("payload", "message"), [
    (b"", r"not valid msgpack \(ValueError: Unpack failed: incomplete input\)"),
    (b"\xc1", r"not valid msgpack \(invalid type byte\)"),
    (b"\x92\x01", r"not valid msgpack .*incomplete input"),
    (b"\x01\x02", r"not valid msgpack: 1 extra bytes after the object"),
    (b"\xa2\xff\xfe", r"not valid msgpack \(UnicodeDecodeError"),
    (b"\x91" * 2000 + b"\xc0", r"not valid msgpack \(nested too deeply\)"),
    (ext(7, b"abc"), r"unknown msgpack ExtType code 7"),
    (msgpack.packb([msgpack.Timestamp(1, 0)]), r"unknown msgpack ExtType code -1 \(msgpack timestamp\)"),
    (msgpack.packb(msgpack.Timestamp(1, 0)), r"unknown msgpack ExtType code -1"),
    (msgpack.packb({1.5: 0}), r"map key 1\.5 of type float: keys must be str or int"),
    (msgpack.packb({True: 0}), r"map key True of type bool"),
    (b"\x82\xa1a\x01\xa1a\x02", r"map has duplicate keys"),
    (array_ext("|O", [1], b"\x00" * 8), r"malformed array ext: dtype '\|O' is not allowed"),
    (array_ext("O", [1], b"\x00" * 8), r"malformed array ext: dtype 'O' is not allowed"),
    (array_ext("<c16", [1], b"\x00" * 16), r"dtype '<c16' is not allowed"),
    (array_ext("<f4", [2, 3], b"\x00" * 20), r"dtype <f4 and shape \(2, 3\) need 24 bytes, found 20"),
    (array_ext("<f4", [-1], b""), r"invalid shape \[-1\]"),
    (array_ext("<f4", [True], b"\x00" * 4), r"invalid shape \[True\]"),
    (array_ext("<f4", [1] * 65, b"\x00" * 4), r"invalid shape"),
    (array_ext("<f4", [0, 2**63 - 1, 2**63 - 1], b""), r"shape \(0, 92\d+, 92\d+\) is invalid"),
    (array_ext("<f4", [1], "text"), r"data is str, not bytes"),
    (array_ext("|b1", [2], b"\x01\x02"), r"bool array holds bytes other than 0 and 1"),
    (ext(1, msgpack.packb(["<f4", [1]])), r"expected \[dtype, shape, data\], got \['<f4', \[1\]\]"),
    (ext(1, b"\xc1"), r"malformed array ext: body is not valid msgpack"),
])
def test_decode_rejects_crafted_payloads(payload, message):
    with pytest.raises(CheckpointError, match=rf"^crafted: .*{message}"):
        decode(payload, source="crafted")


# ----------------------------------------------------------------------------- files


def header(kind="run", version=CHECKPOINT_VERSION, payload=b""):
    fields = struct.pack("<HB", version, len(kind)) + kind.encode() + struct.pack("<Q", len(payload))
    crc = zlib.crc32(fields + payload)
    return MAGIC + fields + struct.pack("<I", crc)


def write_raw(path, payload, kind="run", version=CHECKPOINT_VERSION):
    path.write_bytes(header(kind, version, payload) + payload)
    return path


def test_file_layout_byte_by_byte(tmp_path):
    obj = {"W": np.eye(2, dtype=np.float32), "step": 3}
    save_checkpoint(tmp_path / "a.ckpt", obj, kind="layer")
    data = (tmp_path / "a.ckpt").read_bytes()
    payload = encode(obj)
    assert data[:13] == b"COAGENTS\x00CKPT"
    assert data[13:15] == CHECKPOINT_VERSION.to_bytes(2, "little")
    assert data[15] == 5 and data[16:21] == b"layer"
    assert int.from_bytes(data[21:29], "little") == len(payload)
    assert int.from_bytes(data[29:33], "little") == zlib.crc32(data[13:29] + payload)
    assert data[33:] == payload
    assert data == header("layer", payload=payload) + payload


def test_save_and_load_round_trip_creates_directories(tmp_path):
    state = training_state()
    path = tmp_path / "runs" / "r1" / "step_10.ckpt"
    save_checkpoint(path, state, kind="run")
    assert_same(state, load_checkpoint(path, kind="run"))
    assert_same(state, load_checkpoint(str(path)))  # kind=None accepts any kind
    assert os.listdir(path.parent) == ["step_10.ckpt"]


def test_save_overwrites_an_existing_checkpoint(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"v": 1}, kind="run")
    save_checkpoint(path, {"v": 2}, kind="run")
    assert load_checkpoint(path) == {"v": 2}
    assert os.listdir(tmp_path) == ["c.ckpt"]


def test_wrong_kind(tmp_path):
    save_checkpoint(tmp_path / "l.ckpt", {"W": np.ones(2)}, kind="layer")
    with pytest.raises(CheckpointError, match=r"l\.ckpt: holds a 'layer' checkpoint, expected 'run'"):
        load_checkpoint(tmp_path / "l.ckpt", kind="run")


@pytest.mark.parametrize("kind", ["", "has space", "é", "x" * 256, ".hidden", 3])
def test_invalid_kind_is_refused_before_writing(tmp_path, kind):
    with pytest.raises(CheckpointError, match=r"invalid checkpoint kind"):
        save_checkpoint(tmp_path / "k.ckpt", {}, kind=kind)
    assert os.listdir(tmp_path) == []


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint "):
        load_checkpoint(tmp_path)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, {"W": np.arange(64, dtype=np.float64), "note": "x" * 50}, kind="run")
    return path


def test_flipped_payload_byte_is_corrupt(saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"good\.ckpt: corrupt checkpoint: checksum mismatch"):
        load_checkpoint(saved)


def test_flipped_kind_byte_is_corrupt(saved):
    data = bytearray(saved.read_bytes())
    data[16] ^= 0x20  # "run" -> "Run"
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint: checksum mismatch"):
        load_checkpoint(saved, kind="run")


@pytest.mark.parametrize(("cut", "message"), [
    (5, r"truncated checkpoint: file ends inside the header \(5 bytes\)"),        # inside the magic
    (14, r"truncated checkpoint: file ends inside the header \(14 bytes\)"),      # inside the version
    (17, r"truncated checkpoint: file ends inside the header \(17 bytes, the header needs 31\)"),  # kind
    (25, r"file ends inside the header \(25 bytes, the header needs 31\)"),       # payload length
    (30, r"file ends inside the header \(30 bytes, the header needs 31\)"),       # CRC
    (31, r"truncated checkpoint: expected \d+ payload bytes, found 0$"),
    (100, r"truncated checkpoint: expected \d+ payload bytes, found 69$"),
    (-1, r"truncated checkpoint: expected {n} payload bytes, found {n_minus_1}$"),
])
def test_truncated_files(saved, cut, message):
    data = saved.read_bytes()
    n = len(data) - 31  # the header of a "run" checkpoint is 31 bytes
    saved.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=message.format(n=n, n_minus_1=n - 1)):
        load_checkpoint(saved)


def test_trailing_bytes_are_corrupt(saved):
    saved.write_bytes(saved.read_bytes() + b"\x00\x00")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint: 2 unexpected bytes after the \d+-byte"):
        load_checkpoint(saved)


def test_empty_file(tmp_path):
    (tmp_path / "e.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"e\.ckpt: empty file \(0 bytes\), not an async_coagents"):
        load_checkpoint(tmp_path / "e.ckpt")


def write_npz(path):
    np.savez(path, W=np.ones(3))


def write_npy(path):
    np.save(path, np.ones(3))


@pytest.mark.parametrize(("name", "write", "message"), [
    ("p.pkl", lambda p: p.write_bytes(pickle.dumps({"W": [1.0]}, protocol=4)),
     r"it looks like a Python pickle \(protocol 4\), which is never loaded"),
    ("p2.pkl", lambda p: p.write_bytes(pickle.dumps([1], 2)),
     r"it looks like a Python pickle \(protocol 2\)"),
    ("w.npz", write_npz, r"it looks like a zip archive \(numpy \.npz"),
    ("w.npy", write_npy, r"it looks like a numpy \.npy file"),
    ("s.json", lambda p: p.write_text(json.dumps({"step": 3, "W": [1.0, 2.0]})), r"it looks like JSON text"),
    ("c.toml", lambda p: p.write_text('[train]\nlr = 0.1\nname = "mlp"\n'), r"it looks like TOML text"),
    ("g.gz", lambda p: p.write_bytes(gzip.compress(b"abc")), r"it looks like gzip-compressed data"),
    ("n.txt", lambda p: p.write_text("hello world\n"), r"it looks like text starting 'hello world\\n'"),
    ("m.bin", lambda p: p.write_bytes(encode({"W": np.ones(2)})), r"it may be a bare msgpack payload"),
    ("r.bin", lambda p: p.write_bytes(b"\x00\x01\x02\xff"), r"first bytes b'\\x00\\x01\\x02\\xff'"),
])
def test_foreign_files_say_what_they_look_like(tmp_path, name, write, message):
    path = tmp_path / name
    write(path)
    expected = re.escape(name) + ": not an async_coagents checkpoint: " + message
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_future_format_version(tmp_path, saved):
    data = bytearray(saved.read_bytes())
    data[13:15] = (CHECKPOINT_VERSION + 1).to_bytes(2, "little")
    saved.write_bytes(bytes(data))
    message = (rf"unsupported checkpoint format version {CHECKPOINT_VERSION + 1}: "
               rf".*reads format versions up to {CHECKPOINT_VERSION}")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(saved)
    # even a file that is otherwise consistent under a future version is refused
    future = write_raw(tmp_path / "f.ckpt", encode({}), version=CHECKPOINT_VERSION + 1)
    with pytest.raises(CheckpointError, match=r"unsupported checkpoint format version"):
        load_checkpoint(future)
    zero = write_raw(tmp_path / "z.ckpt", encode({}), version=0)
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint: invalid format version 0"):
        load_checkpoint(zero)


@pytest.mark.parametrize(("payload", "message"), [
    (ext(9, b"\x00"), r"invalid payload: unknown msgpack ExtType code 9"),
    (msgpack.packb({"W": msgpack.ExtType(1, msgpack.packb(["O", [1], b"\x00" * 8]))}),
     r"invalid payload: malformed array ext: dtype 'O' is not allowed"),
    (b"\xc1", r"payload is not valid msgpack"),
])
def test_crafted_files_with_valid_checksums_are_refused(tmp_path, payload, message):
    path = write_raw(tmp_path / "crafted.ckpt", payload)
    with pytest.raises(CheckpointError, match=rf"crafted\.ckpt: {message}"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- atomicity


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"W": np.ones(3), "step": 1}, kind="run")
    return path, path.read_bytes()


def assert_untouched(existing):
    path, before = existing
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_unencodable_object_leaves_the_old_checkpoint(existing):
    with pytest.raises(CheckpointError, match=r"cannot encode run\.layers\[0\]: unsupported type set"):
        save_checkpoint(existing[0], {"layers": [{1}]}, kind="run")
    assert_untouched(existing)


def fail(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_os_failure_during_save_leaves_the_old_checkpoint(existing, monkeypatch, target):
    monkeypatch.setattr(os, target, fail)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*run\.ckpt: .*No space left"):
        save_checkpoint(existing[0], {"W": np.zeros(1000)}, kind="run")
    monkeypatch.undo()
    assert_untouched(existing)


def test_crash_half_way_through_the_write_leaves_the_old_checkpoint(existing, monkeypatch):
    real_fdopen = os.fdopen
    seen = []

    class DiesAfterOneWrite:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            if seen:
                raise OSError(5, "Input/output error")
            seen.append(self.f.name)
            return self.f.write(data)

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: DiesAfterOneWrite(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError, match=r"Input/output error"):
        save_checkpoint(existing[0], {"W": np.zeros(1000)}, kind="run")
    assert len(seen) == 1  # the temp file really was partly written before the crash
    assert_untouched(existing)


def test_interrupt_during_save_propagates_and_cleans_up(existing, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(existing[0], {"W": np.zeros(3)}, kind="run")
    monkeypatch.undo()
    assert_untouched(existing)


# ----------------------------------------------------------------------------- no code execution


def test_loading_never_unpickles(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle-based loading was used")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    state = training_state()
    save_checkpoint(tmp_path / "s.ckpt", state, kind="run")
    assert_same(state, load_checkpoint(tmp_path / "s.ckpt", kind="run"))
    assert_same(state, decode(encode(state)))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(Custom()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "p.pkl")


def test_module_imports_no_pickle_based_loader():
    tree = ast.parse(Path(ckpt.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    loaders = {"pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve", "torch", "ray"}
    assert imported.isdisjoint(loaders), imported & loaders
    source = Path(ckpt.__file__).read_text()
    assert "np.load(" not in source and "allow_pickle" not in source and "eval(" not in source


def test_importing_checkpoint_does_not_import_ray():
    code = "import sys, async_coagents.checkpoint; assert 'ray' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
