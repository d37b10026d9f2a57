"""What each admin page costs: a fixed number of queries, whatever the number of rows.

The time of each page over ten million jobs is bench/admin_pages.py's (BENCHMARKS.md).
"""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from freezegun import freeze_time

from payments.services import authorize_payment
from scheduler.models import ScheduledJob, watched_queues
from tests.conftest import query_plan
from tests.integration.admin_helpers import (
    ADD,
    CHANGELIST,
    MONITORING,
    T0,
    Status,
    change_url,
    job,
    long_history,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("emptied_afterwards")]

PAYMENTS = reverse("admin:payments_payment_changelist")

#: page: (url, queries). A list: session, user, capped count, rows, date drill-down bounds.
PAGES = {
    "job list": (CHANGELIST, 5),
    "filter: status": (f"{CHANGELIST}?status__exact=failed", 5),
    "filter: succeeded": (f"{CHANGELIST}?status__exact=succeeded", 5),
    "filter: task": (f"{CHANGELIST}?task=testapp.fail", 5),
    "filter: queue": (f"{CHANGELIST}?queue=other", 5),
    "filter: overdue": (f"{CHANGELIST}?run_at=overdue", 5),
    "filter: next 24 hours": (f"{CHANGELIST}?run_at=next_day", 5),
    "date drill-down": (f"{CHANGELIST}?run_at__year=2026&run_at__month=11", 5),
    "search: id": (f"{CHANGELIST}?q=3", 5),
    "search: task name": (f"{CHANGELIST}?q=testapp.f", 5),
    "search: unique key": (f"{CHANGELIST}?q=key:1", 5),
    "monitoring": (MONITORING, 18),
    "payments list": (PAYMENTS, 5),
    "payments: capture missed": (f"{PAYMENTS}?status__exact=capture_missed", 5),
}


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0):
        yield


def add_rows(count, start):
    statuses = list(Status)
    for i in range(start, start + count):
        job(
            statuses[i % len(statuses)],
            run_at=T0 + timedelta(hours=i - count),
            task_name=("testapp.noop", "testapp.fail")[i % 2],
            unique_key=f"key:{i}" if i % 3 else None,
        )
        authorize_payment(amount="1.00", currency="EUR")


def cost(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries), queries


@pytest.mark.parametrize("page", list(PAGES))
def test_each_admin_page_costs_a_fixed_number_of_queries(admin_client, page):
    url, expected = PAGES[page]
    add_rows(5, 0)
    few, _ = cost(admin_client, url)
    add_rows(60, 5)
    many, _ = cost(admin_client, url)
    assert few == many == expected


def test_a_job_page_costs_a_fixed_number_of_queries(admin_client):
    add_rows(5, 0)
    one = ScheduledJob.objects.filter(status=Status.FAILED).first()
    admin_client.get(change_url(one))  # per-process caches (content types) warm up
    few, _ = cost(admin_client, change_url(one))
    add_rows(60, 5)
    long_history(one, 120)
    many, _ = cost(admin_client, change_url(one))
    # Session, user, its status (for the operation forms), the job, attempts, audit trail
    # (each its latest rows and their number in all, in one query).
    assert few == many == 6


@pytest.mark.parametrize("history", ["jobattempt", "auditentry"])
def test_the_list_of_a_jobs_history_costs_a_fixed_number_of_queries(admin_client, history):
    one = job(Status.FAILED)
    url = f"{reverse(f'admin:scheduler_{history}_changelist')}?job__id__exact={one.pk}"
    long_history(one, 2)
    few, _ = cost(admin_client, url)
    long_history(one, 120)
    many, _ = cost(admin_client, url)
    # Session, user, capped count, rows.
    assert few == many == 4


