"""The dispatcher: moves jobs that are nearly due from PostgreSQL to SQS.

Each tick claims due rows with ``FOR UPDATE SKIP LOCKED`` in batches, sends them with
``DelaySeconds = run_at - now - DELIVERY_LEAD`` so SQS releases them just before their
time, and marks them enqueued with a fresh dispatch token, all in one short transaction
per batch. Every ``SCHEDULER_RECOVERY_INTERVAL_SECONDS`` a tick first recovers lost work:
unclaimed jobs are sent again with the same token, jobs whose lease expired are retried,
jobs past their deadline expire; hourly, old jobs are purged. Any number of dispatchers
may tick at once.
"""

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.dispatch.publisher import OutgoingMessage, Publisher, SQSPublisher
from scheduler.services import dispatching
from scheduler.services.dispatching import Pending

logger = logging.getLogger(__name__)

_PURGE_EVERY_SECONDS = 3600.0


def delay_seconds(run_at: datetime, now: datetime, *, max_delay: int, lead: float) -> int:
    """Whole seconds SQS should hold the message: ``run_at - now - lead``, clamped.

    Rounded down, so SQS never releases the message after ``run_at - lead``: the worker
    holds it a little before its time and the exact eta decides the start, not the
    server's release jitter (moto re-checks delayed messages only once a second).
    """
    return max(0, min(max_delay, math.floor((run_at - now).total_seconds() - lead)))


def _mark_enqueued(jobs: Sequence[Pending], *, now: datetime) -> int:
    return dispatching.mark_enqueued({job.job_id: job.dispatch_token for job in jobs}, now=now)


@dataclass
class TickResult:
    """What one tick did."""

    sent: int = 0
    failed: int = 0
    resent: int = 0
    leases_expired: int = 0
    expired: int = 0
    purged: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchResult:
    """What one claimed batch became: rows claimed, sent and refused by the queue."""

    claimed: int
    sent: int
    failed: int
    error: str | None = None


