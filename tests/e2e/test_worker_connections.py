"""End to end: a worker process keeps its database connection from job to job, and
replaces it when the server has terminated it."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scheduler import schedule_many
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import ScheduledJob
from tests import settings_loop_error
from tests.e2e.conftest import celery_worker
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)


def _run(path, labels, task="testapp.backend_pid"):
    """Schedule and dispatch one ``task`` job per label; wait for them.

    Returns what each label's job recorded (``testapp.backend_pid``: its backend pid).
    """
    run_at = timezone.now() + timedelta(seconds=1)
    schedule_many({"task": task, "run_at": run_at, "args": [path, label]} for label in labels)
    assert Dispatcher().run_once().sent == len(labels)
    assert wait_until(
        lambda: {run.split(":")[0] for run, _ in read_runs(path)} >= set(labels), timeout=30
    )
    pids = dict(run.split(":") for run, _ in read_runs(path))
    return {label: int(pids[label]) for label in labels}


def test_jobs_of_one_worker_process_share_its_connection(e2e_env, tmp_path):
    with celery_worker(e2e_env, concurrency=1):
        pids = _run(str(tmp_path / "runs"), ["a", "b", "c"])
    assert len(set(pids.values())) == 1, pids


def test_postgresql_keeps_a_workers_sessions_alive_on_its_own_side(e2e_env, tmp_path):
    # A worker's host lost mid atomic job: PostgreSQL ended its session (and the row
    # locks the body held, which the job's retry waits on) two hours later by default.
    with celery_worker(e2e_env, concurrency=1):
        assert _run(str(tmp_path / "runs"), ["a"], task="testapp.keepalive_idle") == {"a": 10}


def test_a_connection_terminated_between_jobs_is_replaced_before_the_next_claim(e2e_env, tmp_path):
    path = str(tmp_path / "runs")
    with celery_worker(e2e_env, concurrency=1):
        first = _run(path, ["first"])["first"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [first])
        second = _run(path, ["second"])["second"]
    assert second != first
    assert set(ScheduledJob.objects.values_list("status", flat=True)) == {"succeeded"}


def test_a_worker_receives_again_after_a_broker_error_in_its_event_loop(e2e_env, tmp_path):
    # On an error, Celery's loop resets kombu's hub, which unset it as the event loop a
    # reconnected channel takes: the worker came back connected and received nothing.
    env = {**e2e_env, "DJANGO_SETTINGS_MODULE": "tests.settings_loop_error"}
    with celery_worker(env, concurrency=1) as worker:
        assert wait_until(lambda: worker.output().count("Connected to") == 2, timeout=30)
        assert "Connection to broker lost" in worker.output()
        time.sleep(settings_loop_error.SCHEDULER_SQS_WAIT_TIME_SECONDS + 0.5)
        _run(str(tmp_path / "runs"), ["after"])
        assert wait_until(
            lambda: ScheduledJob.objects.filter(status="succeeded").exists(), timeout=10
        )
        assert worker.output().count("receiving only what the pool can start") == 2
