"""Upgrading from 0.1.0: its code, still running while the migrations apply, can write.

Web servers go on scheduling jobs and workers recording attempts until the new code
replaces them; their INSERTs name only 0.1.0's columns (these lists are its models').
"""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob

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


def _insert_0_1(model, row):
    """0.1.0's INSERT of ``row`` into ``model``'s table; the new row's primary key."""
    table = model._meta.db_table
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    pk = model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {pk}",
            list(row.values()),
        )
        return cursor.fetchone()[0]


def test_rows_written_by_0_1_get_the_new_columns_defaults():
    job = ScheduledJob.objects.get(pk=_insert_0_1(ScheduledJob, JOB_0_1))
    attempt = JobAttempt.objects.get(pk=_insert_0_1(JobAttempt, {"job_id": job.pk, **ATTEMPT_0_1}))
    heartbeat = DispatcherHeartbeat.objects.get(pk=_insert_0_1(DispatcherHeartbeat, HEARTBEAT_0_1))

    assert (job.sends, job.retry_on_error, job.deadline, job.resend_at) == (0, True, None, None)
    assert attempt.task_name == ""
    assert (heartbeat.sent_total, heartbeat.errors_total) == (0, 0)
