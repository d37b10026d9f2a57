"""The monitoring page's figures, on a known data set at a frozen instant."""

import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import DurationField, ExpressionWrapper, F, Q
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from scheduler.admin import monitoring
from scheduler.admin.monitoring import PercentileCont, Tally, TaskFailures
from scheduler.conf import OUTAGE_BACKOFF_INTERVALS, scheduler_settings
from scheduler.models import DispatcherHeartbeat, JobAttempt, Pause, ScheduledJob
from tests.integration.admin_helpers import CHANGELIST, MONITORING, T0, Status, job

pytestmark = pytest.mark.django_db

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


@pytest.fixture(autouse=True)
def frozen(database_clock_frozen):
    with freeze_time(T0) as frozen_time:
        yield frozen_time


def attempt(of, *, late, started, outcome=JobAttempt.Outcome.SUCCEEDED, finished=None):
    return JobAttempt(
        job=of,
        task_name=of.task_name,
        number=1,
        dispatch_token=uuid.uuid4(),
        scheduled_for=started - late,
        started_at=started,
        finished_at=finished or started + timedelta(seconds=1),
        outcome=outcome,
    )


@pytest.fixture
def known_data():
    # Pending: due in 10 min (enqueued), 30 min, 2 h, 3 days, 20 days, 40 days.
    job(Status.ENQUEUED, run_at=T0 + 10 * MINUTE)
    for delay in (30 * MINUTE, 2 * HOUR, 3 * DAY, 20 * DAY, 40 * DAY):
        job(Status.SCHEDULED, run_at=T0 + delay)
    # Overdue: two well past run_at; one only 30 s past is not (yet).
    job(Status.SCHEDULED, run_at=T0 - 5 * MINUTE)
    job(Status.ENQUEUED, run_at=T0 - 2 * MINUTE)
    job(Status.SCHEDULED, run_at=T0 - 30 * timedelta(seconds=1))
    job(Status.RUNNING, run_at=T0 - MINUTE)
    job(Status.CANCELLED, run_at=T0 - DAY)
    # Finished: two succeeded at 11:50, one at 09:05; failed at 11:00 and two days ago.
    for _ in range(2):
        job(Status.SUCCEEDED, run_at=T0 - HOUR, finished_at=T0 - 10 * MINUTE)
    history = job(Status.SUCCEEDED, run_at=T0 - 3 * HOUR, finished_at=T0 - 3 * HOUR + 5 * MINUTE)
    failing = job(Status.FAILED, task_name="testapp.fail", finished_at=T0 - HOUR)
    old_failure = job(Status.FAILED, finished_at=T0 - 2 * DAY)
    # Lateness: 1000 s five hours ago, and 1..100 s in the last hour (attempt ids grow
    # with their start, as the worker inserts each attempt when it starts).
    attempts = [attempt(history, late=timedelta(seconds=1000), started=T0 - 5 * HOUR)]
    attempts += [
        attempt(history, late=timedelta(seconds=s), started=T0 - 30 * MINUTE) for s in range(1, 101)
    ]
    # Failures in the last 24 h: three errors of testapp.record, one expired lease of
    # testapp.fail (whose job failed); an error two days ago does not count.
    recorder = job(Status.SCHEDULED, task_name="testapp.record", run_at=T0 + 40 * DAY)
    for hours in (1, 2, 3):
        attempts.append(
            attempt(
                recorder,
                late=timedelta(0),
                started=T0 - hours * HOUR - DAY * 2,
                outcome=JobAttempt.Outcome.ERROR,
                finished=T0 - hours * HOUR,
            )
        )
    attempts.append(
        attempt(
            failing,
            late=timedelta(0),
            started=T0 - 3 * DAY,
            outcome=JobAttempt.Outcome.LEASE_EXPIRED,
            finished=T0 - HOUR,
        )
    )
    attempts.append(
        attempt(
            old_failure,
            late=timedelta(0),
            started=T0 - 3 * DAY,
            outcome=JobAttempt.Outcome.ERROR,
            finished=T0 - 2 * DAY,
        )
    )
    JobAttempt.objects.bulk_create(attempts)
    DispatcherHeartbeat.objects.create(
        dispatcher="host:1", last_tick_at=T0 - 4 * timedelta(seconds=1), jobs_sent=3
    )
    DispatcherHeartbeat.objects.create(
        dispatcher="host:0", last_tick_at=T0 - HOUR, errors=2, last_error="boom"
    )


