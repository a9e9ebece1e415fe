"""Dataset discovery, checks, the paper's preprocessing and the fixed stratified split (§5.1).

Fake MNIST-style datasets are written with ``write_idx`` into tmp directories. The tests on the
real Fashion-MNIST look for it through ``$COAGENTS_DATA_DIR`` and the system path; they are
skipped when it is absent, unless ``COAGENTS_REQUIRE_DATA=1``, which makes its absence a failure.
"""

import json

import numpy as np
import pytest

from async_coagents.data import datasets
from async_coagents.data.datasets import (
    IDX_FILES,
    Split,
    describe_datasets,
    find_dataset,
    load_dataset,
    pixels_to_inputs,
    stratified_split,
)
from async_coagents.data.idx import read_idx, write_idx
from async_coagents.errors import ConfigError, DataError
from tests.conftest import require_dataset

N_TRAIN, N_TEST = 60, 20  # 6 training images per class -> 10 validation (1 per class), 50 train


def write_fake(root, name="fashion-mnist", n_train=N_TRAIN, n_test=N_TEST, seed=0, **override):
    """Write a small MNIST-style dataset into ``root/name``; ``override`` replaces arrays by role."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    if n_train:
        arrays["train_images"][0, 0, :2] = [0, 255]  # both ends of the pixel range occur
    arrays.update(override)
    directory = root / name
    directory.mkdir(parents=True)
    for i, (role, stem) in enumerate(IDX_FILES.items()):
        compress = i % 2 == 0  # a mix of gzip and plain files
        write_idx(directory / (stem + (".gz" if compress else "")), arrays[role], compress)
    return arrays


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No outside data directory and an empty cache unless a test sets them."""
    monkeypatch.delenv("COAGENTS_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "_cache", {})


def test_fake_dataset_through_data_dir(tmp_path):
    arrays = write_fake(tmp_path)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert (ds.name, ds.kind, ds.n_classes, ds.n_features) == ("fashion-mnist", "classification", 10, 784)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50, 10, 20)
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert not split.x.flags.writeable
    np.testing.assert_array_equal(np.bincount(ds.valid.y, minlength=10), np.ones(10))
    np.testing.assert_array_equal(ds.test.x, pixels_to_inputs(arrays["test_images"]))
    np.testing.assert_array_equal(ds.test.y, arrays["test_labels"])
    # train + valid is exactly the official training set, each image once with its label
    train_idx, valid_idx = stratified_split(arrays["train_labels"], 10)
    all_x = pixels_to_inputs(arrays["train_images"])
    np.testing.assert_array_equal(ds.train.x, all_x[train_idx])
    np.testing.assert_array_equal(ds.valid.x, all_x[valid_idx])
    np.testing.assert_array_equal(ds.valid.y, arrays["train_labels"][valid_idx])
    assert ds.source == str(tmp_path / "fashion-mnist")


def test_fake_dataset_through_env(tmp_path, monkeypatch):
    write_fake(tmp_path, name="mnist")
    monkeypatch.setenv("COAGENTS_DATA_DIR", str(tmp_path))
    assert find_dataset("mnist") == tmp_path / "mnist"
    assert len(load_dataset("mnist").train) == 50


def test_data_dir_wins_over_env(tmp_path, monkeypatch):
    write_fake(tmp_path / "a", n_test=20)
    write_fake(tmp_path / "b", n_test=30)
    monkeypatch.setenv("COAGENTS_DATA_DIR", str(tmp_path / "b"))
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "a").test) == 20
    assert len(load_dataset("fashion-mnist").test) == 30


def test_data_dir_may_name_the_dataset_directory_itself(tmp_path):
    write_fake(tmp_path)
    assert find_dataset("fashion-mnist", tmp_path / "fashion-mnist") == tmp_path / "fashion-mnist"


def test_pixels_map_to_exactly_minus_one_one():
    x = pixels_to_inputs(np.arange(256, dtype=np.uint8).reshape(1, 16, 16))
    assert x.shape == (1, 256) and x.dtype == np.float32
    assert x[0, 0] == -1.0 and x[0, 255] == 1.0 and x[0, 1] > -1.0
    expected = (np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    np.testing.assert_array_equal(x[0], expected)


def test_split_checks_shapes_and_is_read_only():
    x = np.zeros((3, 2), np.float32)
    split = Split(x, np.zeros(3, np.int64))
    assert len(split) == 3 and x.flags.writeable  # the caller's array is left alone
    with pytest.raises(ValueError, match="read-only"):
        split.x[0, 0] = 1.0
    with pytest.raises(DataError, match="2-D float32"):
        Split(np.zeros((3, 2)), np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"Split.y must have shape \(3,\)"):
        Split(x, np.zeros(4, np.int64))


def test_load_is_cached_and_deterministic(tmp_path):
    write_fake(tmp_path / "a")
    write_fake(tmp_path / "b")
    first = load_dataset("fashion-mnist", tmp_path / "a")
    assert load_dataset("fashion-mnist", tmp_path / "a") is first
    other = load_dataset("fashion-mnist", tmp_path / "b")  # same bytes, another file: reloaded
    assert other is not first
    np.testing.assert_array_equal(other.valid.x, first.valid.x)
    np.testing.assert_array_equal(other.train.y, first.train.y)


def test_missing_dataset_lists_every_place_looked(tmp_path, monkeypatch):
    env_root = tmp_path / "env"
    partial = env_root / "fashion-mnist"
    partial.mkdir(parents=True)
    write_idx(partial / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8), True)
    monkeypatch.setenv("COAGENTS_DATA_DIR", str(env_root))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "cli")
    message = str(info.value)
    assert f"{tmp_path / 'cli' / 'fashion-mnist'} (--data-dir): no such directory" in message
    assert f"{partial} ($COAGENTS_DATA_DIR): missing train-labels-idx1-ubyte[.gz]" in message
    assert "/usr/share/datasets/fashion-mnist (system path)" in message
    assert "dataset-fashion-mnist" in message and "COAGENTS_DATA_DIR=<dir>" in message


