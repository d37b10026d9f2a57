"""SIGTERM and SIGINT stop a dispatcher process after its current tick."""

import signal
from collections.abc import Callable
from types import FrameType


class StopSignals:
    """The handler of SIGTERM (a deploy) and SIGINT (Ctrl-C): it records the first one
    received and calls ``on_stop``, in the main thread, between two of its statements.

    It writes nothing: a signal that lands during a write to stderr (a log line stuck
    behind a slow reader) made a write there raise "reentrant call", and the stop was
    lost. The process says it stopped once it has.
    """

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        #: The first stop signal received, if any.
        self.received: int | None = None

    def install(self) -> None:
        """Handle both signals from now on (from the main thread only)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        self._on_stop()
