"""The pages that count jobs per status read indexes, whatever the table's layout.

Counting a status up to its cap, PostgreSQL's planner assumes the rows it wants are
spread evenly through the table, and reads the table from its first page. After a bulk
load and before a VACUUM, with the history at the table's head, that read most of it:
0.16 s at a million rows, against 6 ms from the index.
"""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client

from scheduler import states
from scheduler.admin import monitoring
from scheduler.integrations import metrics
from tests.integration.admin_helpers import MONITORING, T0, Status

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("emptied_afterwards")]

PAGES = {"/metrics": metrics, MONITORING: monitoring}


def _insert(cursor, *, status, count, first, step, held=False):
    """``count`` jobs in ``status`` due from ``first``, ``step`` seconds apart, in one
    statement; a finished one finished at its run_at."""
    cursor.execute(
        "INSERT INTO scheduler_scheduledjob (task_name, args, kwargs, queue, run_at, status, "
        "attempts, max_attempts, sends, last_error, created_at, updated_at, retry_on_error, "
        "finished_at, held) "
        "SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs', "
        "%s + i * %s * interval '1 second', %s, %s, 3, 0, '', %s, %s, true, "
        "CASE WHEN %s THEN %s + i * %s * interval '1 second' END, %s "
        "FROM generate_series(1, %s) AS i",
        [
            first,
            step,
            status,
            int(status == Status.SUCCEEDED),
            T0,
            T0,
            status in states.FINISHED,
            first,
            step,
            held,
            count,
        ],
    )


def _plans(page, client: Client, wanted, *, explain: str = "EXPLAIN") -> list[str]:
    """The plans of the statements ``wanted`` (of their SQL) that ``page`` runs, as
    ``explain`` shows them (``EXPLAIN ANALYZE`` runs them once more)."""
    plans = []

    def explained(execute, sql, params, many, context):
        if wanted(sql):
            context["cursor"].execute(f"{explain} {sql}", params)
            plans.append("\n".join(row for (row,) in context["cursor"].fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explained):
        assert client.get(page).status_code == 200
    assert plans
    return plans


@pytest.mark.parametrize("page", PAGES)
def test_counts_read_indexes_while_the_history_fills_the_head_of_the_table(
    page, admin_client: Client, monkeypatch: pytest.MonkeyPatch
):
    # The history first, then the jobs to come, each in one statement.
    with connection.cursor() as cursor:
        _insert(cursor, status=Status.SUCCEEDED, count=20_000, first=T0, step=-1)
        _insert(cursor, status=Status.SCHEDULED, count=2_000, first=T0, step=1)
        cursor.execute("ANALYZE scheduler_scheduledjob")
    # The cap scaled down with the table, so that the planner weighs the same choice.
    monkeypatch.setattr(PAGES[page], "EXACT_COUNT_LIMIT", 100)
    for plan in _plans(page, admin_client, lambda sql: sql.startswith("SELECT (SELECT count(*)")):
        assert "Seq Scan" not in plan, plan


@pytest.mark.django_db(transaction=True)  # for VACUUM, as autovacuum runs on a long pause
@pytest.mark.parametrize("page", PAGES)
def test_held_jobs_are_read_by_kind_when_a_pause_holds_much_of_the_table(
    page, admin_client: Client, monkeypatch: pytest.MonkeyPatch
):
    # With status and held alone, once held jobs were a large share of the table, the
    # planner walked the run_at index through the whole history (1.35 s per scrape at a
    # million held among 2.4 million rows).
    with connection.cursor() as cursor:
        history = T0 - timedelta(days=20)
        _insert(cursor, status=Status.SUCCEEDED, count=20_000, first=history, step=1)
        held = T0 - timedelta(hours=2)
        _insert(cursor, status=Status.SCHEDULED, count=10_000, first=held, step=1, held=True)
        cursor.execute("VACUUM ANALYZE scheduler_scheduledjob")
    monkeypatch.setattr(PAGES[page], "EXACT_COUNT_LIMIT", 100)

    def pending_figures(sql):  # overdue and due soon, and the oldest overdue
        return sql.startswith("SELECT (SELECT count(*)") and "least(" in sql

    for plan in _plans(page, admin_client, pending_figures):
        assert "scheduler_job_run_at_idx" not in plan, plan


@pytest.mark.parametrize("page", PAGES)
def test_succeeded_jobs_are_counted_from_their_own_index_up_to_the_cap(
    page, admin_client: Client, monkeypatch: pytest.MonkeyPatch
):
    # Succeeded jobs were in no index by status: counted through the index of every
    # finished job by finished_at, each entry fetched from the table to check its status,
    # the count read every other finished job before it stopped at the cap (352 ms at two
    # million cancelled jobs; past twenty million, every scrape over its 5 s timeout).
    with connection.cursor() as cursor:
        _insert(cursor, status=Status.CANCELLED, count=200_000, first=T0, step=-1)
        _insert(cursor, status=Status.SUCCEEDED, count=150, first=T0, step=-7)
        cursor.execute("ANALYZE scheduler_scheduledjob")
    monkeypatch.setattr(PAGES[page], "EXACT_COUNT_LIMIT", 100)

    def status_counts(sql):
        return sql.startswith("SELECT (SELECT count(*)") and "least(" not in sql

    [plan] = _plans(page, admin_client, status_counts, explain="EXPLAIN (ANALYZE, BUFFERS)")
    # Their own index's entries alone, none read from the table, up to the cap plus one.
    succeeded = re.search(
        r"Index Only Scan using scheduler_job_succeeded_idx on \w+ .*?"
        r"\(actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=1\)",
        plan,
    )
    assert succeeded, plan
    assert int(succeeded.group(1)) == 101, plan
    removed = [int(rows) for rows in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    assert max(removed, default=0) < 1_000, plan
