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
