"""IDX reader/writer: round trips, the exact on-disk layout, and a clear error per malformation."""

import gzip

import numpy as np
import pytest

from async_coagents.data.idx import read_idx, write_idx
from async_coagents.errors import DataError

DTYPES = ["u1", "i1", "i2", "i4", "f4", "f8"]
SHAPES = [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)]


def _random_array(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(scale=1e3, size=shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, dtype, shape, compress):
    array = _random_array(dtype, shape, np.random.default_rng(0))
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_layout_is_big_endian_per_spec(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.array([1, -2], dtype="<i2"), compress=False)
    assert path.read_bytes() == bytes.fromhex("00000B01 00000002 0001 FFFE")
    (tmp_path / "b.idx").write_bytes(bytes.fromhex("00000D02 00000001 00000002 3F800000 C0000000"))
    np.testing.assert_array_equal(read_idx(tmp_path / "b.idx"), [[1.0, -2.0]])


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx(tmp_path / "compressed.idx", array, compress=True)
    write_idx(tmp_path / "plain.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)


def _write(tmp_path, data: bytes, name: str = "bad.idx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_magic(tmp_path):
    path = _write(tmp_path, bytes.fromhex("01000801 00000001 07"))
    with pytest.raises(DataError, match=r"bad\.idx: bad IDX magic number 0x01000801"):
        read_idx(path)


def test_unknown_dtype_code(tmp_path):
    path = _write(tmp_path, bytes.fromhex("00000A01 00000001 07"))
    with pytest.raises(DataError, match="unknown IDX data type code 0x0A"):
        read_idx(path)


@pytest.mark.parametrize("ndim", [0, 5])
def test_bad_number_of_dimensions(tmp_path, ndim):
    path = _write(tmp_path, bytes([0, 0, 8, ndim]) + bytes(4 * ndim))
    with pytest.raises(DataError, match=f"declares {ndim} dimensions, expected 1..4"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = _write(tmp_path, bytes.fromhex("00000803 00000002 0000"))
    with pytest.raises(DataError, match="truncated IDX header: expected 16 bytes, found 10"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path, compress):
    data = bytes.fromhex("00000C02 00000002 00000003") + bytes(4 * 6 - 2)
    path = _write(tmp_path, gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match="needs 24 bytes of data, found 22"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    data = bytes.fromhex("00000801 00000003 010203 AABBCC")
    with pytest.raises(DataError, match="3 trailing bytes after the IDX payload"):
        read_idx(_write(tmp_path, data))


def test_corrupt_gzip_names_the_file(tmp_path):
    good = bytearray(gzip.compress(bytes.fromhex("00000801 00000100") + bytes(range(256)) * 1))
    good[len(good) // 2] ^= 0xFF
    path = _write(tmp_path, bytes(good), name="images.gz")
    with pytest.raises(DataError, match=r"corrupt gzip file .*images\.gz"):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path):
    whole = gzip.compress(bytes.fromhex("00000801 00000100") + bytes(range(256)))
    path = _write(tmp_path, whole[:-12], name="labels.gz")
    with pytest.raises(DataError, match=r"corrupt gzip file .*labels\.gz.*truncated"):
        read_idx(path)


def test_garbage_after_gzip_stream(tmp_path):
    whole = gzip.compress(bytes.fromhex("00000801 00000001 07")) + b"junk"
    with pytest.raises(DataError, match="4 bytes of garbage after the gzip stream"):
        read_idx(_write(tmp_path, whole))


def test_multi_member_gzip_is_read_whole(tmp_path):
    data = bytes.fromhex("00000801 00000004 01020304")
    path = _write(tmp_path, gzip.compress(data[:9]) + gzip.compress(data[9:]))
    np.testing.assert_array_equal(read_idx(path), [1, 2, 3, 4])


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"cannot read IDX file .*nowhere\.idx"):
        read_idx(tmp_path / "nowhere.idx")
    with pytest.raises(DataError, match="not an IDX file: 0 bytes"):
        read_idx(_write(tmp_path, b""))


def test_write_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="cannot hold dtype int64"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.int64), compress=False)
    with pytest.raises(DataError, match=r"1\.\.4 dimensions"):
        write_idx(tmp_path / "a.idx", np.zeros((1,) * 5, dtype=np.uint8), compress=False)


@pytest.mark.parametrize("compress", [False, True])
def test_dimension_product_beyond_int64_is_refused_by_its_size(tmp_path, compress):
    # (2**32 - 1)**2 float64 items: 1.5e20 bytes, beyond int64 (numpy's product wraps around)
    data = bytes.fromhex("00000E02 FFFFFFFF FFFFFFFF") + bytes(8)
    path = _write(tmp_path, gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match=r"shape \(4294967295, 4294967295\) of float64: "
                                        r"147573952520956936200 bytes, more than any array"):
        read_idx(path)


def test_empty_array_whose_other_dimensions_overflow_is_refused(tmp_path):
    data = bytes.fromhex("00000804 00000000 80000001 80000001 80000001")
    with pytest.raises(DataError, match=r"shape \(0, 2147483649, 2147483649, 2147483649\)"):
        read_idx(_write(tmp_path, data))


def test_dimension_product_larger_than_the_file(tmp_path):
    data = bytes.fromhex("00000803 0000EA60 0000001C 0000001C") + bytes(10)  # 60000 x 28 x 28
    with pytest.raises(DataError, match="needs 47040000 bytes of data, found 10"):
        read_idx(_write(tmp_path, data))


def test_gzip_that_inflates_beyond_its_header_stops_there(tmp_path):
    # 10 items declared, 64 MB inflated: refused after reading one byte past the 18 declared
    data = bytes.fromhex("00000801 0000000A") + bytes(10) + bytes(64 << 20)
    path = _write(tmp_path, gzip.compress(data, mtime=0), name="bomb.gz")
    with pytest.raises(DataError, match=r"bomb\.gz: the gzip stream inflates to more than the 18 "
                                        r"bytes its IDX header declares"):
        read_idx(path)
