"""Upgrading from 0.1.0: its code, still running while the migrations apply, can write.

Web servers go on scheduling jobs and workers recording attempts until the new code
replaces them; their INSERTs name only 0.1.0's columns (these lists are its models').
And a deploy rolled back: the migrations reverse to 0.1.0's schema with every job kept.
"""

import json
import os
import re
import subprocess
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta

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


#: What a job in a status holds since 0.2.0 (check constraints).
HELD = {
    "enqueued": {"dispatch_token": str(uuid.uuid4()), "enqueued_at": T0, "resend_at": T0},
    "running": {
        "dispatch_token": str(uuid.uuid4()),
        "enqueued_at": T0,
        "started_at": T0,
        "attempts": 1,
    },
    **{status: {"finished_at": T0} for status in ("succeeded", "failed", "cancelled", "expired")},
}


def _manage(database_url: str, *args: str) -> None:
    _python(database_url, "manage.py", *args, "-v0")


def _python(database_url: str, *args: str) -> str:
    """Run Python with ``args`` on ``database_url``, the test settings; its output."""
    result = _run_python(database_url, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _run_python(
    database_url: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    return subprocess.run(
        [str(BIN / "python"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_migrating_back_to_0_1_keeps_every_job(new_database_url: str) -> None:
    _create_database(new_database_url)
    _manage(new_database_url, "migrate")
    statuses = ["scheduled", "enqueued", "running", "succeeded", "failed", "cancelled", "expired"]
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        for status in statuses:
            job_id = _insert(
                cursor, ScheduledJob, {**JOB_0_1, "status": status, **HELD.get(status, {})}
            )
        # Names longer than 0.2.0's first columns had room for (0009 widened them).
        cursor.execute(
            "INSERT INTO scheduler_auditentry (action, actor, reason, job_id, details, at) "
            "VALUES ('cancel', %s, '', %s, '{}', now())",
            ["a" * 200, job_id],
        )
        cursor.execute(
            "INSERT INTO scheduler_pause (task_name, queue, reason, paused_by, paused_at) "
            "VALUES ('testapp.noop', '', '', %s, now())",
            ["p" * 200],
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


@pytest.mark.one_django
def test_migrating_the_demo_back_to_0_1_keeps_a_missed_capture_as_authorized(
    new_database_url: str,
) -> None:
    # 0.1.0's payments know no "capture_missed": its check refused the row, and the
    # migration failed at every run. Authorized, with its capture job expired (failed
    # under 0.1.0), the payment is as 0.1.0 would have left it.
    _create_database(new_database_url)
    _manage(new_database_url, "migrate")
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        cursor.execute(
            "INSERT INTO payments_payment (amount, currency, status, authorization_id, "
            "capture_id, authorized_at, authorization_expires_at, captured_at) VALUES "
            "(5, 'EUR', 'capture_missed', 'auth_1', '', %s, %s, NULL), "
            "(6, 'EUR', 'captured', 'auth_2', 'cap_2', %s, %s, %s), "
            "(7, 'EUR', 'cancelled', 'auth_3', '', %s, %s, NULL)",
            [*[T0, T0 + timedelta(days=30)] * 2, T0, T0, T0 + timedelta(days=30)],
        )
    # Before cancelled payments: a cancelled one was not captured, as a missed capture.
    _manage(new_database_url, "migrate", "payments", "0003")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT status FROM payments_payment ORDER BY id")
        assert cursor.fetchall() == [("capture_missed",), ("captured",), ("capture_missed",)]
    _manage(new_database_url, "migrate", "payments", "0001")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT status FROM payments_payment ORDER BY id")
        assert cursor.fetchall() == [("authorized",), ("captured",), ("authorized",)]


@pytest.mark.one_django
def test_migrating_back_again_after_an_interrupted_index_build_completes(
    new_database_url: str,
) -> None:
    # A rollback cut short while 0003, migrating back, built 0.1.0's index of running
    # jobs again: PostgreSQL left it behind, INVALID, and every run after failed with
    # "relation already exists".
    _migrated_to(new_database_url, "0003")
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        cursor.execute("CREATE INDEX scheduler_job_running_idx ON scheduler_scheduledjob (id)")
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'scheduler_job_running_idx'::regclass"
        )
    _manage(new_database_url, "migrate", "scheduler", "0002")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            ["scheduler_job_running_idx"],
        )
        [(valid, definition)] = cursor.fetchall()
    assert valid
    assert "(started_at) WHERE ((status)::text = 'running'::text)" in definition


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
        ("0015", "0014", "scheduler_job_due_idx", "_new", "(run_at, id)"),
        ("0017", "0016", "scheduler_job_succeeded_idx", "", "(finished_at)"),
        ("0017", "0016", "scheduler_job_ended_badly_idx", "", "(finished_at)"),
    ],
)
@pytest.mark.one_django
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
        (
            "0017",
            "0016",
            "scheduler_job_succeeded_idx",
            "scheduler_job_succeeded_idx",
            "(finished_at) WHERE status = 'succeeded'",
        ),
        (
            "0017",
            "0016",
            "scheduler_job_ended_badly_idx",
            "scheduler_job_ended_badly_idx",
            "(finished_at) WHERE status IN ('failed', 'cancelled', 'expired')",
        ),
    ],
)
@pytest.mark.one_django
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


