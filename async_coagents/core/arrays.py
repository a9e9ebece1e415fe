"""Objects that update numpy arrays in place must own them: after a trip through pickle (Ray sends
agents to actors that way) arrays may come back as read-only views of a shared buffer, and views
of one buffer come back as separate arrays. :func:`owned` restores writable, independent arrays."""

from __future__ import annotations

import numpy as np


def owned(state: dict) -> dict:
    """``state`` with every numpy array replaced by a writable copy that owns its memory."""
    return {key: value.copy() if isinstance(value, np.ndarray) else value
            for key, value in state.items()}
