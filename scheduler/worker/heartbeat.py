"""The lease of a running job, renewed from a thread apart from its body while it runs."""

import logging
import math
import os
import threading
import time
from types import TracebackType
from uuid import UUID

from django.db import connections

from scheduler.services import running

logger = logging.getLogger(__name__)


class Heartbeat:
    """Renews one running job's lease every ``interval`` seconds until stopped.

    Each beat is one small UPDATE on the beating thread's own database connection (the
    body's connection may be inside a long transaction); no lock is held between beats.
    A failed beat is logged and the next one tried: the lease tolerates a missed beat or
    two (``SCHEDULER_HEARTBEAT_INTERVAL_SECONDS`` is at most a third of the lease).

    Each running job has a thread of its own (a beat waiting for a row lock holds up no
    other job's), taken from those of the process's earlier jobs: a thread started for
    each job cost more than the claim of a short one, which ends long before its first
    beat.
    """

    def __init__(self, *, job_id: int, token: UUID, interval: float) -> None:
        self.job_id = job_id
        self.token = token
        self.interval = interval
        self._beater: _Beater | None = None

    def __enter__(self) -> "Heartbeat":
        self._beater = _BEATERS.take(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, *, wait: bool = True) -> None:
        """Stop beating; with ``wait``, return once no beat of this job is under way (or
        one stuck in the database has had its chance: a late beat can only renew a job
        still running). Without, at once: an atomic body's transaction must not wait for
        a beat that waits for a connection (behind a pooler, one only such transactions
        can free) or for the job's row it holds."""
        if self._beater is not None:
            self._beater.release(self, wait=wait)


class _Beater:
    """A thread that beats for one running job at a time, then waits for its process's
    next job. It wakes for the job's beats, not when a job starts: in a burst of short
    jobs it wakes about once a heartbeat interval."""

    def __init__(self, pool: "_Beaters", heartbeat: Heartbeat) -> None:
        self._pool = pool
        self._changed = threading.Condition()
        #: The job it beats for (None: back in the pool), and when its next beat is due
        #: (monotonic).
        self._job: Heartbeat | None = heartbeat
        self._due = time.monotonic() + heartbeat.interval
        #: The job whose beat is under way, if any.
        self._beating: Heartbeat | None = None
        #: Whether the thread may hold a database connection, closed between jobs.
        self._connected = False
        #: When the thread wakes of itself (monotonic): a job due sooner wakes it.
        self._wakes_at = math.inf
        threading.Thread(target=self._run, name="scheduler-heartbeat", daemon=True).start()

    def assign(self, heartbeat: Heartbeat) -> None:
        """Beat for ``heartbeat``'s job (the beater is idle, out of the pool)."""
        with self._changed:
            self._job, self._due = heartbeat, time.monotonic() + heartbeat.interval
            if self._due < self._wakes_at:
                self._changed.notify_all()

    def release(self, heartbeat: Heartbeat, *, wait: bool) -> None:
        """Stop beating for ``heartbeat``'s job; back in the pool once no beat is under way."""
        with self._changed:
            if self._job is heartbeat:
                self._job = None
                if self._beating is None:
                    self._pool.give_back(self)
                if self._connected:
                    self._changed.notify_all()  # to close the thread's connection
            if wait:
                self._changed.wait_for(
                    lambda: self._beating is not heartbeat, timeout=max(1.0, heartbeat.interval)
                )

    def _run(self) -> None:
        while True:
            heartbeat = self._next_due()
            if heartbeat is None:
                connections.close_all()  # this thread's connection only
                continue
            alive = _beat(heartbeat)
            with self._changed:
                self._beating = None
                # Stopped meanwhile (its job None: a beat under way is not given back),
                # the job's outcome came first (a beat that waited for it), and its
                # record says whether the lease was lost.
                lost = not alive and self._job is heartbeat
                if self._job is heartbeat and alive:
                    self._due = time.monotonic() + heartbeat.interval
                else:
                    self._job = None
                    self._pool.give_back(self)
                self._changed.notify_all()
            if lost:
                # Not under the lock: a stop must not wait for a logging handler.
                logger.warning("job lease lost job_id=%s at=heartbeat", heartbeat.job_id)

    def _next_due(self) -> Heartbeat | None:
        """Wait for the job's next beat and take it; None: the job ended and the
        thread's connection is to be closed."""
        with self._changed:
            while True:
                job = self._job
                if job is None and self._connected:
                    self._connected = False
                    return None
                self._wakes_at = math.inf if job is None else self._due
                now = time.monotonic()
                if job is not None and self._due <= now:
                    self._beating, self._connected = job, True
                    return job
                self._changed.wait(None if job is None else self._due - now)


def _beat(heartbeat: Heartbeat) -> bool:
    """One beat; False once the job is no longer running under this delivery."""
    try:
        return running.heartbeat(job_id=heartbeat.job_id, token=heartbeat.token)
    except Exception as error:
        # Not only DatabaseError (InterfaceError is none): a beater that gave up would
        # leave the body running without a lease, to be run again.
        logger.warning(
            "job heartbeat failed job_id=%s error=%s: %s",
            heartbeat.job_id,
            type(error).__name__,
            error,
        )
        connections.close_all()  # reconnect on the next beat
        return True


class _Beaters:
    """The idle beaters of a process: as many threads as it ran jobs at once."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """No idle beater: a forked child has none of its parent's threads."""
        self._lock = threading.Lock()
        self._idle: list[_Beater] = []

    def take(self, heartbeat: Heartbeat) -> _Beater:
        """An idle beater, or a new one, beating for ``heartbeat``'s job."""
        with self._lock:
            beater = self._idle.pop() if self._idle else None
        if beater is None:
            return _Beater(self, heartbeat)
        beater.assign(heartbeat)
        return beater

    def give_back(self, beater: _Beater) -> None:
        with self._lock:
            self._idle.append(beater)


_BEATERS = _Beaters()
os.register_at_fork(after_in_child=_BEATERS.reset)