def test_missing_dataset_says_env_is_unset(tmp_path):
    with pytest.raises(DataError, match=r"\$COAGENTS_DATA_DIR is not set"):
        find_dataset("mnist", tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar'.*fashion-mnist, mnist"):
        load_dataset("cifar")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            {"train_labels": np.zeros(59, np.uint8)},
            r"image/label count mismatch: .*train-images.* holds 60 images but .* 59 labels",
        ),
        ({"test_images": np.zeros((20, 28, 27), np.uint8)}, r"t10k-images.*shape \(N, 28, 28\)"),
        ({"test_images": np.zeros((20, 28, 28), np.int16)}, "expected uint8 images"),
        ({"test_labels": np.full(20, 10, np.uint8)}, r"t10k-labels.*label 10 outside 0..9"),
    ],
)
def test_inconsistent_files(tmp_path, override, match):
    write_fake(tmp_path, **override)
    with pytest.raises(DataError, match=match):
        load_dataset("fashion-mnist", tmp_path)


def test_describe_datasets(tmp_path):
    write_fake(tmp_path)
    records = {r["name"]: r for r in describe_datasets(tmp_path)}
    assert set(records) == {"fashion-mnist", "mnist", "multiplexer", "correlated"}
    fashion, mnist = records["fashion-mnist"], records["mnist"]
    assert fashion["found"] and fashion["status"] == "found"
    assert fashion["path"] == str(tmp_path / "fashion-mnist") and fashion["how_to_get"] == ""
    assert not mnist["found"] and mnist["status"] == "missing" and mnist["path"] is None
    assert any(str(tmp_path / "mnist") in place for place in mnist["looked"])
    assert any("/usr/share/datasets/mnist" in place for place in mnist["looked"])
    assert "mnist" in mnist["how_to_get"]
    for name in ("multiplexer", "correlated"):
        assert records[name]["status"] == "generated, no download"
    assert records["correlated"]["kind"] == "regression"
    json.dumps(list(records.values()))


def test_stratified_split_exact_total_and_proportional_classes():
    counts = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])  # MNIST
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(10), counts))
    train, valid = stratified_split(labels, 10_000)
    assert len(valid) == 10_000 and len(train) == 50_000
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(60_000))
    per_class = np.bincount(labels[valid], minlength=10)
    assert np.all(np.abs(per_class - counts * 10_000 / 60_000) < 1)
    again_train, again_valid = stratified_split(labels, 10_000)
    np.testing.assert_array_equal(again_valid, valid)
    np.testing.assert_array_equal(again_train, train)
    assert not np.array_equal(stratified_split(labels, 10_000, seed=51)[1], valid)


# ---- the real Fashion-MNIST -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion():
    # module scope: set up before the function-scoped fixture above hides $COAGENTS_DATA_DIR
    dataset = require_dataset("fashion-mnist")
    return find_dataset("fashion-mnist"), dataset


def test_real_fashion_mnist_shapes_and_range(fashion):
    _, ds = fashion
    assert (ds.train.x.shape, ds.valid.x.shape, ds.test.x.shape) == (
        (50_000, 784),
        (10_000, 784),
        (10_000, 784),
    )
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.min() == -1.0 and split.x.max() == 1.0
        assert split.y.min() == 0 and split.y.max() == 9


def test_real_fashion_mnist_split_is_stratified_and_fixed(fashion, monkeypatch):
    directory, ds = fashion
    assert np.all(np.abs(np.bincount(ds.valid.y, minlength=10) - 1000) <= 1)
    labels = read_idx(directory / "train-labels-idx1-ubyte.gz")
    _, valid_idx = stratified_split(labels, 10_000)
    np.testing.assert_array_equal(ds.valid.y, labels[valid_idx])
    monkeypatch.setattr(datasets, "_cache", {})
    reloaded = load_dataset("fashion-mnist", directory.parent)
    assert reloaded is not ds
    np.testing.assert_array_equal(reloaded.valid.x, ds.valid.x)
    np.testing.assert_array_equal(reloaded.train.y, ds.train.y)


@pytest.mark.parametrize(
    ("n_train", "n_test", "match"),
    [
        (0, N_TEST, r"train-images.*holds 0 images; a dataset needs at least 2 training images"),
        (1, N_TEST, r"train-images.*holds 1 image; a dataset needs at least 2 training images"),
        (N_TRAIN, 0, r"t10k-images.*holds 0 images; .* and 1 test image"),
    ],
)
def test_too_few_images_name_the_file_and_the_minimum(tmp_path, n_train, n_test, match):
    write_fake(tmp_path, n_train=n_train, n_test=n_test)
    with pytest.raises(DataError, match=match):
        load_dataset("fashion-mnist", tmp_path)


def test_the_smallest_dataset_trains_and_evaluates(tmp_path):
    from async_coagents.experiment import config as cfg
    from async_coagents.experiment.run import evaluate_run, train

    write_fake(tmp_path, n_train=2, n_test=1)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1, 1, 1)
    config = cfg.validate({"name": "tiny", "network": {"hidden": [4]},
                           "data": {"dataset": "fashion-mnist", "batch": 4},
                           "run": {"epochs": 3}}, "tiny.toml")
    summary = train(config, tmp_path / "run", progress=False, data_dir=str(tmp_path))
    assert summary["status"] == "completed" and summary["updates"] == 3
    assert set(evaluate_run(tmp_path / "run")) >= {"valid_accuracy", "test_accuracy"}
