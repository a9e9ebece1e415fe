"""A run without an address starts a private Ray instance: it never joins the cluster that Ray's
``ray_current_cluster`` record or ``RAY_ADDRESS`` names (a user's ``ray start``, another test
session's ``ray.cluster_utils.Cluster``), and a stale record does not matter; the test session's
own Ray is private too. A cluster that could never place the layer actors (a head started with
``--num-cpus 0``) is a clear error instead of a silent hang. Its own module, with its own
clusters, which must not run beside the session's Ray; Ray's temp dir (``RAY_TMPDIR``, where the
record lives) is this module's own, so no other session on the machine sees its clusters."""

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from async_coagents.backends import ray_env
from async_coagents.errors import ConfigError
from async_coagents.experiment.run import train
from tests.conftest import RAY_TEST_INIT
from tests.test_run import quick_config

ray = pytest.importorskip("ray")
from async_coagents.backends.ray_backend import check_placeable, placement_needs  # noqa: E402


def ray_config(**sets):
    return quick_config(**{"run.updates": 40, "run.eval_every": 40, "backend.kind": '"ray"',
                           **sets})


@pytest.fixture(scope="module")
def ray_tmpdir():
    """Ray's temp dir for this module (short: Ray's socket paths must stay under 107 bytes)."""
    if ray.is_initialized():  # the session's Ray must not run beside this module's clusters
        ray.shutdown()
    path = tempfile.mkdtemp(prefix="crp-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = path
    try:
        yield Path(path)
    finally:
        if previous is None:
            del os.environ["RAY_TMPDIR"]
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(path, ignore_errors=True)


def record(tmpdir: Path) -> Path:
    """The file in which Ray records the cluster a bare ``ray.init()`` joins."""
    return tmpdir / "ray" / "ray_current_cluster"


def start_cluster(**head):
    from ray.cluster_utils import Cluster

    return Cluster(initialize_head=True,
                   head_node_args={"num_cpus": 1, "include_dashboard": False, **head})


def placed_on(summary) -> set[str]:
    return {p["node_id"] for p in summary["placement"]}


@pytest.fixture(scope="class")
def cluster(ray_tmpdir):
    """A cluster running and recorded, as a user's `ray start` or another test session's
    `Cluster` leaves it (stopped when the class's tests are done)."""
    c = start_cluster()
    assert record(ray_tmpdir).read_text() == c.address  # what a bare ray.init() would join
    try:
        yield c
    finally:
        c.shutdown()


class TestWithAClusterRunning:

    def test_a_run_without_an_address_does_not_join_it(self, cluster, tmp_path, ray_tmpdir):
        summary = train(ray_config(), tmp_path / "run", progress=False)
        assert summary["status"] == "completed" and summary["placement"]
        assert not placed_on(summary) & {n.node_id for n in cluster.list_all_nodes()}
        assert record(ray_tmpdir).read_text() == cluster.address  # the record is left alone
        assert not ray.is_initialized()  # the private instance is gone with the run

    def test_ray_address_alone_does_not_join_it_and_the_log_says_so(self, cluster, tmp_path,
                                                                    monkeypatch, caplog):
        """Only an address given to the run joins a cluster; ``auto`` reads RAY_ADDRESS, as in
        Ray, so the run's config says where it runs."""
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        with caplog.at_level(logging.WARNING):
            summary = train(ray_config(), tmp_path / "run", progress=False)
        assert not placed_on(summary) & {n.node_id for n in cluster.list_all_nodes()}
        assert (f"RAY_ADDRESS={cluster.address} is set, but without --address a run starts its "
                "own Ray instance; to join that cluster pass --address auto") in caplog.text
        joined = train(ray_config(**{"backend.address": '"auto"'}), tmp_path / "auto",
                       progress=False)
        assert placed_on(joined) == {cluster.head_node.node_id}

    def test_the_test_sessions_own_ray_does_not_join_it(self, cluster):
        ray.init(**RAY_TEST_INIT)  # what the ray_session fixture starts
        try:
            assert ray.get_runtime_context().gcs_address != cluster.address
            assert cluster.head_node.node_id not in {n["NodeID"] for n in ray.nodes()}
        finally:
            ray.shutdown()

    def test_a_real_head_passes_the_address_check(self, cluster):
        ray_env.check_reachable(cluster.address)


def test_a_stale_record_does_not_matter(tmp_path, ray_tmpdir):
    """The recorded head is gone (nothing listens there): a bare ray.init() would retry it for
    minutes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    record(ray_tmpdir).parent.mkdir(parents=True, exist_ok=True)
    record(ray_tmpdir).write_text(dead)
    try:
        assert train(ray_config(), tmp_path / "run", progress=False)["status"] == "completed"
    finally:
        record(ray_tmpdir).unlink()


def test_a_head_without_cpus_and_no_worker_is_an_error_not_a_hang(tmp_path, ray_tmpdir):
    """`ray start --head --num-cpus 0` (no layer actors on the head) before any worker joined:
    Ray would wait for ever to place the layer actors."""
    cluster = start_cluster(num_cpus=0)
    address = cluster.address
    try:
        config = ray_config(**{"backend.address": f'"{address}"'})
        with pytest.raises(ConfigError) as error:
            train(config, tmp_path / "run", progress=False)
    finally:
        cluster.shutdown()
    message = str(error.value)
    assert message.startswith(f"Ray (the cluster at {address}) cannot place the actor of "
                              "layer0: it needs {'CPU': 1.0} on one node, and no node has that (")
    assert "{'CPU': 0.0}" in message and message.endswith(
        "a head started with --num-cpus 0 needs a worker with CPUs "
        "(cluster/start-worker.sh --num-cpus N)")
    assert not ray.is_initialized() and not (tmp_path / "run").exists()


def node(cpus: float, **resources) -> dict:
    return {"Alive": True, "NodeManagerAddress": "10.0.0.1",
            "Resources": {"CPU": cpus, "memory": 1e9, "node:10.0.0.1": 1.0, **resources}}


def test_what_an_actor_needs_to_be_placed():
    """ray/actor.py: 1 CPU to place an actor that declares nothing (it holds none while it
    runs); what it declares otherwise, with 1 CPU unless it says num_cpus."""
    assert placement_needs({"max_restarts": 0, "scheduling_strategy": "SPREAD"}) == {"CPU": 1.0}
    assert placement_needs({"num_cpus": 0, "resources": {"layer0": 0.001}}) == {"layer0": 0.001}
    assert placement_needs({"resources": {"layer0": 1}}) == {"layer0": 1.0, "CPU": 1.0}


def test_an_actor_no_node_can_place_is_named_with_what_the_nodes_have():
    check_placeable([("layer0", {"CPU": 1.0})], [node(0), node(2)], "x")  # the worker has CPUs
    dead = {**node(4), "Alive": False}
    with pytest.raises(ConfigError, match=r"cannot place the actor of layer0: it needs "
                                          r"\{'CPU': 1.0\} on one node, and no node has that "
                                          r"\(10.0.0.1 \{'CPU': 0\}\); a head started with "
                                          r"--num-cpus 0 needs a worker"):
        check_placeable([("layer0", {"CPU": 1.0})], [node(0), dead], "x")
    with pytest.raises(ConfigError, match=r"cannot place the actor of layer1: it needs "
                                          r"\{'layer1': 0.001\} .*\{'CPU': 2, 'layer0': 1\}\); "
                                          r"start a worker that offers it"):
        check_placeable([("layer0", {"layer0": 0.001}), ("layer1", {"layer1": 0.001})],
                        [node(2, layer0=1)], "x")
