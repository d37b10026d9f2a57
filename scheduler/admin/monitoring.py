"""The scheduler's health in figures, for the admin's monitoring page.

Plain functions of the database and ``now``; each is one or two aggregate queries
served by the job table's indexes, whatever the number of rows.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
)
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from scheduler import states
from scheduler.conf import scheduler_settings
from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from scheduler.states import Status

#: The dispatcher is presumed down when its last tick is this many intervals old.
HEARTBEAT_STALE_INTERVALS = 3
DUE_WINDOWS = (
    ("next hour", timedelta(hours=1)),
    ("next day", timedelta(days=1)),
    ("next week", timedelta(days=7)),
    ("next month", timedelta(days=30)),
)
LATENESS_WINDOWS = (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1)))
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
FAILED_OUTCOMES = (JobAttempt.Outcome.ERROR, JobAttempt.Outcome.LEASE_EXPIRED)


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
        # A float we checked, so it is safe to put in the SQL as text.
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class Figure:
    """A labelled number."""

    label: str
    value: int


@dataclass(frozen=True)
class Lateness:
    """Percentiles of how late attempts started in a window, in seconds (None: no attempt)."""

    label: str
    attempts: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class TaskFailures:
    """Failures of one task in the last 24 hours."""

    task_name: str
    failed_attempts: int
    failed_jobs: int


@dataclass(frozen=True)
class HourFinished:
    """Jobs that finished in one hour."""

    hour: datetime
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed


@dataclass(frozen=True)
class DayDue:
    """Pending jobs due on one day (in the current time zone)."""

    day: date
    count: int


@dataclass(frozen=True)
class Heartbeats:
    """The dispatchers' latest ticks, newest first, and whether they look alive."""

    recent: list[DispatcherHeartbeat]
    stale_after: timedelta
    latest_age: timedelta | None

    @property
    def healthy(self) -> bool:
        return self.latest_age is not None and self.latest_age <= self.stale_after


@dataclass(frozen=True)
class Snapshot:
    """Every figure of the monitoring page at one instant."""

    now: datetime
    by_status: list[Figure]
    due: list[Figure]
    due_by_day: list[DayDue]
    overdue: int
    heartbeats: Heartbeats
    lateness: list[Lateness]
    failures: list[TaskFailures]
    finished_by_hour: list[HourFinished]

    @property
    def total(self) -> int:
        """Jobs in every status."""
        return sum(count.value for count in self.by_status)

    @property
    def due_by_day_peak(self) -> int:
        """The tallest bar of the due-by-day chart, its scale."""
        return max((day.count for day in self.due_by_day), default=0)

    @property
    def finished_peak(self) -> int:
        """The tallest bar of the finished-by-hour chart, its scale."""
        return max((hour.total for hour in self.finished_by_hour), default=0)


def snapshot(now: datetime | None = None) -> Snapshot:
    """All the monitoring figures, computed at ``now``."""
    now = now or timezone.now()
    return Snapshot(
        now=now,
        by_status=status_counts(),
        due=due_counts(now=now),
        due_by_day=due_by_day(now=now),
        overdue=overdue_count(now=now),
        heartbeats=heartbeats(now=now),
        lateness=lateness(now=now),
        failures=failures_by_task(now=now),
        finished_by_hour=finished_by_hour(now=now),
    )


