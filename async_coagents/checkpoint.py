"""The persisted format of async_coagents: a msgpack codec for nested state (numpy arrays as an
ExtType) and the checkpoint file around it (magic, version, kind, length, CRC32), written
atomically. Loading never executes code: there is no pickle anywhere in this module.

File layout (all integers little-endian)::

    offset      size  field
    0           13    MAGIC = b"COAGENTS\\x00CKPT"
    13          2     format version, uint16 (CHECKPOINT_VERSION)
    15          1     k = length of the kind, uint8
    16          k     kind, ASCII (what the checkpoint holds, e.g. "run" or "layer")
    16+k        8     n = payload length in bytes, uint64
    24+k        4     CRC32 of bytes [13, 24+k) followed by the payload, uint32
    28+k        n     payload: one msgpack object, as produced by ``encode``

Payload: msgpack with str as str, bytes as bin, tuples as arrays (they decode as lists), and each
numpy array as ExtType code 1 whose body is the msgpack array ``[dtype.str, shape, raw]``
(``raw``: the C-order bytes of the array, e.g. ``["<f4", [2, 3], <24 bytes>]``).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tomllib
import uuid
import zlib
from contextlib import suppress
from pathlib import Path

import msgpack
import numpy as np

from async_coagents.core.replicas import PerReplica
from async_coagents.errors import CheckpointError

__all__ = ["CHECKPOINT_VERSION", "MAGIC", "decode", "encode", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_VERSION = 1
MAGIC = b"COAGENTS\x00CKPT"

_VERSION_KIND_LEN = struct.Struct("<HB")  # format version, length of the kind
_LENGTH_CRC = struct.Struct("<QI")  # payload length, CRC32
_KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")

_NDARRAY_EXT = 1
_MAX_DEPTH = 512  # below msgpack's unpacker stack (1024), so whatever we write we can read
_MAX_NDIM = 64  # numpy's limit
_BIN_OR_EXT_MAX = 2**32 - 1  # msgpack's bin 32 / ext 32 limit
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # int64 .. uint64

# Exactly the dtype strings we write and accept: bool, (u)int 8..64, float 16..64, either byte order.
_ARRAY_DTYPES = frozenset(
    np.dtype(name).newbyteorder(order).str
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64")
    for order in "<>"
)
_PLAIN = frozenset({type(None), bool, int, float, str, bytes})
_ALLOWED = "None, bool, int, float, str, bytes, list, tuple, dict, numpy arrays and scalars of "
_ALLOWED += "bool/int/uint/float dtypes"
_ALLOWED_DTYPES = "bool, int8..int64, uint8..uint64, float16..float64"


# ----------------------------------------------------------------------------- encoding


class _Refusal(Exception):
    """Raised inside the encoder; each container it unwinds through adds its key to the path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.keys: list[object] = []  # innermost first

    def path(self, root: str) -> str:
        out = root
        for key in reversed(self.keys):
            out += f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
        return out if len(out) <= 200 else f"{out[:120]}...{out[-60:]}"


def _bin_header(n: int) -> bytes:
    if n < 2**8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 2**16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _ext_header(code: int, n: int) -> bytes:
    fixext = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}.get(n)
    tag = code.to_bytes(1, "big", signed=True)
    if fixext is not None:
        return fixext + tag
    if n < 2**8:
        return b"\xc7" + n.to_bytes(1, "big") + tag
    if n < 2**16:
        return b"\xc8" + n.to_bytes(2, "big") + tag
    return b"\xc9" + n.to_bytes(4, "big") + tag


