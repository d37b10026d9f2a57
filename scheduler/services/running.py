"""The worker's transitions: claim a job for one delivery, record how it ran."""

import enum
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast
from uuid import UUID

from django.db import transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from scheduler import signals, states
from scheduler.models import JobAttempt, Pause, ScheduledJob
from scheduler.services.transitions import apply, retry_delay, waiting_until
from scheduler.states import Status

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

logger = logging.getLogger(__name__)

_LAST_ERROR_LENGTH = 2000


class _Paused(TypedDict):
    paused: bool


class Refusal(enum.StrEnum):
    """Why a message did not claim its job (it is acknowledged and nothing runs)."""

    #: A duplicate, a job cancelled, moved, finished or re-dispatched since, or a
    #: message for another task than the job's.
    NOT_CURRENT = "not-current"
    #: The job's deadline passed before it could start: it is now expired.
    EXPIRED = "expired"
    #: The job's kind is paused: it goes back to scheduled, to be sent on resume.
    PAUSED = "paused"


@dataclass(frozen=True)
class Claim:
    """A job taken by one delivery, and the attempt it runs as."""

    job: ScheduledJob
    attempt: JobAttempt


def claim(*, job_id: int, token: UUID, task_name: str, worker: str) -> Claim | Refusal:
    """Take an enqueued job for this delivery, or say why the message may not run it.

    ``task_name`` is the task the message was delivered to: a message for another
    task than the job's is not current, whatever its token.

    The row is locked first: a message can arrive before the dispatcher that sent it
    commits. A bare conditional UPDATE would not wait then, because PostgreSQL only
    waits on rows whose committed version matches the WHERE clause (still
    ``scheduled``, without the token); ``SELECT … FOR UPDATE`` waits for the
    dispatcher's lock and returns the row as committed, with whether its kind is paused.
    """
    now = timezone.now()
    with transaction.atomic():
        job = cast(
            "WithAnnotations[ScheduledJob, _Paused] | None",
            ScheduledJob.objects.select_for_update(of=("self",))
            .annotate(
                paused=Exists(
                    Pause.objects.covering(task_name=OuterRef("task_name"), queue=OuterRef("queue"))
                )
            )
            .filter(pk=job_id)
            .first(),
        )
        if (
            job is None
            or job.status not in states.CLAIM.sources
            or job.dispatch_token != token
            or job.task_name != task_name
        ):
            return Refusal.NOT_CURRENT
        current = ScheduledJob.objects.filter(pk=job_id, dispatch_token=token)
        if job.deadline is not None and now >= job.deadline:
            apply(states.EXPIRE, current, finished_at=now, dispatch_token=None, updated_at=now)
            signals.send_on_commit(
                signals.job_expired, job_id=job_id, task_name=job.task_name, deadline=job.deadline
            )
            logger.warning("job expired job_id=%s reason=deadline at=claim", job_id)
            return Refusal.EXPIRED
        if job.paused:
            apply(
                states.PUT_BACK,
                current,
                dispatch_token=None,
                enqueued_at=None,
                resend_at=None,
                sends=0,
                updated_at=now,
            )
            return Refusal.PAUSED
        # Still a compare-and-set, though the row lock already guarantees the match.
        apply(
            states.CLAIM,
            current,
            attempts=F("attempts") + 1,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            updated_at=now,
        )
        job.status, job.attempts, job.started_at = states.CLAIM.target, job.attempts + 1, now
        attempt = JobAttempt.objects.create(
            job=job,
            task_name=job.task_name,
            number=job.attempts,
            dispatch_token=token,
            scheduled_for=job.run_at,
            started_at=now,
            worker=worker,
        )
    return Claim(job=job, attempt=attempt)


def record_success(*, job: ScheduledJob, attempt: JobAttempt, result: Any = None) -> bool:
    """Mark a claimed job succeeded; False if its lease was taken away meanwhile."""
    now = timezone.now()
    with transaction.atomic():
        updated = apply(
            states.SUCCEED, _claimed(job), finished_at=now, last_error="", updated_at=now
        )
        _finish_attempt(attempt, JobAttempt.Outcome.SUCCEEDED, now=now)
        if updated:
            signals.send_on_commit(
                signals.job_succeeded, job_id=job.pk, task_name=job.task_name, result=result
            )
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
        if updated and transition is states.FAIL:
            signals.send_on_commit(
                signals.job_failed, job_id=job.pk, task_name=job.task_name, error=error
            )
    return transition.target if updated else None


def _claimed(job: ScheduledJob) -> QuerySet[ScheduledJob]:
    # Only the delivery that claimed the job may record its outcome.
    return ScheduledJob.objects.filter(pk=job.pk, dispatch_token=job.dispatch_token)


def _finish_attempt(attempt: JobAttempt, outcome: str, *, now: datetime, error: str = "") -> None:
    JobAttempt.objects.filter(pk=attempt.pk, outcome=JobAttempt.Outcome.RUNNING).update(
        outcome=outcome, finished_at=now, error=error
    )