def test_a_numeric_search_goes_straight_to_the_id(admin_client):
    add_rows(5, 0)
    wanted = ScheduledJob.objects.order_by("pk")[2]
    _, queries = cost(admin_client, f"{CHANGELIST}?q=%23{wanted.pk}")
    # The count and the rows (the date drill-down's years read the whole table's index).
    searches = [
        q["sql"]
        for q in queries.captured_queries
        if 'scheduledjob" WHERE' in q["sql"] and "WITH RECURSIVE" not in q["sql"]
    ]
    assert len(searches) == 2
    for sql in searches:
        assert "LIKE" not in sql
        assert f'"scheduler_scheduledjob"."id" = {wanted.pk}' in sql
    response = admin_client.get(f"{CHANGELIST}?q={wanted.pk}")
    assert [j.pk for j in response.context["cl"].result_list] == [wanted.pk]


def test_a_task_name_search_matches_known_task_names_not_a_scan(admin_client):
    add_rows(6, 0)
    _, queries = cost(admin_client, f"{CHANGELIST}?q=testapp.f")
    sql = next(q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"])
    names = re.search(r'"task_name" IN \(([^)]*)\)', sql).group(1).replace("'", "").split(", ")
    # The registered tasks that start with the term, and no other.
    assert "testapp.fail" in names
    assert all(name.startswith("testapp.f") for name in names)
    assert "LIKE" not in sql
    response = admin_client.get(f"{CHANGELIST}?q=testapp.f")
    assert {j.task_name for j in response.context["cl"].result_list} == {"testapp.fail"}


def test_the_succeeded_filter_reads_the_succeeded_index_not_every_pending_job(admin_client):
    # Succeeded jobs, the bulk of the table, are in no status index: listed by run_at,
    # newest first, PostgreSQL walked the run_at index down from the farthest pending
    # job, reading every pending job to reach the first succeeded one.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error, started_at,
                 finished_at)
            SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs',
                   %(now)s + interval '1 minute' * CASE WHEN i <= 50000 THEN i ELSE -i END,
                   CASE WHEN i <= 50000 THEN 'scheduled' ELSE 'succeeded' END,
                   CASE WHEN i <= 50000 THEN 0 ELSE 1 END, 5, 0, '', %(now)s, %(now)s, true,
                   CASE WHEN i <= 50000 THEN NULL ELSE %(now)s - interval '1 minute' * i END,
                   CASE WHEN i <= 50000 THEN NULL ELSE %(now)s - interval '1 minute' * i END
            FROM generate_series(1, 80000) AS i
            """,
            {"now": T0},
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(f"{CHANGELIST}?status__exact=succeeded")
    assert page.status_code == 200
    [rows] = [q["sql"] for q in queries.captured_queries if "LIMIT 50" in q["sql"]]
    plan = query_plan(rows)
    assert "scheduler_job_succeeded_idx" in plan, plan
    assert "scheduler_job_run_at_idx" not in plan, plan


def test_the_audit_list_searched_by_actor_reads_that_actors_entries_only(admin_client):
    # A bulk action writes an entry per job: ten thousand a click. Searched by who acted,
    # the list walked every entry backwards for that actor's, twice (rows, capped count).
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_auditentry (action, actor, reason, job_id, details, at)
            SELECT 'cancel', CASE WHEN i %% 5000 = 0 THEN 'mallory' ELSE 'alice' END,
                   'gateway down', i, '{}', %s - interval '1 second' * i
            FROM generate_series(1, 50000) AS i
            """,
            [T0],
        )
        cursor.execute("ANALYZE scheduler_auditentry")
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(f"{reverse('admin:scheduler_auditentry_changelist')}?q=mallory")
    assert page.status_code == 200
    assert page.content.decode().count(">mallory<") == 10
    entries = [q["sql"] for q in queries.captured_queries if "mallory" in q["sql"]]
    assert len(entries) == 2  # the rows and the capped count
    for query in entries:
        plan = query_plan(query)
        assert "scheduler_audit_actor_idx" in plan, plan


