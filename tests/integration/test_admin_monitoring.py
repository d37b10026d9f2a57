"""The monitoring page's figures, on a known data set at a frozen instant."""

import re
import uuid
from datetime import date, timedelta

import pytest
from freezegun import freeze_time

from scheduler.admin import monitoring
from scheduler.admin.monitoring import Figure, TaskFailures
from scheduler.models import DispatcherHeartbeat, JobAttempt
from tests.integration.admin_helpers import CHANGELIST, MONITORING, T0, Status, job

pytestmark = pytest.mark.django_db

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


def attempt(of, *, late, started, outcome=JobAttempt.Outcome.SUCCEEDED, finished=None):
    return JobAttempt(
        job=of,
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
    # Lateness: 1..100 s in the last hour, and 1000 s five hours ago.
    attempts = [
        attempt(history, late=timedelta(seconds=s), started=T0 - 30 * MINUTE) for s in range(1, 101)
    ]
    attempts.append(attempt(history, late=timedelta(seconds=1000), started=T0 - 5 * HOUR))
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


@pytest.mark.usefixtures("known_data")
def test_snapshot_figures_on_a_known_data_set():
    snapshot = monitoring.snapshot()

    assert snapshot.now == T0
    assert snapshot.by_status == [
        Figure("Scheduled", 8),
        Figure("Enqueued", 2),
        Figure("Running", 1),
        Figure("Succeeded", 3),
        Figure("Failed", 2),
        Figure("Cancelled", 1),
        Figure("Expired", 0),
    ]
    assert snapshot.total == 17
    assert snapshot.due == [
        Figure("next hour", 2),
        Figure("next day", 3),
        Figure("next week", 4),
        Figure("next month", 5),
    ]
    assert snapshot.overdue == 2

    due = {day.day: day.count for day in snapshot.due_by_day}
    assert len(snapshot.due_by_day) == 30
    assert snapshot.due_by_day[0].day == date(2026, 11, 24)
    assert snapshot.due_by_day[-1].day == date(2026, 12, 23)
    assert {day: count for day, count in due.items() if count} == {
        date(2026, 11, 24): 3,
        date(2026, 11, 27): 1,
        date(2026, 12, 14): 1,
    }
    assert snapshot.due_by_day_peak == 3

    hour, day = snapshot.lateness
    assert (hour.label, hour.attempts, hour.p50, hour.p95, hour.p99) == (
        "last hour",
        100,
        50.5,
        95.05,
        99.01,
    )
    assert (day.label, day.attempts, day.p50, day.p95, day.p99) == (
        "last day",
        101,
        51.0,
        96.0,
        100.0,
    )

    assert snapshot.failures == [
        TaskFailures("testapp.record", failed_attempts=3, failed_jobs=0),
        TaskFailures("testapp.fail", failed_attempts=1, failed_jobs=1),
    ]

    finished = {
        hour.hour.strftime("%d %H:%M"): (hour.succeeded, hour.failed)
        for hour in snapshot.finished_by_hour
    }
    assert len(finished) == 24
    assert next(iter(finished)) == "23 13:00"
    assert list(finished)[-1] == "24 12:00"
    assert {key: value for key, value in finished.items() if value != (0, 0)} == {
        "24 09:00": (1, 0),
        "24 11:00": (2, 1),
    }
    assert snapshot.finished_peak == 3

    beats = snapshot.heartbeats
    assert [beat.dispatcher for beat in beats.recent] == ["host:1", "host:0"]
    assert beats.latest_age == timedelta(seconds=4)
    assert beats.stale_after == timedelta(seconds=15)
    assert beats.healthy


def test_an_empty_database_gives_zeros_and_no_percentiles():
    snapshot = monitoring.snapshot()
    assert snapshot.total == 0
    assert snapshot.overdue == 0
    assert [row.p50 for row in snapshot.lateness] == [None, None]
    assert snapshot.failures == []
    assert snapshot.due_by_day_peak == snapshot.finished_peak == 0
    assert snapshot.heartbeats.latest_age is None
    assert not snapshot.heartbeats.healthy


@pytest.mark.usefixtures("known_data")
def test_page_shows_the_figures_and_refreshes_itself(admin_client):
    content = admin_client.get(MONITORING).content.decode()
    assert '<meta http-equiv="refresh" content="30">' in content
    assert '<td id="status-scheduled">8</td>' in content
    assert '<td id="status-total">17</td>' in content
    assert '<td id="due-next-month">5</td>' in content
    assert f'<a href="{CHANGELIST}?run_at=overdue" id="overdue" class="monitoring-bad">2</a>' in (
        content
    )
    assert '<td class="p50">50.500 s</td>' in content
    assert '<td class="p99">1 min 40 s</td>' in content
    assert "testapp.record" in content
    assert content.count('<rect class="bar" x="2" y="0" width="16"') == 30
    assert 'height="100"' in content  # the peak day's bar
    assert "heartbeat-warning" not in content
    # No external asset (a CDN…): every src and href stays on this site. (Searching the
    # page for "cdn" failed whenever the random CSRF token contained those letters.)
    assert not re.search(r'(src|href)="(https?:)?//', content)


def test_page_warns_when_the_dispatcher_heartbeat_is_old(admin_client):
    DispatcherHeartbeat.objects.create(dispatcher="host:0", last_tick_at=T0 - HOUR)
    content = admin_client.get(MONITORING).content.decode()
    assert "The last dispatcher tick was 1 h 0 min ago" in content
    assert 'id="overdue" class="">0</a>' in content


def test_page_warns_when_no_dispatcher_ever_ticked(admin_client):
    content = admin_client.get(MONITORING).content.decode()
    assert "No dispatcher has ever ticked" in content


def test_overdue_link_lists_the_overdue_jobs(admin_client, known_data):
    response = admin_client.get(f"{CHANGELIST}?run_at=overdue")
    assert sorted(job.run_at - T0 for job in response.context["cl"].result_list) == [
        -5 * MINUTE,
        -2 * MINUTE,
    ]