def status_counts() -> list[Figure]:
    """How many jobs are in each status, every status listed."""
    counts = dict(
        ScheduledJob.objects.order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return [Figure(label, counts.get(value, 0)) for value, label in Status.choices]


def due_counts(*, now: datetime) -> list[Figure]:
    """Pending jobs due within the next hour, day, week and month."""
    pending = ScheduledJob.objects.filter(status__in=states.PENDING, run_at__gt=now)
    counts = pending.aggregate(
        **{
            _alias(label): Count("pk", filter=Q(run_at__lte=now + window))
            for label, window in DUE_WINDOWS
        }
    )
    return [Figure(label, counts[_alias(label)]) for label, _ in DUE_WINDOWS]


def due_by_day(*, now: datetime, days: int = 30) -> list[DayDue]:
    """Pending jobs due on each of the next ``days`` days, today first, in local time."""
    today = timezone.localdate(now)
    zone = timezone.get_current_timezone()
    end = datetime.combine(today + timedelta(days=days), datetime.min.time(), tzinfo=zone)
    counts = dict(
        ScheduledJob.objects.filter(status__in=states.PENDING, run_at__gt=now, run_at__lt=end)
        .annotate(day=TruncDate("run_at", tzinfo=zone))
        .order_by()
        .values("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    return [
        DayDue(day, counts.get(day, 0))
        for day in (today + timedelta(days=offset) for offset in range(days))
    ]


def overdue_count(*, now: datetime) -> int:
    """Scheduled or enqueued jobs that should have started by now (should be 0)."""
    return ScheduledJob.objects.overdue(now=now).count()


def heartbeats(*, now: datetime, limit: int = 10) -> Heartbeats:
    """The most recent dispatcher heartbeats, and whether the newest is recent enough."""
    recent = list(DispatcherHeartbeat.objects.order_by("-last_tick_at")[:limit])
    return Heartbeats(
        recent=recent,
        stale_after=timedelta(
            seconds=HEARTBEAT_STALE_INTERVALS * scheduler_settings.DISPATCH_INTERVAL_SECONDS
        ),
        latest_age=now - recent[0].last_tick_at if recent else None,
    )


def lateness(*, now: datetime) -> list[Lateness]:
    """p50/p95/p99 of attempts' lateness (started_at - due time) in the last hour and day."""
    late = ExpressionWrapper(F("started_at") - F("scheduled_for"), output_field=DurationField())
    aggregates: dict[str, Any] = {}
    for label, window in LATENESS_WINDOWS:
        started = Q(started_at__gte=now - window, started_at__lte=now)
        aggregates[_alias(label, "attempts")] = Count("pk", filter=started)
        for name, fraction in PERCENTILES:
            aggregates[_alias(label, name)] = PercentileCont(
                late, fraction, filter=started, output_field=DurationField()
            )
    oldest = now - max(window for _, window in LATENESS_WINDOWS)
    row = JobAttempt.objects.filter(started_at__gte=oldest).aggregate(**aggregates)

    def seconds(value: timedelta | None) -> float | None:
        return None if value is None else value.total_seconds()

    return [
        Lateness(
            label=label,
            attempts=row[_alias(label, "attempts")],
            p50=seconds(row[_alias(label, "p50")]),
            p95=seconds(row[_alias(label, "p95")]),
            p99=seconds(row[_alias(label, "p99")]),
        )
        for label, _ in LATENESS_WINDOWS
    ]


def failures_by_task(*, now: datetime) -> list[TaskFailures]:
    """Failed attempts and jobs that failed for good in the last 24 hours, by task."""
    since = now - timedelta(hours=24)
    attempts = dict(
        JobAttempt.objects.filter(outcome__in=FAILED_OUTCOMES, finished_at__gte=since)
        .order_by()
        .values_list("job__task_name")
        .annotate(n=Count("pk"))
        .values_list("job__task_name", "n")
    )
    jobs = dict(
        ScheduledJob.objects.filter(status=Status.FAILED, finished_at__gte=since)
        .order_by()
        .values_list("task_name")
        .annotate(n=Count("pk"))
        .values_list("task_name", "n")
    )
    return sorted(
        (
            TaskFailures(name, attempts.get(name, 0), jobs.get(name, 0))
            for name in attempts.keys() | jobs.keys()
        ),
        key=lambda failures: (-failures.failed_attempts, -failures.failed_jobs, failures.task_name),
    )


def finished_by_hour(*, now: datetime, hours: int = 24) -> list[HourFinished]:
    """Jobs that succeeded or failed in each of the last ``hours`` hours, oldest first."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=hours - 1)
    rows = (
        ScheduledJob.objects.filter(
            status__in=(Status.SUCCEEDED, Status.FAILED), finished_at__gte=first
        )
        .annotate(hour=TruncHour("finished_at", tzinfo=UTC))
        .order_by()
        .values("hour")
        .annotate(
            succeeded=Count("pk", filter=Q(status=Status.SUCCEEDED)),
            failed=Count("pk", filter=Q(status=Status.FAILED)),
        )
    )
    by_hour = {row["hour"]: (row["succeeded"], row["failed"]) for row in rows}
    hours_shown = (first + timedelta(hours=offset) for offset in range(hours))
    return [HourFinished(hour, *by_hour.get(hour, (0, 0))) for hour in hours_shown]


def _alias(*words: str) -> str:
    # SQL column aliases cannot contain spaces.
    return "_".join(words).replace(" ", "_")