def test_the_queues_whose_dead_letters_are_watched_are_read_from_the_queue_index():
    # The monitoring page and every scrape ask which queues jobs were sent to: a DISTINCT
    # would read every job of the other queues.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error)
            SELECT 'testapp.noop', '[]', '{}',
                   CASE WHEN i %% 4 = 0 THEN 'scheduler-jobs' ELSE 'queue-' || i %% 3 END,
                   %(now)s + interval '1 second' * i, 'scheduled', 0, 5, 0, '', %(now)s,
                   %(now)s, true
            FROM generate_series(1, 100000) AS i
            """,
            {"now": T0},
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")
    with CaptureQueriesContext(connection) as queries:
        queues = watched_queues(default="scheduler-jobs")
    assert queues == ["scheduler-jobs", "queue-0", "queue-1", "queue-2"]
    [query] = [q["sql"] for q in queries.captured_queries]
    plan = query_plan(query)
    assert "scheduler_job_queue_idx" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize(
    ("history", "insert"),
    [
        (
            "jobattempt",
            """
            INSERT INTO scheduler_jobattempt (job_id, task_name, number, dispatch_token,
                scheduled_for, started_at, finished_at, outcome, error, worker)
            SELECT CASE WHEN i <= 20000 THEN %(old)s ELSE %(other)s END, 'testapp.noop', 1,
                   gen_random_uuid(), %(now)s, %(now)s, %(now)s, 'succeeded', '', 'w1'
            FROM generate_series(1, 200000) AS i
            """,
        ),
        (
            "auditentry",
            """
            INSERT INTO scheduler_auditentry (action, actor, reason, job_id, details, at)
            SELECT 'retry', 'ops', '', CASE WHEN i <= 20000 THEN %(old)s ELSE %(other)s END,
                   '{}', %(now)s
            FROM generate_series(1, 200000) AS i
            """,
        ),
    ],
)
def test_the_list_of_a_long_jobs_history_reads_that_jobs_rows_only(admin_client, history, insert):
    # The job page links here when its history is long, which is when PostgreSQL knows
    # the job's rows are many: ordered by id alone, it walked the whole table's primary
    # key down to them, the oldest (1.2 s at 10 million attempts).
    old, other = job(Status.FAILED), job(Status.SCHEDULED)
    with connection.cursor() as cursor:
        cursor.execute(insert, {"old": old.pk, "other": other.pk, "now": T0})
        cursor.execute(f"ANALYZE scheduler_{history}")
    url = f"{reverse(f'admin:scheduler_{history}_changelist')}?job__id__exact={old.pk}"
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(url)
    assert page.status_code == 200
    [rows] = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"]]
    plan = query_plan(rows)
    assert "pkey" not in plan, plan


def _jobs_over_four_months():
    """100,000 jobs with keys "payment-<n>", <n> in the order they were scheduled: 80,000
    succeeded over the 120 days before now, 20,000 scheduled over the next 30 (analyzed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error, unique_key,
                 started_at, finished_at)
            SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs', run_at,
                   CASE WHEN i <= 80000 THEN 'succeeded' ELSE 'scheduled' END,
                   CASE WHEN i <= 80000 THEN 1 ELSE 0 END, 5, 0, '', %(now)s, %(now)s, true,
                   'payment-' || i,
                   CASE WHEN i <= 80000 THEN run_at END,
                   CASE WHEN i <= 80000 THEN run_at + interval '1 second' END
            FROM (SELECT i, %(now)s + CASE WHEN i <= 80000
                                           THEN -interval '120 days' * (80001 - i) / 80000
                                           ELSE interval '30 days' * (i - 80000) / 20000
                                      END AS run_at
                  FROM generate_series(1, 100000) AS i) AS numbered
            """,
            {"now": T0},
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")


def _list_plans(client, query, marker, *, queries=2):
    """The list's page for ``query`` and the plans of its rows and capped count queries,
    told by ``marker`` in their SQL (an empty page reads no rows: its count only)."""
    with CaptureQueriesContext(connection) as captured:
        page = client.get(f"{CHANGELIST}{query}")
    assert page.status_code == 200
    found = [
        q["sql"]
        for q in captured.captured_queries
        if marker in q["sql"] and ("LIMIT 50" in q["sql"] or "COUNT(*)" in q["sql"])
    ]
    assert len(found) == queries, found
    return page, [query_plan(sql) for sql in found]


def _whole_table_reads(plan):
    """The plan's nodes that read a whole table or index: a scan with no Index Cond."""
    lines = plan.splitlines()
    walks = []
    for at, line in enumerate(lines):
        if "Seq Scan" in line:
            walks.append(line.strip())
        elif re.search(r"Index (Only )?Scan (Backward )?using|Bitmap Index Scan on", line):
            details = []
            for detail in lines[at + 1 :]:
                if "->" in detail:
                    break
                details.append(detail)
            if not any("Index Cond:" in detail for detail in details):
                walks.append(line.strip())
    return walks


