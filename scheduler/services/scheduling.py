"""Scheduling jobs: the public entry points that insert them."""

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypedDict

from celery import Task
from django.db import IntegrityError, transaction
from django.utils import timezone
from typing_extensions import Unpack

from scheduler import validation
from scheduler.conf import scheduler_settings
from scheduler.exceptions import DuplicateJobError, UnknownTaskError
from scheduler.models import ScheduledJob
from scheduler.registry import get_task, task_name_of
from scheduler.services import audit

logger = logging.getLogger(__name__)

_UNIQUE_KEY_CONSTRAINT = "scheduler_job_unique_active_key"


class JobOptions(TypedDict, total=False):
    """The keyword options of :func:`schedule_at`, shared by its variants."""

    queue: str | None
    max_attempts: int | None
    unique_key: str | None
    deadline: datetime | None
    reason: str
    actor: str | None


def schedule_at(
    task: Task[Any, Any] | str,
    run_at: datetime,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
    deadline: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> ScheduledJob:
    """Schedule ``task(*args, **kwargs)`` to run at ``run_at``.

    The job is inserted in the caller's transaction: if that rolls back, there is no
    job. ``run_at`` must be timezone-aware; a past ``run_at`` means as soon as
    possible. A job not started by its ``deadline`` (aware, after ``run_at``) never
    starts: it ends ``expired``. Invalid input raises and writes nothing. With an
    ``actor`` (an operator's username), the audit trail records who scheduled it and why.
    """
    validation.aware_datetime(run_at, "run_at")
    reason, actor = validation.reason(reason), validation.actor(actor)
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
        deadline=validation.deadline(deadline, run_at=run_at),
    )
    with unique_key_guard(job.unique_key):
        job.save(force_insert=True)
        audit.record(
            audit.Action.SCHEDULE,
            actor=actor,
            reason=reason,
            job_id=job.pk,
            run_at=run_at.isoformat(),
        )
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
    **options: Unpack[JobOptions],
) -> ScheduledJob:
    """Schedule ``task`` to run ``delay`` (a timedelta or seconds) from now.

    Takes the same keyword options as :func:`schedule_at`.
    """
    return schedule_at(task, timezone.now() + validation.delay(delay), args, kwargs, **options)


@contextmanager
def unique_key_guard(unique_key: str | None) -> Iterator[None]:
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
