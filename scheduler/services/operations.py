"""What operators (and code) do to jobs that exist: cancel, reschedule, retry, run now."""

import logging
from datetime import datetime

from django.utils import timezone

from scheduler import states, validation
from scheduler.exceptions import InvalidTransitionError
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
    logger.info("job cancelled job_id=%s", job_id)
    return True


def reschedule(job_or_id: JobOrId, run_at: datetime) -> ScheduledJob:
    """Move a scheduled or enqueued job to a new ``run_at`` (a message in SQS is dropped)."""
    validation.aware_datetime(run_at, "run_at")
    job_id = job_id_of(job_or_id)
    apply_one(job_id, states.RESCHEDULE, **waiting_until(run_at))
    logger.info("job rescheduled job_id=%s run_at=%s", job_id, run_at.isoformat())
    return ScheduledJob.objects.get(pk=job_id)


def retry(job_or_id: JobOrId, run_at: datetime | None = None) -> ScheduledJob:
    """Schedule a failed or cancelled job again (now by default), with a fresh set of attempts."""
    if run_at is not None:
        validation.aware_datetime(run_at, "run_at")
    job_id = job_id_of(job_or_id)
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
            **waiting_until(run_at or timezone.now()),
        )
    logger.info("job retried job_id=%s", job_id)
    return ScheduledJob.objects.get(pk=job_id)


def run_now(job_or_id: JobOrId) -> ScheduledJob:
    """Run a job as soon as possible: reschedule it to now, or retry it if it ended."""
    job_id = job_id_of(job_or_id)
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if status in states.RETRY.sources:
        return retry(job_id)
    return reschedule(job_id, timezone.now())
