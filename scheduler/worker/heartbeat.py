"""The lease of a running job, renewed from one thread per worker process while the body runs."""

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

    One thread of the process beats for every running job: a thread started for each
    job cost more than the claim of a short one (it also waited for that thread to run),
    and most jobs end long before their first beat.
    """

    def __init__(self, *, job_id: int, token: UUID, interval: float) -> None:
        self.job_id = job_id
        self.token = token
        self.interval = interval

    def __enter__(self) -> "Heartbeat":
        _BEATER.add(self)
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
        _BEATER.remove(self, wait=wait)


class _Beater:
    """The thread that beats for the running jobs of one process, started with its
    first job. It wakes for the earliest beat due, not for each job that starts: in a
    prefork child, which runs one job at a time, a burst of short jobs wakes it about
    once a heartbeat interval."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """No job, no thread: a forked child has neither its parent's thread nor jobs."""
        self._changed = threading.Condition()
        #: Each running job's heartbeat, and when its next beat is due (monotonic).
        self._due: dict[Heartbeat, float] = {}
        #: The heartbeat whose beat is under way, if any.
        self._beating: Heartbeat | None = None
        self._thread: threading.Thread | None = None
        #: Whether the thread may hold a database connection, closed once no job runs.
        self._connected = False
        #: When the thread wakes of itself (monotonic): a job due sooner wakes it.
        self._wakes_at = math.inf

    def add(self, heartbeat: Heartbeat) -> None:
        with self._changed:
            due = self._due[heartbeat] = time.monotonic() + heartbeat.interval
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="scheduler-heartbeat", daemon=True
                )
                self._thread.start()
            elif due < self._wakes_at:
                self._changed.notify_all()

    def remove(self, heartbeat: Heartbeat, *, wait: bool) -> None:
        with self._changed:
            if self._due.pop(heartbeat, None) is not None and not self._due and self._connected:
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
            alive = self._beat(heartbeat)
            with self._changed:
                self._beating = None
                if heartbeat in self._due:
                    if alive:
                        self._due[heartbeat] = time.monotonic() + heartbeat.interval
                    else:
                        del self._due[heartbeat]
                        logger.warning("job lease lost job_id=%s at=heartbeat", heartbeat.job_id)
                # Once stopped meanwhile, the job's outcome came first (a beat that
                # waited for it): the outcome's record says whether the lease was lost.
                self._changed.notify_all()

    def _next_due(self) -> Heartbeat | None:
        """Wait for the next beat due and take it; None: no job runs any more and the
        thread's connection is to be closed."""
        with self._changed:
            while True:
                if not self._due and self._connected:
                    self._connected = False
                    return None
                heartbeat = min(self._due, key=self._due.__getitem__, default=None)
                self._wakes_at = math.inf if heartbeat is None else self._due[heartbeat]
                now = time.monotonic()
                if self._wakes_at <= now:
                    self._beating, self._connected = heartbeat, True
                    return heartbeat
                self._changed.wait(None if heartbeat is None else self._wakes_at - now)

    def _beat(self, heartbeat: Heartbeat) -> bool:
        """One beat; False once the job is no longer running under this delivery."""
        try:
            return running.heartbeat(job_id=heartbeat.job_id, token=heartbeat.token)
        except Exception as error:
            # Not only DatabaseError (InterfaceError is none): a beater that ended would
            # leave the bodies running without a lease, to be run again.
            logger.warning(
                "job heartbeat failed job_id=%s error=%s: %s",
                heartbeat.job_id,
                type(error).__name__,
                error,
            )
            connections.close_all()  # reconnect on the next beat
            return True


_BEATER = _Beater()
os.register_at_fork(after_in_child=_BEATER.reset)
