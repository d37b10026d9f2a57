"""The scheduler's health in figures, for the admin's monitoring page.

Plain functions of the database and ``now``, each a fixed number of queries whose cost
does not grow with the table: with ten million jobs the page still answers in well
under 100 ms. Where an exact figure would have to read millions of rows, the page
says so and shows an estimate ("≈"):

- counts by status are exact up to ``EXACT_COUNT_LIMIT`` (an index-only scan that
  stops there), beyond it PostgreSQL's own statistics (pg_class, pg_stats) estimate them;
- lateness and finished attempts come from a systematic sample of at most
  ``SAMPLE_SIZE`` attempts of the window (every k-th attempt id), exact when the
  window holds fewer;
- jobs due per hour and per day are counted exactly while the window holds at most
  ``EXACT_COUNT_LIMIT`` pending jobs, and from a sample of the pending jobs' index
  otherwise.
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
    QuerySet,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Trunc
from django.utils import timezone
from typing_extensions import override

from scheduler import sqs, states
from scheduler.conf import scheduler_settings
from scheduler.models import OVERDUE_AFTER, DispatcherHeartbeat, JobAttempt, Pause, ScheduledJob
from scheduler.services.pausing import describe
from scheduler.states import Status

#: The dispatcher is presumed down when its last tick is this many intervals old.
HEARTBEAT_STALE_INTERVALS = 3
#: Counts are exact up to this many rows; an estimate beyond.
EXACT_COUNT_LIMIT = 10_000
#: A sample (of a window's attempts, of the jobs) reads at most this many ids.
SAMPLE_SIZE = 10_000
#: Pending jobs counted one by one (per status), soonest first, for the due charts.
DUE_EXACT_ROWS = 50_000
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
ALL_TASKS = "All tasks"


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
    p50: float | None
    p95: float | None
    p99: float | None
    histogram: list[int]

    @property
    def histogram_peak(self) -> int:
        return max(self.histogram, default=0)


@dataclass(frozen=True)
class LatenessWindow:
    """Lateness per task (and for all tasks, first) over one window."""

    label: str
    rows: list[Lateness]
    #: 1 when every attempt of the window was read; k when every k-th was.
    sample_step: int

    @property
    def exact(self) -> bool:
        return self.sample_step == 1


@dataclass(frozen=True)
class TaskFailures:
    """Failures of one task in the last 24 hours."""

    task_name: str
    failed_attempts: int
    failed_jobs: int


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
    finished_hourly: Histogram
    failures: list[TaskFailures]
    paused: list[PausedKind]
    dead_letters: DeadLetterQueue

    @property
    def total(self) -> Tally:
        """Jobs in every status."""
        counts = [row.count for row in self.by_status]
        return Tally(sum(c.value for c in counts), all(c.exact for c in counts))

    @property
    def oldest_overdue_age(self) -> timedelta | None:
        return None if self.oldest_overdue is None else self.now - self.oldest_overdue


def snapshot(now: datetime | None = None) -> Snapshot:
    """All the monitoring figures, computed at ``now``."""
    now = now or timezone.now()
    overdue, oldest = overdue_jobs(now=now)
    ids = bounds(now=now)
    lateness_windows, finished = attempts_in_windows(now=now, bounds=ids)
    due_hourly, due_daily = due_charts(now=now, bounds=ids)
    return Snapshot(
        now=now,
        by_status=status_counts(),
        overdue=overdue,
        oldest_overdue=oldest,
        due_hourly=due_hourly,
        due_daily=due_daily,
        heartbeats=heartbeats(now=now),
        lateness=lateness_windows,
        finished_hourly=finished,
        failures=failures_by_task(now=now),
        paused=[PausedKind(p, describe(p.task_name, p.queue)) for p in Pause.objects.all()],
        dead_letters=dead_letter_queue(),
    )


def status_counts() -> list[StatusCount]:
    """Jobs per status: exact up to EXACT_COUNT_LIMIT, else PostgreSQL's estimate.

    Two queries: capped counts (each an index scan that stops at the limit), and the
    table's row estimate with the status column's most common values and frequencies.
    """
    table = ScheduledJob._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT wanted.status, (
                SELECT count(*) FROM (
                    SELECT 1 FROM {table} AS job WHERE job.status = wanted.status LIMIT %s
                ) AS capped
            )
            FROM unnest(%s::text[]) AS wanted(status)
            """,  # noqa: S608 - the table name is the model's
            [EXACT_COUNT_LIMIT + 1, list(states.ALL)],
        )
        capped = dict(cursor.fetchall())
        cursor.execute(
            """
            SELECT greatest(class.reltuples, 0)::bigint,
                   stats.most_common_vals::text::text[], stats.most_common_freqs
            FROM pg_class AS class
            LEFT JOIN pg_stats AS stats ON stats.schemaname = current_schema()
                AND stats.tablename = class.relname AND stats.attname = 'status'
            WHERE class.oid = %s::regclass
            """,
            [table],
        )
        rows, values, frequencies = cursor.fetchone() or (0, None, None)
    estimates = dict(zip(values or [], frequencies or [], strict=True))
    return [
        StatusCount(
            status,
            label,
            Tally(capped[status])
            if capped[status] <= EXACT_COUNT_LIMIT
            else Tally(max(EXACT_COUNT_LIMIT + 1, round(rows * estimates.get(status, 0))), False),
        )
        for status, label in Status.choices
    ]