class Dispatcher:
    """Runs dispatch ticks, once (``run_once``) or in a loop (``run``)."""

    def __init__(self, publisher: Publisher | None = None, name: str | None = None) -> None:
        self.publisher: Publisher = publisher or SQSPublisher()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._next_recovery = -math.inf
        self._next_purge = -math.inf
        self._stopping = False

    def run_once(self, *, now: datetime | None = None) -> TickResult:
        """One tick: recover lost jobs when their interval has passed, then send due jobs.

        ``now`` fixes the tick's time (tests); by default each batch reads the clock, so
        the delays of the last batch of a long tick are not computed from its start.
        """
        result = TickResult()
        if time.monotonic() >= self._next_recovery:
            self._recover(result, now=now or timezone.now())
            self._next_recovery = time.monotonic() + scheduler_settings.RECOVERY_INTERVAL_SECONDS
        result.sent, result.failed = self._send_all(
            dispatching.any_due, dispatching.lock_due, _mark_enqueued, result, now=now
        )
        self._record_heartbeat(result)
        log = logger.warning if result.errors or result.failed else logger.info
        log(
            "dispatch tick dispatcher=%s sent=%s failed=%s resent=%s "
            "leases_expired=%s expired=%s purged=%s errors=%s",
            self.name,
            result.sent,
            result.failed,
            result.resent,
            result.leases_expired,
            result.expired,
            result.purged,
            len(result.errors),
        )
        return result

    def _recover(self, result: TickResult, *, now: datetime) -> None:
        """Re-send unclaimed jobs, retry dead workers' jobs, expire missed ones, purge hourly."""
        result.resent, _ = self._send_all(
            dispatching.any_resend,
            dispatching.lock_resends,
            dispatching.mark_resent,
            result,
            now=now,
        )
        try:
            result.leases_expired = dispatching.expire_leases(now=now)
            result.expired = dispatching.expire_missed(now=now)
            if time.monotonic() >= self._next_purge:
                result.purged = dispatching.purge_finished(now=now)
                self._next_purge = time.monotonic() + _PURGE_EVERY_SECONDS
        except DatabaseError as error:
            result.errors.append(f"recovery: {type(error).__name__}: {error}")
            logger.exception("dispatcher recovery failed dispatcher=%s", self.name)

    def run(self, *, max_ticks: int | None = None) -> None:
        """Tick every ``SCHEDULER_DISPATCH_INTERVAL_SECONDS`` until ``stop()``.

        Errors are logged and the loop goes on, backing off while they persist.
        """
        ticks = 0
        consecutive_failures = 0
        while not self._stopping and (max_ticks is None or ticks < max_ticks):
            started = time.monotonic()
            close_old_connections()
            try:
                result = self.run_once()
                consecutive_failures = consecutive_failures + 1 if result.errors else 0
            except Exception:
                consecutive_failures += 1
                logger.exception("dispatcher tick crashed dispatcher=%s", self.name)
            ticks += 1
            interval = scheduler_settings.DISPATCH_INTERVAL_SECONDS
            pause = interval - (time.monotonic() - started)
            if consecutive_failures:
                # Back off while PostgreSQL or SQS is down, but never longer than the
                # lookahead, or jobs would reach SQS late once it is back.
                pause = max(
                    pause,
                    exponential_backoff(
                        consecutive_failures,
                        base=interval,
                        cap=scheduler_settings.LOOKAHEAD_SECONDS / 2,
                    ),
                )
            self._sleep(pause)

    def stop(self) -> None:
        """Ask ``run()`` to return after the current tick."""
        self._stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _send_all(
        self,
        waiting: Callable[..., bool],
        lock: Callable[..., list[Pending]],
        mark: Callable[..., int],
        result: TickResult,
        *,
        now: datetime | None,
    ) -> tuple[int, int]:
        """If anything is ``waiting``, send batches of what ``lock`` returns and ``mark`` them.

        Returns how many jobs were sent and how many SQS refused.
        """
        batch_size = scheduler_settings.BATCH_SIZE
        sent = failed = 0
        try:
            # Probing first keeps a tick with nothing to send out of any transaction.
            if not waiting(now=now or timezone.now()):
                return sent, failed
            while True:
                batch = self._send_batch(lock, mark, batch_size, now=now or timezone.now())
                sent += batch.sent
                failed += batch.failed
                if batch.error:
                    result.errors.append(batch.error)
                # A short batch means nothing more is waiting; a failure means SQS is
                # unwell, and the failed jobs, left as they were, would only come back.
                if batch.claimed < batch_size or batch.failed:
                    return sent, failed
        except DatabaseError as error:
            result.errors.append(f"{lock.__name__}: {type(error).__name__}: {error}")
            logger.exception("dispatcher batch failed dispatcher=%s", self.name)
            return sent, failed

    def _send_batch(
        self,
        lock: Callable[..., list[Pending]],
        mark: Callable[..., int],
        batch_size: int,
        *,
        now: datetime,
    ) -> BatchResult:
        """Lock, send and mark one batch in one transaction: the locks last as long as the sends.

        If the process dies after sending and before committing, the jobs are as they
        were: a dispatched job is still scheduled, and the worker drops its message,
        whose token never committed, once the lock is gone; a re-sent job's copy carries
        its current token and is counted one short. Either way each job runs once.
        """
        max_delay = scheduler_settings.MAX_DELAY_SECONDS
        lead = scheduler_settings.DELIVERY_LEAD_SECONDS
        with transaction.atomic():
            jobs = lock(now=now, limit=batch_size)
            if not jobs:
                return BatchResult(claimed=0, sent=0, failed=0)
            messages = [
                OutgoingMessage(
                    job_id=job.job_id,
                    dispatch_token=job.dispatch_token,
                    task_name=job.task_name,
                    queue=job.queue,
                    eta=job.run_at,
                    delay_seconds=delay_seconds(job.run_at, now, max_delay=max_delay, lead=lead),
                )
                for job in jobs
            ]
            published = self.publisher.publish(messages)
            sent = set(published.sent)
            mark([job for job in jobs if job.job_id in sent], now=now)
        error = None
        if published.error:
            error = f"sqs: {published.error}"
        elif published.failed:
            error = f"sqs rejected {len(published.failed)} message(s)"
        return BatchResult(
            claimed=len(jobs), sent=len(published.sent), failed=len(published.failed), error=error
        )

    def _record_heartbeat(self, result: TickResult) -> None:
        try:
            dispatching.record_heartbeat(
                dispatcher=self.name,
                sent=result.sent,
                recovered=result.resent + result.leases_expired,
                errors=result.errors,
            )
        except DatabaseError:
            logger.exception("dispatcher heartbeat failed dispatcher=%s", self.name)
