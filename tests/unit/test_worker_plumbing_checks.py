"""scheduler.W020/W021/W022: the worker's SQS transport and consumer are the scheduler's,
and it takes messages only for free processes."""

import pytest
from celery import current_app
from django.db import connections

# Django's one name for both drivers' levels; django-stubs has no stub of it.
from django.db.backends.postgresql.psycopg_any import IsolationLevel  # type: ignore[import-untyped]

from scheduler.worker.checks import (
    check_accepted_content,
    check_acks_late,
    check_atomic_isolation,
    check_broker_transport,
    check_prefetch,
    check_track_started,
    check_worker_consumer,
)

SQS_BROKER = "sqs://local:local@127.0.0.1:9"
TRANSPORT_HINT = 'CELERY_BROKER_TRANSPORT = "scheduler.worker.transport:Transport"'
CONSUMER_HINT = 'CELERY_WORKER_CONSUMER = "scheduler.worker.consumer:Consumer"'


def configure(monkeypatch, **conf):
    for name, value in conf.items():
        monkeypatch.setitem(current_app.conf, name, value)


def test_the_project_uses_both():
    assert check_broker_transport() == []
    assert check_worker_consumer() == []
    assert check_prefetch() == []


def test_prefetch_while_busy_is_a_warning(monkeypatch):
    configure(monkeypatch, worker_disable_prefetch=False)
    [warning] = check_prefetch()
    assert warning.id == "scheduler.W022"
    assert "CELERY_WORKER_DISABLE_PREFETCH" in warning.msg
    assert "CELERY_WORKER_DISABLE_PREFETCH = True" in (warning.hint or "")


@pytest.mark.parametrize(
    ("check", "conf", "check_id", "named", "hint"),
    [
        (
            check_broker_transport,
            {"broker_url": SQS_BROKER, "broker_transport": transport},
            "scheduler.W020",
            "kombu.transport.SQS.Transport",
            TRANSPORT_HINT,
        )
        for transport in [None, "sqs", "kombu.transport.SQS:Transport"]
    ]
    + [
        (
            check_worker_consumer,
            {"worker_consumer": consumer},
            "scheduler.W021",
            consumer,
            CONSUMER_HINT,
        )
        for consumer in ["celery.worker.consumer:Consumer", "no.such.module:Consumer"]
    ],
)
def test_celerys_own_classes_are_a_warning(monkeypatch, check, conf, check_id, named, hint):
    configure(monkeypatch, **conf)
    [warning] = check()
    assert (warning.id, hint) == (check_id, warning.hint.removeprefix("Set ").removesuffix("."))
    assert named in warning.msg


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("sqs://", "scheduler.worker.transport:Transport"),
        ("memory://", None),  # not SQS: none of the transport's business
        ("sqs://", "no.such.module:Transport"),  # Celery reports it
    ],
)
def test_other_transports_pass(monkeypatch, url, transport):
    configure(monkeypatch, broker_url=url, broker_transport=transport)
    assert check_broker_transport() == []


def test_tasks_acknowledged_late_are_a_warning(monkeypatch):
    # A plain message of such a task (a delay() within SCHEDULER_MAX_DELAY_SECONDS) stays
    # in SQS while the task runs: past the visibility timeout (300 s, where kombu's is
    # 1800 s) another worker receives it and runs the task a second time, at once.
    configure(monkeypatch, broker_url=SQS_BROKER)
    [warning] = check_acks_late()
    assert warning.id == "scheduler.W024"
    assert "'testapp.rejects'" in warning.msg  # the test app's one task with acks_late
    assert "300 s" in warning.msg
    assert "SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS" in warning.msg
    assert "schedule_at" in (warning.hint or "")
    configure(monkeypatch, task_acks_late=True)  # every task: said once, not per task
    [warning] = check_acks_late()
    assert "CELERY_TASK_ACKS_LATE" in warning.msg
    configure(monkeypatch, broker_url="memory://", broker_transport=None)  # no SQS
    assert check_acks_late() == []


def test_tasks_reporting_started_to_a_result_backend_are_a_warning(monkeypatch):
    # Celery stores STARTED before the worker drops a duplicate copy (or a cancelled
    # job's message): a cancelled job read STARTED, a failed one lost its FAILURE.
    from scheduler.registry import get_task

    echo = get_task("testapp.echo")
    monkeypatch.setattr(echo, "track_started", True)
    monkeypatch.setattr(echo, "ignore_result", False)
    configure(monkeypatch, result_backend=None)
    assert check_track_started() == []  # no backend: nothing is stored
    configure(monkeypatch, result_backend="cache+memory://")
    [warning] = check_track_started()
    assert warning.id == "scheduler.W025"
    assert "'testapp.echo'" in warning.msg
    monkeypatch.setattr(echo, "ignore_result", True)  # it stores no state at all
    assert check_track_started() == []


@pytest.mark.parametrize("accepted", [["msgpack"], ["pickle", "application/x-yaml"]])
def test_a_worker_that_accepts_no_json_is_an_error(monkeypatch, accepted):
    # Jobs' messages are JSON: refused (ContentDisallowed), dropped and acknowledged,
    # each job's every copy, so it never ran.
    configure(monkeypatch, accept_content=accepted)
    [error] = check_accepted_content()
    assert error.id == "scheduler.E023"
    assert "JSON" in error.msg
    assert "CELERY_ACCEPT_CONTENT" in (error.hint or "")


@pytest.mark.parametrize("accepted", [["json"], ["application/json", "msgpack"]])
def test_a_worker_that_accepts_json_passes(monkeypatch, accepted):
    configure(monkeypatch, accept_content=accepted)
    assert check_accepted_content() == []


@pytest.mark.parametrize("level", [IsolationLevel.REPEATABLE_READ, IsolationLevel.SERIALIZABLE])
def test_atomic_tasks_above_read_committed_are_an_error(monkeypatch, level):
    # An atomic job records its success in its body's transaction while the heartbeat
    # renews the job's row from another connection: above READ COMMITTED, PostgreSQL
    # refused that success ("could not serialize access") for any job that outlived a
    # heartbeat, at every attempt, until the job failed.
    monkeypatch.setitem(connections["default"].settings_dict["OPTIONS"], "isolation_level", level)
    [error] = check_atomic_isolation()
    assert error.id == "scheduler.E024"
    assert "testapp.atomic_effect" in error.msg
    assert "READ COMMITTED" in (error.hint or "")


@pytest.mark.parametrize("level", [None, IsolationLevel.READ_COMMITTED])
def test_atomic_tasks_at_read_committed_pass(monkeypatch, level):
    monkeypatch.setitem(connections["default"].settings_dict["OPTIONS"], "isolation_level", level)
    assert check_atomic_isolation() == []