def hours_of(histogram):
    return {
        bucket.start.strftime("%d %H:%M"): bucket.count
        for bucket in histogram.buckets
        if bucket.count
    }


@pytest.mark.usefixtures("known_data")
def test_snapshot_figures_on_a_known_data_set():
    snapshot = monitoring.snapshot()

    assert snapshot.now == T0
    assert [(row.status, row.count) for row in snapshot.by_status] == [
        ("scheduled", Tally(8)),
        ("enqueued", Tally(2)),
        ("running", Tally(1)),
        ("succeeded", Tally(3)),
        ("failed", Tally(2)),
        ("cancelled", Tally(1)),
        ("expired", Tally(0)),
    ]
    assert snapshot.total == Tally(17)
    assert str(snapshot.total) == "17"
    assert snapshot.overdue == Tally(2)
    assert snapshot.oldest_overdue == T0 - 5 * MINUTE
    assert snapshot.oldest_overdue_age == 5 * MINUTE

    assert len(snapshot.due_hourly.buckets) == 48
    assert snapshot.due_hourly.buckets[0].start == T0
    assert hours_of(snapshot.due_hourly) == {"24 12:00": 2, "24 14:00": 1}
    assert snapshot.due_hourly.exact
    days = snapshot.due_daily
    assert len(days.buckets) == 30
    assert days.buckets[0].start.date() == date(2026, 11, 24)
    assert days.buckets[-1].start.date() == date(2026, 12, 23)
    assert {b.start.date(): b.count for b in days.buckets if b.count} == {
        date(2026, 11, 24): 3,
        date(2026, 11, 27): 1,
        date(2026, 12, 14): 1,
    }
    assert days.peak == 3
    assert days.exact

    hour, day = snapshot.lateness
    assert (hour.label, hour.exact, day.label, day.exact) == ("last hour", True, "last day", True)
    (noop,) = hour.rows
    assert (noop.task_name, noop.attempts, noop.failed) == ("testapp.noop", 100, 0)
    assert (noop.p50, noop.p95, noop.p99) == (50.5, 95.05, 99.01)
    #                 <0.1 <0.5 <1 <2 <5 <30 <1min <5min <1h >=1h
    assert noop.histogram == [0, 0, 0, 1, 3, 25, 30, 41, 0, 0]
    assert [bucket.count for bucket in hour.histogram.buckets] == noop.histogram
    assert [row.task_name for row in day.rows] == ["testapp.noop"]
    (noop,) = day.rows
    assert (noop.attempts, noop.p50, noop.p95, noop.p99) == (101, 51.0, 96.0, 100.0)
    assert noop.histogram == [0, 0, 0, 1, 3, 25, 30, 41, 1, 0]

    # Failed attempts started in the last day (the day's sample); jobs failed for good.
    assert snapshot.failures == [
        TaskFailures("testapp.fail", failed_attempts=0, failed_jobs=1),
    ]

    beats = snapshot.heartbeats
    assert [(row.beat.dispatcher, row.age, row.healthy) for row in beats.dispatchers] == [
        ("host:1", timedelta(seconds=4), True),
        ("host:0", HOUR, False),
    ]
    assert beats.stale_after == timedelta(seconds=60)  # as SchedulerDispatcherDown
    assert beats.healthy
    assert snapshot.paused == []
    [dead_letters] = snapshot.dead_letters
    assert dead_letters.letters.error


