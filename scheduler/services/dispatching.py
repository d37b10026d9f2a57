"""The dispatcher's transitions: jobs sent to SQS, lost messages, dead workers, retention."""

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Case, DateTimeField, UUIDField, Value, When

from scheduler import signals, states
from scheduler.conf import scheduler_settings
from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from scheduler.services.transitions import apply, retry_delay, waiting_until

logger = logging.getLogger(__name__)


def mark_enqueued(tokens: Mapping[int, UUID], *, now: datetime) -> int:
    """Record that these jobs were sent to SQS, each with its fresh dispatch token.

    One UPDATE whatever the number of jobs; the caller holds their row locks.
    """
    if not tokens:
        return 0
    token_by_id = Case(
        *(When(pk=job_id, then=Value(token)) for job_id, token in tokens.items()),
        output_field=UUIDField(),
    )
    return apply(
        states.DISPATCH,
        ScheduledJob.objects.filter(pk__in=list(tokens)),
        dispatch_token=token_by_id,
        enqueued_at=now,
        updated_at=now,
    )


def requeue_stale(*, now: datetime) -> int:
    """Put back jobs that were sent to SQS but never claimed (message lost, queue purged)."""
    stale = ScheduledJob.objects.stale(
        after=timedelta(seconds=scheduler_settings.STALE_AFTER_SECONDS), now=now
    )
    count = apply(
        states.REQUEUE_STALE, stale, dispatch_token=None, enqueued_at=None, updated_at=now
    )
    if count:
        logger.warning("stale enqueued jobs re-dispatched count=%s", count)
    return count


def expire_missed(*, now: datetime) -> int:
    """Expire pending jobs whose deadline has passed: they must never start.

    A message already in SQS for such a job is dropped by the worker. One query when
    there is nothing to expire.
    """
    missed = ScheduledJob.objects.missed_deadline(now=now)
    if not missed.exists():
        return 0
    with transaction.atomic():
        locked = list(
            missed.select_for_update(skip_locked=True).values_list("pk", "task_name", "deadline")[
                : scheduler_settings.BATCH_SIZE
            ]
        )
        apply(
            states.EXPIRE,
            ScheduledJob.objects.filter(pk__in=[pk for pk, _, _ in locked]),
            finished_at=now,
            dispatch_token=None,
            resend_at=None,
            updated_at=now,
        )
        for pk, task_name, deadline in locked:
            signals.send_on_commit(
                signals.job_expired, job_id=pk, task_name=task_name, deadline=deadline
            )
    logger.warning(
        "jobs expired count=%s job_ids=%s reason=deadline", len(locked), [pk for pk, _, _ in locked]
    )
    return len(locked)


def expire_leases(*, now: datetime) -> int:
    """Retry (or fail, when out of attempts) running jobs whose worker presumably died."""
    lease = timedelta(seconds=scheduler_settings.LEASE_SECONDS)
    with transaction.atomic():
        expired = list(
            ScheduledJob.objects.lease_expired(lease=lease, now=now)
            .select_for_update(skip_locked=True)
            .values_list("pk", "attempts", "max_attempts", "task_name")[
                : scheduler_settings.BATCH_SIZE
            ]
        )
        if not expired:
            return 0
        message = f"lease expired: no outcome {lease} after the attempt started"
        retry_at = {
            pk: now + retry_delay(attempts)
            for pk, attempts, limit, _ in expired
            if attempts < limit
        }
        failed = {pk: task for pk, attempts, limit, task in expired if attempts >= limit}
        if retry_at:
            apply(
                states.LEASE_RETRY,
                ScheduledJob.objects.filter(pk__in=list(retry_at)),
                last_error=message,
                updated_at=now,
                **waiting_until(
                    Case(
                        *(When(pk=pk, then=Value(at)) for pk, at in retry_at.items()),
                        output_field=DateTimeField(),
                    )
                ),
            )
        if failed:
            apply(
                states.LEASE_FAIL,
                ScheduledJob.objects.filter(pk__in=list(failed)),
                finished_at=now,
                last_error=message,
                updated_at=now,
            )
            for pk, task_name in failed.items():
                signals.send_on_commit(
                    signals.job_failed, job_id=pk, task_name=task_name, error=message
                )
        JobAttempt.objects.filter(
            job_id__in=[pk for pk, *_ in expired], outcome=JobAttempt.Outcome.RUNNING
        ).update(outcome=JobAttempt.Outcome.LEASE_EXPIRED, finished_at=now, error=message)
    logger.warning(
        "job leases expired retried=%s failed=%s job_ids=%s",
        len(retry_at),
        len(failed),
        [pk for pk, *_ in expired],
    )
    return len(expired)


def purge_finished(*, now: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` jobs that finished more than the retention period ago.

    Also deletes the heartbeats of dispatchers silent for a day.
    """
    cutoff = now - timedelta(days=scheduler_settings.RETENTION_DAYS)
    old = ScheduledJob.objects.finished().filter(finished_at__lt=cutoff).values("pk")[:limit]
    deleted, _ = ScheduledJob.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()
    # Every dispatcher process leaves a heartbeat row; forget those long gone.
    DispatcherHeartbeat.objects.filter(last_tick_at__lt=now - timedelta(days=1)).delete()
    return deleted


def record_tick(
    *, dispatcher: str, now: datetime, sent: int, recovered: int, errors: list[str]
) -> None:
    """Record a dispatcher's tick on its heartbeat row: this tick's figures, and totals.

    One upsert, whether or not the row exists: the totals only grow (Prometheus
    counters), added to in the same statement that writes the tick.
    """
    table = connection.ops.quote_name(DispatcherHeartbeat._meta.db_table)
    latest = ["last_tick_at", "jobs_sent", "jobs_recovered", "errors", "last_error"]
    totals = ["sent_total", "errors_total"]
    columns = ["dispatcher", *latest, *totals]
    assignments = [f"{name} = EXCLUDED.{name}" for name in latest]
    assignments += [f"{name} = {table}.{name} + EXCLUDED.{name}" for name in totals]
    with connection.cursor() as cursor:
        cursor.execute(
            # Names from this module and the model; every value is a parameter.
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(columns))}) "
            f"ON CONFLICT (dispatcher) DO UPDATE SET {', '.join(assignments)}",
            [
                dispatcher,
                now,
                sent,
                recovered,
                len(errors),
                "\n".join(errors)[:2000],
                sent,
                len(errors),
            ],
        )
