"""Requests no page of the admin makes, typed or crafted by hand: each is refused or
ignored with a clear message, never a 500, and never a read of the whole table.

Django's admin sorts by any column whose number is in ``?o=`` and filters by any field in
the query string (``?last_error__icontains=``): over millions of jobs, a sequential scan
and a sort. The lists offer only what their indexes serve.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from freezegun import freeze_time

from scheduler.models import AuditEntry, ScheduledJob
from tests.integration.admin_helpers import (
    CHANGELIST,
    T0,
    Status,
    change_url,
    confirmed,
    job,
    long_history,
    messages_of,
)

pytestmark = pytest.mark.django_db

ATTEMPTS = reverse("admin:scheduler_jobattempt_changelist")
AUDIT = reverse("admin:scheduler_auditentry_changelist")
PAYMENTS = reverse("admin:payments_payment_changelist")


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


@pytest.fixture
def history():
    """A failed job with attempts and audit entries, and a scheduled one."""
    failed = job(Status.FAILED, last_error="Traceback\nValueError: declined")
    long_history(failed, 3)
    job(Status.SCHEDULED, unique_key="payment-1")
    return failed


def rows_sql(client, url):
    """The page at ``url`` (a 200) and the SQL of the query that read its rows."""
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url)
    assert page.status_code == 200, url
    [rows] = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('SELECT "scheduler_') and "ORDER BY" in q["sql"]
    ]
    return page, rows


@pytest.mark.parametrize(
    ("url", "column"),
    [
        # The job list's columns: 1 id, 2 task, 3 status, 4 run at, 5 started, 6 late
        # by, 7 finished, 8 attempts, 9 queue (0 is the action's checkbox).
        (f"{CHANGELIST}?o=3", '"status"'),
        (f"{CHANGELIST}?o=-5", '"started_at"'),
        (f"{CHANGELIST}?o=7", '"finished_at"'),
        (f"{CHANGELIST}?o=9", '"queue"'),
        (f"{CHANGELIST}?o=9.1&status__exact=failed", '"queue"'),
        # The attempts': 0 job, 1 number, 2 outcome, 3 due at…; the audit trail's: 0
        # when, 1 action, 2 actor.
        (f"{ATTEMPTS}?o=3", '"scheduled_for"'),
        (f"{ATTEMPTS}?o=-2", '"outcome"'),
        (f"{AUDIT}?o=1", '"action"'),
        (f"{AUDIT}?o=0.2", '"actor"'),
    ],
)
def test_a_column_the_list_does_not_sort_by_is_not_sorted_by(admin_client, history, url, column):
    # Sorted by status at a million jobs: a sequential scan and a sort, 0.5-1 s.
    page, sql = rows_sql(admin_client, url)
    assert column not in sql.split("ORDER BY")[1], sql
    # Nor shown as sorted, nor kept in the page's links.
    assert 'class="sorted' not in page.content.decode()
    assert "o=9" not in page.context["cl"].get_query_string()


@pytest.mark.parametrize(
    ("url", "order"),
    [
        (f"{CHANGELIST}?o=1", '"id" ASC'),
        (f"{CHANGELIST}?o=-4", '"run_at" DESC'),
        (f"{CHANGELIST}?o=3.-4", '"run_at" DESC'),
    ],
)
def test_the_columns_the_list_sorts_by_still_sort_it(admin_client, history, url, order):
    _, sql = rows_sql(admin_client, url)
    assert sql.split("ORDER BY")[1].strip().startswith(f'"scheduler_scheduledjob".{order}'), sql


@pytest.mark.parametrize(
    ("url", "kept", "refused"),
    [
        (f"{CHANGELIST}?last_error__icontains=declined", "", "last_error__icontains"),
        (
            f"{CHANGELIST}?kwargs__payment_id=1&status__exact=failed",
            "status__exact=failed",
            "kwargs__payment_id",
        ),
        (f"{CHANGELIST}?status=failed", "", "status"),
        (f"{CHANGELIST}?run_at__gte=2026-01-01", "", "run_at__gte"),
        (f"{ATTEMPTS}?error__icontains=declined", "", "error__icontains"),
        (
            f"{AUDIT}?reason__icontains=retry&action__exact=retry",
            "action__exact=retry",
            "reason__icontains",
        ),
        (f"{PAYMENTS}?amount__regex=^1", "", "amount__regex"),
        (
            f"{PAYMENTS}?capture_job__last_error__icontains=x&status__exact=captured",
            "status__exact=captured",
            "capture_job__last_error__icontains",
        ),
    ],
)
def test_a_filter_the_list_does_not_offer_is_refused_with_a_message(
    admin_client, history, url, kept, refused
):
    # Let through, each was a sequential scan of the table: 300-670 ms at a million rows.
    response = admin_client.get(url)
    assert response.status_code == 302
    path = url.split("?")[0]
    assert response["Location"] == f"{path}?{kept}" if kept else path
    page = admin_client.get(response["Location"])
    assert page.status_code == 200
    [message] = messages_of(page)
    assert f"“{refused}”" in message
    assert "is not a filter of this list" in message


@pytest.mark.parametrize("path", [ATTEMPTS, AUDIT])
@pytest.mark.parametrize("value", ["x", "-1", "1.5", "²", "9" * 30])
def test_an_older_than_that_is_no_id_is_refused(admin_client, history, path, value):
    response = admin_client.get(path, {"older_than": value})
    assert response.status_code == 302
    assert response["Location"] == f"{path}?e=1"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (CHANGELIST, "run_at__month=2&run_at__day=30"),  # no year: EXTRACT over every row
        (CHANGELIST, "run_at__year=2026&run_at__day=3"),  # no month
        (CHANGELIST, "run_at__year=2147483648"),  # past Python's years: a 500
        (CHANGELIST, "run_at__year=2147483648&status__exact=succeeded"),
        (CHANGELIST, "run_at__year=10000"),
        (CHANGELIST, "run_at__year=2026&run_at__month=13"),
        (CHANGELIST, "run_at__year=x"),
        (PAYMENTS, "authorized_at__month=2"),
        (PAYMENTS, "authorized_at__year=2147483648"),
        (PAYMENTS, "authorized_at__year=2026&authorized_at__month=0"),
    ],
)
def test_a_drill_down_that_is_no_period_is_refused(admin_client, history, path, query):
    response = admin_client.get(f"{path}?{query}")
    assert response.status_code == 302
    assert response["Location"] == f"{path}?e=1"


@pytest.mark.parametrize(
    ("path", "query", "cleared"),
    [
        (PAYMENTS, "authorized_at__year=2026&status__exact=captured", "authorized_at__year=2026"),
        (PAYMENTS, "authorized_at__year=9999&status__exact=captured", "authorized_at__year=9999"),
        (
            CHANGELIST,
            "run_at__year=2026&run_at__month=11&run_at=overdue&q=pay&o=1",
            "o=1&q=pay&run_at__month=11&run_at__year=2026",
        ),
        (CHANGELIST, "status__exact=failed", ""),
    ],
)
def test_clear_all_filters_keeps_the_drill_down_as_the_list_takes_it(
    admin_client, history, path, query, cleared
):
    # Django's link kept the drill-down as the bounds it filters on (__gte, __lt):
    # refused, with a message, by lists that take only their own parameters.
    page = admin_client.get(f"{path}?{query}")
    assert page.status_code == 200
    assert page.context["cl"].clear_all_filters_qs == f"?{cleared}"
    assert admin_client.get(f"{path}?{cleared}").status_code == 200


def test_the_payments_drill_down_reaches_the_calendars_last_year(admin_client):
    # Django's bounds for year 9999 end in year 10000: a 500.
    response = admin_client.get(f"{PAYMENTS}?authorized_at__year=9999")
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


@pytest.mark.parametrize(
    "url",
    [
        f"{CHANGELIST}?task=%00",
        f"{CHANGELIST}?queue=%00",
        f"{CHANGELIST}?queue=a%00b&status__exact=failed",
        f"{CHANGELIST}?status__exact=%00",
        f"{AUDIT}?action__exact=%00",
        f"{ATTEMPTS}?job__id__exact=%00",
    ],
)
def test_a_filter_value_with_a_nul_character_is_refused_with_a_message(admin_client, history, url):
    # PostgreSQL stores no NUL character: psycopg2 refused the query, a 500.
    response = admin_client.get(url, follow=True)
    assert response.status_code == 200
    [message] = messages_of(response)
    assert "cannot hold a NUL character" in message


@pytest.mark.parametrize("term", ["²", "①", "٣"])
def test_a_search_for_digits_that_are_not_ascii_finds_no_job(admin_client, history, term):
    # "²".isdigit() is true and int("²") a ValueError: a 500.
    response = admin_client.get(f"{CHANGELIST}?q={term}")
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_a_search_with_a_nul_character_is_refused_with_a_message(admin_client, history):
    response = admin_client.get(f"{CHANGELIST}?q=payment%00")
    assert response.status_code == 200
    assert messages_of(response) == ["Null characters are not allowed."]


@pytest.mark.parametrize("object_id", ["²", "①", "%00", "9" * 30])
def test_the_page_of_a_job_id_that_is_no_number_says_there_is_no_such_job(admin_client, object_id):
    response = admin_client.get(f"{CHANGELIST}{object_id}/change/", follow=True)
    assert response.status_code == 200
    assert "Perhaps it was deleted?" in messages_of(response)[0]


@pytest.mark.parametrize("selected", ["abc", "²", "1.5", "", "9" * 30])
def test_an_action_on_ids_that_are_not_job_ids_changes_nothing_and_says_so(
    admin_client, history, selected
):
    scheduled = ScheduledJob.objects.get(status=Status.SCHEDULED)
    data = {"action": "cancel_selected", "index": "0", "_selected_action": [scheduled.pk, selected]}
    response = admin_client.post(CHANGELIST, data, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "No job was changed: the selected jobs are named by ids that are not job ids."
    ]
    assert ScheduledJob.objects.get(pk=scheduled.pk).status == Status.SCHEDULED
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.CANCEL).exists()


def test_select_all_with_ids_that_are_not_job_ids_acts_on_the_filters_alone(admin_client, history):
    # The filters name the jobs; the ids posted beside them only add the page's own.
    scheduled = ScheduledJob.objects.get(status=Status.SCHEDULED)
    response = confirmed(
        admin_client,
        "cancel_selected",
        [],
        url=f"{CHANGELIST}?status__exact=scheduled",
        select_across="1",
        _selected_action=["abc", "9" * 30],
    )
    assert response.status_code == 200
    assert messages_of(response) == ["Cancelled 1 job."]
    assert ScheduledJob.objects.get(pk=scheduled.pk).status == Status.CANCELLED


@pytest.mark.parametrize("across", ["on", "true", "2"])
def test_select_all_said_otherwise_still_acts_on_the_filters_alone(admin_client, history, across):
    # Django's action form reads any of these as "select all"; read as "ticked jobs", the
    # action went to every job of the table, past the list's filters and its cap.
    scheduled = ScheduledJob.objects.get(status=Status.SCHEDULED)
    elsewhere = job(Status.SCHEDULED, queue="other")
    response = confirmed(
        admin_client,
        "cancel_selected",
        [scheduled],
        url=f"{CHANGELIST}?queue=scheduler-jobs",
        select_across=across,
    )
    assert response.status_code == 200
    # The filter's other job failed: skipped. Not the other queue's.
    assert messages_of(response) == ["Cancelled 1 job; skipped 1 not scheduled or enqueued."]
    assert ScheduledJob.objects.get(pk=scheduled.pk).status == Status.CANCELLED
    assert ScheduledJob.objects.get(pk=elsewhere.pk).status == Status.SCHEDULED


def test_a_retry_posted_without_its_time_zone_names_the_field(admin_client):
    failed = job(Status.FAILED)
    retry_url = reverse("admin:scheduler_scheduledjob_retry", args=[failed.pk])
    response = admin_client.post(retry_url, {"reason": "x"}, follow=True)
    # The field has no label of its own: the message said "None: This field is required."
    assert messages_of(response) == ["Time zone: This field is required."]
    assert ScheduledJob.objects.get(pk=failed.pk).status == Status.FAILED
    assert change_url(failed) == response.redirect_chain[-1][0]