class _Encoder:
    """Walks a structure once and emits msgpack as a list of chunks; array data is referenced by
    memoryview, not copied (except to make a non-contiguous array C-contiguous)."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(autoreset=True, use_bin_type=True)
        self._pack = self._packer.pack
        self.chunks: list[bytes | bytearray | memoryview] = []
        self._buf = bytearray()

    def finish(self) -> list[bytes | bytearray | memoryview]:
        if self._buf:
            self.chunks.append(self._buf)
            self._buf = bytearray()
        return self.chunks

    def _int(self, value: int) -> bytes:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _Refusal(f"int {value} is outside the 64-bit range [-2**63, 2**64-1] "
                           "(store wider ints as str)")
        return self._pack(value)

    def add(self, obj: object, depth: int = 0) -> None:
        t = type(obj)
        if obj is None or t is bool or t is float or t is bytes:
            self._buf += self._pack(obj)
        elif t is int:
            self._buf += self._int(obj)
        elif t is str:
            try:
                self._buf += self._pack(obj)
            except UnicodeEncodeError as exc:
                raise _Refusal(f"str is not valid unicode ({exc.reason})") from None
        elif t is np.ndarray:
            self._array(obj)
        elif t is list or t is tuple or t is PerReplica:
            if depth >= _MAX_DEPTH:
                raise _Refusal(f"nested deeper than {_MAX_DEPTH} levels (a reference cycle?)")
            if all(type(item) in _PLAIN for item in obj):
                # Fast path for e.g. a learning curve: msgpack packs it exactly as the loop below
                # would; on an out-of-range int or bad str the loop finds and names the element.
                with suppress(OverflowError, UnicodeEncodeError):
                    self._buf += self._pack(obj)
                    return
            self._buf += self._packer.pack_array_header(len(obj))
            for i, item in enumerate(obj):
                try:
                    self.add(item, depth + 1)
                except _Refusal as refusal:
                    refusal.keys.append(i)
                    raise
        elif t is dict:
            if depth >= _MAX_DEPTH:
                raise _Refusal(f"nested deeper than {_MAX_DEPTH} levels (a reference cycle?)")
            self._buf += self._packer.pack_map_header(len(obj))
            for key, value in obj.items():
                self._buf += self._key(key)
                try:
                    self.add(value, depth + 1)
                except _Refusal as refusal:
                    refusal.keys.append(key)
                    raise
        elif isinstance(obj, np.generic):
            if obj.dtype.str not in _ARRAY_DTYPES and obj.dtype.kind not in "US":
                raise _Refusal(f"numpy scalar of dtype {obj.dtype} is not supported "
                               f"(allowed: {_ALLOWED_DTYPES})")
            self.add(obj.item(), depth)
        else:
            raise _Refusal(f"unsupported type {_type_name(t)} (supported: {_ALLOWED})")

    def _key(self, key: object) -> bytes:
        t = type(key)
        if t is str:
            try:
                return self._pack(key)
            except UnicodeEncodeError as exc:
                raise _Refusal(f"dict key {key!r} is not valid unicode ({exc.reason})") from None
        if t is int:
            return self._int(key)
        if isinstance(key, np.integer):
            return self._int(int(key))
        raise _Refusal(f"dict key {key!r} of type {_type_name(t)}: keys must be str or int")

    def _array(self, a: np.ndarray) -> None:
        if a.dtype.str not in _ARRAY_DTYPES:
            raise _Refusal(f"numpy array of dtype {a.dtype} ({a.dtype.str!r}) is not supported "
                           f"(allowed: {_ALLOWED_DTYPES})")
        if a.nbytes > _BIN_OR_EXT_MAX - 64:
            raise _Refusal(f"numpy array of {a.nbytes} bytes exceeds msgpack's 4 GiB limit")
        # np.ascontiguousarray would turn a 0-d array into shape (1,): keep the shape of `a`.
        contiguous = a if a.flags.c_contiguous else np.ascontiguousarray(a)
        raw = memoryview(contiguous.reshape(-1).view(np.uint8))
        head = (self._packer.pack_array_header(3) + self._pack(a.dtype.str) + self._pack(list(a.shape))
                + _bin_header(a.nbytes))
        self._buf += _ext_header(_NDARRAY_EXT, len(head) + a.nbytes)
        self._buf += head
        self.chunks.append(self._buf)
        self.chunks.append(raw)
        self._buf = bytearray()


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _encode_chunks(obj: object, root: str) -> list[bytes | bytearray | memoryview]:
    encoder = _Encoder()
    try:
        encoder.add(obj)
    except _Refusal as refusal:
        raise CheckpointError(f"cannot encode {refusal.path(root)}: {refusal.reason}") from None
    return encoder.finish()


def encode(obj: object, *, root: str = "obj") -> bytes:
    """Encode a nested structure as msgpack bytes (the checkpoint payload).

    Supported: None, bool, int in [-2**63, 2**64-1], float, str, bytes, list, tuple and
    ``PerReplica`` (a replicated agent's generator states, in a Ray actor's own checkpoint; all
    decode as list), dict with str or int keys, numpy arrays of bool/int/uint/float dtypes of any shape
    (including 0-d and empty), and numpy scalars (encoded as Python scalars). Anything else raises
    CheckpointError naming the type and where it sits, e.g. ``obj.layers[0].rng.state``
    (``root`` is the name of the top-level object in that path).
    """
    return b"".join(_encode_chunks(obj, root))


# ----------------------------------------------------------------------------- decoding


class _Malformed(Exception):
    """Raised inside msgpack hooks; `decode` turns it into a CheckpointError naming the source."""


def _decode_array(body: bytes) -> np.ndarray:
    try:
        fields = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _Malformed(f"malformed array ext: body is not valid msgpack ({_describe(exc)})") from None
    if type(fields) is not list or len(fields) != 3:
        raise _Malformed(f"malformed array ext: expected [dtype, shape, data], got {_short(fields)}")
    dtype_str, shape, raw = fields
    if type(dtype_str) is not str or dtype_str not in _ARRAY_DTYPES:
        raise _Malformed(f"malformed array ext: dtype {_short(dtype_str)} is not allowed "
                         f"(allowed: {_ALLOWED_DTYPES})")
    if (type(shape) is not list or len(shape) > _MAX_NDIM
            or any(type(d) is not int or d < 0 for d in shape)):
        raise _Malformed(f"malformed array ext: invalid shape {_short(shape)}")
    if type(raw) is not bytes:
        raise _Malformed(f"malformed array ext: data is {type(raw).__name__}, not bytes")
    dtype = np.dtype(dtype_str)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise _Malformed(f"malformed array ext: dtype {dtype_str} and shape {tuple(shape)} need "
                         f"{expected} bytes, found {len(raw)}")
    flat = np.frombuffer(raw, dtype=np.uint8)
    if dtype.kind == "b" and flat.size and flat.max() > 1:
        raise _Malformed("malformed array ext: bool array holds bytes other than 0 and 1")
    try:
        out = np.empty(shape, dtype=dtype)
    except (ValueError, OverflowError) as exc:
        raise _Malformed(f"malformed array ext: shape {tuple(shape)} is invalid ({exc})") from None
    out.reshape(-1).view(np.uint8)[:] = flat  # the one copy: decoded arrays are writable
    return out


def _ext_hook(code: int, body: bytes) -> np.ndarray:
    if code != _NDARRAY_EXT:
        raise _Malformed(f"unknown msgpack ExtType code {code} (known: {_NDARRAY_EXT} = numpy array)")
    return _decode_array(body)


def _check_values(values: list) -> None:
    # msgpack turns ExtType -1 into a Timestamp without calling ext_hook: refuse it here.
    for v in values:
        if type(v) is msgpack.Timestamp:
            raise _Malformed("unknown msgpack ExtType code -1 (msgpack timestamp)")


def _list_hook(items: list) -> list:
    _check_values(items)
    return items


def _pairs_hook(pairs: list[tuple[object, object]]) -> dict:
    for key, _ in pairs:
        if type(key) is not str and type(key) is not int:
            raise _Malformed(f"map key {_short(key)} of type {type(key).__name__}: keys must be str or int")
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Malformed("map has duplicate keys")
    _check_values(list(out.values()))
    return out


def decode(data: bytes, source: str = "<bytes>") -> object:
    """Decode msgpack bytes written by ``encode``; arrays come back writable, C-contiguous, with
    their original dtype and shape. Raises CheckpointError (prefixed by ``source``) for anything
    that is not exactly what ``encode`` writes. Never executes code."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook,
                              list_hook=_list_hook, object_pairs_hook=_pairs_hook)
        _check_values([obj])
    except _Malformed as exc:
        raise CheckpointError(f"{source}: invalid payload: {exc}") from None
    except msgpack.ExtraData as exc:
        raise CheckpointError(f"{source}: payload is not valid msgpack: {len(exc.extra)} extra bytes "
                              "after the object") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CheckpointError(f"{source}: payload is not valid msgpack ({_describe(exc)})") from None
    return obj


