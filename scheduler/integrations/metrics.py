"""Prometheus metrics at ``/metrics``, read from PostgreSQL at scrape time.

Every figure comes from the tables, not from counters in the memory of one process, so
it is the same whichever web process Prometheus reaches, however many workers and
dispatchers run, and it survives their restarts: no multiprocess directory, nothing to
aggregate. A scrape costs at most eight index-served queries, each reading a bounded
number of rows whatever the number of jobs and attempts (above ``SAMPLE_SIZE`` attempts
in the window, their figures are estimated from a sample, and failed ones counted up to
it), and one SQS call per
dead-letter queue (the default queue's and those of other queues jobs were sent to),
made side by side. Figures are judged at PostgreSQL's clock, not the web host's.

Include the view in the project's URLs (``path("metrics", metrics.view)``). It is open
unless ``SCHEDULER_METRICS_TOKEN`` is set; then it wants ``Authorization: Bearer <token>``.
"""

import hmac
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import DatabaseError, connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from scheduler.conf import scheduler_settings
from scheduler.models import (
    EXACT_COUNT_LIMIT,
    OVERDUE_AFTER,
    DispatcherHeartbeat,
    JobAttempt,
    attempt_samples,
    job_counts_by_status,
    pending_figures,
    read_from_indexes,
    watched_queues,
)
from scheduler.sqs import DeadLetterPeeks, DeadLetters

logger = logging.getLogger(__name__)

#: Upper bounds of the lateness histogram's buckets, in seconds: from the eta wait of a
#: job on time to an hour late.
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: "Due soon" for the due-in-the-next-minute gauge.
DUE_SOON = timedelta(minutes=1)
#: How long each of a scrape's statements may take; past it, the scrape answers 503.
SCRAPE_TIMEOUT = timedelta(seconds=5)
#: The window's attempts read at most, and its failed attempts: above, the attempts'
#: figures are estimated from a sample of that many, and the failed ones counted up to
#: it (10,000 jobs a second start 3 million attempts in five minutes, seconds of reading
#: each, then the statement timeout's 503).
SAMPLE_SIZE = 20_000


