"""The admin's actions on many jobs: who acts and why, for the set-based services.

:mod:`scheduler.services.bulk` moves the jobs, in a fixed number of statements, all or
nothing, and says why it skipped the others.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from django.db.models import QuerySet

from scheduler.models import ScheduledJob
from scheduler.services import bulk
from scheduler.services.bulk import BulkResult, Skip

__all__ = ["BulkResult", "Operator", "Skip", "Who"]


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
    return bulk.cancel_many(jobs, **by.who)


def run_jobs_now(jobs: QuerySet[ScheduledJob], *, by: Operator) -> BulkResult:
    """Run every job among ``jobs`` that has not started as soon as possible."""
    return bulk.run_many_now(jobs, **by.who)


def retry_jobs(
    jobs: QuerySet[ScheduledJob], *, by: Operator, deadline: datetime | None = None
) -> BulkResult:
    """Schedule every failed, cancelled or expired job among ``jobs`` again, now (with a
    new ``deadline``, if given)."""
    return bulk.retry_many(jobs, deadline=deadline, **by.who)


def reschedule_jobs(jobs: QuerySet[ScheduledJob], *, to: datetime, by: Operator) -> BulkResult:
    """Move every scheduled or enqueued job among ``jobs`` to ``to``."""
    return bulk.reschedule_many(jobs, to=to, **by.who)


def shift_jobs(
    jobs: QuerySet[ScheduledJob],
    *,
    offset: timedelta,
    by: Operator,
    unchanged_since: datetime | None = None,
) -> BulkResult:
    """Move every scheduled or enqueued job among ``jobs`` by ``offset`` from its own
    run_at, but those an operator acted on after ``unchanged_since``."""
    return bulk.shift_many(jobs, offset=offset, unchanged_since=unchanged_since, **by.who)