@pytest.mark.parametrize("term", ["payment-1", "payment-30"])
def test_a_key_prefix_search_reads_the_key_index_not_the_list_in_its_order(admin_client, term):
    # The keys a prefix matches were the oldest jobs' ("payment-1" starts payment-1, -10…,
    # -10000…). Ordered by run_at, PostgreSQL walked the run_at index down from the newest
    # job with the LIKE as a filter: 690,000 rows read to fill a page at a million jobs.
    _jobs_over_four_months()
    page, plans = _list_plans(admin_client, f"?q={term}", f"{term}%")
    for plan in plans:
        assert "scheduler_job_key_prefix_idx" in plan, plan
        assert not _whole_table_reads(plan), plan
    if term == "payment-30":
        # 1,111 jobs match (payment-30, -300…-309, …, -30000…-30999): every one is
        # counted, the newest first.
        shown = [j.unique_key for j in page.context["cl"].result_list]
        assert shown[:2] == ["payment-30999", "payment-30998"]
        assert page.context["cl"].result_count == 1111


@pytest.mark.parametrize(
    ("query", "listed"),
    [
        # A month long past: walked by when jobs finished, newest first, PostgreSQL read
        # every job that finished since (760,000 rows at a million jobs).
        ("?status__exact=succeeded&run_at__year=2026&run_at__month=8", 50),
        ("?status__exact=succeeded&run_at__year=2026&run_at__month=8&run_at__day=20", 50),
        # This month, which goes on past now; and next year, when no job has run yet.
        ("?status__exact=succeeded&run_at__year=2026&run_at__month=11", 50),
        ("?status__exact=succeeded&run_at__year=2027", 0),
        ("?status__exact=succeeded&run_at=next_week", 0),
        ("?status__exact=succeeded&run_at=past_week", 50),
    ],
)
def test_succeeded_jobs_of_a_period_are_read_from_that_period(admin_client, query, listed):
    _jobs_over_four_months()
    page, plans = _list_plans(admin_client, query, 'run_at" ', queries=2 if listed else 1)
    for plan in plans:
        assert not _whole_table_reads(plan), plan
    rows = page.context["cl"].result_list
    assert len(rows) == listed
    assert {row.status for row in rows} <= {Status.SUCCEEDED}


def test_succeeded_jobs_searched_by_key_prefix_are_read_from_the_key_index(admin_client):
    # Walked by when jobs finished, newest first, with the LIKE as a filter.
    _jobs_over_four_months()
    page, plans = _list_plans(admin_client, "?status__exact=succeeded&q=payment-3", "payment-3%")
    for plan in plans:
        assert "scheduler_job_key_prefix_idx" in plan, plan
        assert not _whole_table_reads(plan), plan
    assert len(page.context["cl"].result_list) == 50