def test_an_empty_database_gives_zeros_and_no_percentiles():
    snapshot = monitoring.snapshot()
    assert snapshot.total == Tally(0)
    assert snapshot.overdue == Tally(0)
    assert snapshot.oldest_overdue is None
    assert [window.rows for window in snapshot.lateness] == [[], []]
    assert snapshot.failures == []
    assert snapshot.due_daily.peak == snapshot.due_hourly.peak == 0
    assert snapshot.heartbeats.latest_age is None
    assert not snapshot.heartbeats.healthy


@pytest.mark.usefixtures("known_data")
def test_counts_beyond_the_exact_limit_are_postgresql_estimates(monkeypatch):
    monkeypatch.setattr(monitoring, "EXACT_COUNT_LIMIT", 2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_scheduledjob")
    snapshot = monitoring.snapshot()
    counts = {row.status: row.count for row in snapshot.by_status}
    # pg_stats knows the status column's frequencies: 8 of the 17 rows are scheduled.
    assert counts["scheduled"] == Tally(8, exact=False)
    assert str(counts["scheduled"]) == "≈ 8"
    assert counts["running"] == Tally(1)
    assert not snapshot.total.exact
    # Two overdue jobs are not more than the limit of 2.
    assert snapshot.overdue == Tally(2)


def test_failed_jobs_beyond_the_exact_limit_are_counted_from_the_latest_and_say_so(
    monkeypatch, admin_client
):
    # On the day a downstream system fails a million jobs, the page (every open tab,
    # every 30 s) read every one of them to count them by task.
    monkeypatch.setattr(monitoring, "EXACT_COUNT_LIMIT", 2)
    for minutes in (1, 2, 3, 4):
        job(Status.FAILED, task_name="testapp.fail", finished_at=T0 - minutes * MINUTE)
    job(Status.FAILED, task_name="testapp.boom", finished_at=T0 - 30 * MINUTE)
    with CaptureQueriesContext(connection) as captured:
        failures = monitoring.failures_by_task(
            now=T0, day=monitoring.LatenessWindow("last day", [], 1.0)
        )
    assert failures == [
        TaskFailures("testapp.fail", failed_attempts=0, failed_jobs=3, jobs_exact=False)
    ]
    [counted] = [q["sql"] for q in captured.captured_queries if "GROUP BY" in q["sql"]]
    assert "LIMIT 3" in counted
    page = admin_client.get(MONITORING).content.decode()
    assert "≥ 3" in page


@pytest.mark.usefixtures("known_data")
def test_large_windows_are_sampled_and_say_so(monkeypatch):
    monkeypatch.setattr(monitoring, "SAMPLE_SIZE", 25)
    monkeypatch.setattr(monitoring, "RUN_LENGTH", 5)
    monkeypatch.setattr(monitoring, "HOUR_CAP", 1)
    monkeypatch.setattr(monitoring, "DAY_CAP", 2)
    # The whole (small) table is the block sample: the estimates are the true counts.
    monkeypatch.setattr(monitoring, "SAMPLE_PAGES", 10_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_scheduledjob")
    snapshot = monitoring.snapshot()
    hour = snapshot.lateness[0]
    assert not hour.exact
    assert hour.scale > 1
    (noop,) = hour.rows
    # Runs of consecutive attempts, scaled to the whole window.
    assert 80 <= noop.attempts <= 120
    assert 40 <= noop.p50 <= 60
    # The 12:00 hour (2 jobs) and today (3) are over their caps: estimated, and marked.
    assert not snapshot.due_hourly.exact
    assert not snapshot.due_daily.exact
    assert hours_of(snapshot.due_hourly) == {"24 12:00": 2, "24 14:00": 1}
    assert snapshot.due_daily.buckets[0].count == 3


@pytest.mark.usefixtures("known_data")
def test_page_shows_the_figures_and_refreshes_itself(admin_client):
    content = admin_client.get(MONITORING).content.decode()
    # Without JavaScript, a plain reload; with it, one that waits for a form being filled.
    assert '<noscript><meta http-equiv="refresh" content="30"></noscript>' in content
    assert 'data-refresh-seconds="30"' in content
    assert '<td id="status-scheduled">8</td>' in content
    assert '<td id="status-total">17</td>' in content
    assert f'<a href="{CHANGELIST}?run_at=overdue" id="overdue" class="monitoring-bad">2</a>' in (
        content
    )
    assert "Oldest: due 2026-11-24 11:55:00, 5 min 0 s ago." in content
    assert '<td class="p50">50.500 s</td>' in content
    assert '<td class="p99">1 min 40 s</td>' in content
    assert "testapp.fail" in content
    # Due per hour and per day, and a lateness histogram per window.
    assert content.count('<svg class="monitoring-chart"') == 4
    assert content.count('<rect class="bar"') == 48 + 30 + 10 + 10
    assert 'height="100.0"' in content  # the peak day's bar
    assert "heartbeat-warning" not in content
    assert "silent" in content  # host:0
    assert "Nothing is paused." in content
    # No SQS server answers in this test.
    assert "scheduler-jobs-dlq is unavailable" in content
    # No external asset (a CDN…): every src and href stays on this site. (Searching the
    # page for "cdn" failed whenever the random CSRF token contained those letters.)
    assert not re.search(r'(src|href)="(https?:)?//', content)


def page_queries(client):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(MONITORING)
    assert response.status_code == 200
    return len(queries)


def test_the_page_costs_a_fixed_number_of_queries(admin_client, known_data):
    few = page_queries(admin_client)
    Pause.objects.create(task_name="testapp.noop", reason="incident")
    history = ScheduledJob.objects.filter(status=Status.SUCCEEDED).first()
    JobAttempt.objects.bulk_create(
        attempt(history, late=timedelta(seconds=s % 7), started=T0 - s * timedelta(seconds=1))
        for s in range(1, 2000)
    )
    for status in Status:
        for run_at in (T0 - DAY, T0 + HOUR, T0 + 3 * DAY):
            job(status, run_at=run_at)
    assert page_queries(admin_client) == few
    # Session and user, then: the queues whose dead letters to read, table statistics,
    # overdue and status counts (in a transaction set to read indexes: inside the test's,
    # its savepoint, settings and release), due per hour, per day and sampled, lateness
    # bounds and two windows, failed jobs, heartbeats, pauses (and the dead-letter
    # queues' jobs when they have some).
    assert few == 18


def test_page_warns_when_the_dispatcher_heartbeat_is_old(admin_client):
    DispatcherHeartbeat.objects.create(dispatcher="host:0", last_tick_at=T0 - HOUR)
    content = admin_client.get(MONITORING).content.decode()
    assert "The last dispatcher tick was 1 h 0 min ago" in content
    assert 'id="overdue" class="">0</a>' in content


def test_a_dispatcher_backing_off_through_an_outage_is_not_called_silent(admin_client):
    # While SQS (or PostgreSQL) fails, the dispatcher ticks up to OUTAGE_BACKOFF_INTERVALS
    # apart, by design, and a tick failing on SQS's timeouts takes seconds more (a review
    # measured gaps of 44 s): the page said "is the dispatcher running?" after three.
    interval = scheduler_settings.DISPATCH_INTERVAL_SECONDS
    gap = OUTAGE_BACKOFF_INTERVALS * interval + 15
    DispatcherHeartbeat.objects.create(
        dispatcher="host:0", last_tick_at=T0 - timedelta(seconds=gap)
    )
    content = admin_client.get(MONITORING).content.decode()
    assert "is the dispatcher running?" not in content
    assert ">ticking</td>" in content


def test_page_warns_when_no_dispatcher_ever_ticked(admin_client):
    content = admin_client.get(MONITORING).content.decode()
    assert "No dispatcher has ever ticked" in content


def test_overdue_link_lists_the_overdue_jobs(admin_client, known_data):
    response = admin_client.get(f"{CHANGELIST}?run_at=overdue")
    assert sorted(job.run_at - T0 for job in response.context["cl"].result_list) == [
        -5 * MINUTE,
        -2 * MINUTE,
    ]


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_percentile_fraction_must_be_between_0_and_1(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        PercentileCont("started_at", fraction)


def test_percentile_is_a_query_parameter_with_a_filter():
    of = job(Status.SUCCEEDED, run_at=T0 - MINUTE)
    attempts = [
        attempt(of, late=timedelta(seconds=seconds), started=T0 - MINUTE)
        for seconds in (1, 2, 3, 100, 200)
    ]
    for each, worker in zip(attempts, "aaabb", strict=True):
        each.worker = worker
    JobAttempt.objects.bulk_create(attempts)
    late = ExpressionWrapper(F("started_at") - F("scheduled_for"), output_field=DurationField())

    def percentile(fraction):
        return PercentileCont(late, fraction, filter=Q(worker="a"), output_field=DurationField())

    figures = JobAttempt.objects.aggregate(median=percentile(0.5), top=percentile(1))
    # Worker a's attempts only: b's would make the median 3 s and the top 200 s.
    assert figures == {"median": timedelta(seconds=2), "top": timedelta(seconds=3)}
    query = JobAttempt.objects.all().query
    sql, params = (
        percentile(0.25)
        .resolve_expression(query)
        .as_sql(query.get_compiler(using="default"), connection)
    )
    assert sql.startswith("percentile_cont(%s) WITHIN GROUP (ORDER BY CASE WHEN")
    assert params[0] == 0.25


@pytest.mark.parametrize(
    ("zone", "now"),
    [
        ("Europe/Paris", datetime(2026, 3, 28, 12, tzinfo=UTC)),  # an hour skipped tomorrow
        ("Europe/Paris", datetime(2026, 10, 24, 12, tzinfo=UTC)),  # an hour repeated
        ("America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC)),
        ("America/Santiago", datetime(2026, 8, 15, 12, tzinfo=UTC)),  # a midnight skipped
    ],
)
def test_the_charts_around_a_daylight_saving_change(settings, admin_client, frozen, zone, now):
    # Wall-clock hours and days: a time the change skips or repeats never equals the
    # instant PostgreSQL returns for it, and the page was a 500 for the two days before
    # each change (thirty, where the change skips a midnight).
    settings.TIME_ZONE = zone
    frozen.move_to(now)
    job(Status.SCHEDULED, run_at=now + timedelta(hours=24))
    assert admin_client.get(MONITORING).status_code == 200
    snapshot = monitoring.snapshot()
    hours = snapshot.due_hourly.buckets
    assert len(hours) == 48
    # Each bar an hour of elapsed time: the job due in 24 hours is in the 25th.
    assert [bucket.count for bucket in hours] == [0] * 24 + [1] + [0] * 23
    assert sum(bucket.count for bucket in snapshot.due_daily.buckets) == 1
    assert all(bucket.start.hour in (0, 1) for bucket in snapshot.due_daily.buckets)


def test_attempts_that_start_together_are_all_in_the_window():
    # Jobs due at one instant start together, their attempts' ids in the order their
    # claims ran: the window began at the first attempt by start time, and after a quiet
    # minute left out the burst's attempts of lower ids (here the one failure).
    of = job(Status.SUCCEEDED, run_at=T0 - 3 * HOUR)
    JobAttempt.objects.bulk_create([attempt(of, late=MINUTE, started=T0 - 3 * HOUR)])
    burst = T0 - 10 * MINUTE
    JobAttempt.objects.bulk_create(
        [
            attempt(
                of,
                late=timedelta(0),
                started=burst + timedelta(milliseconds=5),
                outcome=JobAttempt.Outcome.LEASE_EXPIRED,
            ),
            *(attempt(of, late=timedelta(0), started=burst) for _ in range(3)),
        ]
    )
    hour, _ = monitoring.snapshot().lateness
    [row] = hour.rows
    assert (row.attempts, row.failed) == (4, 1)
