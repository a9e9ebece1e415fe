"""The environment prepared before Ray starts: a wrong cluster address fails at once with a clear
error (Ray itself retries it for minutes), whether nothing listens there or something that is not a
Ray head does; token authentication is set explicitly; `resume --address` with a wrong address
changes nothing in the run directory. No test here starts Ray: the heads are fakes that greet a
client as a Ray head's gRPC server does (tests/test_ray_private.py probes a real one)."""

import contextlib
import http.server
import json
import os
import socket
import socketserver
import threading

import pytest

from async_coagents.backends import ray_env
from async_coagents.checkpoint import load_checkpoint, save_checkpoint
from async_coagents.cli import main
from async_coagents.errors import ConfigError
from async_coagents.experiment.run import train
from tests.test_run import quick_config, stopped_run

#: What a gRPC server (a Ray head's GCS) sends as soon as a client connects: an HTTP/2 SETTINGS
#: frame (a real head's carries settings; an empty one is as valid).
GRPC_GREETING = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@contextlib.contextmanager
def tcp_server(greeting: bytes = b"", close: bool = False):
    """A loopback TCP server (yields its port) that sends ``greeting`` to every client, then
    closes the connection (``close``) or reads until the client leaves."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            if greeting:
                self.request.sendall(greeting)
            if close:
                return
            self.request.settimeout(10)
            with contextlib.suppress(OSError):
                while self.request.recv(4096):
                    pass

    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)) as port:
        yield port


@contextlib.contextmanager
def serving(server: socketserver.BaseServer):
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP server's answer to everything (as the Ray dashboard's port 8265 answers)."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"Ray dashboard")

    def log_message(self, *args):
        pass


class HTTPServer(http.server.ThreadingHTTPServer):
    """An HTTP server that keeps quiet about clients leaving early (the check reads only the
    first bytes of an answer), so that stderr holds only what the command line printed."""

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def fake_head():
    """The port of a server that greets clients as a Ray head does."""
    with tcp_server(GRPC_GREETING) as port:
        yield port


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


def test_a_ray_head_passes_in_every_spelling(fake_head):
    for address in (f"127.0.0.1:{fake_head}", f"ray://127.0.0.1:{fake_head}",
                    f"localhost:{fake_head}"):
        ray_env.check_reachable(address)
    for address in ("", "auto", "local"):  # Ray resolves these itself
        ray_env.check_reachable(address)


def test_an_http_server_is_named_as_such_with_the_port_of_a_head():
    """The realistic typo: the dashboard's port (8265) instead of the head's (6379)."""
    server = HTTPServer(("127.0.0.1", 0), QuietHandler)
    with serving(server) as port:
        with pytest.raises(ConfigError) as error:
            ray_env.check_reachable(f"127.0.0.1:{port}")
        assert str(error.value) == (
            f"no Ray head at 127.0.0.1:{port}: an HTTP server answered there (the Ray "
            "dashboard?); a Ray head normally listens on port 6379 (`ray start --head` prints "
            "its address)")
        with pytest.raises(ConfigError, match="Ray client server normally listens on port 10001"):
            ray_env.check_reachable(f"ray://127.0.0.1:{port}")


@pytest.mark.parametrize("greeting, close, what", [
    (b"", False, r"accepted the connection and said nothing in 0.5 s"),
    (b"", True, r"accepted the connection and closed it without a word"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", False, r"answered there \(b'SSH-2.0-O'\)"),
])
def test_any_other_server_is_not_a_ray_head(greeting, close, what):
    with tcp_server(greeting, close) as port:
        expected = (rf"^no Ray head at 127.0.0.1:{port}: something that is not a Ray head {what}; "
                    r"a Ray head normally listens on port 6379 \(`ray start --head` prints")
        with pytest.raises(ConfigError, match=expected):
            ray_env.check_reachable(f"127.0.0.1:{port}", answer_timeout_s=0.5)


def test_with_tls_only_the_connection_is_checked(monkeypatch):
    """A TLS server waits for the client's hello, so silence is all a TLS head would send."""
    monkeypatch.setenv("RAY_USE_TLS", "1")
    with tcp_server() as port:
        ray_env.check_reachable(f"127.0.0.1:{port}", answer_timeout_s=0.5)


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


def test_joining_a_cluster_without_its_token_says_how_to_get_it(clean_env, fake_head):
    with pytest.raises(ConfigError, match="uses token authentication: set RAY_AUTH_TOKEN"):
        ray_env.prepare(f"127.0.0.1:{fake_head}")


def test_the_command_line_fails_fast_on_a_wrong_address(tmp_path, closed_port, capsys):
    """`--address` alone means the Ray backend; a wrong one is one line of error, no traceback."""
    assert main(["train", "--out", str(tmp_path / "run"), "--address", f"127.0.0.1:{closed_port}",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"coagents train: error: cannot reach a Ray cluster at 127.0.0.1:{closed_port}" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_the_command_line_names_the_dashboard_port_given_as_the_address(tmp_path, capsys):
    server = HTTPServer(("127.0.0.1", 0), QuietHandler)
    with serving(server) as port:
        assert main(["train", "--out", str(tmp_path / "run"), "--address", f"127.0.0.1:{port}",
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert (f"coagents train: error: no Ray head at 127.0.0.1:{port}: an HTTP server answered "
            "there (the Ray dashboard?); a Ray head normally listens on port 6379") in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def ray_run(tmp_path, status):
    """The directory of a finished or interrupted Ray run as far as ``resume`` reads it before it
    joins a cluster: a run's files whose config names the Ray backend (the address is checked
    before the checkpoint is read, so the run itself can be an in-process one)."""
    out = tmp_path / status
    if status == "completed":
        train(quick_config(), out, progress=False)
    else:
        stopped_run(quick_config(), out, stop_after=50)
    config = json.loads((out / "config.json").read_text())
    config["backend"]["kind"] = "ray"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    state = load_checkpoint(out / "checkpoint.ckpt", kind="run")  # it must match the config
    state["config"]["backend"]["kind"] = "ray"
    save_checkpoint(out / "checkpoint.ckpt", state, kind="run")
    return out


def files(path):
    """Every file of a run directory but the lock's own record of who holds it."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("status", ["completed", "interrupted"])
def test_resume_at_a_wrong_address_changes_nothing_in_the_run_directory(tmp_path, status,
                                                                       closed_port, capsys):
    run = ray_run(tmp_path, status)
    before = files(run)
    code = main(["resume", str(run), "--address", f"127.0.0.1:{closed_port}", "--no-progress"])
    err = capsys.readouterr().err
    if status == "interrupted":
        assert code == 1 and "cannot reach a Ray cluster at 127.0.0.1:" in err
    else:  # nothing to resume: the address is not needed, and not recorded
        assert code == 0
    assert "Traceback" not in err
    assert files(run) == before  # config.json byte for byte, and every other file


def test_an_address_with_the_local_backend_is_a_contradiction(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--backend", "local",
                 "--address", "127.0.0.1:6379"]) == 1
    assert "backend.address ('127.0.0.1:6379') is for the Ray backend" in capsys.readouterr().err
