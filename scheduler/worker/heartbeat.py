"""The lease of a running job, renewed from a thread of its own while the body runs."""

import logging
import threading
from types import TracebackType
from uuid import UUID

from django.db import connections

from scheduler.services import running

logger = logging.getLogger(__name__)


class Heartbeat:
    """Renews one running job's lease every ``interval`` seconds until stopped.

    Each beat is one small UPDATE on the thread's own database connection (the body's
    connection may be inside a long transaction); no lock is held between beats. A
    failed beat is logged and the next one tried: the lease tolerates a missed beat or
    two (``SCHEDULER_HEARTBEAT_INTERVAL_SECONDS`` is at most a third of the lease).
    """

    def __init__(self, *, job_id: int, token: UUID, interval: float) -> None:
        self.job_id = job_id
        self.token = token
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"scheduler-heartbeat-{job_id}", daemon=True
        )

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, *, wait: bool = True) -> None:
        """Stop beating; with ``wait``, return once the thread is done (or a beat stuck
        in the database has had its chance: a late beat can only renew a job still
        running). Without, at once: an atomic body's transaction must not wait for a
        beat that waits for a connection (behind a pooler, one only such transactions
        can free) or for the job's row it holds."""
        self._stopped.set()
        if wait and self._thread.is_alive():
            self._thread.join(max(1.0, self.interval))

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                try:
                    alive = running.heartbeat(job_id=self.job_id, token=self.token)
                except Exception as error:
                    # Not only DatabaseError (InterfaceError is none): a thread that ended
                    # would leave the body running without a lease, to be run again.
                    logger.warning(
                        "job heartbeat failed job_id=%s error=%s: %s",
                        self.job_id,
                        type(error).__name__,
                        error,
                    )
                    connections.close_all()  # reconnect on the next beat
                    continue
                if not alive:
                    # Once stopped, the job's outcome came first (a beat that waited for
                    # it): the outcome's record says whether the lease was lost.
                    if not self._stopped.is_set():
                        logger.warning("job lease lost job_id=%s at=heartbeat", self.job_id)
                    return
        finally:
            connections.close_all()  # this thread's connection only
