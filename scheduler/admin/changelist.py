"""What keeps the admin's job list cheap with millions of rows.

No filter reads the table to build its choices, and the paginator never counts more
than ``COUNT_LIMIT`` rows.
"""

from datetime import datetime, timedelta
from typing import Any, cast

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from typing_extensions import override

from scheduler import states
from scheduler.conf import scheduler_settings
from scheduler.models import OVERDUE_AFTER, ScheduledJob
from scheduler.registry import schedulable_task_names

#: Beyond this many matching rows the list says "more than" instead of counting.
COUNT_LIMIT = 10_000


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that counts at most ``COUNT_LIMIT + 1`` rows (one bounded query)."""

    @cached_property
    def count(self) -> int:
        """The number of rows, or ``COUNT_LIMIT + 1`` when there are more."""
        rows = cast("QuerySet[Any]", self.object_list)
        # Unordered: the planner may count from whichever index serves the filter.
        return rows.order_by()[: COUNT_LIMIT + 1].count()

    @property
    def is_capped(self) -> bool:
        return self.count > COUNT_LIMIT


class JobChangeList(ChangeList):
    """Django's list, whose date drill-down also reaches the calendar's last period."""

    @override
    def get_filters_params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The list's lookups; a drill-down to a period that ends past year 9999 (a job
        at a "never" time) becomes "from its start": Django's bounds overflow there."""
        lookups: dict[str, Any] = super().get_filters_params(params)
        names = [f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")]
        year, month, day = (lookups[name][-1] if lookups.get(name) else None for name in names)
        start = _period_start_if_last(year, month, day) if year is not None else None
        if start is not None:
            for name in names:
                lookups.pop(name, None)
            lookups[f"{self.date_hierarchy}__gte"] = [start]
        return lookups


def _period_start_if_last(year: str, month: str | None, day: str | None) -> datetime | None:
    """The start of the drill-down's period if its end is past year 9999, else None
    (and for a period that is no date, which Django itself refuses)."""
    zone = timezone.get_current_timezone() if scheduler_settings.uses_time_zones() else None
    try:
        start = datetime(int(year), int(month or 1), int(day or 1), tzinfo=zone)
    except ValueError:
        return None
    return start if period_end(start, month=bool(month), day=bool(day)) is None else None


def period_end(start: datetime, *, month: bool, day: bool) -> datetime | None:
    """Where the drill-down's year, month or day that begins at ``start`` ends; None
    for the calendar's last (it would end in year 10000)."""
    try:
        if day:
            return start + timedelta(days=1)
        if month:
            # From the first of a month, 32 days is always in the next one.
            return (start + timedelta(days=32)).replace(day=1)
        return start.replace(year=start.year + 1)
    except (OverflowError, ValueError):
        return None


class _FieldEqualsFilter(admin.SimpleListFilter):
    """Jobs whose ``field`` equals the chosen value; the choices cost no query."""

    field: str

    @override
    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> QuerySet[ScheduledJob]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class TaskFilter(_FieldEqualsFilter):
    """Filter by task, choosing among the registered tasks (no query)."""

    title = "task"
    parameter_name = "task"
    field = "task_name"

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(_known_task_names())]


class QueueFilter(_FieldEqualsFilter):
    """Filter by queue: the default queue as a link, any other typed in (no query)."""

    title = "queue"
    parameter_name = "queue"
    field = "queue"
    template = "admin/scheduler/scheduledjob/queue_filter.html"

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any
    ) -> None:
        # The typed-in form must carry the list's other filters and search along.
        self.preserved = [
            (name, value)
            for name, values in request.GET.lists()
            if name not in (self.parameter_name, "p")
            for value in values
        ]
        super().__init__(request, params, model, model_admin)

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        queues = [scheduler_settings.QUEUE_NAME]
        chosen = self.value()
        if chosen and chosen not in queues:
            queues.append(chosen)
        return [(queue, queue) for queue in queues]


class RunAtFilter(admin.SimpleListFilter):
    """Filter by run_at relative to now, including jobs that are overdue."""

    title = "run at"
    parameter_name = "run_at"
    OVERDUE = "overdue"
    #: value: (label, start, end) relative to now.
    WINDOWS = {
        "past_week": ("Past 7 days", timedelta(days=-7), timedelta(0)),
        "past_day": ("Past 24 hours", timedelta(days=-1), timedelta(0)),
        "next_hour": ("Next hour", timedelta(0), timedelta(hours=1)),
        "next_day": ("Next 24 hours", timedelta(0), timedelta(days=1)),
        "next_week": ("Next 7 days", timedelta(0), timedelta(days=7)),
        "next_month": ("Next 30 days", timedelta(0), timedelta(days=30)),
    }

    @override
    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        windows = [(value, label) for value, (label, _, _) in self.WINDOWS.items()]
        return [(self.OVERDUE, "Overdue (not started)"), *windows]

    @override
    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ScheduledJob]
    ) -> QuerySet[ScheduledJob]:
        value = self.value()
        now = timezone.now()
        if value == self.OVERDUE:
            return queryset.filter(pk__in=overdue_ids(now=now))
        if value in self.WINDOWS:
            _, start, end = self.WINDOWS[value]
            return queryset.filter(run_at__gte=now + start, run_at__lt=now + end)
        return queryset


def overdue_ids(*, now: datetime) -> RawSQL:
    """The ids of the overdue jobs (at most COUNT_LIMIT + 1 per pending status), latest first.

    One branch per status, each matching its own partial index (scheduled: due_idx;
    enqueued: status_idx): with ``status IN (…)`` and the list's ORDER BY run_at, the
    planner would walk the run_at index through the whole history to find none.
    """
    branch = (
        f"(SELECT id FROM {ScheduledJob._meta.db_table} WHERE status = %s AND run_at < %s "  # noqa: S608
        "ORDER BY run_at DESC LIMIT %s)"
    )
    cutoff = now - OVERDUE_AFTER
    return RawSQL(  # noqa: S611 - the model's table name; values are parameters
        " UNION ALL ".join(branch for _ in states.PENDING),
        [value for status in states.PENDING for value in (status, cutoff, COUNT_LIMIT + 1)],
    )


def search_filter(term: str) -> Q:
    """Jobs matching a search term: a job id, the start of a task name, or of a unique key.

    A number is a job id and nothing else: one primary-key probe. Text that starts a
    known task name finds those tasks' jobs (looked up among the registered tasks, no
    LIKE over the table); any other text is the start of a unique key, served by its
    pattern index. One condition each, so the list's capped count reads one index.
    """
    term = term.strip().removeprefix("#")
    if term.isdigit():
        # Beyond a bigint, no job has that id.
        return Q(pk=int(term)) if len(term) <= 18 else Q(pk__in=[])
    names = sorted(name for name in _known_task_names() if name.startswith(term))
    return Q(task_name__in=names) if names else Q(unique_key__startswith=term)


def _known_task_names() -> set[str]:
    return set(schedulable_task_names()) | set(scheduler_settings.ADMIN_TASKS)
