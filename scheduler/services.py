"""Scheduling services: the public API and every transition of a job's state.

Each transition is one compare-and-set UPDATE (``filter(pk=…, status__in=ALLOWED)``):
a job that is not in an allowed state is left as it is and the caller gets
:class:`~scheduler.exceptions.InvalidTransitionError`.
"""

import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from celery import Task
from django.db import IntegrityError, transaction
from django.db.models import Case, DateTimeField, F, UUIDField, Value, When
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.exceptions import (
    DuplicateJobError,
    InvalidArgumentsError,
    InvalidTransitionError,
    JobNotFoundError,
    UnknownTaskError,
)
from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from scheduler.registry import get_task, task_name_of
from scheduler.sqs import is_valid_queue_name

logger = logging.getLogger(__name__)

Status = ScheduledJob.Status
JobOrId = ScheduledJob | int

_UNIQUE_KEY_CONSTRAINT = "scheduler_job_unique_active_key"
_LAST_ERROR_LENGTH = 2000


# --- scheduling ---------------------------------------------------------------------------


def schedule_at(
    task: Task[Any, Any] | str,
    run_at: datetime,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
) -> ScheduledJob:
    """Schedule ``task(*args, **kwargs)`` to run at ``run_at``.

    The job is inserted in the caller's transaction: if that rolls back, there is no
    job. ``run_at`` must be timezone-aware; a past ``run_at`` means as soon as
    possible. Invalid input raises and writes nothing.
    """
    _require_aware(run_at, "run_at")
    name = task_name_of(task)
    try:
        get_task(name)
    except KeyError:
        raise UnknownTaskError(
            f"{name!r} is not a registered Celery task that can be scheduled"
        ) from None
    job = ScheduledJob(
        task_name=name,
        args=_json_args(args),
        kwargs=_json_kwargs(kwargs),
        queue=_queue(queue),
        run_at=run_at,
        max_attempts=_max_attempts(max_attempts),
        unique_key=_unique_key(unique_key),
    )
    with _unique_key_guard(job.unique_key):
        job.save(force_insert=True)
    logger.info(
        "job scheduled job_id=%s task=%s run_at=%s queue=%s",
        job.pk,
        name,
        run_at.isoformat(),
        job.queue,
    )
    return job


def schedule_in(
    task: Task[Any, Any] | str,
    delay: timedelta | float,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
) -> ScheduledJob:
    """Schedule ``task`` to run ``delay`` (a timedelta or seconds) from now."""
    if isinstance(delay, bool) or not isinstance(delay, timedelta | int | float):
        raise TypeError(f"delay must be a timedelta or a number of seconds, got {delay!r}")
    if not isinstance(delay, timedelta):
        if not math.isfinite(delay):
            raise InvalidArgumentsError(f"delay must be finite, got {delay!r}")
        delay = timedelta(seconds=delay)
    return schedule_at(
        task,
        timezone.now() + delay,
        args,
        kwargs,
        queue=queue,
        max_attempts=max_attempts,
        unique_key=unique_key,
    )


def cancel(job_or_id: JobOrId) -> bool:
    """Cancel a scheduled or enqueued job; False if it was already cancelled.

    A message already in SQS is dropped by the worker: its dispatch token no longer
    matches. Cancelling a running or finished job raises InvalidTransitionError.
    """
    job_id = _job_id(job_or_id)
    try:
        _transition(
            job_id,
            action="cancel",
            allowed=(Status.SCHEDULED, Status.ENQUEUED),
            status=Status.CANCELLED,
            finished_at=timezone.now(),
            dispatch_token=None,
        )
    except InvalidTransitionError as error:
        if error.status == Status.CANCELLED:
            return False
        raise
    logger.info("job cancelled job_id=%s", job_id)
    return True


def reschedule(job_or_id: JobOrId, run_at: datetime) -> ScheduledJob:
    """Move a scheduled or enqueued job to a new ``run_at`` (a message in SQS is dropped)."""
    _require_aware(run_at, "run_at")
    job_id = _job_id(job_or_id)
    _transition(
        job_id,
        action="reschedule",
        allowed=(Status.SCHEDULED, Status.ENQUEUED),
        **_back_to_scheduled(run_at),
    )
    logger.info("job rescheduled job_id=%s run_at=%s", job_id, run_at.isoformat())
    return ScheduledJob.objects.get(pk=job_id)


