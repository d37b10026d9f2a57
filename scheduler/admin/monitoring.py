"""The scheduler's health in figures, for the admin's monitoring page.

Plain functions of the database and ``now``: a fixed number of queries, each reading a
bounded number of index entries, so the page answers in well under 100 ms with ten
million jobs. Where an exact figure would read millions of rows, the page shows an
estimate, marked "≈":

- jobs per status are counted up to ``EXACT_COUNT_LIMIT`` each (an index scan that
  stops there); beyond, PostgreSQL's statistics estimate them (pg_class.reltuples
  times the status's frequency in pg_stats, as of the table's last ANALYZE), never
  below what was counted (as ``/metrics`` does: ``job_counts_by_status``);
- jobs due are counted per hour (next 48 hours) and per day (next 30 days) up to a
  cap per period; a period over its cap is estimated from a block sample of the table
  (``TABLESAMPLE SYSTEM``, about ``SAMPLE_PAGES`` pages);
- lateness and failed attempts per task come from at most ``SAMPLE_SIZE`` attempts of
  the window, in runs of consecutive ids spread over it (attempt ids grow with their
  start), exact when the window holds fewer.
"""

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Q,
    Value,
    When,
)
from django.utils import timezone
from typing_extensions import override

from scheduler import sqs, states
from scheduler.conf import OUTAGE_BACKOFF_INTERVALS, scheduler_settings
from scheduler.models import (
    OVERDUE_AFTER,
    SAMPLE_RUN_LENGTH,
    AttemptSample,
    DispatcherHeartbeat,
    JobAttempt,
    Pause,
    ScheduledJob,
    attempt_samples,
    job_counts_by_status,
    pending_figures,
    read_from_indexes,
    status_parts,
    watched_queues,
)
from scheduler.services.pausing import describe
from scheduler.states import Status

#: The dispatcher is presumed down when its last tick is this old, as the
#: SchedulerDispatcherDown alert (README) presumes it, or this many intervals if longer:
#: while PostgreSQL or SQS fails it waits up to OUTAGE_BACKOFF_INTERVALS between ticks,
#: and a tick failing on SQS's timeouts takes seconds more, so an outage it rode out
#: made it look silent, and a restart that fixes nothing look called for.
HEARTBEAT_STALE_SECONDS = 60.0
HEARTBEAT_STALE_INTERVALS = OUTAGE_BACKOFF_INTERVALS + 1
#: Counts are exact up to this many rows; an estimate beyond.
EXACT_COUNT_LIMIT = 10_000
#: Jobs due are counted up to this many per hour and per day; an estimate beyond.
HOUR_CAP = 5_000
DAY_CAP = 2_000
#: The block sample behind those estimates reads about this many pages of the table.
SAMPLE_PAGES = 500
#: A lateness window reads at most this many attempts, in runs of consecutive ids.
SAMPLE_SIZE = 2_000
RUN_LENGTH = SAMPLE_RUN_LENGTH
LATENESS_WINDOWS = (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1)))
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
#: Upper bounds of the lateness histogram's buckets; the last one is open.
LATENESS_BUCKETS = (
    ("< 0.1 s", timedelta(milliseconds=100)),
    ("< 0.5 s", timedelta(milliseconds=500)),
    ("< 1 s", timedelta(seconds=1)),
    ("< 2 s", timedelta(seconds=2)),
    ("< 5 s", timedelta(seconds=5)),
    ("< 30 s", timedelta(seconds=30)),
    ("< 1 min", timedelta(minutes=1)),
    ("< 5 min", timedelta(minutes=5)),
    ("< 1 h", timedelta(hours=1)),
    ("≥ 1 h", None),
)
FAILED_OUTCOMES = (JobAttempt.Outcome.ERROR, JobAttempt.Outcome.LEASE_EXPIRED)


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``.

    The fraction is a query parameter and ``filter`` becomes a CASE inside the ordered
    expression (percentile_cont ignores NULLs): the SQL is built here, not from
    ``Aggregate.template``, whose placeholders differ between Django 5.2 and 6.0.
    """

    function = "percentile_cont"
    name = "PercentileCont"

    def __init__(
        self, expression: Any, fraction: float, *, filter: Q | None = None, **extra: Any
    ) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"fraction must be a number, got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
        if filter is not None:
            expression = Case(When(filter, then=expression))
        super().__init__(Value(float(fraction), output_field=FloatField()), expression, **extra)

    @override
    def as_sql(
        self,
        compiler: Any,
        connection: Any,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> tuple[str, Any]:
        fraction, expression = (compiler.compile(part) for part in self.source_expressions[:2])
        sql = f"{self.function}({fraction[0]}) WITHIN GROUP (ORDER BY {expression[0]})"
        return sql, (*fraction[1], *expression[1])


@dataclass(frozen=True)
class Tally:
    """A count that may be an estimate; ``exact`` says which."""

    value: int
    exact: bool = True

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"≈ {self.value:,}"


@dataclass(frozen=True)
class StatusCount:
    """How many jobs are in one status."""

    status: str
    label: str
    count: Tally


@dataclass(frozen=True)
class Bucket:
    """Jobs (or attempts) in one period or range."""

    label: str
    start: datetime | None
    count: int


@dataclass(frozen=True)
class Bar:
    """One bar of an SVG bar chart, in the chart's units (600 wide, bars up to 100 high)."""

    x: float
    width: float
    height: float
    bucket: Bucket
    #: Whether the axis shows this bar's label (not every bar has room for one).
    labelled: bool


