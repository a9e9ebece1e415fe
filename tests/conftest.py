"""Shared test fixtures. Tests that need the real Fashion-MNIST skip when it is absent, unless
``COAGENTS_REQUIRE_DATA=1`` (set by CI), which turns its absence into a failure."""

import os

import pytest

from async_coagents.data import load_dataset
from async_coagents.errors import DataError


def require_dataset(name: str = "fashion-mnist"):
    """The dataset, or skip the test (fail it when ``COAGENTS_REQUIRE_DATA=1``)."""
    try:
        return load_dataset(name)
    except DataError as exc:
        if os.environ.get("COAGENTS_REQUIRE_DATA") == "1":
            pytest.fail(f"COAGENTS_REQUIRE_DATA=1 but {name} is missing: {exc}")
        pytest.skip(f"{name} not found (set COAGENTS_DATA_DIR)")


@pytest.fixture(scope="session")
def fashion_mnist():
    return require_dataset("fashion-mnist")
