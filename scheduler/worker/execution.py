"""Running a job on a worker: claim it, run its task's body, record the outcome."""

import enum
import logging
import traceback
from uuid import UUID

from scheduler.registry import get_task
from scheduler.services import running
from scheduler.states import Status

logger = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """What handling one message did."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    #: The message was a duplicate, or its job was cancelled, rescheduled, expired,
    #: paused or lost its lease: it was acknowledged and nothing ran.
    DROPPED = "dropped"
    #: The job ran but its lease expired meanwhile, so another outcome was recorded.
    LEASE_LOST = "lease_lost"


def run_job(*, job_id: int, token: UUID, task_name: str, worker: str) -> Outcome:
    """Handle one message for job ``job_id`` delivered to ``task_name``, exactly once in effect."""
    claimed = running.claim(job_id=job_id, token=token, task_name=task_name, worker=worker)
    if isinstance(claimed, running.Refusal):
        logger.info("message dropped job_id=%s token=%s reason=%s", job_id, token, claimed)
        return Outcome.DROPPED
    job, attempt = claimed.job, claimed.attempt
    logger.info(
        "job started job_id=%s task=%s attempt=%s/%s lateness=%.3fs",
        job.pk,
        job.task_name,
        job.attempts,
        job.max_attempts,
        job.lateness.total_seconds() if job.lateness else 0.0,
    )
    try:
        result = get_task(job.task_name).run(*job.args, **job.kwargs)
    except Exception:
        error = traceback.format_exc()
        status = running.record_error(job=job, attempt=attempt, error=error)
        if status is None:
            logger.warning("job lease lost job_id=%s outcome=error", job.pk)
            return Outcome.LEASE_LOST
        outcome = Outcome.RETRYING if status == Status.SCHEDULED else Outcome.FAILED
        logger.warning(
            "job error job_id=%s task=%s attempt=%s/%s outcome=%s error=%s",
            job.pk,
            job.task_name,
            job.attempts,
            job.max_attempts,
            outcome,
            error.strip().splitlines()[-1],
        )
        return outcome
    if not running.record_success(job=job, attempt=attempt, result=result):
        logger.warning("job lease lost job_id=%s outcome=succeeded", job.pk)
        return Outcome.LEASE_LOST
    logger.info("job succeeded job_id=%s task=%s", job.pk, job.task_name)
    return Outcome.SUCCEEDED