@dataclass(frozen=True)
class Histogram:
    """Buckets of a chart, with whether the counts are exact or scaled from a sample."""

    buckets: list[Bucket]
    exact: bool

    CHART_WIDTH = 600
    BAR_HEIGHT = 100
    LABELS = 8

    @property
    def peak(self) -> int:
        """The tallest bar, the chart's scale."""
        return max((bucket.count for bucket in self.buckets), default=0)

    @property
    def bars(self) -> list[Bar]:
        """The buckets as bars scaled to the peak, with about LABELS labels on the axis."""
        if not self.buckets:
            return []
        slot = self.CHART_WIDTH / len(self.buckets)
        every = math.ceil(len(self.buckets) / self.LABELS)
        return [
            Bar(
                x=round(index * slot, 2),
                width=round(slot * 0.8, 2),
                height=round(self.BAR_HEIGHT * bucket.count / self.peak, 2) if self.peak else 0,
                bucket=bucket,
                labelled=index % every == 0,
            )
            for index, bucket in enumerate(self.buckets)
        ]


@dataclass(frozen=True)
class Lateness:
    """How late one task's attempts started in a window (seconds; None: no attempt)."""

    task_name: str
    attempts: int
    failed: int
    p50: float | None
    p95: float | None
    p99: float | None
    histogram: list[int]

    @property
    def histogram_peak(self) -> int:
        return max(self.histogram, default=0)


@dataclass(frozen=True)
class LatenessWindow:
    """Lateness per task over one window."""

    label: str
    rows: list[Lateness]
    #: 1 when every attempt of the window was read; else how many each one read stands for.
    scale: float

    @property
    def exact(self) -> bool:
        return self.scale == 1

    @property
    def histogram(self) -> Histogram:
        """Attempts of every task by how late they started."""
        return Histogram(
            [
                Bucket(label, None, sum(row.histogram[index] for row in self.rows))
                for index, (label, _) in enumerate(LATENESS_BUCKETS)
            ],
            exact=self.exact,
        )


@dataclass(frozen=True)
class TaskFailures:
    """Failures of one task in the last 24 hours."""

    task_name: str
    failed_attempts: int
    failed_jobs: int
    #: False when more than EXACT_COUNT_LIMIT jobs failed: ``failed_jobs`` counts the
    #: task's among the latest of them, at least.
    jobs_exact: bool = True


@dataclass(frozen=True)
class DispatcherHealth:
    """One dispatcher's last tick, how long ago it was, and whether that is recent enough."""

    beat: DispatcherHeartbeat
    age: timedelta
    healthy: bool


@dataclass(frozen=True)
class Heartbeats:
    """The dispatchers' latest ticks, newest first, and whether they look alive."""

    recent: list[DispatcherHeartbeat]
    stale_after: timedelta
    latest_age: timedelta | None
    now: datetime

    @property
    def healthy(self) -> bool:
        """Whether the newest tick is recent: some dispatcher is running."""
        return self.latest_age is not None and self.latest_age <= self.stale_after

    @property
    def dispatchers(self) -> list[DispatcherHealth]:
        """Each recent dispatcher with its health."""
        return [
            DispatcherHealth(beat, age, age <= self.stale_after)
            for beat in self.recent
            for age in [self.now - beat.last_tick_at]
        ]


@dataclass(frozen=True)
class PausedKind:
    """A pause, as the page shows it."""

    pause: Pause
    kind: str


