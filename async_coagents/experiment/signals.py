"""Stopping a run cleanly: Ctrl-C (SIGINT) and SIGTERM (``kill``, ``ray job stop``, a scheduler's
pre-emption) set a flag that the run's loop checks between batches, so it stops at a batch
boundary with its checkpoint and summary written; a second signal stops at once
(:class:`KeyboardInterrupt`)."""

from __future__ import annotations

import signal

#: Signals that stop a run at the next batch boundary with its checkpoint written.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The flag; ``with request.trapped():`` installs the handlers for the duration of a loop and
    puts the previous ones back (outside the main thread, signals are left alone).

    ``signals`` counts the signals received. With ``escalate=False`` a second signal raises
    nothing: the loop reads ``signals`` and decides (a parallel sweep forwards each one to its
    members)."""

    def __init__(self, *, escalate: bool = True) -> None:
        self.requested = False
        self.signals = 0
        self.escalate = escalate

    def request(self) -> None:
        """Stop at the next batch boundary, as Ctrl-C does."""
        self.requested = True

    def _handler(self, signum, frame) -> None:
        self.signals += 1
        if self.requested and self.escalate:
            raise KeyboardInterrupt
        self.requested = True

    def trapped(self) -> _Trapped:
        return _Trapped(self)


class _Trapped:
    def __init__(self, request: StopRequest) -> None:
        self.request = request
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self.request._handler)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self.request

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            # None: installed by C code (Ray's crash handler); Python cannot put it back
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
