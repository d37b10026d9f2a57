"""Scheduling services: the public API and every transition of a job's state.

Each transition of :mod:`scheduler.states` is applied as one compare-and-set UPDATE
(``filter(pk=…, status__in=transition.sources)``): a job that is not in an allowed
state is left as it is and the caller gets
:class:`~scheduler.exceptions.InvalidTransitionError`. Input is checked by
:mod:`scheduler.validation` before anything is written.
"""

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from celery import Task
from django.db import IntegrityError, transaction
from django.db.models import Case, DateTimeField, F, QuerySet, UUIDField, Value, When
from django.utils import timezone

from scheduler import states, validation
from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.exceptions import (
    DuplicateJobError,
    InvalidTransitionError,
    JobNotFoundError,
    UnknownTaskError,
)
from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from scheduler.registry import get_task, task_name_of
from scheduler.states import Status, Transition

logger = logging.getLogger(__name__)

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
    validation.aware_datetime(run_at, "run_at")
    name = task_name_of(task)
    try:
        get_task(name)
    except KeyError:
        raise UnknownTaskError(name) from None
    job = ScheduledJob(
        task_name=name,
        args=validation.job_args(args),
        kwargs=validation.job_kwargs(kwargs),
        queue=validation.queue_name(queue) or scheduler_settings.QUEUE_NAME,
        run_at=run_at,
        max_attempts=validation.max_attempts(max_attempts)
        or scheduler_settings.DEFAULT_MAX_ATTEMPTS,
        unique_key=validation.unique_key(unique_key),
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
    return schedule_at(
        task,
        timezone.now() + validation.delay(delay),
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
        _transition_one(job_id, states.CANCEL, finished_at=timezone.now(), dispatch_token=None)
    except InvalidTransitionError as error:
        if error.status == states.CANCEL.target:
            return False
        raise
    logger.info("job cancelled job_id=%s", job_id)
    return True


def reschedule(job_or_id: JobOrId, run_at: datetime) -> ScheduledJob:
    """Move a scheduled or enqueued job to a new ``run_at`` (a message in SQS is dropped)."""
    validation.aware_datetime(run_at, "run_at")
    job_id = _job_id(job_or_id)
    _transition_one(job_id, states.RESCHEDULE, **_waiting_until(run_at))
    logger.info("job rescheduled job_id=%s run_at=%s", job_id, run_at.isoformat())
    return ScheduledJob.objects.get(pk=job_id)


def retry(job_or_id: JobOrId, run_at: datetime | None = None) -> ScheduledJob:
    """Schedule a failed or cancelled job again (now by default), with a fresh set of attempts."""
    if run_at is not None:
        validation.aware_datetime(run_at, "run_at")
    job_id = _job_id(job_or_id)
    unique_key = (
        job_or_id.unique_key
        if isinstance(job_or_id, ScheduledJob)
        else ScheduledJob.objects.filter(pk=job_id).values_list("unique_key", flat=True).first()
    )
    with _unique_key_guard(unique_key):
        _transition_one(
            job_id,
            states.RETRY,
            attempts=0,
            finished_at=None,
            **_waiting_until(run_at or timezone.now()),
        )
    logger.info("job retried job_id=%s", job_id)
    return ScheduledJob.objects.get(pk=job_id)


def run_now(job_or_id: JobOrId) -> ScheduledJob:
    """Run a job as soon as possible: reschedule it to now, or retry it if it ended."""
    job_id = _job_id(job_or_id)
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status in states.RETRY.sources:
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
    return _apply(
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
    count = _apply(
        states.REQUEUE_STALE, stale, dispatch_token=None, enqueued_at=None, updated_at=now
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
            _apply(
                states.LEASE_RETRY,
                ScheduledJob.objects.filter(pk__in=list(retry_at)),
                last_error=message,
                updated_at=now,
                **_waiting_until(
                    Case(
                        *(When(pk=pk, then=Value(at)) for pk, at in retry_at.items()),
                        output_field=DateTimeField(),
                    )
                ),
            )
        if failed:
            _apply(
                states.LEASE_FAIL,
                ScheduledJob.objects.filter(pk__in=failed),
                finished_at=now,
                last_error=message,
                updated_at=now,
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
    old = ScheduledJob.objects.finished().filter(finished_at__lt=cutoff).values("pk")[:limit]
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
        if job is None or job.status not in states.CLAIM.sources or job.dispatch_token != token:
            return None
        # Still a compare-and-set, though the row lock already guarantees the match.
        _apply(
            states.CLAIM,
            ScheduledJob.objects.filter(pk=job_id, dispatch_token=token),
            attempts=F("attempts") + 1,
            started_at=now,
            finished_at=None,
            updated_at=now,
        )
        job.status, job.attempts, job.started_at = states.CLAIM.target, job.attempts + 1, now
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
        updated = _apply(
            states.SUCCEED, _claimed(job), finished_at=now, last_error="", updated_at=now
        )
        _finish_attempt(attempt, JobAttempt.Outcome.SUCCEEDED, now=now)
    return bool(updated)


def record_error(*, job: ScheduledJob, attempt: JobAttempt, error: str) -> Status | None:
    """Retry a claimed job later through PostgreSQL, or fail it after ``max_attempts``.

    Returns the job's new status, or None if its lease was taken away meanwhile.
    """
    now = timezone.now()
    changes: dict[str, Any] = {"last_error": error[-_LAST_ERROR_LENGTH:], "updated_at": now}
    if job.attempts < job.max_attempts:
        transition = states.RETRY_LATER
        changes.update(_waiting_until(now + _backoff(job.attempts)))
    else:
        transition = states.FAIL
        changes.update(finished_at=now)
    with transaction.atomic():
        updated = _apply(transition, _claimed(job), **changes)
        _finish_attempt(attempt, JobAttempt.Outcome.ERROR, now=now, error=error)
    return transition.target if updated else None


# --- helpers --------------------------------------------------------------------------------


def _apply(transition: Transition, jobs: QuerySet[ScheduledJob], **changes: Any) -> int:
    """The compare-and-set of ``transition``: move those of ``jobs`` still in its sources.

    Every change of status goes through here, so none can bypass the table of
    :mod:`scheduler.states`. Returns how many jobs moved.
    """
    return jobs.filter(status__in=transition.sources).update(status=transition.target, **changes)


def _transition_one(job_id: int, transition: Transition, **changes: Any) -> None:
    """Apply ``transition`` to one job, or raise why it could not be applied."""
    if _apply(
        transition, ScheduledJob.objects.filter(pk=job_id), updated_at=timezone.now(), **changes
    ):
        return
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status is None:
        raise JobNotFoundError(job_id)
    raise InvalidTransitionError(
        job_id=job_id, action=transition.name, status=status, allowed=transition.sources
    )


def _claimed(job: ScheduledJob) -> QuerySet[ScheduledJob]:
    # Only the delivery that claimed the job may record its outcome.
    return ScheduledJob.objects.filter(pk=job.pk, dispatch_token=job.dispatch_token)


def _finish_attempt(attempt: JobAttempt, outcome: str, *, now: datetime, error: str = "") -> None:
    JobAttempt.objects.filter(pk=attempt.pk, outcome=JobAttempt.Outcome.RUNNING).update(
        outcome=outcome, finished_at=now, error=error
    )


def _waiting_until(run_at: Any) -> dict[str, Any]:
    """The fields of a job that goes back to waiting in PostgreSQL for ``run_at``."""
    return {"run_at": run_at, "dispatch_token": None, "enqueued_at": None, "started_at": None}


def _backoff(failed_attempts: int) -> timedelta:
    return timedelta(
        seconds=exponential_backoff(
            failed_attempts,
            base=scheduler_settings.RETRY_BACKOFF_SECONDS,
            cap=scheduler_settings.RETRY_BACKOFF_MAX_SECONDS,
        )
    )


@contextmanager
def _unique_key_guard(unique_key: str | None) -> Iterator[None]:
    """A savepoint that turns the active-unique-key violation into DuplicateJobError."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as error:
        if unique_key is not None and _UNIQUE_KEY_CONSTRAINT in str(error):
            holder = ScheduledJob.objects.active().filter(unique_key=unique_key)
            raise DuplicateJobError(
                unique_key, holder.values_list("pk", flat=True).first()
            ) from error
        raise


def _job_id(job_or_id: JobOrId) -> int:
    if isinstance(job_or_id, ScheduledJob):
        return int(job_or_id.pk)
    if isinstance(job_or_id, bool) or not isinstance(job_or_id, int):
        raise TypeError(f"expected a ScheduledJob or its id, got {job_or_id!r}")
    return job_or_id