@dataclass(frozen=True)
class DeadLetterQueue:
    """A dead-letter queue's depth and the jobs its first messages belong to."""

    letters: sqs.DeadLetters
    jobs: list[ScheduledJob] = field(default_factory=list)

    @property
    def missing_ids(self) -> list[int]:
        """Jobs named by a message that are not in the table any more (purged)."""
        found = {job.pk for job in self.jobs}
        return [job_id for job_id in self.letters.job_ids if job_id not in found]


@dataclass(frozen=True)
class Snapshot:
    """Every figure of the monitoring page at one instant."""

    now: datetime
    by_status: list[StatusCount]
    overdue: Tally
    oldest_overdue: datetime | None
    due_hourly: Histogram
    due_daily: Histogram
    heartbeats: Heartbeats
    lateness: list[LatenessWindow]
    failures: list[TaskFailures]
    paused: list[PausedKind]
    #: The default queue's, then the other queues' of jobs in the table.
    dead_letters: list[DeadLetterQueue]

    @property
    def total(self) -> Tally:
        """Jobs in every status."""
        counts = [row.count for row in self.by_status]
        return Tally(sum(c.value for c in counts), all(c.exact for c in counts))

    @property
    def oldest_overdue_age(self) -> timedelta | None:
        return None if self.oldest_overdue is None else self.now - self.oldest_overdue


def snapshot(now: datetime | None = None) -> Snapshot:
    """All the monitoring figures, computed at ``now``, by default PostgreSQL's clock
    (the web host's is checked by nothing)."""
    # SQS answers while PostgreSQL does: the page waits for the slower, not for both.
    letters = sqs.DeadLetterPeeks(watched_queues(default=scheduler_settings.QUEUE_NAME))
    pages = table_pages()
    with read_from_indexes() as database_now:
        now = now or database_now
        overdue, oldest = overdue_jobs(now=now)
        by_status = status_counts()
    due_hourly, due_daily = due_charts(now=now, pages=pages)
    lateness = lateness_windows(now=now)
    return Snapshot(
        now=now,
        by_status=by_status,
        overdue=overdue,
        oldest_overdue=oldest,
        due_hourly=due_hourly,
        due_daily=due_daily,
        heartbeats=heartbeats(now=now),
        lateness=lateness,
        failures=failures_by_task(now=now, day=lateness[-1]),
        paused=[PausedKind(p, describe(p.task_name, p.queue)) for p in Pause.objects.all()],
        dead_letters=dead_letter_queues(letters.results()),
    )


