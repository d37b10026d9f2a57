"""A worker process checks its database connection before a task only when the
connection has been idle: not between jobs that run back to back."""

from weakref import WeakKeyDictionary

import pytest
from celery.signals import task_postrun, task_prerun, worker_process_init
from django.db import OperationalError, connection, connections
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from scheduler.worker import connections as worker_connections
from scheduler.worker.execution import Outcome
from tests.factories import deliver, dispatch_one
from tests.testapp.tasks import terminate_backend

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def health_checks(monkeypatch):
    """Count the health checks of the default connection, open and not used yet."""
    monkeypatch.setattr(worker_connections, "_answered_at", WeakKeyDictionary())
    # The handlers add their hook to this list, not to the one the next tests use.
    monkeypatch.setattr(connections["default"], "execute_wrappers", [])
    connection.ensure_connection()
    checks = []
    is_usable = connection.is_usable

    def counted():
        checks.append(1)
        return is_usable()

    monkeypatch.setattr(connection, "is_usable", counted)
    return checks


def _task():
    """What the worker's signals wrap around one job: its claim's first query."""
    task_prerun.send(sender=None)
    ScheduledJob.objects.exists()
    task_postrun.send(sender=None)


def test_a_connection_that_answered_moments_ago_is_not_checked_before_the_next_task(
    health_checks,
):
    for _ in range(5):
        _task()
    # Only the first task found the connection without a recent answer.
    assert len(health_checks) == 1


def test_a_connection_idle_for_longer_is_checked_before_each_task(health_checks, monkeypatch):
    monkeypatch.setattr(worker_connections, "RECENTLY_USED_SECONDS", 0.0)
    for _ in range(5):
        _task()
    assert len(health_checks) == 5


def test_a_terminated_connection_is_replaced_even_moments_after_its_last_answer(health_checks):
    _task()
    before = terminate_backend()
    task_prerun.send(sender=None)
    # The check was spared: the first query fails, and the next task gets a new
    # connection (a claim tries again on one itself).
    with pytest.raises(OperationalError):
        ScheduledJob.objects.exists()
    task_postrun.send(sender=None)
    task_prerun.send(sender=None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (after,) = cursor.fetchone()
    assert after != before


def test_a_claim_that_finds_its_connection_terminated_tries_again_on_a_new_one(health_checks):
    now = timezone.now()
    job = schedule_at("testapp.noop", now)
    token = dispatch_one(job, now=now)
    _task()
    terminate_backend()
    task_prerun.send(sender=None)
    assert deliver(job_id=job.pk, task_name=job.task_name, token=token).outcome is Outcome.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_workers_connections_ask_postgresql_to_notice_a_lost_host_within_seconds():
    # An atomic job's body holds its row locks in its transaction. Its worker's host
    # lost, PostgreSQL kept the session (and the locks) until its own TCP keepalive gave
    # up, two hours by default: the job's retry, by its lease, waited on them as long.
    # A pool process a worker spawns (not forks) gets worker_process_init alone.
    worker_process_init.send(sender=None)
    try:
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('tcp_keepalives_idle'), "
                "current_setting('tcp_keepalives_interval'), "
                "current_setting('tcp_keepalives_count')"
            )
            assert cursor.fetchone() == ("10", "5", "3")
    finally:
        worker_connections.keep_sessions_alive(False)
        connection.close()
