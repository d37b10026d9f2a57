"""SIGTERM and SIGINT stop a dispatcher process after its current tick; Ctrl-C again
stops it at once."""

import atexit
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from django.db import connections

logger = logging.getLogger(__name__)

#: The exit code of a process a second Ctrl-C stopped: a shell's for one SIGINT ended.
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT

#: Whether this process was forked from the one that imported this module (a worker's
#: embedded beat): its exit functions are then the parent's copies.
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class StopNowError(KeyboardInterrupt):
    """A second Ctrl-C: the process stops at once, its tick cut short."""


class StopSignals:
    """The handler of SIGTERM (a deploy) and SIGINT (Ctrl-C): it records the first one
    received and calls ``on_stop``, in the main thread, between two of its statements.

    A SIGINT after that, within :meth:`cut_short_here` (a tick stuck on SQS), raises
    :class:`StopNowError` there, once: as Celery's worker does, Ctrl-C again is a cold
    shutdown. What the tick had not committed rolls back (a batch's jobs stay as they
    were; a message already sent carries a token never committed, which the worker
    drops, and the next tick sends the job again; a re-send batch gives its copies
    back), and the caller calls :meth:`stop_now`. A statement waiting on PostgreSQL
    cannot be interrupted (its client library waits in C), and the signals received
    meanwhile reach Python as one: the stop comes after it returns.

    A second SIGTERM does not: an orchestrator sends SIGTERM once, then SIGKILL after
    its grace period, and a supervisor that sends it again means the same stop.

    It writes nothing: a signal that lands during a write to stderr (a log line stuck
    behind a slow reader) made a write there raise "reentrant call", and the stop was
    lost. The process says it stopped once it has.
    """

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        #: The first stop signal received, if any.
        self.received: int | None = None
        #: The signal that cut the tick short (:class:`StopNowError`), if one did.
        self.forced: int | None = None
        self._cuttable = False

    def install(self) -> None:
        """Handle both signals from now on (from the main thread only), and ignore them
        once the process exits."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        # Python puts the default handlers back as it finalizes, after the exit functions:
        # Ctrl-C pressed on killed the process as it exited (status -2, not its own).
        atexit.unregister(_ignore_stop_signals)
        atexit.register(_ignore_stop_signals)

    @contextmanager
    def cut_short_here(self) -> Iterator[None]:
        """Let a second SIGINT raise :class:`StopNowError` within the block."""
        self._cuttable = True
        try:
            yield
        finally:
            self._cuttable = False

    def stop_now(self, *, process: str) -> NoReturn:
        """After :class:`StopNowError`: close the connections (PostgreSQL rolls back what the
        tick had not committed), say so, and exit with :data:`INTERRUPTED_EXIT_CODE` at
        once, after the exit functions (logging's flush, beat's pidfile) unless they are
        a parent's that this process was forked from."""
        connections.close_all()
        logger.warning(
            "%s stopping now signal=%s tick=cut short: what it had not committed rolls "
            "back; messages it sent carry tokens never committed, which workers drop, "
            "and the next tick sends those jobs again",
            process,
            self.forced,
        )
        if _forked:
            # The parent's (a worker's pidfile, its state file): as billiard ends a
            # child, only the log is flushed.
            logging.shutdown()
        else:
            atexit._run_exitfuncs()
        # Not SystemExit: Python's exit waits for the SQS send threads, which retry a
        # batch SQS does not answer for up to half a minute, deaf to Ctrl-C.
        os._exit(INTERRUPTED_EXIT_CODE)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            self._on_stop()
        elif signum == signal.SIGINT and self._cuttable and self.forced is None:
            self.forced = signum
            self._cuttable = False
            raise StopNowError


def _ignore_stop_signals() -> None:
    """As the process exits: it is stopping already."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