def table_pages() -> int:
    """The job table's pages, as PostgreSQL's statistics have them (no scan)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT class.relpages FROM pg_class AS class WHERE class.oid = %s::regclass",
            [ScheduledJob._meta.db_table],
        )
        (pages,) = cursor.fetchone()
    return int(pages)


def status_counts() -> list[StatusCount]:
    """Jobs per status: exact up to EXACT_COUNT_LIMIT, else PostgreSQL's estimate but
    never less than was counted; the figures ``/metrics`` gives (one function)."""
    return [
        StatusCount(status.value, status.label, Tally(count.value, count.exact))
        for status, count in job_counts_by_status(exact_up_to=EXACT_COUNT_LIMIT).items()
    ]


def overdue_jobs(*, now: datetime) -> tuple[Tally, datetime | None]:
    """Pending jobs more than OVERDUE_AFTER past their run_at (capped), and the oldest run_at."""
    figures = pending_figures(cutoff=now - OVERDUE_AFTER, soon=(now, now), up_to=EXACT_COUNT_LIMIT)
    if figures.overdue > EXACT_COUNT_LIMIT:
        return Tally(EXACT_COUNT_LIMIT, exact=False), figures.oldest_overdue
    return Tally(figures.overdue), figures.oldest_overdue


def due_charts(*, now: datetime, pages: int) -> tuple[Histogram, Histogram]:
    """Pending jobs due per hour for the next 48 hours and per day for the next 30 days.

    Periods are in the current time zone. Each is counted up to its cap (HOUR_CAP,
    DAY_CAP); one over it is estimated from a block sample of the table.
    """
    zone = timezone.get_current_timezone()
    hour = timezone.localtime(now, zone).replace(minute=0, second=0, microsecond=0)
    # Elapsed hours, as instants in UTC: by the wall clock, a DST change skips an hour
    # (a local time that does not exist) or repeats one (a time that happens twice),
    # and neither compares equal to the instant PostgreSQL returns for it.
    hours = [hour.astimezone(UTC) + timedelta(hours=offset) for offset in range(49)]
    day = hour.replace(hour=0)
    days = [_shift(day, timedelta(days=1), offset) for offset in range(31)]
    hourly = _capped_counts(hours, now=now, cap=HOUR_CAP)
    daily = _capped_counts(days, now=now, cap=DAY_CAP)
    over = any(n > HOUR_CAP for n in hourly.values()) or any(n > DAY_CAP for n in daily.values())
    sampled = _sampled_per_hour(now=now, end=days[-1], zone=zone, pages=pages, wanted=over)

    def histogram(
        starts: list[datetime], counted: dict[datetime, int], cap: int, label: str
    ) -> Histogram:
        buckets, exact = [], True
        for start, stop in itertools.pairwise(starts):
            count = counted[start]
            if count > cap:
                exact = False
                estimate = sum(n for moment, n in sampled.items() if start <= moment < stop)
                count = max(count, estimate)
            local = timezone.localtime(start, zone)
            buckets.append(Bucket(local.strftime(label), local, count))
        return Histogram(buckets, exact)

    return histogram(hours, hourly, HOUR_CAP, "%H:%M"), histogram(days, daily, DAY_CAP, "%a %d %b")


def _capped_counts(starts: list[datetime], *, now: datetime, cap: int) -> dict[datetime, int]:
    """Pending jobs due in each period [starts[i], starts[i + 1]) from now, up to cap + 1."""
    parts = status_parts(states.PENDING)
    per_status = " + ".join(
        f"(SELECT count(*) FROM (SELECT 1 FROM {ScheduledJob._meta.db_table} "  # noqa: S608
        f"WHERE status = %s{held} AND run_at >= greatest(period.start, %s) "
        "AND run_at < period.stop LIMIT %s) AS capped)"
        for _, held in parts
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT period.start, {per_status} "  # noqa: S608 - the model's table name
            "FROM unnest(%s::timestamptz[], %s::timestamptz[]) AS period(start, stop)",
            [
                *(v for status, _ in parts for v in (status, now, cap + 1)),
                starts[:-1],
                starts[1:],
            ],
        )
        counted = dict(cursor.fetchall())
    return {start: counted[start] for start in starts[:-1]}


def _sampled_per_hour(
    *, now: datetime, end: datetime, zone: tzinfo, pages: int, wanted: bool
) -> dict[datetime, int]:
    """Pending jobs due per local hour up to ``end``, estimated from a block sample.

    About SAMPLE_PAGES pages of the table are read (none unless ``wanted``), and each
    count is scaled by the inverse of the share read. The same pages for an hour: the
    page's reloads find them in PostgreSQL's cache, and the estimate does not jitter.
    """
    percent = min(100.0, 100.0 * SAMPLE_PAGES / pages) if wanted and pages else 0.0
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT date_trunc('hour', run_at, %s), count(*)
            FROM {ScheduledJob._meta.db_table} TABLESAMPLE SYSTEM (%s) REPEATABLE (%s)
            WHERE status = ANY(%s::text[]) AND run_at >= %s AND run_at < %s
            GROUP BY 1
            """,  # noqa: S608 - the table name is the model's
            [str(zone), percent, now.timestamp() // 3600, list(states.PENDING), now, end],
        )
        rows = cursor.fetchall()
    scale = 100.0 / percent if percent else 0.0
    return {hour: round(count * scale) for hour, count in rows}


def lateness_windows(*, now: datetime) -> list[LatenessWindow]:
    """Lateness and failed attempts per task over each of LATENESS_WINDOWS, each read
    from at most SAMPLE_SIZE attempts (:func:`attempt_samples`)."""
    starts = [now - window for _, window in LATENESS_WINDOWS]
    samples = attempt_samples(starts=starts, size=SAMPLE_SIZE, run_length=RUN_LENGTH)
    return [
        _lateness_window(label, start, now, sample)
        for (label, _), start, sample in zip(LATENESS_WINDOWS, starts, samples, strict=True)
    ]


