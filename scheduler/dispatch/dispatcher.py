"""The dispatcher: moves jobs that are nearly due from PostgreSQL to SQS.

Each tick recovers lost work (stale enqueued jobs, expired leases), then claims due
rows with ``FOR UPDATE SKIP LOCKED`` in batches, sends them with ``DelaySeconds =
run_at - now`` so SQS releases them on time, and marks them enqueued with a fresh
dispatch token. Any number of dispatchers may tick at once.
"""

import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.dispatch.publisher import OutgoingMessage, Publisher, SQSPublisher
from scheduler.models import ScheduledJob
from scheduler.services import dispatching

logger = logging.getLogger(__name__)

_PURGE_EVERY_SECONDS = 3600.0


def delay_seconds(run_at: datetime, now: datetime, max_delay: int) -> int:
    """Whole seconds SQS should hold the message: ``run_at - now`` clamped to the limit.

    Rounded down, so SQS never releases the message after run_at; the message's eta
    covers the remaining fraction of a second.
    """
    return max(0, min(max_delay, math.floor((run_at - now).total_seconds())))


@dataclass
class TickResult:
    """What one tick did."""

    sent: int = 0
    failed: int = 0
    requeued_stale: int = 0
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
        self._last_purge = -math.inf
        self._stopping = False

    def run_once(self, *, now: datetime | None = None) -> TickResult:
        """One tick: recover lost jobs, then send every due job in batches.

        ``now`` fixes the tick's time (tests); by default each batch reads the clock, so
        the delays of the last batch of a long tick are not computed from its start.
        """
        result = TickResult()
        started = now or timezone.now()
        try:
            result.requeued_stale = dispatching.requeue_stale(now=started)
            result.leases_expired = dispatching.expire_leases(now=started)
            result.expired = dispatching.expire_missed(now=started)
            if time.monotonic() - self._last_purge >= _PURGE_EVERY_SECONDS:
                result.purged = dispatching.purge_finished(now=started)
                self._last_purge = time.monotonic()
        except DatabaseError as error:
            result.errors.append(f"recovery: {type(error).__name__}: {error}")
            logger.exception("dispatcher recovery failed dispatcher=%s", self.name)

        batch_size = scheduler_settings.BATCH_SIZE
        while True:
            try:
                batch = self._dispatch_batch(batch_size, now=now or timezone.now())
            except DatabaseError as error:
                result.errors.append(f"dispatch: {type(error).__name__}: {error}")
                logger.exception("dispatcher batch failed dispatcher=%s", self.name)
                break
            result.sent += batch.sent
            result.failed += batch.failed
            if batch.error:
                result.errors.append(batch.error)
            # A short batch means nothing more is due; a failure means SQS is unwell,
            # and the failed jobs, still scheduled, would only be claimed again.
            if batch.claimed < batch_size or batch.failed:
                break

        self._record_heartbeat(result)
        log = logger.warning if result.errors or result.failed else logger.info
        log(
            "dispatch tick dispatcher=%s sent=%s failed=%s requeued_stale=%s "
            "leases_expired=%s expired=%s purged=%s errors=%s",
            self.name,
            result.sent,
            result.failed,
            result.requeued_stale,
            result.leases_expired,
            result.expired,
            result.purged,
            len(result.errors),
        )
        return result

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

    def _dispatch_batch(self, batch_size: int, *, now: datetime) -> BatchResult:
        """Claim, send and mark one batch in one transaction."""
        lookahead = timedelta(seconds=scheduler_settings.LOOKAHEAD_SECONDS)
        max_delay = scheduler_settings.MAX_DELAY_SECONDS
        with transaction.atomic():
            due = list(
                ScheduledJob.objects.due(within=lookahead, now=now)
                .order_by("run_at", "pk")
                .select_for_update(skip_locked=True)
                .only("pk", "run_at", "queue", "task_name")[:batch_size]
            )
            if not due:
                return BatchResult(claimed=0, sent=0, failed=0)
            messages = [
                OutgoingMessage(
                    job_id=job.pk,
                    dispatch_token=uuid.uuid4(),
                    task_name=job.task_name,
                    queue=job.queue,
                    eta=job.run_at,
                    delay_seconds=delay_seconds(job.run_at, now, max_delay),
                )
                for job in due
            ]
            published = self.publisher.publish(messages)
            sent = set(published.sent)
            tokens = {m.job_id: m.dispatch_token for m in messages if m.job_id in sent}
            dispatching.mark_enqueued(tokens, now=now)
        error = None
        if published.error:
            error = f"sqs: {published.error}"
        elif published.failed:
            error = f"sqs rejected {len(published.failed)} message(s)"
        return BatchResult(
            claimed=len(due), sent=len(published.sent), failed=len(published.failed), error=error
        )

    def _record_heartbeat(self, result: TickResult) -> None:
        try:
            dispatching.record_tick(
                dispatcher=self.name,
                now=timezone.now(),
                sent=result.sent,
                recovered=result.requeued_stale + result.leases_expired,
                errors=result.errors,
            )
        except DatabaseError:
            logger.exception("dispatcher heartbeat failed dispatcher=%s", self.name)
