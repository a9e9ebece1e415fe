"""Shared test fixtures. Tests that need the real Fashion-MNIST skip when it is absent, unless
``COAGENTS_REQUIRE_DATA=1`` (set by CI), which turns its absence into a failure."""

import os

import pytest

# Ray reads its authentication mode when it is imported, which test collection may do: set it
# first. Token auth is off for the test session's own local Ray (CI homes may be read-only and
# nothing listens beyond the tests); the cluster tests set up their own environment.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# The floating-point kernels of the test session, pinned before numpy is imported (the Ray
# workers the tests start inherit them): numpy's AVX-512 loops and OpenBLAS's CPU-specific kernels
# give other last bits in float32 on other CPUs, and the regression fixture is bit for bit. With
# these pins every x86-64 CPU with AVX2 runs the same code paths (tests/platform.py checks them).
os.environ.setdefault("NPY_DISABLE_CPU_FEATURES", "X86_V4 AVX512_ICL AVX512_SPR")
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
# One BLAS thread, as every `coagents` command runs (a multi-threaded BLAS gives other last bits)
from async_coagents.experiment.sweep_processes import one_blas_thread

one_blas_thread()

# .ci/run gives the data directory relative to the checkout; tests that change directory (the
# study's, which run in a temporary one) must still find it.
if os.environ.get("COAGENTS_DATA_DIR"):
    os.environ["COAGENTS_DATA_DIR"] = os.path.abspath(os.environ["COAGENTS_DATA_DIR"])

from async_coagents.data import load_dataset  # noqa: E402  (after the pins above)
from async_coagents.errors import DataError  # noqa: E402


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


#: The test session's own Ray: a private instance (``address="local"``), never the cluster that
#: another session's ``ray.cluster_utils.Cluster`` or a user's ``ray start`` recorded.
RAY_TEST_INIT = dict(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
                     object_store_memory=150 * 1024**2, log_to_driver=False,
                     logging_level="WARNING")


@pytest.fixture(scope="session")
def _ray_stopped_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session(_ray_stopped_at_exit):
    """One private local Ray instance shared by the Ray tests (ray_notes §6): 2 CPUs, no
    dashboard, a small object store, no worker logs in the test output. Started on first use and kept for the
    session; started again if a multi-node test module shut it down for its own cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(**RAY_TEST_INIT)
    return ray


def three_node_cluster():
    """A ``ray.cluster_utils.Cluster`` of a head and two workers, one CPU each, node ``i``
    holding the custom resource ``node{i}``; the driver joined to it. A generator for a
    module-scoped fixture: yields ``(cluster, workers)`` and shuts both down after (the session's
    own Ray, if it was running, is shut down first: two must not run side by side)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"node0": 1}, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, resources={f"node{i}": 1}) for i in (1, 2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()
