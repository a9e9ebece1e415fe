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


def prepare(address: str = "") -> str:
    """Set the authentication and usage-stats environment for a run; returns the auth mode."""
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
