"""Upgrading from 0.1.0: its code, still running while the migrations apply, can write.

Web servers go on scheduling jobs and workers recording attempts until the new code
replaces them; their INSERTs name only 0.1.0's columns (these lists are its models').
And a deploy rolled back: the migrations reverse to 0.1.0's schema with every job kept.
"""

import os
import subprocess
import uuid
from contextlib import closing
from datetime import UTC, datetime

import psycopg2
import pytest
from django.db import connection

from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from tests.processes import BIN, ROOT

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

#: 0.1.0's columns, and the values its ORM sent for a new row.
JOB_0_1 = {
    "task_name": "testapp.noop",
    "args": "[]",
    "kwargs": "{}",
    "queue": "scheduler-jobs",
    "run_at": T0,
    "status": "scheduled",
    "attempts": 0,
    "max_attempts": 3,
    "unique_key": None,
    "dispatch_token": None,
    "enqueued_at": None,
    "started_at": None,
    "finished_at": None,
    "last_error": "",
    "created_at": T0,
    "updated_at": T0,
}
ATTEMPT_0_1 = {
    "number": 1,
    "dispatch_token": uuid.uuid4(),
    "scheduled_for": T0,
    "started_at": T0,
    "finished_at": None,
    "outcome": "running",
    "error": "",
    "worker": "celery@old:1",
}
HEARTBEAT_0_1 = {
    "dispatcher": "old:1",
    "last_tick_at": T0,
    "jobs_sent": 0,
    "jobs_recovered": 0,
    "errors": 0,
    "last_error": "",
}


def _insert(cursor, model, row):
    """0.1.0's INSERT of ``row`` into ``model``'s table; the new row's primary key."""
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({columns}) VALUES ({placeholders}) "
        f"RETURNING {model._meta.pk.column}",
        list(row.values()),
    )
    return cursor.fetchone()[0]


def _insert_0_1(model, row):
    """:func:`_insert` on the test's database."""
    with connection.cursor() as cursor:
        return _insert(cursor, model, row)


def test_rows_written_by_0_1_get_the_new_columns_defaults():
    job = ScheduledJob.objects.get(pk=_insert_0_1(ScheduledJob, JOB_0_1))
    attempt = JobAttempt.objects.get(pk=_insert_0_1(JobAttempt, {"job_id": job.pk, **ATTEMPT_0_1}))
    heartbeat = DispatcherHeartbeat.objects.get(pk=_insert_0_1(DispatcherHeartbeat, HEARTBEAT_0_1))

    assert (job.sends, job.retry_on_error, job.deadline, job.resend_at) == (0, True, None, None)
    assert attempt.task_name == ""
    assert (heartbeat.sent_total, heartbeat.errors_total) == (0, 0)


#: What a job in flight holds since 0.2.0 (check constraints).
IN_FLIGHT = {
    "enqueued": {"dispatch_token": str(uuid.uuid4()), "enqueued_at": T0, "resend_at": T0},
    "running": {"dispatch_token": str(uuid.uuid4()), "enqueued_at": T0, "started_at": T0},
}


