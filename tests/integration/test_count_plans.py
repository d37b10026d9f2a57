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
from tests.factories import make_jobs
from tests.integration.admin_helpers import MONITORING, T0, Status

pytestmark = pytest.mark.django_db

PAGES = {"/metrics": metrics, MONITORING: monitoring}


@pytest.mark.parametrize("page", PAGES)
def test_counts_read_indexes_while_the_history_fills_the_head_of_the_table(
    page, admin_client: Client, monkeypatch: pytest.MonkeyPatch
):
    make_jobs(
        [T0 - timedelta(seconds=s) for s in range(20_000)],
        status=Status.SUCCEEDED,
        attempts=1,
        finished_at=T0,
    )
    make_jobs([T0 + timedelta(seconds=s) for s in range(2_000)])
    with connection.cursor() as cursor:
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
