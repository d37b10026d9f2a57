"""What a job's life writes: index tuples per job, and heartbeats as HOT updates (issue 9.8).

The job goes through the real services: schedule_many, a dispatcher tick (in-memory
publisher), the worker's claim, lease renewals, success. Index tuples are counted in
the indexes themselves (pgstattuple: no VACUUM runs meanwhile, so every tuple ever
written is still there), on tables truncated at the start.
"""

import pytest
from django.db import connection
from django.utils import timezone

from scheduler import JobSpec, schedule_many
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.services import running
from scheduler.testing import InMemoryPublisher

JOBS = 20
TABLES = ("scheduler_scheduledjob", "scheduler_jobattempt")


@pytest.fixture
def empty_tables(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        # Tuples of rolled-back tests stay in the indexes until a VACUUM: start afresh.
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")


def index_tuples(table: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text, s.tuple_count + s.dead_tuple_count "
            "FROM pg_index, LATERAL pgstattuple(indexrelid) AS s "
            "WHERE indrelid = %s::regclass",
            [table],
        )
        return dict(cursor.fetchall())


def hot_updates() -> tuple[int, int]:
    """Rows updated and HOT-updated in the job table so far (this backend's stats flushed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'scheduler_scheduledjob'"
        )
        updated, hot = cursor.fetchone()
        return updated, hot


def run_jobs(*, heartbeats: int) -> float:
    """As a worker runs them: each job claimed, its lease renewed, then finished.

    Returns the share of the heartbeats that were HOT updates.
    """
    schedule_many(JobSpec("testapp.noop", timezone.now()) for _ in range(JOBS))
    publisher = InMemoryPublisher()
    assert Dispatcher(publisher, name="test").run_once().sent == JOBS
    hot_heartbeats = renewals = 0
    for message in publisher.published:
        claimed = running.claim(
            job_id=message.job_id,
            token=message.dispatch_token,
            task_name=message.task_name,
            worker="test",
        )
        assert isinstance(claimed, running.Claim)
        for _ in range(heartbeats):
            updated, hot = hot_updates()
            assert running.heartbeat(job_id=claimed.job.pk, token=message.dispatch_token)
            now_updated, now_hot = hot_updates()
            renewals += now_updated - updated
            hot_heartbeats += now_hot - hot
        assert running.record_success(job=claimed.job, attempt=claimed.attempt)
    assert renewals == heartbeats * JOBS
    return hot_heartbeats / renewals


def test_a_jobs_life_writes_few_index_tuples(empty_tables):
    run_jobs(heartbeats=1)
    job_indexes = index_tuples("scheduler_scheduledjob")
    attempt_indexes = index_tuples("scheduler_jobattempt")
    # Inserted, then three status changes: the primary key, run_at and (task, run_at)
    # get a tuple for each of the four row versions, (status, run_at) for the enqueued
    # and the running one, the other partial indexes one at most: 17 (26 before migration 0003).
    # A heartbeat whose page is full moves the row, rarely.
    assert sum(job_indexes.values()) / JOBS <= 18, job_indexes
    assert job_indexes["scheduler_job_unique_active_key"] == 0  # no job has a key
    # An attempt: inserted, then finished: primary key, (job, token), started_at.
    assert sum(attempt_indexes.values()) / JOBS <= 6, attempt_indexes


def test_heartbeats_are_hot_updates(empty_tables):
    # A heartbeat changes no indexed column: it is HOT unless its page is full, which
    # the fillfactor makes rare (an indexed heartbeat_at would make the share 0).
    assert run_jobs(heartbeats=3) >= 0.9


def test_the_job_table_leaves_room_for_hot_updates(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'scheduler_scheduledjob'::regclass"
        )
        (options,) = cursor.fetchone()
    assert "fillfactor=70" in (options or [])