def retry(job_or_id: JobOrId, run_at: datetime | None = None) -> ScheduledJob:
    """Schedule a failed or cancelled job again (now by default), with a fresh set of attempts."""
    if run_at is not None:
        _require_aware(run_at, "run_at")
    job_id = _job_id(job_or_id)
    unique_key = (
        job_or_id.unique_key
        if isinstance(job_or_id, ScheduledJob)
        else ScheduledJob.objects.filter(pk=job_id).values_list("unique_key", flat=True).first()
    )
    with _unique_key_guard(unique_key):
        _transition(
            job_id,
            action="retry",
            allowed=(Status.FAILED, Status.CANCELLED),
            attempts=0,
            finished_at=None,
            **_back_to_scheduled(run_at or timezone.now()),
        )
    logger.info("job retried job_id=%s", job_id)
    return ScheduledJob.objects.get(pk=job_id)


def run_now(job_or_id: JobOrId) -> ScheduledJob:
    """Run a job as soon as possible: reschedule it to now, or retry it if it ended."""
    job_id = _job_id(job_or_id)
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status in (Status.FAILED, Status.CANCELLED):
        return retry(job_id)
    return reschedule(job_id, timezone.now())


# --- transitions driven by the dispatcher ---------------------------------------------------


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
    return ScheduledJob.objects.filter(pk__in=list(tokens), status=Status.SCHEDULED).update(
        status=Status.ENQUEUED, dispatch_token=token_by_id, enqueued_at=now, updated_at=now
    )


def requeue_stale(*, now: datetime) -> int:
    """Put back jobs that were sent to SQS but never claimed (message lost, queue purged)."""
    stale = ScheduledJob.objects.stale(
        after=timedelta(seconds=scheduler_settings.STALE_AFTER_SECONDS), now=now
    )
    count = stale.update(
        status=Status.SCHEDULED, dispatch_token=None, enqueued_at=None, updated_at=now
    )
    if count:
        logger.warning("stale enqueued jobs re-dispatched count=%s", count)
    return count


def expire_leases(*, now: datetime) -> int:
    """Retry (or fail, when out of attempts) running jobs whose worker presumably died."""
    lease = timedelta(seconds=scheduler_settings.LEASE_SECONDS)
    with transaction.atomic():
        expired = list(
            ScheduledJob.objects.lease_expired(lease=lease, now=now)
            .select_for_update(skip_locked=True)
            .values_list("pk", "attempts", "max_attempts")[: scheduler_settings.BATCH_SIZE]
        )
        if not expired:
            return 0
        message = f"lease expired: no outcome {lease} after the attempt started"
        retry_at = {
            pk: now + _backoff(attempts) for pk, attempts, limit in expired if attempts < limit
        }
        failed = [pk for pk, attempts, limit in expired if attempts >= limit]
        if retry_at:
            ScheduledJob.objects.filter(pk__in=list(retry_at), status=Status.RUNNING).update(
                last_error=message,
                **_back_to_scheduled(
                    Case(
                        *(When(pk=pk, then=Value(at)) for pk, at in retry_at.items()),
                        output_field=DateTimeField(),
                    )
                ),
            )
        if failed:
            ScheduledJob.objects.filter(pk__in=failed, status=Status.RUNNING).update(
                status=Status.FAILED, finished_at=now, last_error=message, updated_at=now
            )
        JobAttempt.objects.filter(
            job_id__in=[pk for pk, _, _ in expired], outcome=JobAttempt.Outcome.RUNNING
        ).update(outcome=JobAttempt.Outcome.LEASE_EXPIRED, finished_at=now, error=message)
    logger.warning(
        "job leases expired retried=%s failed=%s job_ids=%s",
        len(retry_at),
        len(failed),
        [pk for pk, _, _ in expired],
    )
    return len(expired)


