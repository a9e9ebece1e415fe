"""The environment prepared before Ray starts: a wrong cluster address fails at once with a clear
error (Ray itself retries it for minutes), and token authentication is set explicitly."""

import os
import socket

import pytest

from async_coagents.backends import ray_env
from async_coagents.cli import main
from async_coagents.errors import ConfigError


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(var, "")  # recorded, so what prepare() sets is undone afterwards
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token


def test_an_address_nobody_listens_on_is_an_error_naming_it(closed_port):
    with pytest.raises(ConfigError, match=rf"cannot reach a Ray cluster at 127.0.0.1:{closed_port} "
                                          r"\(.*refused.*\): is its head running"):
        ray_env.check_reachable(f"127.0.0.1:{closed_port}")


def test_a_listening_address_passes_in_every_spelling():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}", f"localhost:{port}"):
            ray_env.check_reachable(address)
    for address in ("", "auto", "local"):  # Ray resolves these itself
        ray_env.check_reachable(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:0", ":6379",
                                     "127.0.0.1:70000"])
def test_a_malformed_address_says_what_is_expected(address):
    with pytest.raises(ConfigError, match="backend.address must be host:port"):
        ray_env.check_reachable(address)


def test_reachability_is_checked_before_the_token(clean_env, closed_port):
    """A mistyped address is blamed on the address, not on a missing token."""
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster"):
        ray_env.prepare(f"127.0.0.1:{closed_port}")


def test_token_mode_is_explicit_and_a_local_instance_gets_an_ephemeral_token(clean_env, tmp_path):
    assert ray_env.prepare() == "token"
    token = os.environ["RAY_AUTH_TOKEN"]
    assert len(token) == 64 and not (tmp_path / ".ray").exists()  # never written to disk
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"


def test_joining_a_cluster_without_its_token_says_how_to_get_it(clean_env):
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(ConfigError, match="uses token authentication: set RAY_AUTH_TOKEN"):
            ray_env.prepare(address)


def test_the_command_line_fails_fast_on_a_wrong_address(tmp_path, closed_port, capsys):
    """`--address` alone means the Ray backend; a wrong one is one line of error, no traceback."""
    assert main(["train", "--out", str(tmp_path / "run"), "--address", f"127.0.0.1:{closed_port}",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"coagents train: error: cannot reach a Ray cluster at 127.0.0.1:{closed_port}" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_an_address_with_the_local_backend_is_a_contradiction(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--backend", "local",
                 "--address", "127.0.0.1:6379"]) == 1
    assert "backend.address ('127.0.0.1:6379') is for the Ray backend" in capsys.readouterr().err
