"""Reading and writing IDX files (the MNIST / Fashion-MNIST container format), gzip or plain.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the item type, ``NN`` the number of
dimensions), ``NN`` big-endian uint32 dimension sizes, then the items in C order, big-endian.
Gzip is recognised by its magic bytes, never by the file name. Every malformed file raises
:class:`~async_coagents.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from async_coagents.errors import DataError

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_DIMS = 4
_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 1 << 16  # bytes inflated at a time until the header is known
_MAX_ARRAY_BYTES = np.iinfo(np.intp).max


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip-compressed or plain) into a native-endian array.

    Returns an array of shape ``(n_1, ..., n_k)``, ``1 <= k <= 4``, with the dtype given by the
    file's type code (uint8, int8, int16, int32, float32 or float64). Raises ``DataError`` if the
    file cannot be read, is not gzip-decodable, has a bad magic number or a payload whose size
    disagrees with its header. A gzip file is inflated only as far as its header allows, so a
    small file that inflates to far more than it declares is refused without filling memory.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(raw, path)
    return parse_idx(raw, source=str(path))


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an uncompressed IDX file; ``source`` names it in error messages."""
    declared = _declared(data, source)
    if declared is None and len(data) < 4:
        raise DataError(f"{source}: not an IDX file: {len(data)} bytes, shorter than the magic")
    if declared is None:
        raise DataError(f"{source}: truncated IDX header: expected {4 + 4 * data[3]} bytes, "
                        f"found {len(data)}")
    shape, dtype, header = declared
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    actual = len(data) - header
    if actual < expected:
        raise DataError(
            f"{source}: truncated IDX payload: shape {shape} of {dtype.name} needs "
            f"{expected} bytes of data, found {actual}"
        )
    if actual > expected:
        raise DataError(
            f"{source}: {actual - expected} trailing bytes after the IDX payload "
            f"(shape {shape} of {dtype.name} needs {expected} bytes, found {actual})"
        )
    items = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return items.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _declared(data: bytes, source: str) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """``(shape, dtype, header bytes)`` from the start of an IDX file, or None while ``data`` is
    shorter than the header; ``DataError`` for a header no valid file has."""
    if len(data) < 4:
        return None
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()}: an IDX file starts with two zero bytes"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{source}: unknown IDX data type code 0x{code:02X} (known: {known})")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{source}: IDX header declares {ndim} dimensions, expected 1..{MAX_DIMS}")
    header = 4 + 4 * ndim
    if len(data) < header:
        return None
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    dtype = IDX_DTYPES[code]
    # an empty array may have huge other dimensions, but numpy still needs their product to fit
    if math.prod(n for n in shape if n) * dtype.itemsize > _MAX_ARRAY_BYTES:
        raise DataError(f"{source}: IDX header declares shape {shape} of {dtype.name}: "
                        f"{math.prod(shape) * dtype.itemsize} bytes, more than any array can hold")
    return shape, dtype, header


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool) -> None:
    """Write ``array`` (1 to 4 dimensions, dtype among the IDX types) as an IDX file.

    With ``compress`` the file is gzip-compressed (with a zero timestamp, so the bytes depend on
    the array only). Raises ``DataError`` for a dtype or shape that IDX cannot hold.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        names = ", ".join(dt.name for dt in codes)
        raise DataError(f"IDX cannot hold dtype {array.dtype.name}; use one of {names}")
    if not 1 <= array.ndim <= MAX_DIMS:
        raise DataError(f"IDX holds 1..{MAX_DIMS} dimensions, got an array of shape {array.shape}")
    if max(array.shape) >= 2**32:
        raise DataError(f"IDX dimension sizes must fit in 32 bits, got shape {array.shape}")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    data = header + payload
    if compress:
        data = gzip.compress(data, mtime=0)
    Path(path).write_bytes(data)


def _gunzip(raw: bytes, path: Path) -> bytes:
    """Decompress every gzip member of ``raw``, never beyond the size its IDX header declares;
    damage and excess are a ``DataError`` naming ``path``."""
    out = bytearray()
    limit: int | None = None  # header + payload bytes, once the header has been inflated
    rest = raw
    try:
        while rest:
            if rest[:2] != _GZIP_MAGIC:
                raise DataError(
                    f"corrupt gzip file {path}: {len(rest)} bytes of garbage after the gzip stream"
                )
            member = zlib.decompressobj(wbits=31)
            pending = rest
            while not member.eof:
                room = _INFLATE_CHUNK if limit is None else max(1, limit + 1 - len(out))
                chunk = member.decompress(pending, room)
                pending = member.unconsumed_tail
                out += chunk
                if limit is None:
                    declared = _declared(bytes(out[:4 + 4 * MAX_DIMS]), str(path))
                    if declared is not None:
                        shape, dtype, header = declared
                        limit = header + math.prod(shape) * dtype.itemsize
                if limit is not None and len(out) > limit:
                    raise DataError(
                        f"{path}: the gzip stream inflates to more than the {limit} bytes its IDX "
                        f"header declares (shape {shape} of {dtype.name}); stopped reading there"
                    )
                if not chunk and not pending:
                    break  # the input ends inside this member
            if not member.eof:
                raise DataError(f"corrupt gzip file {path}: the gzip stream is truncated")
            rest = member.unused_data
    except zlib.error as exc:
        raise DataError(f"corrupt gzip file {path}: {exc}") from exc
    return bytes(out)