def overdue_jobs(*, now: datetime) -> tuple[Tally, datetime | None]:
    """Pending jobs more than OVERDUE_AFTER past their run_at (capped), and the oldest run_at.

    The oldest is the smaller of each pending status's minimum run_at, each one index
    probe; it is overdue only if it is older than the cut-off.
    """
    table = ScheduledJob._meta.db_table
    cutoff = now - OVERDUE_AFTER
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT (
                SELECT count(*) FROM (
                    SELECT 1 FROM {table}
                    WHERE status = ANY(%s::text[]) AND run_at < %s LIMIT %s
                ) AS capped
            ), least(
                (SELECT min(run_at) FROM {table} WHERE status = %s),
                (SELECT min(run_at) FROM {table} WHERE status = %s)
            )
            """,  # noqa: S608 - the table name is the model's
            [list(states.PENDING), cutoff, EXACT_COUNT_LIMIT + 1, *states.PENDING],
        )
        count, oldest = cursor.fetchone() or (0, None)
    if count > EXACT_COUNT_LIMIT:
        return Tally(EXACT_COUNT_LIMIT, exact=False), oldest
    return Tally(count), oldest if oldest is not None and oldest < cutoff else None


def due_charts(*, now: datetime, bounds: "Bounds") -> tuple[Histogram, Histogram]:
    """Pending jobs due per hour for the next 48 hours, and per day for the next 30 days.

    Periods are in the current time zone. The soonest DUE_EXACT_ROWS scheduled (and as
    many enqueued) jobs are counted one by one, in index order; periods after the last
    one counted are estimated from every k-th job id, and marked so.
    """
    zone = timezone.get_current_timezone()
    local = timezone.localtime(now, zone).replace(minute=0, second=0, microsecond=0)
    hours = [_shift(local, timedelta(hours=1), offset) for offset in range(49)]
    days = [_shift(local.replace(hour=0), timedelta(days=1), offset) for offset in range(31)]
    exact, cut = _due_exact(now=now, end=days[-1], zone=zone)
    sampled = _due_sampled(since=cut, end=days[-1], bounds=bounds, zone=zone)
    counts = {
        hour: exact.get(hour, 0) + sampled.get(hour, 0) for hour in exact.keys() | sampled.keys()
    }

    def histogram(starts: list[datetime], label: str) -> Histogram:
        buckets = [
            Bucket(
                start.strftime(label),
                start,
                sum(n for hour, n in counts.items() if start <= hour < stop),
            )
            for start, stop in itertools.pairwise(starts)
        ]
        return Histogram(buckets, exact=cut >= starts[-1])

    return histogram(hours, "%H:%M"), histogram(days, "%a %d %b")


def _due_exact(
    *, now: datetime, end: datetime, zone: tzinfo
) -> tuple[dict[datetime, int], datetime]:
    """Pending jobs due per local hour, counted up to DUE_EXACT_ROWS per status; and up to when.

    Returns the counts and the run_at up to which they are complete (``end`` if all were
    counted).
    """
    table = ScheduledJob._meta.db_table
    soonest = " UNION ALL ".join(
        f"(SELECT %s AS status, run_at FROM {table} WHERE status = %s AND run_at >= %s "  # noqa: S608
        "AND run_at < %s ORDER BY run_at LIMIT %s)"
        for _ in states.PENDING
    )
    params: list[Any] = [str(zone)]
    for status in states.PENDING:
        params += [status, status, now, end, DUE_EXACT_ROWS]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, date_trunc('hour', run_at, %s), count(*), max(run_at) "  # noqa: S608
            f"FROM ({soonest}) AS soonest GROUP BY 1, 2",
            params,
        )
        rows = cursor.fetchall()
    counts: dict[datetime, int] = {}
    read: dict[str, int] = {}
    last: dict[str, datetime] = {}
    for status, hour, count, latest in rows:
        counts[hour] = counts.get(hour, 0) + count
        read[status] = read.get(status, 0) + count
        last[status] = max(latest, last.get(status, latest))
    # A status read up to the limit may have more jobs after its last one counted.
    cuts = [last[status] for status, count in read.items() if count >= DUE_EXACT_ROWS]
    return counts, min(cuts, default=end)


def _due_sampled(
    *, since: datetime, end: datetime, bounds: "Bounds", zone: tzinfo
) -> dict[datetime, int]:
    """Pending jobs due per local hour after ``since``, from every k-th job id, times k."""
    lowest, highest = (bounds.first_job, bounds.last_job) if since < end else (1, 0)
    every = max(1, math.ceil((highest - lowest + 1) / SAMPLE_SIZE))
    rows = (
        ScheduledJob.objects.filter(
            pk__in=_every_id(lowest, highest, every),
            status__in=states.PENDING,
            run_at__gt=since,
            run_at__lt=end,
        )
        .annotate(hour=Trunc("run_at", "hour", tzinfo=zone))
        .order_by()
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    return {hour: count * every for hour, count in rows}


def _every_id(lowest: int, highest: int, every: int) -> RawSQL:
    """The ids from ``lowest`` to ``highest``, every ``every``-th (a subquery)."""
    return RawSQL(
        "SELECT generate_series(%s::bigint, %s::bigint, %s::bigint)", (lowest, highest, every)
    )


@dataclass(frozen=True)
class Bounds:
    """Id ranges to sample from: all jobs, and the attempts of each lateness window."""

    first_job: int
    last_job: int
    #: The id of the first attempt started in each of LATENESS_WINDOWS (last id + 1: none).
    first_attempts: list[int]
    last_attempt: int


def bounds(*, now: datetime) -> Bounds:
    """The id bounds every sample starts from, in one query of index probes."""
    jobs, attempts = ScheduledJob._meta.db_table, JobAttempt._meta.db_table
    firsts = ", ".join(
        f"(SELECT id FROM {attempts} WHERE started_at >= %s ORDER BY started_at LIMIT 1)"  # noqa: S608
        for _ in LATENESS_WINDOWS
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT min(id) FROM {jobs}), (SELECT max(id) FROM {jobs}), "  # noqa: S608
            f"(SELECT max(id) FROM {attempts}), {firsts}",
            [now - window for _, window in LATENESS_WINDOWS],
        )
        first_job, last_job, last_attempt, *first_attempts = cursor.fetchone()
    last_attempt = last_attempt or 0
    return Bounds(
        first_job=first_job or 1,
        last_job=last_job or 0,
        first_attempts=[last_attempt + 1 if first is None else first for first in first_attempts],
        last_attempt=last_attempt,
    )


def attempts_in_windows(*, now: datetime, bounds: Bounds) -> tuple[list[LatenessWindow], Histogram]:
    """Lateness per task over each window, and attempts finished per hour over the last day.

    Each window reads at most SAMPLE_SIZE attempts: every k-th attempt id from the
    window's first attempt to the last one (attempt ids grow with time).
    """
    windows = [
        _lateness_window(label, now - window, now, first, bounds.last_attempt)
        for (label, window), first in zip(LATENESS_WINDOWS, bounds.first_attempts, strict=True)
    ]
    longest = max(window for _, window in LATENESS_WINDOWS)
    finished = _finished_hourly(now - longest, now, bounds.first_attempts[-1], bounds.last_attempt)
    return windows, finished


def _sample(
    since: datetime, until: datetime, lowest: int, highest: int
) -> tuple[QuerySet[JobAttempt], int]:
    """Every k-th attempt id in [lowest, highest] started in [since, until), and k."""
    every = max(1, math.ceil((highest - lowest + 1) / SAMPLE_SIZE))
    attempts = JobAttempt.objects.filter(
        pk__in=_every_id(lowest, highest, every), started_at__gte=since, started_at__lt=until
    )
    return attempts.order_by(), every


def _lateness_window(
    label: str, since: datetime, until: datetime, lowest: int, highest: int
) -> LatenessWindow:
    sample, every = _sample(since, until, lowest, highest)
    late = ExpressionWrapper(F("started_at") - F("scheduled_for"), output_field=DurationField())
    figures: dict[str, Any] = {"attempts": Count("pk")}
    for name, fraction in PERCENTILES:
        figures[name] = PercentileCont(late, fraction, output_field=DurationField())
    lower: timedelta | None = None
    for index, (_, upper) in enumerate(LATENESS_BUCKETS):
        in_bucket = Q() if lower is None else Q(late__gte=lower)
        if upper is not None:
            in_bucket &= Q(late__lt=upper)
        figures[f"bucket_{index}"] = Count("pk", filter=in_bucket)
        lower = upper
    sample = sample.alias(late=late)
    per_task = sample.values("job__task_name").annotate(**figures).order_by("job__task_name")
    rows = [_lateness(ALL_TASKS, sample.aggregate(**figures), every)]
    rows += [_lateness(row["job__task_name"], row, every) for row in per_task]
    return LatenessWindow(
        label, [row for row in rows if row.attempts or row.task_name == ALL_TASKS], every
    )


def _lateness(task_name: str, row: dict[str, Any], every: int) -> Lateness:
    def seconds(value: timedelta | None) -> float | None:
        return None if value is None else value.total_seconds()

    return Lateness(
        task_name=task_name,
        attempts=row["attempts"] * every,
        p50=seconds(row["p50"]),
        p95=seconds(row["p95"]),
        p99=seconds(row["p99"]),
        histogram=[row[f"bucket_{index}"] * every for index in range(len(LATENESS_BUCKETS))],
    )


def _finished_hourly(since: datetime, until: datetime, lowest: int, highest: int) -> Histogram:
    """Attempts that ended per hour (UTC) since ``since``, failed ones counted apart."""
    sample, every = _sample(since, until, lowest, highest)
    rows = (
        sample.filter(finished_at__isnull=False)
        .annotate(hour=Trunc("finished_at", "hour", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("pk"))
        .values_list("hour", "n")
    )
    counts = dict(rows)
    first = until.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    hours = [first + timedelta(hours=offset) for offset in range(24)]
    return Histogram(
        [Bucket(hour.strftime("%H:%M"), hour, counts.get(hour, 0) * every) for hour in hours],
        exact=every == 1,
    )


def failures_by_task(*, now: datetime) -> list[TaskFailures]:
    """Failed attempts, and jobs that failed for good, in the last 24 hours, by task.

    Both from the failed attempts (a job that failed for good ended with one), so
    neither query reads the day's successes.
    """
    failed = JobAttempt.objects.filter(
        outcome__in=FAILED_OUTCOMES, finished_at__gte=now - timedelta(hours=24)
    )
    rows = (
        failed.order_by()
        .values("job__task_name")
        .annotate(
            attempts=Count("pk"),
            jobs=Count("job", distinct=True, filter=Q(job__status=Status.FAILED)),
        )
    )
    return sorted(
        (TaskFailures(row["job__task_name"], row["attempts"], row["jobs"]) for row in rows),
        key=lambda failures: (-failures.failed_attempts, -failures.failed_jobs, failures.task_name),
    )


def heartbeats(*, now: datetime, limit: int = 10) -> Heartbeats:
    """The most recent dispatcher heartbeats, and whether the newest is recent enough."""
    recent = list(DispatcherHeartbeat.objects.order_by("-last_tick_at")[:limit])
    return Heartbeats(
        recent=recent,
        stale_after=timedelta(
            seconds=HEARTBEAT_STALE_INTERVALS * scheduler_settings.DISPATCH_INTERVAL_SECONDS
        ),
        latest_age=now - recent[0].last_tick_at if recent else None,
        now=now,
    )


def dead_letter_queue() -> DeadLetterQueue:
    """The default queue's DLQ: its depth, and the jobs of the messages at its head."""
    letters = sqs.peek_dead_letters(scheduler_settings.QUEUE_NAME)
    jobs = list(
        ScheduledJob.objects.filter(pk__in=letters.job_ids)
        .only("pk", "task_name", "status", "run_at")
        .order_by("pk")
    )
    return DeadLetterQueue(letters, jobs)


def _shift(start: datetime, step: timedelta, count: int) -> datetime:
    # Wall-clock arithmetic, re-localised: a day is 23 or 25 hours across a DST change.
    return timezone.make_aware(start.replace(tzinfo=None) + step * count, start.tzinfo)