def test_the_audit_list_filtered_by_action_reads_that_actions_entries_only(admin_client):
    # No index had the action: the filter read the whole table, for the rows and again
    # for the count, which a rare action never stops at its cap.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_auditentry (action, actor, reason, job_id, details, at)
            SELECT CASE WHEN i %% 10000 = 0 THEN 'pause' ELSE 'cancel' END, 'ops', '', i,
                   '{}', %s - interval '1 second' * i
            FROM generate_series(1, 200000) AS i
            """,
            [T0],
        )
        cursor.execute("ANALYZE scheduler_auditentry")
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(
            f"{reverse('admin:scheduler_auditentry_changelist')}?action__exact=pause"
        )
    assert page.status_code == 200
    assert len(page.context["cl"].result_list) == 20
    entries = [q["sql"] for q in queries.captured_queries if "'pause'" in q["sql"]]
    assert len(entries) == 2  # the rows and the capped count
    for query in entries:
        plan = query_plan(query)
        assert "scheduler_audit_action_idx" in plan, plan
        assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize(
    ("history", "query"),
    [
        ("auditentry", ""),
        ("auditentry", "&action__exact=cancel"),
        ("auditentry", "&q=ops"),
        ("jobattempt", ""),
    ],
)
def test_a_history_list_older_than_a_row_reads_from_that_row_on(admin_client, history, query):
    # The way past the newest 10,001 rows a capped list pages through: a page of the
    # oldest rows of 200,000 must not walk down past the newer ones.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_auditentry (action, actor, reason, job_id, details, at)
            SELECT 'cancel', 'ops', '', i, '{}', %(now)s - interval '1 second' * i
            FROM generate_series(1, 200000) AS i;
            INSERT INTO scheduler_jobattempt (job_id, task_name, number, dispatch_token,
                scheduled_for, started_at, finished_at, outcome, error, worker)
            SELECT %(job)s, 'testapp.noop', 1, gen_random_uuid(), %(now)s, %(now)s, %(now)s,
                   'succeeded', '', 'w1'
            FROM generate_series(1, 200000) AS i;
            ANALYZE scheduler_auditentry;
            ANALYZE scheduler_jobattempt;
            """,
            {"now": T0, "job": job(Status.FAILED).pk},
        )
        cursor.execute(f"SELECT min(id) + 150 FROM scheduler_{history}")
        (older_than,) = cursor.fetchone()
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(
            f"{reverse(f'admin:scheduler_{history}_changelist')}?older_than={older_than}{query}"
        )
    assert page.status_code == 200
    assert len(page.context["cl"].result_list) == 100
    listed = [
        q["sql"]
        for q in queries.captured_queries
        if f'"scheduler_{history}"."id" < {older_than}' in q["sql"]
    ]
    assert len(listed) == 2  # the rows and the capped count
    for query_sql in listed:
        plan = query_plan(query_sql)
        assert not _whole_table_reads(plan), plan
        bounds = [line for line in plan.splitlines() if "Index Cond:" in line]
        assert bounds, plan
        assert all(f"id < {older_than}" in line for line in bounds), plan


#: The bulk actions that ask for a time on a page of their own.
ASKING_ACTIONS = ("reschedule_selected", "retry_selected_with_deadline")


@pytest.mark.parametrize("page", ["add", Status.SCHEDULED, Status.FAILED, *ASKING_ACTIONS])
def test_a_time_zone_field_writes_its_zones_out_in_one_template(admin_client, page):
    # Django's select includes a template per option: one per zone, about 600 per field,
    # most of the job page's time.
    if page in ASKING_ACTIONS:
        chosen = {"action": page, "index": "0", "_selected_action": [job(Status.FAILED).pk]}
        response = admin_client.post(CHANGELIST, chosen)
    else:
        response = admin_client.get(ADD if page == "add" else change_url(job(page)))
    content = response.content.decode()
    assert content.count('<option value="Europe/Paris"') == 1
    # One zone selected: the current one, which the page's script makes the browser's.
    select = re.search(r'<select name="time_zone".*?</select>', content, re.DOTALL)
    assert select is not None
    assert select.group().count(" selected>") == 1
    assert len(response.templates) < 200, len(response.templates)
