"""What operators (and code) do to jobs that exist: cancel, reschedule, retry, run now."""

import logging
from datetime import datetime
from typing import Any

from django.utils import timezone

from scheduler import signals, states, validation
from scheduler.exceptions import InvalidArgumentsError, InvalidTransitionError
from scheduler.models import ScheduledJob
from scheduler.services.scheduling import unique_key_guard
from scheduler.services.transitions import JobOrId, apply_one, job_id_of, waiting_until

logger = logging.getLogger(__name__)


def cancel(job_or_id: JobOrId) -> bool:
    """Cancel a scheduled or enqueued job; False if it was already cancelled.

    A message already in SQS is dropped by the worker: its dispatch token no longer
    matches. Cancelling a running or finished job raises InvalidTransitionError.
    """
    job_id = job_id_of(job_or_id)
    try:
        apply_one(job_id, states.CANCEL, finished_at=timezone.now(), dispatch_token=None)
    except InvalidTransitionError as error:
        if error.status == states.CANCEL.target:
            return False
        raise
    task_name = ScheduledJob.objects.filter(pk=job_id).values_list("task_name", flat=True).get()
    signals.send_on_commit(signals.job_cancelled, job_id=job_id, task_name=task_name)
    logger.info("job cancelled job_id=%s", job_id)
    return True


def reschedule(
    job_or_id: JobOrId, run_at: datetime, *, deadline: datetime | None = None
) -> ScheduledJob:
    """Move a scheduled or enqueued job to a new ``run_at`` (a message in SQS is dropped).

    The job keeps its deadline unless a new ``deadline`` is given; a ``run_at`` not
    before the deadline raises InvalidArgumentsError.
    """
    validation.aware_datetime(run_at, "run_at")
    job_id = job_id_of(job_or_id)
    changes = _deadline_changes(job_id, run_at, deadline)
    apply_one(job_id, states.RESCHEDULE, **waiting_until(run_at), **changes)
    logger.info("job rescheduled job_id=%s run_at=%s", job_id, run_at.isoformat())
    return ScheduledJob.objects.get(pk=job_id)


def retry(
    job_or_id: JobOrId, run_at: datetime | None = None, *, deadline: datetime | None = None
) -> ScheduledJob:
    """Schedule an ended job again (now by default), with a fresh set of attempts.

    Failed, cancelled and expired jobs can be retried. The job keeps its deadline
    unless a new ``deadline`` is given: an expired job needs one.
    """
    if run_at is not None:
        validation.aware_datetime(run_at, "run_at")
    run_at = run_at or timezone.now()
    job_id = job_id_of(job_or_id)
    changes = _deadline_changes(job_id, run_at, deadline)
    unique_key = (
        job_or_id.unique_key
        if isinstance(job_or_id, ScheduledJob)
        else ScheduledJob.objects.filter(pk=job_id).values_list("unique_key", flat=True).first()
    )
    with unique_key_guard(unique_key):
        apply_one(
            job_id,
            states.RETRY,
            attempts=0,
            finished_at=None,
            **waiting_until(run_at),
            **changes,
        )
    logger.info("job retried job_id=%s", job_id)
    return ScheduledJob.objects.get(pk=job_id)


def run_now(job_or_id: JobOrId, *, deadline: datetime | None = None) -> ScheduledJob:
    """Run a job as soon as possible: reschedule it to now, or retry it if it ended.

    ``deadline``, if given, replaces the job's deadline (an expired job needs one).
    """
    job_id = job_id_of(job_or_id)
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status in states.RETRY.sources:
        return retry(job_id, deadline=deadline)
    return reschedule(job_id, timezone.now(), deadline=deadline)


def _deadline_changes(job_id: int, run_at: datetime, deadline: datetime | None) -> dict[str, Any]:
    """The deadline to store when a job moves to ``run_at``: a new one, or a check of its own."""
    if deadline is not None:
        return {"deadline": validation.deadline(deadline, run_at=run_at)}
    current = ScheduledJob.objects.filter(pk=job_id).values_list("deadline", flat=True).first()
    if current is not None and current <= run_at:
        raise InvalidArgumentsError(
            "deadline",
            f"{current.isoformat()} is not after the new run_at {run_at.isoformat()}: "
            "give a new deadline",
        )
    return {}