@pytest.mark.one_django
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


#: Records every statement ``migrate`` runs, migration by migration, as JSON.
_RECORD_MIGRATIONS = """
import json
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

current, statements = [None], []

def record(execute, sql, params, many, context):
    statements.append([current[0], sql, connection.in_atomic_block])
    return execute(sql, params, many, context)

names = sorted(name for app, name in MigrationLoader(None).disk_migrations if app == "scheduler")
call_command("migrate", "django_celery_beat", verbosity=0)
call_command("migrate", "scheduler", names[0], verbosity=0)
with connection.execute_wrapper(record):
    for name in names[1:]:
        current[0] = name
        call_command("migrate", "scheduler", name, verbosity=0)
print(json.dumps(statements))
"""

#: The tables that hold a row per job, attempt or operator action: millions of them.
BIG_TABLES = ("scheduler_scheduledjob", "scheduler_jobattempt", "scheduler_auditentry")
#: What makes PostgreSQL read a whole table while it holds the lock that stops its
#: writes (an index build) or also its reads (the others).
LOCKED_SCANS = {
    "an index built with writes locked": re.compile(r"\bCREATE (UNIQUE )?INDEX (?!CONCURRENTLY)"),
    "every row checked with the table locked": re.compile(
        r"\bALTER TABLE .*(CHECK|FOREIGN KEY|REFERENCES)(?!.*NOT VALID)", re.DOTALL
    ),
    "every row read for NOT NULL with the table locked": re.compile(r"SET NOT NULL"),
}


def _target(sql: str) -> str | None:
    # Anywhere in the statement: a DO block may hold the ALTER TABLE.
    match = re.search(r'\b(?:ALTER TABLE|CREATE (?:UNIQUE )?INDEX .*? ON) "?(\w+)"?', sql)
    return match and match.group(1)


def test_no_migration_reads_a_big_table_while_it_blocks_its_writes(new_database_url: str):
    # 0.1.0's web servers and workers go on writing while the migrations apply. On a
    # table of 100 million jobs, one statement that scans it behind a lock stops every
    # scheduling, claim and heartbeat for minutes.
    _create_database(new_database_url)
    statements = json.loads(_python(new_database_url, "-c", _RECORD_MIGRATIONS))
    created = {
        (migration, table)
        for migration, sql, _ in statements
        for table in re.findall(r'^CREATE TABLE "(\w+)"', sql)
    }
    found = [
        f"{migration}: {why}: {sql}"
        for migration, sql, _ in statements
        if _target(sql) in BIG_TABLES and (migration, _target(sql)) not in created
        for why, pattern in LOCKED_SCANS.items()
        if pattern.search(sql)
    ]
    assert len(statements) > 50  # every migration's statements were seen
    assert not found, "\n".join(found)


@pytest.mark.one_django
def test_a_migration_behind_a_long_transaction_gives_up_rather_than_stop_every_query(
    new_database_url: str,
):
    # A capture running for minutes in an atomic task holds a lock on the job table. An
    # ALTER TABLE waited behind it, and every query on the table, reads too, waited
    # behind the ALTER: every scheduling, claim and heartbeat, for as long as the capture.
    _migrated_to(new_database_url, "0001")
    with closing(psycopg2.connect(new_database_url)) as long_job, long_job.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM scheduler_scheduledjob")
        started = time.monotonic()
        result = _run_python(new_database_url, "manage.py", "migrate", "-v0", timeout=40)
        waited = time.monotonic() - started
        long_job.rollback()
    assert result.returncode != 0
    assert "lock timeout" in result.stderr, result.stderr[-3000:]
    assert waited < 25
    _manage(new_database_url, "migrate")  # again, once the long transaction has ended


