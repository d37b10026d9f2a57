"""The job list: what it shows, how it filters and searches, and what it costs."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from freezegun import freeze_time

from payments.services import authorize_payment
from scheduler.admin import changelist
from scheduler.models import AuditEntry, ScheduledJob
from tests.integration.admin_helpers import CHANGELIST, MONITORING, T0, Status, job, job_fields

pytestmark = pytest.mark.django_db

AUDIT = reverse("admin:scheduler_auditentry_changelist")
PAYMENTS = reverse("admin:payments_payment_changelist")


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


def many_jobs(count, start=0):
    statuses = list(Status)
    ScheduledJob.objects.bulk_create(
        ScheduledJob(
            **job_fields(
                statuses[i % len(statuses)],
                run_at=T0 + timedelta(minutes=i),
                last_error="Traceback\nValueError: bad" if i % 7 == 0 else "",
                unique_key=f"bulk:{i}",
            )
        )
        for i in range(start, start + count)
    )


def list_queries(client, query=""):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{CHANGELIST}{query}")
    assert response.status_code == 200
    return len(queries), response


@pytest.mark.parametrize("query", ["", "?status__exact=failed", "?q=testapp", "?run_at=next_day"])
def test_list_query_count_does_not_depend_on_the_number_of_rows(admin_client, query):
    many_jobs(10)
    few, _ = list_queries(admin_client, query)
    many_jobs(990, start=10)
    many, response = list_queries(admin_client, query)
    assert few == many
    assert many <= 8
    assert len(response.context["cl"].result_list) <= 50


def test_list_never_counts_past_the_limit(admin_client, monkeypatch):
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 20)
    many_jobs(30)
    _, response = list_queries(admin_client)
    content = response.content.decode()
    assert "More than 20 scheduled jobs: narrow the list with filters or search." in content
    _, response = list_queries(admin_client, "?status__exact=failed")
    assert "4 scheduled jobs" in response.content.decode()


def search_bar_count(content):
    """The count the search bar shows next to the box, as text."""
    [form] = re.findall(r'<form id="changelist-search".*?</form>', content, re.S)
    [count] = re.findall(r'<span class="small quiet">(.*?)</span>', form, re.S)
    return " ".join(re.sub(r"<[^>]+>", "", count).split())


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"{CHANGELIST}?q=bulk", "More than 20 scheduled jobs: narrow the list"),
        (f"{CHANGELIST}?run_at=next_week", "More than 20 scheduled jobs: narrow the list"),
        (
            f"{CHANGELIST}?q=bulk&status__exact=failed",
            "3 among the first 21 scheduled jobs whose unique key starts so: narrow the search.",
        ),
        (f"{AUDIT}?q=ops", "More than 20 audit entries: narrow the list"),
        # The demo's payments, on the same paginator: their footer said "21 payments".
        (f"{PAYMENTS}?status__exact=authorized", "More than 20 payments: narrow the list"),
    ],
)
def test_the_search_bar_counts_a_list_as_its_footer_does(admin_client, monkeypatch, url, said):
    # Django's search bar showed the capped count as a number ("21 results", for more
    # than 20), and a count among a bounded set of keys without saying so.
    monkeypatch.setattr(changelist, "COUNT_LIMIT", 20)
    many_jobs(30)
    AuditEntry.objects.bulk_create(
        AuditEntry(action=AuditEntry.Action.CANCEL, actor="ops", at=T0) for _ in range(30)
    )
    if url.startswith(PAYMENTS):
        for _ in range(21):
            authorize_payment(amount="10.00", currency="EUR")
    content = admin_client.get(url).content.decode()
    bar = search_bar_count(content)
    assert bar.startswith(said), bar
    assert "result" not in bar
    assert bar.endswith("(Show all)")
    assert said in content.split('id="changelist-search"')[1].split("</form>")[1]  # footer


def test_list_shows_status_label_lateness_attempts_and_short_error(admin_client):
    failed = job(
        Status.FAILED,
        attempts=2,
        max_attempts=3,
        started_at=T0 + timedelta(seconds=1.25),
        last_error="Traceback (most recent call last):\n" + "x" * 10 + "\nValueError: " + "y" * 100,
    )
    content = admin_client.get(CHANGELIST).content.decode()
    assert '<span class="job-status job-status-failed">Failed</span>' in content
    assert "1.250 s" in content
    assert "2/3" in content
    assert "ValueError: " + "y" * 68 + "…" in content
    assert f'href="{MONITORING}"' in content
    assert reverse("admin:scheduler_scheduledjob_change", args=[failed.pk]) in content


def test_list_names_the_time_zone_of_its_times(admin_client, settings):
    # An operator in New York read 17:00 as five in the afternoon of their own day.
    job(Status.SCHEDULED, run_at=datetime(2026, 11, 24, 22, 0, tzinfo=UTC))
    settings.TIME_ZONE = "America/New_York"
    content = admin_client.get(CHANGELIST).content.decode()
    assert "Run at (America/New_York)" in content
    assert "2026-11-24 17:00:00" in content
    settings.TIME_ZONE = "UTC"
    content = admin_client.get(CHANGELIST).content.decode()
    assert "Run at (UTC)" in content
    assert "2026-11-24 22:00:00" in content


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?status__exact=failed", ["failed"]),
        ("?task=testapp.record", ["record"]),
        ("?queue=other", ["other queue"]),
        ("?run_at=next_hour", ["soon"]),
        ("?run_at=past_day", ["failed", "other queue"]),
        ("?q=testapp.rec", ["record"]),
        ("?q=key:", ["keyed"]),
        ("?q=999999999999999999999", []),
        ("?run_at__year=2027", ["next year"]),
    ],
)
def test_filters_and_search(admin_client, query, expected):
    names = {
        "failed": job(Status.FAILED, run_at=T0 - timedelta(hours=2)),
        "record": job(task_name="testapp.record", run_at=T0 + timedelta(days=3)),
        "other queue": job(queue="other", run_at=T0 - timedelta(hours=1)),
        "soon": job(run_at=T0 + timedelta(minutes=30)),
        "keyed": job(unique_key="key:1", run_at=T0 + timedelta(days=2)),
        "next year": job(run_at=T0 + timedelta(days=60)),
    }
    result = admin_client.get(f"{CHANGELIST}{query}").context["cl"].result_list
    by_pk = {j.pk: name for name, j in names.items()}
    assert sorted(by_pk[j.pk] for j in result) == sorted(expected)


def test_search_by_id(admin_client):
    wanted, _ = job(), job()
    result = admin_client.get(f"{CHANGELIST}?q=%23{wanted.pk}").context["cl"].result_list
    assert [j.pk for j in result] == [wanted.pk]


def test_queue_filter_keeps_the_other_filters_and_lists_no_queue_from_the_table(admin_client):
    job(queue="rare-queue")
    content = admin_client.get(f"{CHANGELIST}?status__exact=failed").content.decode()
    assert '<input type="hidden" name="status__exact" value="failed">' in content
    assert 'placeholder="Other queue…"' in content
    assert "rare-queue" not in content


def test_payments_list_links_each_capture_job_with_its_status_and_time(admin_client):
    payments = [authorize_payment(amount="10.00", currency="EUR") for _ in range(3)]
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:payments_payment_changelist"))
    content = response.content.decode()
    for payment in payments:
        url = reverse("admin:scheduler_scheduledjob_change", args=[payment.capture_job_id])
        assert f'<a href="{url}">#{payment.capture_job_id}</a>' in content
    assert content.count('<span class="job-status job-status-scheduled">Scheduled</span>') == 3
    assert "2026-12-08 12:00:00" in content  # 14 days after T0, to the second
    assert len(queries) <= 8
    [rows] = [
        q["sql"]
        for q in queries.captured_queries
        if 'FROM "payments_payment" LEFT OUTER JOIN "scheduler_scheduledjob"' in q["sql"]
    ]
    assert '"args"' not in rows  # the capture job's: shown nowhere
    detail = admin_client.get(reverse("admin:payments_payment_change", args=[payments[0].pk]))
    first_job_url = reverse(
        "admin:scheduler_scheduledjob_change", args=[payments[0].capture_job_id]
    )
    assert f'<a href="{first_job_url}">' in detail.content.decode()


@pytest.mark.parametrize("query", ["", "?status__exact=succeeded", "?q=testapp"])
def test_the_list_reads_no_jobs_arguments_or_results(admin_client, query):
    # Fifty rows a page, each with arguments and a result of up to 256 MB: the list shows
    # neither, and read both.
    job(Status.SUCCEEDED, args=["a" * 1000], result={"report": "r" * 1000}, finished_at=T0)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(f"{CHANGELIST}{query}")
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1
    [rows] = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "scheduler_scheduledjob"."id"') and "ORDER BY" in q["sql"]
    ]
    assert '"args"' not in rows
    assert '"result"' not in rows


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York"])
def test_a_never_job_at_the_calendars_last_moment_shows_in_utc_where_the_zone_passes_9999(
    admin_client, settings, zone
):
    # East of UTC, 9999-12-31 23:30 UTC is in year 10000: the list (whatever its filters:
    # the drill-down reads the table's last date) and the job's page answered a 500.
    settings.TIME_ZONE = zone
    never = job(
        run_at=datetime(9999, 12, 31, 23, 30, tzinfo=UTC), deadline=datetime.max.replace(tzinfo=UTC)
    )
    ordinary = job(run_at=T0)
    for query in ("", "?status__exact=scheduled", "?run_at__year=9999"):
        _, response = list_queries(admin_client, query)
        assert never in response.context["cl"].result_list
    content = response.content.decode()
    shown = "9999-12-31 23:30:00 UTC" if zone == "Europe/Paris" else "9999-12-31 18:30:00"
    assert shown in content
    page = admin_client.get(reverse("admin:scheduler_scheduledjob_change", args=[never.pk]))
    assert page.status_code == 200
    assert shown in page.content.decode()
    _, response = list_queries(admin_client)
    assert ordinary in response.context["cl"].result_list


@pytest.mark.parametrize(
    ("query", "listed"),
    [
        ("", ["this year", "later", "never"]),
        ("?run_at__year=9999", ["never"]),
        ("?run_at__year=9999&run_at__month=12", ["never"]),
        ("?run_at__year=9999&run_at__month=12&run_at__day=31", ["never"]),
        ("?run_at__year=2026", ["this year"]),
    ],
)
def test_a_never_job_in_year_9999_is_one_year_of_the_drill_down(admin_client, query, listed):
    # A job at 9999-12-31 (a "never" time) made the drill-down offer the ~8,000 years
    # between, and its own year, month or day answered a 500: its end is past year 9999.
    jobs = {
        "this year": job(run_at=T0 + timedelta(days=3)),
        "later": job(run_at=T0.replace(year=2031)),
        "never": job(run_at=datetime(9999, 12, 31, 12, tzinfo=UTC)),
    }
    count, response = list_queries(admin_client, query)
    by_pk = {j.pk: name for name, j in jobs.items()}
    assert sorted(by_pk[j.pk] for j in response.context["cl"].result_list) == sorted(listed)
    content = response.content.decode()
    if not query:
        years = re.findall(r'href="\?run_at__year=(\d+)"', content)
        assert years == ["2026", "2031", "9999"]
    assert count <= 5
