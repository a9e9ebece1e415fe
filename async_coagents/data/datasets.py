"""Datasets on disk: where MNIST-style IDX datasets are looked up, how they are checked and
preprocessed (paper §5.1), and the ``Dataset`` / ``Split`` containers every task returns.

Lookup order for a dataset ``<name>``: ``<data_dir>/<name>/`` (the ``--data-dir`` option), then
``$COAGENTS_DATA_DIR/<name>/``, then ``/usr/share/datasets/<name>/`` (where the Debian/Ubuntu
package ``dataset-fashion-mnist`` installs Fashion-MNIST). A directory counts only if it holds all
four IDX files, each plain or gzip-compressed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from async_coagents.data.idx import read_idx
from async_coagents.errors import ConfigError, DataError

DATA_DIR_ENV = "COAGENTS_DATA_DIR"
SYSTEM_ROOT = Path("/usr/share/datasets")

# The four IDX files of an MNIST-style dataset, by role; each may also carry a ``.gz`` suffix.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

# Seed of the fixed train/validation split. The paper (§5.1) uses scikit-learn's
# ``train_test_split(test_size=1/6, stratify=labels, random_state=50)``; we keep the value 50 but
# draw with numpy, so the split has the paper's sizes (50,000 / 10,000) and stratification but
# not the same images.
SPLIT_SEED = 50
# Validation share of the official training images: ceil(N / 6), i.e. 10,000 of 60,000.
VALID_DENOMINATOR = 6
# The smallest dataset that can be trained and evaluated: every split needs one example, so the
# training file needs two images (ceil(2/6) = 1 goes to validation, 1 is left to train on) and
# the test file one.
MIN_IMAGES = {"train": 2, "test": 1}

_HOW_TO_GET = {
    "fashion-mnist": (
        "install the Debian/Ubuntu package dataset-fashion-mnist (it installs "
        "/usr/share/datasets/fashion-mnist), or download the four IDX files ({files}) from the "
        "official Fashion-MNIST site (https://github.com/zalandoresearch/fashion-mnist) into "
        "<dir>/fashion-mnist/ and pass --data-dir <dir> or set COAGENTS_DATA_DIR=<dir>"
    ),
    "mnist": (
        "download the four IDX files ({files}) from the official MNIST site "
        "(http://yann.lecun.com/exdb/mnist/, often unreachable; the mirror torchvision uses is "
        "https://ossci-datasets.s3.amazonaws.com/mnist/) into <dir>/mnist/ and pass --data-dir "
        "<dir> or set COAGENTS_DATA_DIR=<dir>"
    ),
}
IDX_DATASETS = tuple(_HOW_TO_GET)
GENERATED_TASKS = {"multiplexer": "classification", "correlated": "regression"}

_CACHE_SIZE = 4
_cache: dict[tuple[Any, ...], Dataset] = {}


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: inputs ``x`` (N, d) float32 and targets ``y`` (N,).

    ``y`` is int64 class indices for classification and float32 values for regression. The split
    holds read-only views, so a shared (cached) dataset cannot be modified by accident.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x), np.asarray(self.y)
        if x.ndim != 2 or x.dtype != np.float32:
            raise DataError(f"Split.x must be a 2-D float32 array, got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],):
            raise DataError(f"Split.y must have shape ({x.shape[0]},), got {y.shape}")
        for attr, array in (("x", x), ("y", y)):
            view = array.view()
            view.flags.writeable = False
            object.__setattr__(self, attr, view)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A task with fixed train / validation / test splits.

    ``kind`` is ``"classification"`` (``y`` int64 in ``0..n_classes-1``) or ``"regression"``
    (``y`` float32, ``n_classes`` None); every split has ``n_features`` input columns.
    ``source`` says where it came from: the directory of its files, or ``"generated"``.
    """

    name: str
    kind: str
    n_classes: int | None
    n_features: int
    train: Split
    valid: Split
    test: Split
    source: str = "generated"

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise DataError(f"dataset {self.name}: unknown kind {self.kind!r}")
        y_dtype = np.int64 if self.kind == "classification" else np.float32
        if (self.kind == "classification") != (self.n_classes is not None):
            raise DataError(f"dataset {self.name}: n_classes={self.n_classes} for a {self.kind}")
        for split_name in ("train", "valid", "test"):
            split = getattr(self, split_name)
            if split.x.shape[1] != self.n_features or split.y.dtype != y_dtype:
                raise DataError(
                    f"dataset {self.name}: {split_name} split has x {split.x.shape}, y "
                    f"{split.y.dtype}; expected {self.n_features} features and y {y_dtype.__name__}"
                )


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load ``fashion-mnist`` or ``mnist``, preprocessed and split as in the paper (§5.1).

    Inputs are pixels mapped to ``(p/255 - 0.5)/0.5`` in [-1, 1], flattened: x (N, 784) float32;
    labels y (N,) int64 in 0..9. Splits: train 50,000 and valid 10,000 (a fixed stratified split
    of the official training images, see ``SPLIT_SEED``), test the official 10,000.

    The result is cached per resolved file set and shared between calls; its arrays are
    read-only. Raises ``DataError`` if the files are missing (listing every place looked and how
    to get them) or malformed, ``ConfigError`` for an unknown name.
    """
    directory, files = _locate(name, data_dir)
    key = (name, *(_file_key(path) for path in files.values()))
    if key in _cache:
        return _cache[key]
    dataset = _read_mnist_like(name, directory, files)
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[key] = dataset
    return dataset


def find_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding the four IDX files of ``name``; ``DataError`` if none does."""
    return _locate(name, data_dir)[0]


