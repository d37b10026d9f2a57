"""The worker's transitions: claim a job for one delivery, record how it ran."""

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from scheduler import states
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.services.transitions import apply, retry_delay, waiting_until
from scheduler.states import Status

logger = logging.getLogger(__name__)

_LAST_ERROR_LENGTH = 2000


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
        apply(
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
        updated = apply(
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
        changes.update(waiting_until(now + retry_delay(job.attempts)))
    else:
        transition = states.FAIL
        changes.update(finished_at=now)
    with transaction.atomic():
        updated = apply(transition, _claimed(job), **changes)
        _finish_attempt(attempt, JobAttempt.Outcome.ERROR, now=now, error=error)
    return transition.target if updated else None


def _claimed(job: ScheduledJob) -> QuerySet[ScheduledJob]:
    # Only the delivery that claimed the job may record its outcome.
    return ScheduledJob.objects.filter(pk=job.pk, dispatch_token=job.dispatch_token)


def _finish_attempt(attempt: JobAttempt, outcome: str, *, now: datetime, error: str = "") -> None:
    JobAttempt.objects.filter(pk=attempt.pk, outcome=JobAttempt.Outcome.RUNNING).update(
        outcome=outcome, finished_at=now, error=error
    )