@pytest.mark.parametrize(
    ("migration", "back_to"),
    [
        ("0002", "0001"),  # atomic: its columns and checks dropped, 0.1.0's check added
        ("0004", "0003"),  # atomic: its columns dropped
        ("0006", "0005"),  # not atomic: its check constraint dropped
    ],
)
@pytest.mark.one_django
def test_migrating_back_behind_a_long_transaction_gives_up_rather_than_stop_every_query(
    new_database_url: str, migration: str, back_to: str
):
    # Backwards the operations run in reverse order: the lock timeout set by an atomic
    # migration's first operation came last, and its ALTER TABLE waited behind the long
    # transaction, with every query on the job table behind it.
    _migrated_to(new_database_url, migration)
    with closing(psycopg2.connect(new_database_url)) as long_job, long_job.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM scheduler_scheduledjob")
        started = time.monotonic()
        result = _run_python(
            new_database_url, "manage.py", "migrate", "scheduler", back_to, "-v0", timeout=40
        )
        waited = time.monotonic() - started
        long_job.rollback()
    assert result.returncode != 0
    assert "lock timeout" in result.stderr, result.stderr[-3000:]
    assert waited < 25
    _manage(new_database_url, "migrate", "scheduler", back_to)  # again, once it has ended


@pytest.mark.one_django
def test_rows_that_break_0_13_s_checks_get_an_end_and_an_attempt(new_database_url: str) -> None:
    # 0.1.0's code wrote no such row (see the next test), but a database edited by hand
    # could hold one: 0013 gives each what it lacks, then validates its checks.
    _migrated_to(new_database_url, "0012")
    t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    rows = {
        # The latest of its times: when it changed last, or later if a clock disagreed.
        "succeeded": ({"status": "succeeded", "started_at": t1, "updated_at": t2}, t2, 0),
        "failed": ({"status": "failed", "started_at": t2, "updated_at": t1}, t2, 0),
        "cancelled": ({"status": "cancelled"}, T0, 0),
        "expired": ({"status": "expired", "run_at": t2}, T0, 0),
        # Its attempt under way counts.
        "running": ({"status": "running", **HELD["running"], "attempts": 0}, None, 1),
        # Kept as they are.
        "ended": ({"status": "succeeded", "finished_at": t1, "updated_at": t2}, t1, 0),
        "retried": ({"status": "running", **HELD["running"], "attempts": 2}, None, 2),
        "waiting": ({"status": "scheduled"}, None, 0),
    }
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        ids = {
            name: _insert(cursor, ScheduledJob, {**JOB_0_1, **row})
            for name, (row, *_) in rows.items()
        }
    _manage(new_database_url, "migrate", "scheduler", "0013")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute("SELECT id, finished_at, attempts FROM scheduler_scheduledjob")
        found = {job_id: (finished_at, attempts) for job_id, finished_at, attempts in cursor}
        cursor.execute(
            "SELECT conname, convalidated FROM pg_constraint WHERE conname = ANY(%s)",
            [list(CHECKS_0_13)],
        )
        constraints = dict(cursor.fetchall())
    assert {name: found[ids[name]] for name in rows} == {
        name: (finished_at, attempts) for name, (_, finished_at, attempts) in rows.items()
    }
    assert constraints == dict.fromkeys(CHECKS_0_13, True)


#: The checks migration 0013 adds.
CHECKS_0_13 = ("scheduler_job_finished_has_end", "scheduler_job_running_has_attempt")
RUNNING_0_1 = {"status": "running", **HELD["running"]}
#: 0.1.0's compare-and-set UPDATEs of a job's status (its services'), each with a job
#: it applies to.
STATUS_UPDATES_0_1 = {
    "claim": (
        {"status": "enqueued", **HELD["enqueued"]},
        "status = 'running', attempts = attempts + 1, started_at = %(now)s, "
        "finished_at = NULL, updated_at = %(now)s WHERE status = 'enqueued'",
    ),
    "record_success": (
        RUNNING_0_1,
        "status = 'succeeded', finished_at = %(now)s, last_error = '', updated_at = %(now)s "
        "WHERE status = 'running'",
    ),
    "record_error or expire_leases, attempts left": (
        RUNNING_0_1,
        "status = 'scheduled', run_at = %(now)s, dispatch_token = NULL, enqueued_at = NULL, "
        "started_at = NULL, last_error = 'x', updated_at = %(now)s WHERE status = 'running'",
    ),
    "record_error or expire_leases, no attempt left": (
        {**RUNNING_0_1, "attempts": 3},
        "status = 'failed', finished_at = %(now)s, last_error = 'x', updated_at = %(now)s "
        "WHERE status = 'running'",
    ),
    "cancel": (
        {},
        "status = 'cancelled', finished_at = %(now)s, dispatch_token = NULL, "
        "updated_at = %(now)s WHERE status IN ('scheduled', 'enqueued')",
    ),
    "retry": (
        {"status": "failed", "attempts": 3, "finished_at": T0},
        "status = 'scheduled', attempts = 0, finished_at = NULL, run_at = %(now)s, "
        "dispatch_token = NULL, enqueued_at = NULL, started_at = NULL, updated_at = %(now)s "
        "WHERE status IN ('failed', 'cancelled')",
    ),
}


