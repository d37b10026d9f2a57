"""Transitions applied to many jobs at once (the admin's actions).

Each job goes through the same service as a single call, so every rule and log line
applies; a job that is not in a legal state, or that changes state meanwhile, is
skipped rather than failing the whole batch.
"""

import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from django.db.models import QuerySet

from scheduler import services, states
from scheduler.exceptions import (
    DuplicateJobError,
    InvalidArgumentsError,
    InvalidTransitionError,
    JobNotFoundError,
)
from scheduler.models import ScheduledJob

logger = logging.getLogger(__name__)


class Skip(enum.Enum):
    """Why a selected job was left as it was."""

    #: Not in a state the operation applies to (maybe changed meanwhile), or gone.
    STATE = enum.auto()
    #: Another active job holds its unique key.
    UNIQUE_KEY = enum.auto()
    #: Its deadline is not after its new time: only a new deadline lets it run.
    DEADLINE = enum.auto()
    #: Its new time would be outside the years 1-9999.
    OUT_OF_RANGE = enum.auto()


@dataclass(frozen=True)
class BulkResult:
    """How many of the selected jobs changed, and why the others were left as they were."""

    changed: int
    skipped: Counter[Skip]


class Who(TypedDict):
    """The audit keywords every operator service takes."""

    reason: str
    actor: str | None


@dataclass(frozen=True)
class Operator:
    """Who acts and why, for the audit trail (one entry per changed job)."""

    actor: str
    reason: str = ""

    @property
    def who(self) -> Who:
        """The keywords with which every operator service records its audit entry."""
        return {"reason": self.reason, "actor": self.actor}


def cancel_jobs(jobs: QuerySet[ScheduledJob], *, by: Operator) -> BulkResult:
    """Cancel every scheduled or enqueued job among ``jobs``."""
    return _each(jobs, states.CANCEL.sources, "cancel", lambda pk, _: services.cancel(pk, **by.who))


def run_jobs_now(jobs: QuerySet[ScheduledJob], *, by: Operator) -> BulkResult:
    """Run every job among ``jobs`` that has not started as soon as possible."""
    return _each(jobs, states.RUNNABLE, "run_now", lambda pk, _: services.run_now(pk, **by.who))


def retry_jobs(jobs: QuerySet[ScheduledJob], *, by: Operator) -> BulkResult:
    """Schedule every failed, cancelled or expired job among ``jobs`` again, now."""
    return _each(jobs, states.RETRY.sources, "retry", lambda pk, _: services.retry(pk, **by.who))


def reschedule_jobs(jobs: QuerySet[ScheduledJob], *, to: datetime, by: Operator) -> BulkResult:
    """Move every scheduled or enqueued job among ``jobs`` to ``to``."""
    return _each(
        jobs,
        states.RESCHEDULE.sources,
        "reschedule",
        lambda pk, _run_at: services.reschedule(pk, to, **by.who),
    )


def shift_jobs(jobs: QuerySet[ScheduledJob], *, offset: timedelta, by: Operator) -> BulkResult:
    """Move every scheduled or enqueued job among ``jobs`` by ``offset`` from its own run_at."""
    return _each(
        jobs,
        states.RESCHEDULE.sources,
        "shift",
        lambda pk, run_at: services.reschedule(pk, _shifted(run_at, offset), **by.who),
    )


def _shifted(run_at: datetime, offset: timedelta) -> datetime:
    try:
        return run_at + offset
    except OverflowError:
        # A far-off "never" time moved later (or a time near year 1 moved earlier): that
        # job is skipped, as one whose deadline forbids the move is.
        raise InvalidArgumentsError(
            "run_at", f"{run_at.isoformat()} moved by {offset} is outside the years 1-9999"
        ) from None


def _each(
    jobs: QuerySet[ScheduledJob],
    allowed: tuple[str, ...],
    operation: str,
    apply: Callable[[int, datetime], object],
) -> BulkResult:
    selected = jobs.count()
    changed = 0
    skipped: Counter[Skip] = Counter()
    candidates = jobs.filter(status__in=allowed).order_by("pk").values_list("pk", "run_at")
    for pk, run_at in candidates.iterator():
        try:
            # cancel() answers False for a job that another request cancelled first.
            if apply(pk, run_at) is not False:
                changed += 1
        except (
            InvalidTransitionError,
            DuplicateJobError,
            JobNotFoundError,
            InvalidArgumentsError,
        ) as error:
            reason = _skip(error)
            if reason is None:
                raise
            skipped[reason] += 1
            logger.info("bulk job skipped operation=%s job_id=%s reason=%s", operation, pk, error)
    # Not among the candidates, or answered False (cancelled by another request first).
    skipped[Skip.STATE] += selected - changed - skipped.total()
    result = BulkResult(changed=changed, skipped=+skipped)
    logger.info(
        "bulk jobs operation=%s changed=%s skipped=%s",
        operation,
        result.changed,
        {reason.name.lower(): count for reason, count in result.skipped.items()},
    )
    return result


def _skip(error: Exception) -> Skip | None:
    """Why ``error`` skips its job; None for an argument of the whole action (the
    reason, which the admin's action form has checked already)."""
    if isinstance(error, DuplicateJobError):
        return Skip.UNIQUE_KEY
    if isinstance(error, InvalidArgumentsError):
        return {"deadline": Skip.DEADLINE, "run_at": Skip.OUT_OF_RANGE}.get(error.field)
    return Skip.STATE
