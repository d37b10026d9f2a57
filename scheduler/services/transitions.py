"""The one way a job changes status: a compare-and-set UPDATE of a transition.

Every service applies the transitions of :mod:`scheduler.states` through :func:`apply`,
so none can bypass the table.
"""

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.exceptions import InvalidTransitionError, JobNotFoundError
from scheduler.models import ScheduledJob
from scheduler.states import Transition

JobOrId = ScheduledJob | int


def apply(transition: Transition, jobs: QuerySet[ScheduledJob], **changes: Any) -> int:
    """The compare-and-set of ``transition``: move those of ``jobs`` still in its sources.

    Returns how many jobs moved.
    """
    return jobs.filter(status__in=transition.sources).update(status=transition.target, **changes)


def apply_one(job_id: int, transition: Transition, **changes: Any) -> None:
    """Apply ``transition`` to one job, or raise why it could not be applied."""
    if apply(
        transition, ScheduledJob.objects.filter(pk=job_id), updated_at=timezone.now(), **changes
    ):
        return
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status is None:
        raise JobNotFoundError(job_id)
    raise InvalidTransitionError(
        job_id=job_id, action=transition.name, status=status, allowed=transition.sources
    )


def waiting_until(run_at: Any) -> dict[str, Any]:
    """The fields of a job that goes back to waiting in PostgreSQL for ``run_at``."""
    return {"run_at": run_at, "dispatch_token": None, "enqueued_at": None, "started_at": None}


def retry_delay(failed_attempts: int) -> timedelta:
    """The back-off before the next attempt, after ``failed_attempts`` failures."""
    return timedelta(
        seconds=exponential_backoff(
            failed_attempts,
            base=scheduler_settings.RETRY_BACKOFF_SECONDS,
            cap=scheduler_settings.RETRY_BACKOFF_MAX_SECONDS,
        )
    )


def job_id_of(job_or_id: JobOrId) -> int:
    """The id of a job given as itself or as its id."""
    if isinstance(job_or_id, ScheduledJob):
        return int(job_or_id.pk)
    if isinstance(job_or_id, bool) or not isinstance(job_or_id, int):
        raise TypeError(f"expected a ScheduledJob or its id, got {job_or_id!r}")
    return job_or_id
