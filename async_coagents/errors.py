"""The project's exception types: every error raised at a boundary (config, files, messages,
checkpoints) is one of these, with a message that names the offending value."""


class CoagentsError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(CoagentsError, ValueError):
    """A configuration or network specification is invalid (unknown key, wrong type, bad value)."""


class DataError(CoagentsError, ValueError):
    """A dataset file is missing, truncated, corrupt or inconsistent."""


class CheckpointError(CoagentsError, ValueError):
    """A checkpoint file is corrupt, truncated, foreign or incompatible with the network."""


class ProtocolError(CoagentsError, ValueError):
    """A message between agents is malformed (wrong shape, NaN reward, unknown kind)."""


class DivergedError(CoagentsError, ArithmeticError):
    """Training diverged: a loss that is not finite or far above the untrained network's
    (``async_coagents.experiment.divergence``). ``update`` and ``value`` say where and what."""

    def __init__(self, message: str, *, update: int | None = None,
                 value: float | None = None) -> None:
        super().__init__(message)
        self.update = update
        self.value = value


class MessageOrderError(CoagentsError):
    """A message reached an agent's actor out of its sequence (a gap: an earlier message failed,
    or the actor restarted behind the driver): refused without touching the agent; the Ray
    backend's driver recovers by replaying what the actor missed (``backends/ray_backend.py``)."""


class RecoveryError(CoagentsError):
    """An agent's actor died and could not be brought back to where the run was (it did not
    restart in time, or restarts are off)."""


class NonDeterminismError(CoagentsError):
    """A replayed message gave another answer than the first time: the agent is not a
    deterministic function of its messages, so exactly-once recovery cannot hold."""