class SchedulerCollector:
    """A Prometheus collector of the scheduler's state, from the database."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        """Every metric, read at ``now``, by default PostgreSQL's clock as the scrape
        starts (the web host's is checked by nothing)."""
        # Within Prometheus' own scrape timeout (10 s): a scrape stuck behind a lock
        # would otherwise hold its web worker and connection long after Prometheus left.
        with read_from_indexes(timeout=SCRAPE_TIMEOUT) as database_now:
            now = self.now or database_now
            metrics = [
                self._jobs(),
                *self._pending(now),
                *self._attempts(now),
                *self._dispatchers(now),
            ]
            queues = watched_queues(default=scheduler_settings.QUEUE_NAME)
        yield from metrics
        # Outside the transaction: no snapshot held during network calls.
        yield from self._dead_letters(DeadLetterPeeks(queues, limit=0).results())

    def _jobs(self) -> Metric:
        jobs = GaugeMetricFamily(
            "scheduler_jobs",
            f"Jobs by status. Exact up to {EXACT_COUNT_LIMIT} per status; beyond (the "
            "history), PostgreSQL's estimate from its table statistics, never below the "
            "jobs counted.",
            labels=["status"],
        )
        for status, count in job_counts_by_status(exact_up_to=EXACT_COUNT_LIMIT).items():
            jobs.add_metric([status.value], count.value)
        return jobs

    def _pending(self, now: datetime) -> Iterator[Metric]:
        figures = pending_figures(
            cutoff=now - OVERDUE_AFTER,
            soon=(now, now + DUE_SOON),
            up_to=EXACT_COUNT_LIMIT,
        )
        oldest = figures.oldest_overdue
        yield GaugeMetricFamily(
            "scheduler_jobs_overdue",
            "Scheduled or enqueued jobs more than a minute past their run_at (should be 0); "
            f"counted up to {EXACT_COUNT_LIMIT + 1} (more than {EXACT_COUNT_LIMIT}).",
            value=figures.overdue,
        )
        yield GaugeMetricFamily(
            "scheduler_jobs_oldest_overdue_seconds",
            "How long past its run_at the oldest overdue job is; 0 when none is overdue.",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "scheduler_jobs_due_next_minute",
            "Scheduled or enqueued jobs whose run_at is within the next minute, but for "
            f"those of paused kinds; counted up to {EXACT_COUNT_LIMIT + 1}.",
            value=figures.due_soon,
        )

    def _attempts(self, now: datetime) -> Iterator[Metric]:
        """The attempts started in the window: their lateness by task, their outcomes."""
        window = timedelta(seconds=scheduler_settings.METRICS_WINDOW_SECONDS)
        seconds = f"{window.total_seconds():.0f} s"
        sampled = f"above {SAMPLE_SIZE} attempts, estimated from a sample of that many"
        lateness = GaugeHistogramMetricFamily(
            "scheduler_job_lateness_seconds",
            f"How late attempts started after their run_at, by task: the attempts started "
            f"in the last {seconds} (a window, so no rate() on it); {sampled}.",
            labels=["task"],
        )
        outcomes = GaugeMetricFamily(
            "scheduler_job_attempts",
            f"Attempts started in the last {seconds}, by task and outcome so far "
            f"({', '.join(JobAttempt.Outcome.values)}); {sampled}.",
            labels=["task", "outcome"],
        )
        [sample] = attempt_samples(starts=[now - window], size=SAMPLE_SIZE)
        # A filter of each figure, not of the rows (attempt_samples says why).
        within = Q(started_at__gt=now - window, started_at__lte=now)
        late = ExpressionWrapper(F("started_at") - F("scheduled_for"), output_field=DurationField())
        buckets = {
            f"le_{index}": Count("pk", filter=within & Q(lateness__lte=timedelta(seconds=bound)))
            for index, bound in enumerate(LATENESS_BUCKETS)
        }
        # One query of the sampled ids: a row per task and outcome.
        rows = (
            JobAttempt.objects.filter(sample.attempts)
            .alias(lateness=late)
            .order_by()
            .values("task_name", "outcome")
            .annotate(
                count=Count("pk", filter=within),
                total=Sum("lateness", filter=within),
                **buckets,
            )
        )
        by_task: dict[str, list[float]] = {}
        for row in sorted(rows, key=lambda row: (row["task_name"], row["outcome"])):
            if not row["count"]:
                continue
            count = round(row["count"] * sample.scale)
            outcomes.add_metric([row["task_name"], row["outcome"]], count)
            figures = [
                round(row[f"le_{index}"] * sample.scale) for index in range(len(LATENESS_BUCKETS))
            ]
            figures += [count, row["total"].total_seconds() * sample.scale]
            totals = by_task.setdefault(row["task_name"], [0.0] * len(figures))
            by_task[row["task_name"]] = [a + b for a, b in zip(totals, figures, strict=True)]
        for task_name, figures in by_task.items():
            *cumulative, count, total = figures
            lateness.add_metric(
                [task_name],
                [*zip(map(_bound, LATENESS_BUCKETS), cumulative, strict=True), ("+Inf", count)],
                gsum_value=total,
            )
        yield lateness
        yield outcomes
        yield self._failed_attempts(now, window, seconds)

    def _failed_attempts(self, now: datetime, window: timedelta, seconds: str) -> Metric:
        """The attempts that ended badly in the window, by when they ended: a killed
        job's lease expires a lease after its last heartbeat, maybe an hour after it
        started, when the attempts started in the window no longer show it.

        The latest SAMPLE_SIZE at most, counted: past it, a lower bound. Not scaled up to
        the window: failures come in bursts (a recovery ends every lost attempt at one
        instant), so the rate of the latest ones says nothing of the window's.
        """
        failed = GaugeMetricFamily(
            "scheduler_job_attempts_failed",
            f"Attempts that ended in error or lease_expired in the last {seconds}, by task "
            f"and outcome, however long ago they started; counted among the latest "
            f"{SAMPLE_SIZE} of them: when the window has more, a lower bound.",
            labels=["task", "outcome"],
        )
        # On the partial index of exactly these outcomes, by finished_at, newest first.
        latest = (
            JobAttempt.objects.filter(
                outcome__in=[JobAttempt.Outcome.ERROR, JobAttempt.Outcome.LEASE_EXPIRED],
                finished_at__gt=now - window,
                finished_at__lte=now,
            )
            .order_by("-finished_at")
            .values("task_name", "outcome")[:SAMPLE_SIZE]
        )
        sql, params = latest.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT task_name, outcome, count(*) "  # noqa: S608 - Django's SQL
                f"FROM ({sql}) AS latest GROUP BY 1, 2 ORDER BY 1, 2",
                params,
            )
            rows = cursor.fetchall()
        for task_name, outcome, count in rows:
            failed.add_metric([task_name, outcome], count)
        return failed

    def _dispatchers(self, now: datetime) -> Iterator[Metric]:
        labels = ["dispatcher"]
        sent = CounterMetricFamily(
            "scheduler_dispatched",
            "Jobs each dispatcher sent to SQS since its first tick.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "scheduler_dispatch_errors",
            "Failed dispatch steps (SQS or database errors) of each dispatcher.",
            labels=labels,
        )
        last_tick = GaugeMetricFamily(
            "scheduler_dispatcher_last_tick_timestamp_seconds",
            "When each dispatcher last ticked (Unix time); dispatchers silent for a day "
            "are forgotten.",
            labels=labels,
        )
        # Forgotten also when no dispatcher is left to delete their rows: the alert on
        # absent() fires once all have been silent that long.
        heard_since = now - DispatcherHeartbeat.FORGOTTEN_AFTER
        rows = (
            DispatcherHeartbeat.objects.filter(last_tick_at__gte=heard_since)
            .order_by("dispatcher")
            .values_list("dispatcher", "sent_total", "errors_total", "last_tick_at")
        )
        for name, sent_total, errors_total, tick in rows:
            sent.add_metric([name], sent_total)
            errors.add_metric([name], errors_total)
            last_tick.add_metric([name], tick.timestamp())
        yield from (sent, errors, last_tick)

    def _dead_letters(self, peeks: list[DeadLetters]) -> Iterator[Metric]:
        """Whether SQS answered for each dead-letter queue, and the depth of those it did."""
        readable = GaugeMetricFamily(
            "scheduler_dlq_readable",
            "1 when SQS gave the dead-letter queue's depth, 0 when it could not (no such "
            "queue, no permission, SQS out of reach).",
            labels=["queue"],
        )
        depth = GaugeMetricFamily(
            "scheduler_dlq_messages",
            "Messages in each dead-letter queue (SQS's approximate count).",
            labels=["queue"],
        )
        for letters in peeks:
            readable.add_metric([letters.queue], letters.depth is not None)
            if letters.depth is not None:
                depth.add_metric([letters.queue], letters.depth)
        yield from (readable, depth)


def _bound(seconds: float) -> str:
    # The "le" label as Prometheus' own clients write it.
    return repr(float(seconds))


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    # An empty token (the checks refuse it, but a web server whose wsgi.py does not run
    # them serves anyway) would match an empty credential: it lets no one in.
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(credentials.strip().encode(), token.encode())
    )


@require_safe
def view(request: HttpRequest) -> HttpResponse:
    """The metrics, in the text format Prometheus asked for (OpenMetrics or 0.0.4)."""
    token = scheduler_settings.METRICS_TOKEN
    if token is not None and not _authorized(request, token):
        response = HttpResponse(
            "A bearer token is required: Authorization: Bearer <SCHEDULER_METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encode(SchedulerCollector())
    except DatabaseError:
        logger.exception("metrics scrape failed reason=database")
        return HttpResponse("The database cannot be read.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=content_type, headers={"Cache-Control": "no-store"})