@pytest.mark.parametrize("update", STATUS_UPDATES_0_1)
def test_0_1_s_changes_of_status_pass_0_13_s_checks(update: str) -> None:
    # 0.1.0's web servers and workers go on writing while 0013 applies and until they
    # are replaced: each of its changes of status gave an ended job its end and a claimed
    # one its attempt, so 0013's checks, added NOT VALID first, refuse none of them.
    row, change = STATUS_UPDATES_0_1[update]
    job_id = _insert_0_1(ScheduledJob, {**JOB_0_1, **row})
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE scheduler_scheduledjob SET {change} AND id = %(id)s",
            {"now": T0 + timedelta(minutes=1), "id": job_id},
        )
        assert cursor.rowcount == 1


@pytest.mark.one_django
def test_the_demo_from_0_1_gets_deadlines_on_pending_captures_and_checks_of_ended_ones(
    new_database_url: str,
) -> None:
    # 0.1.0 scheduled captures with five attempts and no deadline, and left a payment
    # authorized when its capture job failed: upgraded, the pending capture still gave
    # up after five attempts, and the failed one stayed authorized.
    _create_database(new_database_url)
    _manage(new_database_url, "migrate", "django_celery_beat")
    _manage(new_database_url, "migrate", "scheduler", "0001")
    _manage(new_database_url, "migrate", "payments", "0001")
    statuses = ["scheduled", "failed", "cancelled", "succeeded"]
    with closing(psycopg2.connect(new_database_url)) as db, db, db.cursor() as cursor:
        for number, status in enumerate(statuses):
            finished = None if status == "scheduled" else T0
            cursor.execute(
                "INSERT INTO scheduler_scheduledjob (task_name, args, kwargs, queue, run_at, "
                "status, attempts, max_attempts, last_error, created_at, updated_at, "
                "finished_at) VALUES ('payments.capture_payment', '[]', %s, 'captures', %s, "
                "%s, 0, 5, '', %s, %s, %s) RETURNING id",
                [
                    f'{{"payment_id": {number + 1}}}',
                    T0 + timedelta(days=14),
                    status,
                    T0,
                    T0,
                    finished,
                ],
            )
            [job_id] = cursor.fetchone()
            cursor.execute(
                "INSERT INTO payments_payment (amount, currency, status, authorization_id, "
                "capture_id, authorized_at, captured_at, capture_job_id) "
                "VALUES (5, 'EUR', %s, %s, %s, %s, %s, %s)",
                [
                    "captured" if status == "succeeded" else "authorized",
                    f"auth_{number}",
                    f"cap_{number}" if status == "succeeded" else "",
                    T0,
                    T0 if status == "succeeded" else None,
                    job_id,
                ],
            )
    _manage(new_database_url, "migrate")
    with closing(psycopg2.connect(new_database_url)) as db, db.cursor() as cursor:
        cursor.execute(
            "SELECT status, max_attempts, deadline FROM scheduler_scheduledjob "
            "WHERE task_name = 'payments.capture_payment' ORDER BY id"
        )
        captures = cursor.fetchall()
        cursor.execute(
            "SELECT kwargs, queue, status, max_attempts FROM scheduler_scheduledjob "
            "WHERE task_name = 'payments.record_missed_capture' ORDER BY id"
        )
        checks = cursor.fetchall()
        cursor.execute(
            "SELECT id FROM scheduler_scheduledjob WHERE task_name = %s ORDER BY id",
            ["payments.capture_payment"],
        )
        ids = [job_id for (job_id,) in cursor.fetchall()]
    assert captures == [
        ("scheduled", 1000, T0 + timedelta(days=30)),
        ("failed", 5, None),
        ("cancelled", 5, None),
        ("succeeded", 5, None),
    ]
    # The cancelled one was 0.1.0's way to cancel an order: left as it is.
    assert checks == [({"capture_job_id": ids[1]}, "captures", "scheduled", 1000)]
