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


@pytest.mark.parametrize("page", PAGES)
def test_counts_read_indexes_while_the_history_fills_the_head_of_the_table(
    page, admin_client: Client, monkeypatch: pytest.MonkeyPatch
):
    # The history first, then the jobs to come, each in one statement.
    with connection.cursor() as cursor:
        for status, count, step in ((Status.SUCCEEDED, 20_000, -1), (Status.SCHEDULED, 2_000, 1)):
            cursor.execute(
                "INSERT INTO scheduler_scheduledjob (task_name, args, kwargs, queue, run_at, "
                "status, attempts, max_attempts, sends, last_error, created_at, updated_at, "
                "retry_on_error, finished_at) "
                "SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs', "
                "%s + i * %s * interval '1 second', %s, %s, 3, 0, '', %s, %s, true, %s "
                "FROM generate_series(1, %s) AS i",
                [T0, step, status, int(step < 0), T0, T0, T0 if step < 0 else None, count],
            )
        cursor.execute("ANALYZE scheduler_scheduledjob")
    # The cap scaled down with the table, so that the planner weighs the same choice.
    monkeypatch.setattr(PAGES[page], "EXACT_COUNT_LIMIT", 100)
    plans = []

    def explained(execute, sql, params, many, context):
        if sql.startswith("SELECT (SELECT count(*)"):
            context["cursor"].execute(f"EXPLAIN {sql}", params)
            plans.append("\n".join(row for (row,) in context["cursor"].fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explained):
        assert admin_client.get(page).status_code == 200
    assert plans
    for plan in plans:
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
        for status, count, start, held in (
            (Status.SUCCEEDED, 20_000, T0 - timedelta(days=20), False),
            (Status.SCHEDULED, 10_000, T0 - timedelta(hours=2), True),
        ):
            cursor.execute(
                "INSERT INTO scheduler_scheduledjob (task_name, args, kwargs, queue, run_at, "
                "status, attempts, max_attempts, sends, last_error, created_at, updated_at, "
                "retry_on_error, finished_at, held) "
                "SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs', "
                "%s + i * interval '1 second', %s, 0, 3, 0, '', %s, %s, true, %s, %s "
                "FROM generate_series(1, %s) AS i",
                [start, status, T0, T0, None if held else T0, held, count],
            )
        cursor.execute("VACUUM ANALYZE scheduler_scheduledjob")
    monkeypatch.setattr(PAGES[page], "EXACT_COUNT_LIMIT", 100)
    plans = []

    def explained(execute, sql, params, many, context):
        # The pending figures: overdue and due soon, and the oldest overdue.
        if sql.startswith("SELECT (SELECT count(*)") and "least(" in sql:
            context["cursor"].execute(f"EXPLAIN {sql}", params)
            plans.append("\n".join(row for (row,) in context["cursor"].fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explained):
        assert admin_client.get(page).status_code == 200
    assert plans
    for plan in plans:
        assert "scheduler_job_run_at_idx" not in plan, plan