def _describe(exc: Exception) -> str:
    if isinstance(exc, msgpack.StackError):
        return "nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "invalid type byte"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- files


def _check_kind(kind: object) -> str:
    if type(kind) is not str or not _KIND_RE.fullmatch(kind):
        raise CheckpointError(f"invalid checkpoint kind {kind!r}: use 1-255 ASCII letters, digits, "
                              "'_', '.', '-', starting with a letter or digit")
    return kind


def save_checkpoint(path: str | os.PathLike[str], obj: object, *, kind: str) -> None:
    """Write ``obj`` to ``path`` as a checkpoint holding ``kind`` (e.g. "run", "layer").

    Atomic: the file is written to a temporary file in the same directory, fsynced, then renamed
    over ``path``; on any failure (including an unencodable ``obj``, reported with its path rooted
    at ``kind``) ``path`` is untouched and no temporary file remains. Parent directories are created.
    """
    kind = _check_kind(kind)
    path = Path(path)
    chunks = _encode_chunks(obj, root=kind)
    length = sum(len(c) for c in chunks)
    fields = _VERSION_KIND_LEN.pack(CHECKPOINT_VERSION, len(kind)) + kind.encode("ascii")
    fields += length.to_bytes(8, "little")
    crc = zlib.crc32(fields)
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    header = MAGIC + fields + crc.to_bytes(4, "little")

    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable on POSIX; directories cannot be opened this way on Windows.
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: str | os.PathLike[str], *, kind: str | None = None) -> object:
    """Read, validate and decode the checkpoint at ``path``; if ``kind`` is given, the file must
    hold that kind. Raises CheckpointError naming the problem: missing or unreadable file, not an
    async_coagents checkpoint (saying what it looks like), newer format version, wrong kind,
    truncated, corrupt (checksum mismatch), or an invalid payload. Never executes code."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    size = len(data)
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not an async_coagents checkpoint")
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CheckpointError(f"{path}: truncated checkpoint: file ends inside the header ({size} bytes)")
        raise CheckpointError(f"{path}: not an async_coagents checkpoint: {_looks_like(data)}")

    fixed = len(MAGIC) + _VERSION_KIND_LEN.size
    if size < fixed:
        raise CheckpointError(f"{path}: truncated checkpoint: file ends inside the header ({size} bytes)")
    version, kind_len = _VERSION_KIND_LEN.unpack_from(data, len(MAGIC))
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format version {version}: this version of "
                              f"async_coagents reads format versions up to {CHECKPOINT_VERSION}; upgrade it")
    if version < 1:
        raise CheckpointError(f"{path}: corrupt checkpoint: invalid format version {version}")
    header_end = fixed + kind_len + _LENGTH_CRC.size
    if size < header_end:
        raise CheckpointError(f"{path}: truncated checkpoint: file ends inside the header "
                              f"({size} bytes, the header needs {header_end})")
    length, stored_crc = _LENGTH_CRC.unpack_from(data, fixed + kind_len)
    found = size - header_end
    if found < length:
        raise CheckpointError(f"{path}: truncated checkpoint: expected {length} payload bytes, found {found}")
    if found > length:
        raise CheckpointError(f"{path}: corrupt checkpoint: {found - length} unexpected bytes after the "
                              f"{length}-byte payload")
    view = memoryview(data)
    payload = view[header_end:]
    crc = zlib.crc32(payload, zlib.crc32(view[len(MAGIC): header_end - 4]))
    if crc != stored_crc:
        raise CheckpointError(f"{path}: corrupt checkpoint: checksum mismatch (stored CRC32 "
                              f"{stored_crc:#010x}, computed {crc:#010x})")
    stored_kind = bytes(view[fixed: fixed + kind_len]).decode("ascii", errors="replace")
    if kind is not None and stored_kind != kind:
        raise CheckpointError(f"{path}: holds a {stored_kind!r} checkpoint, expected {kind!r}")
    return decode(payload, source=str(path))


_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive (numpy .npz and torch .pt files are zip archives)"),
    (b"PK\x05\x06", "an empty zip archive (numpy .npz files are zip archives)"),
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
)


def _looks_like(data: bytes) -> str:
    """What a foreign file seems to be, for the error message; parses text but never runs code."""
    if data[0] == 0x80 and len(data) > 1 and 2 <= data[1] <= 5:
        return (f"it looks like a Python pickle (protocol {data[1]}), which is never loaded because "
                "unpickling can execute code")
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            return f"it looks like {what}"
    head = data[:512]
    if all(b >= 0x20 or b in b"\t\n\r" for b in head) and len(data) <= 1 << 20:
        text = data.decode("utf-8", errors="replace")
        if not text.strip():
            return "it is blank text"
        with suppress(ValueError):
            json.loads(text)
            return "it looks like JSON text"
        with suppress(tomllib.TOMLDecodeError):
            tomllib.loads(text)
            return "it looks like TOML text"
        return f"it looks like text starting {text[:40]!r}"
    if 0x81 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF):
        return f"it may be a bare msgpack payload without the header (first bytes {data[:16]!r})"
    return f"first bytes {data[:16]!r}"