def purge_finished(*, now: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` jobs that finished more than the retention period ago.

    Also deletes the heartbeats of dispatchers silent for a day.
    """
    cutoff = now - timedelta(days=scheduler_settings.RETENTION_DAYS)
    old = ScheduledJob.objects.filter(
        status__in=ScheduledJob.FINISHED_STATUSES, finished_at__lt=cutoff
    ).values("pk")[:limit]
    deleted, _ = ScheduledJob.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()
    # Every dispatcher process leaves a heartbeat row; forget those long gone.
    DispatcherHeartbeat.objects.filter(last_tick_at__lt=now - timedelta(days=1)).delete()
    return deleted


# --- transitions driven by the worker -------------------------------------------------------


def claim(*, job_id: int, token: UUID, worker: str) -> tuple[ScheduledJob, JobAttempt] | None:
    """Take an enqueued job for this delivery, or None if the message is not current.

    The row is locked first: a message can arrive before the dispatcher that sent it
    commits. A bare conditional UPDATE would not wait then, because PostgreSQL only
    waits on rows whose committed version matches the WHERE clause (still
    ``scheduled``, without the token); ``SELECT … FOR UPDATE`` waits for the
    dispatcher's lock and returns the row as committed.
    """
    now = timezone.now()
    with transaction.atomic():
        job = ScheduledJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.ENQUEUED or job.dispatch_token != token:
            return None
        # Still a compare-and-set, though the row lock already guarantees the match.
        ScheduledJob.objects.filter(pk=job_id, status=Status.ENQUEUED, dispatch_token=token).update(
            status=Status.RUNNING,
            attempts=F("attempts") + 1,
            started_at=now,
            finished_at=None,
            updated_at=now,
        )
        job.status, job.attempts, job.started_at = Status.RUNNING, job.attempts + 1, now
        attempt = JobAttempt.objects.create(
            job=job,
            number=job.attempts,
            dispatch_token=token,
            scheduled_for=job.run_at,
            started_at=now,
            worker=worker,
        )
    return job, attempt


def record_success(*, job: ScheduledJob, attempt: JobAttempt) -> bool:
    """Mark a claimed job succeeded; False if its lease was taken away meanwhile."""
    now = timezone.now()
    with transaction.atomic():
        updated = _running(job).update(
            status=Status.SUCCEEDED,
            finished_at=now,
            last_error="",
            updated_at=now,
        )
        _finish_attempt(attempt, JobAttempt.Outcome.SUCCEEDED, now=now)
    return bool(updated)


def record_error(*, job: ScheduledJob, attempt: JobAttempt, error: str) -> Status | None:
    """Retry a claimed job later through PostgreSQL, or fail it after ``max_attempts``.

    Returns the job's new status, or None if its lease was taken away meanwhile.
    """
    now = timezone.now()
    last_error = error[-_LAST_ERROR_LENGTH:]
    if job.attempts < job.max_attempts:
        new_status = Status.SCHEDULED
        changes = {**_back_to_scheduled(now + _backoff(job.attempts)), "last_error": last_error}
    else:
        new_status = Status.FAILED
        changes = {"status": Status.FAILED, "finished_at": now, "last_error": last_error}
    with transaction.atomic():
        updated = _running(job).update(updated_at=now, **changes)
        _finish_attempt(attempt, JobAttempt.Outcome.ERROR, now=now, error=error)
    return new_status if updated else None


# --- helpers --------------------------------------------------------------------------------


def _running(job: ScheduledJob) -> Any:
    # Only the delivery that claimed the job may record its outcome.
    return ScheduledJob.objects.filter(
        pk=job.pk, status=Status.RUNNING, dispatch_token=job.dispatch_token
    )


def _finish_attempt(attempt: JobAttempt, outcome: str, *, now: datetime, error: str = "") -> None:
    JobAttempt.objects.filter(pk=attempt.pk, outcome=JobAttempt.Outcome.RUNNING).update(
        outcome=outcome, finished_at=now, error=error
    )


def _back_to_scheduled(run_at: Any) -> dict[str, Any]:
    return {
        "status": Status.SCHEDULED,
        "run_at": run_at,
        "dispatch_token": None,
        "enqueued_at": None,
        "started_at": None,
    }


def _backoff(failed_attempts: int) -> timedelta:
    return timedelta(
        seconds=exponential_backoff(
            failed_attempts,
            base=scheduler_settings.RETRY_BACKOFF_SECONDS,
            cap=scheduler_settings.RETRY_BACKOFF_MAX_SECONDS,
        )
    )


def _transition(job_id: int, *, action: str, allowed: tuple[str, ...], **changes: Any) -> None:
    updated = ScheduledJob.objects.filter(pk=job_id, status__in=allowed).update(
        updated_at=timezone.now(), **changes
    )
    if updated:
        return
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status is None:
        raise JobNotFoundError(job_id)
    raise InvalidTransitionError(job_id=job_id, action=action, status=status, allowed=allowed)


@contextmanager
def _unique_key_guard(unique_key: str | None) -> Iterator[None]:
    """A savepoint that turns the active-unique-key violation into DuplicateJobError."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as error:
        if unique_key is not None and _UNIQUE_KEY_CONSTRAINT in str(error):
            raise DuplicateJobError(unique_key) from error
        raise


def _job_id(job_or_id: JobOrId) -> int:
    if isinstance(job_or_id, ScheduledJob):
        return int(job_or_id.pk)
    if isinstance(job_or_id, bool) or not isinstance(job_or_id, int):
        raise TypeError(f"expected a ScheduledJob or its id, got {job_or_id!r}")
    return job_or_id


def _require_aware(value: object, name: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if timezone.is_naive(value):
        raise ValueError(
            f"{name} must be timezone-aware (e.g. django.utils.timezone.now() + delta), "
            f"got naive {value.isoformat()}"
        )


def _json_args(args: Iterable[Any]) -> list[Any]:
    if isinstance(args, str | bytes | Mapping) or not isinstance(args, Sequence):
        raise InvalidArgumentsError(f"args must be a list or tuple, got {args!r}")
    value = list(args)
    _require_json_round_trip(value, "args")
    return value


def _json_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise InvalidArgumentsError(f"kwargs must be a mapping, got {kwargs!r}")
    value = dict(kwargs)
    if not all(isinstance(key, str) for key in value):
        raise InvalidArgumentsError("kwargs keys must be strings")
    _require_json_round_trip(value, "kwargs")
    return value


def _require_json_round_trip(value: object, name: str) -> None:
    """The stored arguments must come back equal: no tuples, dates, Decimals, NaN."""
    try:
        round_tripped = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidArgumentsError(f"{name} must be JSON-serialisable: {error}") from None
    if round_tripped != value or not _same_types(round_tripped, value):
        raise InvalidArgumentsError(
            f"{name} do not survive a JSON round trip unchanged: {value!r} comes back as "
            f"{round_tripped!r} (use lists, not tuples, and string keys)"
        )


def _same_types(a: object, b: object) -> bool:
    # 1 == 1.0 and True == 1 in Python, but a task would receive a different type.
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_types(a[key], b[key]) for key in a)
    return True


def _queue(queue: str | None) -> str:
    if queue is None or queue == "":
        return scheduler_settings.QUEUE_NAME
    if not is_valid_queue_name(queue):
        raise InvalidArgumentsError(
            f"queue {queue!r} is not a valid queue name (1-80 letters, digits, '-' or '_')"
        )
    return queue


def _max_attempts(max_attempts: int | None) -> int:
    if max_attempts is None:
        return scheduler_settings.DEFAULT_MAX_ATTEMPTS
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidArgumentsError(
            f"max_attempts must be a positive integer, got {max_attempts!r}"
        )
    return max_attempts


def _unique_key(unique_key: str | None) -> str | None:
    if unique_key is None:
        return None
    if not isinstance(unique_key, str) or not unique_key.strip() or len(unique_key) > 255:
        raise InvalidArgumentsError(
            f"unique_key must be a non-empty string of at most 255 characters, got {unique_key!r}"
        )
    return unique_key
