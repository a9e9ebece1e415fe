"""The environment a Ray session needs, prepared before ``ray`` is imported (Ray reads its
authentication settings at import time; this module must not import ray), and the check that a
cluster address is a Ray head before Ray is asked to join it.

Token authentication is set explicitly (`reference/ray_notes.md` §0.1): ``RAY_AUTH_MODE=token``
unless the user chose a mode. In token mode Ray needs the token before it starts: a local instance
started by a run gets an ephemeral token kept in the process environment (never written to disk);
joining an existing cluster needs that cluster's token.

An address is checked in seconds, because ``ray.init`` retries a wrong one for minutes: something
must accept connections there, and it must speak gRPC as a Ray head does (its GCS, and the Ray
client server of ``ray://`` addresses, send an HTTP/2 SETTINGS frame as soon as a client
connects). Anything else is named: an HTTP server (the dashboard's port 8265 is the usual typo), a
server that says nothing, or one that says something else.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from pathlib import Path

from async_coagents.errors import ConfigError

#: The port of a Ray head (its GCS) unless ``ray start --head --port`` says otherwise.
HEAD_PORT = 6379
#: The port of a head's Ray client server (``ray://`` addresses) unless configured otherwise.
CLIENT_PORT = 10001
#: What a gRPC client sends first (HTTP/2 connection preface and an empty SETTINGS frame).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4  # HTTP/2 frame type of the server's first frame


def token_available() -> bool:
    """Whether Ray can find a token: the environment or the token file of this user."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    try:
        return (Path.home() / ".ray" / "auth_token").is_file()
    except RuntimeError:  # no home directory
        return False


def _read_some(sock: socket.socket, n: int, timeout_s: float) -> tuple[bytes, str]:
    """Up to ``n`` bytes the peer sends within ``timeout_s``, and why reading stopped: ``""``
    (got ``n``), ``"closed"`` or ``"silent"``."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "silent"
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except TimeoutError:
            return data, "silent"
        except OSError:  # reset by the peer
            return data, "closed"
        if not chunk:
            return data, "closed"
        data += chunk
    return data, ""


def _speaks_http(host: str, port: int, timeout_s: float) -> bool:
    """Whether an HTTP/1 request to ``host:port`` gets an HTTP answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            answer, _ = _read_some(sock, 5, timeout_s)
    except OSError:
        return False
    return answer == b"HTTP/"


def _not_a_head(sock: socket.socket, host: str, port: int, timeout_s: float) -> str | None:
    """None if the server on ``sock`` greets a gRPC client as a Ray head does, else what answered
    there, in words."""
    with contextlib.suppress(OSError):  # what it sent before closing, if anything, is read below
        sock.sendall(_HTTP2_PREFACE)
    frame, stopped = _read_some(sock, 9, timeout_s)
    if len(frame) == 9 and frame[3] == _SETTINGS and frame[5:9] == bytes(4):
        return None
    if frame.startswith(b"HTTP/") or _speaks_http(host, port, timeout_s):
        return "an HTTP server answered there (the Ray dashboard?)"
    if frame:
        return f"something that is not a Ray head answered there ({frame!r})"
    if stopped == "closed":
        return ("something that is not a Ray head accepted the connection and closed it without "
                "a word")
    return (f"something that is not a Ray head accepted the connection and said nothing in "
            f"{timeout_s:g} s")


def check_reachable(address: str, timeout_s: float = 5.0, answer_timeout_s: float = 3.0) -> None:
    """Fail within seconds, naming the address, when nothing accepts connections there or what
    does is not a Ray head (see the module docstring): ``ray.init`` itself retries a wrong address
    for minutes. ``auto`` and ``local`` (Ray resolves them) are not checked; with ``RAY_USE_TLS``
    only the connection is (a TLS server waits for the client to speak first)."""
    if address in ("", "auto", "local"):
        return
    client = address.startswith("ray://")
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"backend.address must be host:port (or ray://host:port, or auto), "
                          f"got {address!r}")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({reason}): is its head running, and is "
            "this the address it printed? (cluster/README.md)") from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        what = _not_a_head(sock, host, int(port), answer_timeout_s)
    if what is not None:
        usual = (f"a head's Ray client server normally listens on port {CLIENT_PORT}" if client
                 else f"a Ray head normally listens on port {HEAD_PORT}")
        raise ConfigError(f"no Ray head at {address}: {what}; {usual} (`ray start --head` "
                          "prints its address)")


def prepare(address: str = "") -> str:
    """Check that ``address`` (if any) is a reachable Ray head, and set the authentication and
    usage-stats environment for a run; returns the auth mode."""
    check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode != "token" or token_available():
        return mode
    if address:
        raise ConfigError(
            f"the Ray cluster at {address} uses token authentication: set RAY_AUTH_TOKEN to its "
            "token (or copy the head's ~/.ray/auth_token to this machine); see cluster/README.md"
        )
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return mode