def _manage(database_url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [str(BIN / "python"), "manage.py", *args, "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_migrating_back_to_0_1_keeps_every_job(new_database_url: str) -> None:
    _create_database(new_database_url)
    _manage(new_database_url, "migrate")
    statuses = ["scheduled", "enqueued", "running", "succeeded", "failed", "cancelled", "expired"]
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        for status in statuses:
            _insert(
                cursor, ScheduledJob, {**JOB_0_1, "status": status, **IN_FLIGHT.get(status, {})}
            )

    # 0.1.0 has no "expired": such a job did not run and never will, as a failed one.
    _manage(new_database_url, "migrate", "scheduler", "0001")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT status, last_error FROM scheduler_scheduledjob ORDER BY id")
        rows = cursor.fetchall()
    assert [status for status, _ in rows] == [*statuses[:-1], "failed"]
    assert rows[-1][1] == "expired: its deadline passed before it started"
    assert all(error == "" for _, error in rows[:-1])

    _manage(new_database_url, "migrate")  # and forward again


def _migrated_to(database_url: str, migration: str) -> None:
    """A new database with the scheduler's tables as of ``migration``."""
    _create_database(database_url)
    _manage(database_url, "migrate", "django_celery_beat")  # the dispatch schedule's
    _manage(database_url, "migrate", "scheduler", migration)


def _create_database(database_url: str) -> None:
    base, name = database_url.rsplit("/", 1)
    with closing(psycopg2.connect(f"{base}/postgres")) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')


@pytest.mark.parametrize(
    ("migration", "before", "index", "leftover", "columns"),
    [
        ("0003", "0002", "scheduler_job_unique_active_key", "_new", "(unique_key)"),
        ("0006", "0005", "scheduler_job_due_idx", "_new", "(run_at, id)"),
        ("0010", "0009", "scheduler_job_failed_idx", "", "(finished_at)"),
    ],
)
def test_a_migration_run_again_after_an_interrupted_index_build_builds_a_valid_index(
    new_database_url: str, migration: str, before: str, index: str, leftover: str, columns: str
) -> None:
    # A deploy timed out while CREATE INDEX CONCURRENTLY built an index: PostgreSQL leaves
    # it behind, INVALID (never used; a unique one never relied on). Run again, 0003 and
    # 0006 found theirs there (IF NOT EXISTS), dropped the valid old index and gave the
    # invalid one its name: the dispatcher's claim read the whole table, or the unique
    # key lost its index. 0007, which built the admin's, stopped at its first step.
    _migrated_to(new_database_url, before)
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        cursor.execute(f"CREATE INDEX {index}{leftover} ON scheduler_scheduledjob (id)")
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            [f"{index}{leftover}"],
        )
    _manage(new_database_url, "migrate", "scheduler", migration)
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE %s",
            [f"{index}%"],
        )
        [(valid, definition)] = cursor.fetchall()
    assert valid
    assert f"INDEX {index} ON public.scheduler_scheduledjob USING btree {columns}" in definition


@pytest.mark.parametrize(
    ("migration", "before", "index", "built", "definition"),
    [
        (
            "0006",
            "0005",
            "scheduler_job_due_idx",
            "scheduler_job_due_idx_new",
            "(run_at, id) WHERE status = 'scheduled'",
        ),
        (
            "0010",
            "0009",
            "scheduler_job_failed_idx",
            "scheduler_job_failed_idx",
            "(finished_at) WHERE status = 'failed'",
        ),
    ],
)
def test_a_migration_run_again_keeps_the_valid_index_a_run_built(
    new_database_url: str, migration: str, before: str, index: str, built: str, definition: str
) -> None:
    # Interrupted after the build: 0006 once the old index was dropped, before the new
    # one took its name. Dropping the valid one to build it again would leave the table
    # without either for the whole build.
    _migrated_to(new_database_url, before)
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {index}")
        cursor.execute(f"CREATE INDEX {built} ON scheduler_scheduledjob {definition}")
        cursor.execute("SELECT %s::regclass::oid", [built])
        (oid,) = cursor.fetchone()
    _manage(new_database_url, "migrate", "scheduler", migration)
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT c.oid, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE %s",
            [f"{index}%"],
        )
        assert cursor.fetchall() == [(oid, True)]  # the same index, under its own name


def test_attempts_recorded_before_the_task_name_column_get_their_jobs(
    new_database_url: str,
) -> None:
    _migrated_to(new_database_url, "0006")
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        job_id = _insert(cursor, ScheduledJob, {**JOB_0_1, "status": "succeeded"})
        attempt = {**ATTEMPT_0_1, "job_id": job_id, "dispatch_token": str(uuid.uuid4())}
        _insert(cursor, JobAttempt, attempt)
    _manage(new_database_url, "migrate", "scheduler", "0010")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT task_name FROM scheduler_jobattempt")
        assert cursor.fetchall() == [(JOB_0_1["task_name"],)]