def _lateness_window(
    label: str, since: datetime, until: datetime, sample: AttemptSample
) -> LatenessWindow:
    # A filter of each figure, not of the rows (attempt_samples says why).
    window = Q(started_at__gte=since, started_at__lt=until)
    late = ExpressionWrapper(F("started_at") - F("scheduled_for"), output_field=DurationField())
    figures: dict[str, Any] = {
        "attempts": Count("pk", filter=window),
        "failed": Count("pk", filter=window & Q(outcome__in=FAILED_OUTCOMES)),
    }
    for name, fraction in PERCENTILES:
        figures[name] = PercentileCont(late, fraction, filter=window, output_field=DurationField())
    lower: timedelta | None = None
    for index, (_, upper) in enumerate(LATENESS_BUCKETS):
        in_bucket = window if lower is None else window & Q(late__gte=lower)
        if upper is not None:
            in_bucket &= Q(late__lt=upper)
        figures[f"bucket_{index}"] = Count("pk", filter=in_bucket)
        lower = upper
    rows = (
        JobAttempt.objects.filter(sample.attempts)
        .alias(late=late)
        .order_by("task_name")
        .values("task_name")
        .annotate(**figures)
    )
    return LatenessWindow(
        label, [_lateness(row, sample.scale) for row in rows if row["attempts"]], sample.scale
    )


def _lateness(row: dict[str, Any], scale: float) -> Lateness:
    def seconds(value: timedelta | None) -> float | None:
        return None if value is None else value.total_seconds()

    return Lateness(
        task_name=row["task_name"],
        attempts=round(row["attempts"] * scale),
        failed=round(row["failed"] * scale),
        p50=seconds(row["p50"]),
        p95=seconds(row["p95"]),
        p99=seconds(row["p99"]),
        histogram=[round(row[f"bucket_{index}"] * scale) for index in range(len(LATENESS_BUCKETS))],
    )


def failures_by_task(*, now: datetime, day: LatenessWindow) -> list[TaskFailures]:
    """Per task: failed attempts of the last day (from its lateness sample) and jobs
    that failed for good in the last 24 hours (a partial index of failed jobs), counted
    among the latest EXACT_COUNT_LIMIT + 1: on the day a million fail, not all read."""
    latest = (
        ScheduledJob.objects.filter(
            status=Status.FAILED, finished_at__gte=now - timedelta(hours=24)
        )
        .order_by("-finished_at")
        .values("task_name")[: EXACT_COUNT_LIMIT + 1]
    )
    sql, params = latest.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT task_name, count(*) FROM ({sql}) AS latest GROUP BY task_name",  # noqa: S608 - Django's own SQL
            params,
        )
        jobs: dict[str, int] = dict(cursor.fetchall())
    exact = sum(jobs.values()) <= EXACT_COUNT_LIMIT
    attempts = {row.task_name: row.failed for row in day.rows if row.failed}
    return sorted(
        (
            TaskFailures(name, attempts.get(name, 0), jobs.get(name, 0), jobs_exact=exact)
            for name in attempts.keys() | jobs.keys()
        ),
        key=lambda failures: (-failures.failed_attempts, -failures.failed_jobs, failures.task_name),
    )


def heartbeats(*, now: datetime, limit: int = 10) -> Heartbeats:
    """The most recent dispatcher heartbeats, and whether the newest is recent enough."""
    recent = list(DispatcherHeartbeat.objects.order_by("-last_tick_at")[:limit])
    return Heartbeats(
        recent=recent,
        stale_after=timedelta(
            seconds=max(
                HEARTBEAT_STALE_SECONDS,
                HEARTBEAT_STALE_INTERVALS * scheduler_settings.DISPATCH_INTERVAL_SECONDS,
            )
        ),
        latest_age=now - recent[0].last_tick_at if recent else None,
        now=now,
    )


def dead_letter_queues(peeks: list[sqs.DeadLetters]) -> list[DeadLetterQueue]:
    """The jobs peeks at dead-letter queues found (one query, none if they found none)."""
    jobs = {
        job.pk: job
        for job in ScheduledJob.objects.filter(
            pk__in=[job_id for letters in peeks for job_id in letters.job_ids]
        ).only("pk", "task_name", "status", "run_at")
    }
    return [
        DeadLetterQueue(letters, [jobs[pk] for pk in letters.job_ids if pk in jobs])
        for letters in peeks
    ]


def _shift(start: datetime, step: timedelta, count: int) -> datetime:
    """``start`` moved by ``count`` wall-clock ``step``s (a day is 23 or 25 hours across
    a DST change), as an instant in UTC; a time the change skips (a midnight, in some
    zones) as the instant its former offset gives, which the zone shows an hour on."""
    local = timezone.make_aware(start.replace(tzinfo=None) + step * count, start.tzinfo)
    return local.astimezone(UTC)
