"""The pages that count jobs per status read indexes, whatever the table's layout.

Counting a status up to its cap, PostgreSQL's planner assumes the rows it wants are
spread evenly through the table, and reads the table from its first page. After a bulk
load and before a VACUUM, with the history at the table's head, that read most of it:
0.16 s at a million rows, against 6 ms from the index.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client

from scheduler.admin import monitoring
from scheduler.integrations import metrics
from tests.integration.admin_helpers import MONITORING, T0, Status

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("emptied_afterwards")]

PAGES = {"/metrics": metrics, MONITORING: monitoring}


def _insert(cursor, *, status, count, first, step, held=False):
    """``count`` jobs in ``status`` due from ``first``, ``step`` seconds apart, in one
    statement; finished when succeeded."""
    cursor.execute(
        "INSERT INTO scheduler_scheduledjob (task_name, args, kwargs, queue, run_at, status, "
        "attempts, max_attempts, sends, last_error, created_at, updated_at, retry_on_error, "
        "finished_at, held) "
        "SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs', "
        "%s + i * %s * interval '1 second', %s, %s, 3, 0, '', %s, %s, true, %s, %s "
        "FROM generate_series(1, %s) AS i",
        [
            first,
            step,
            status,
            int(status == Status.SUCCEEDED),
            T0,
            T0,
            T0 if status == Status.SUCCEEDED else None,
            held,
            count,
        ],
    )


def _plans(page, client: Client, wanted) -> list[str]:
    """The plans of the statements ``wanted`` (of their SQL) that ``page`` runs."""
    plans = []

    def explained(execute, sql, params, many, context):
        if wanted(sql):
            context["cursor"].execute(f"EXPLAIN {sql}", params)
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