def describe_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One JSON-safe record per known dataset, for ``coagents datasets``.

    Keys: ``name``, ``kind``, ``found`` (bool), ``status`` (``"found"``, ``"missing"`` or
    ``"generated, no download"``), ``path`` (the directory used, or None), ``looked`` (every
    place searched, with what was missing there) and ``how_to_get`` (empty when nothing is needed).
    """
    records = []
    for name in IDX_DATASETS:
        directory, _, looked = _search(name, data_dir)
        records.append(
            {
                "name": name,
                "kind": "classification",
                "found": directory is not None,
                "status": "found" if directory is not None else "missing",
                "path": None if directory is None else str(directory),
                "looked": looked,
                "how_to_get": "" if directory is not None else _how_to_get(name),
            }
        )
    for name, kind in GENERATED_TASKS.items():
        records.append(
            {
                "name": name,
                "kind": kind,
                "found": True,
                "status": "generated, no download",
                "path": None,
                "looked": [],
                "how_to_get": "",
            }
        )
    return records


def stratified_split(
    labels: np.ndarray, n_valid: int, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into (train, valid) with exactly ``n_valid`` validation examples.

    ``labels`` (N,) integer classes. Each class c with ``n_c`` examples gives
    ``n_c * n_valid / N`` validation examples rounded by largest remainder (ties to the lower
    class), so the total is exact and per-class shares differ by less than one example. Which
    examples go to validation is a random draw from ``seed``. Returns two sorted int64 index
    arrays, (N - n_valid,) and (n_valid,).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 <= n_valid <= n:
        raise DataError(f"cannot take {n_valid} validation examples out of {n}")
    classes, counts = np.unique(labels, return_counts=True)
    quota, remainder = np.divmod(counts * n_valid, max(n, 1))
    extra = n_valid - int(quota.sum())
    quota[np.argsort(-remainder, kind="stable")[:extra]] += 1
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    valid = []
    for cls, k in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        valid.append(rng.permutation(members)[:k])
    valid_idx = np.sort(np.concatenate(valid)) if valid else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(n, dtype=bool)
    train_mask[valid_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), valid_idx.astype(np.int64)


def pixels_to_inputs(images: np.ndarray) -> np.ndarray:
    """Paper §5.1 preprocessing: uint8 images (N, h, w) -> float32 (N, h*w) in [-1, 1].

    Computed in float32 as ``(p/255 - 0.5)/0.5`` (the torchvision ToTensor + Normalize recipe), so
    0 maps to exactly -1 and 255 to exactly 1.
    """
    x = images.reshape(images.shape[0], -1).astype(np.float32)
    x /= np.float32(255)
    x -= np.float32(0.5)
    x /= np.float32(0.5)
    return x


def _read_mnist_like(name: str, directory: Path, files: dict[str, Path]) -> Dataset:
    train_x, train_y = _read_pair(files["train_images"], files["train_labels"], "train")
    test_x, test_y = _read_pair(files["test_images"], files["test_labels"], "test")
    n_valid = -(-train_y.shape[0] // VALID_DENOMINATOR)
    train_idx, valid_idx = stratified_split(train_y, n_valid)
    targets = train_y.astype(np.int64)
    return Dataset(
        name=name,
        kind="classification",
        n_classes=N_CLASSES,
        n_features=IMAGE_SHAPE[0] * IMAGE_SHAPE[1],
        train=Split(pixels_to_inputs(train_x[train_idx]), targets[train_idx]),
        valid=Split(pixels_to_inputs(train_x[valid_idx]), targets[valid_idx]),
        test=Split(pixels_to_inputs(test_x), test_y.astype(np.int64)),
        source=str(directory),
    )


def _read_pair(images_path: Path, labels_path: Path, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one images file (N, 28, 28) uint8 and its labels file (N,) uint8, ``role``
    ``"train"`` or ``"test"`` (which sets the minimum N, :data:`MIN_IMAGES`)."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"image/label count mismatch: {images_path} holds {images.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels"
        )
    if images.shape[0] < MIN_IMAGES[role]:
        raise DataError(
            f"{images_path}: holds {images.shape[0]} image{'' if images.shape[0] == 1 else 's'}; "
            f"a dataset needs at least "
            f"{MIN_IMAGES['train']} training images (one for the validation split, one to train "
            f"on) and {MIN_IMAGES['test']} test image"
        )
    if labels.size and labels.max() >= N_CLASSES:
        bad = int(labels.max())
        raise DataError(f"{labels_path}: label {bad} outside 0..{N_CLASSES - 1}")
    return images, labels


def _locate(name: str, data_dir: str | os.PathLike[str] | None) -> tuple[Path, dict[str, Path]]:
    directory, files, looked = _search(name, data_dir)
    if directory is None:
        places = "\n".join(f"  - {place}" for place in looked)
        raise DataError(f"dataset {name!r} not found. Looked in:\n{places}\nTo get it: {_how_to_get(name)}.")
    return directory, files


def _search(
    name: str, data_dir: str | os.PathLike[str] | None
) -> tuple[Path | None, dict[str, Path], list[str]]:
    """Walk the lookup order; returns (directory or None, files by role, places looked)."""
    if name not in _HOW_TO_GET:
        known = ", ".join(IDX_DATASETS)
        raise ConfigError(f"unknown dataset {name!r}; datasets on disk: {known}")
    looked = []
    for root, origin in _roots(data_dir):
        if root is None:
            looked.append(origin)
            continue
        candidates = [root / name] + ([root] if root.name == name else [])
        for directory in candidates:
            files, problem = _idx_files(directory)
            looked.append(f"{directory} ({origin}): {problem or 'found'}")
            if not problem:
                return directory, files, looked
    return None, {}, looked


def _roots(data_dir: str | os.PathLike[str] | None) -> list[tuple[Path | None, str]]:
    """(root, where it came from); a None root records a source that was not set."""
    roots: list[tuple[Path | None, str]] = []
    if data_dir is not None:
        roots.append((Path(data_dir), "--data-dir"))
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        roots.append((Path(env), f"${DATA_DIR_ENV}"))
    else:
        roots.append((None, f"${DATA_DIR_ENV} is not set"))
    roots.append((SYSTEM_ROOT, "system path"))
    return roots


def _idx_files(directory: Path) -> tuple[dict[str, Path], str]:
    """The four files in ``directory`` (plain preferred over .gz) and what is missing, if any."""
    if not directory.is_dir():
        return {}, "no such directory"
    files, missing = {}, []
    for role, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                files[role] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    return files, ("missing " + ", ".join(missing)) if missing else ""


def _how_to_get(name: str) -> str:
    return _HOW_TO_GET[name].format(files=", ".join(f"{s}.gz" for s in IDX_FILES.values()))


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns
