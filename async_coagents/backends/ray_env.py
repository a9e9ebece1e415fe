"""The environment a Ray session needs, prepared before ``ray`` is imported (Ray reads its
authentication settings at import time; this module must not import ray).

Token authentication is set explicitly (`reference/ray_notes.md` §0.1): ``RAY_AUTH_MODE=token``
unless the user chose a mode. In token mode Ray needs the token before it starts: a local instance
started by a run gets an ephemeral token kept in the process environment (never written to disk);
joining an existing cluster needs that cluster's token.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from async_coagents.errors import ConfigError


def token_available() -> bool:
    """Whether Ray can find a token: the environment or the token file of this user."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    try:
        return (Path.home() / ".ray" / "auth_token").is_file()
    except RuntimeError:  # no home directory
        return False


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, naming the address, when nothing accepts connections there: ``ray.init``
    itself retries a wrong address for minutes. ``auto`` (Ray finds the cluster) is not checked."""
    if address in ("", "auto", "local"):
        return
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"backend.address must be host:port (or ray://host:port, or auto), "
                          f"got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ConfigError(
            f"cannot reach a Ray cluster at {address} ({reason}): is its head running, and is "
            "this the address it printed? (cluster/README.md)") from None


def prepare(address: str = "") -> str:
    """Check that ``address`` (if any) is reachable, and set the authentication and usage-stats
    environment for a run; returns the auth mode."""
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
