"""Operator actions through the services: the audit trail, pause and resume, re-send."""

from datetime import timedelta

import pytest
from django.db import transaction
from freezegun import freeze_time

from scheduler import services
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.exceptions import (
    InvalidArgumentsError,
    InvalidTransitionError,
    PauseError,
    UnknownTaskError,
)
from scheduler.models import AuditEntry, Pause, ScheduledJob
from scheduler.testing import InMemoryPublisher
from tests.integration.admin_helpers import T0, Status, job

pytestmark = pytest.mark.django_db

Action = AuditEntry.Action


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


def trail(of=None):
    entries = AuditEntry.objects.order_by("pk")
    if of is not None:
        entries = entries.filter(job=of)
    return [(entry.action, entry.actor, entry.reason, entry.details) for entry in entries]


def test_every_job_action_by_an_operator_is_recorded_with_who_when_and_why():
    # A move recorded the new run_at alone: where a job retried or run now had been
    # due was lost with it.
    scheduled = services.schedule_at(
        "testapp.noop", T0 + timedelta(hours=1), actor="alice", reason="customer asked"
    )
    services.reschedule(
        scheduled,
        T0 + timedelta(hours=2),
        deadline=T0 + timedelta(days=1),
        actor="bob",
        reason="later",
    )
    services.run_now(scheduled, actor="bob", reason="now, please")
    services.cancel(scheduled, actor="carol", reason="duplicate order")
    services.retry(scheduled, actor="carol", reason="not a duplicate after all")
    ScheduledJob.objects.filter(pk=scheduled.pk).update(
        status=Status.ENQUEUED,
        dispatch_token="00000000-0000-0000-0000-000000000001",
        resend_at=T0 + timedelta(minutes=5),
    )
    services.resend(scheduled, actor="dave", reason="dead-lettered")
    assert trail(scheduled) == [
        (Action.SCHEDULE, "alice", "customer asked", {"run_at": "2026-11-24T13:00:00+00:00"}),
        (
            Action.RESCHEDULE,
            "bob",
            "later",
            {
                "run_at": "2026-11-24T14:00:00+00:00",
                "previous_run_at": "2026-11-24T13:00:00+00:00",
                "deadline": "2026-11-25T12:00:00+00:00",
            },
        ),
        (
            Action.RUN_NOW,
            "bob",
            "now, please",
            {
                "run_at": "2026-11-24T12:00:00+00:00",
                "previous_run_at": "2026-11-24T14:00:00+00:00",
            },
        ),
        # Cancelling leaves run_at as it was: the retry's entry keeps it.
        (Action.CANCEL, "carol", "duplicate order", {}),
        (
            Action.RETRY,
            "carol",
            "not a duplicate after all",
            {
                "run_at": "2026-11-24T12:00:00+00:00",
                "previous_run_at": "2026-11-24T12:00:00+00:00",
            },
        ),
        (Action.RESEND, "dave", "dead-lettered", {}),
    ]
    assert {entry.at for entry in AuditEntry.objects.all()} == {T0}


def test_a_deadline_given_when_scheduling_is_in_the_trail():
    # The entry kept the run time only: who set the deadline, and to what, was nowhere.
    scheduled = services.schedule_at(
        "testapp.noop",
        T0 + timedelta(hours=1),
        deadline=T0 + timedelta(days=1),
        actor="alice",
        reason="must go today",
    )
    assert trail(scheduled) == [
        (
            Action.SCHEDULE,
            "alice",
            "must go today",
            {"run_at": "2026-11-24T13:00:00+00:00", "deadline": "2026-11-25T12:00:00+00:00"},
        )
    ]


def test_code_that_names_no_actor_writes_no_entry():
    scheduled = services.schedule_at("testapp.noop", T0)
    services.reschedule(scheduled, T0 + timedelta(hours=1))
    services.cancel(scheduled)
    services.retry(scheduled)
    services.pause("testapp.noop")
    services.resume("testapp.noop")
    assert not AuditEntry.objects.exists()


def test_an_entry_exists_only_if_the_action_took_effect():
    finished = job(Status.SUCCEEDED)
    with pytest.raises(InvalidTransitionError):
        services.cancel(finished, actor="alice", reason="too late")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.schedule_at("testapp.noop", T0, actor="alice", reason="rolled back")
        raise RuntimeError("the caller's transaction fails afterwards")
    cancelled = job(Status.CANCELLED)
    # Already cancelled: nothing changed, nothing recorded.
    assert services.cancel(cancelled, actor="alice") is False
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("actor", "reason", "field"),
    [
        ("", "", "actor"),
        ("   ", "", "actor"),
        ("x" * 256, "", "actor"),
        (42, "", "actor"),
        ("alice", None, "reason"),
        ("alice", 7, "reason"),
    ],
)
def test_a_bad_actor_or_reason_is_refused_and_nothing_is_written(actor, reason, field):
    scheduled = job()
    with pytest.raises(InvalidArgumentsError) as error:
        services.cancel(scheduled, actor=actor, reason=reason)
    assert error.value.field == field
    with pytest.raises(InvalidArgumentsError):
        services.schedule_at("testapp.noop", T0, actor=actor, reason=reason)
    assert ScheduledJob.objects.get(pk=scheduled.pk).status == Status.SCHEDULED
    assert ScheduledJob.objects.count() == 1
    assert not AuditEntry.objects.exists()


def test_pause_and_resume_a_task_a_queue_or_a_task_on_a_queue():
    task = services.pause("testapp.noop", actor="alice", reason="gateway incident")
    queue = services.pause(queue="other", actor="alice", reason="")
    both = services.pause("testapp.record", "other", actor="bob", reason="one kind only")
    assert (task.task_name, task.queue, task.paused_by, task.reason) == (
        "testapp.noop",
        "",
        "alice",
        "gateway incident",
    )
    assert (queue.task_name, queue.queue) == ("", "other")
    assert (both.task_name, both.queue) == ("testapp.record", "other")
    services.resume("testapp.record", "other", actor="bob", reason="fixed")
    assert set(Pause.objects.values_list("task_name", "queue")) == {
        ("testapp.noop", ""),
        ("", "other"),
    }
    assert trail() == [
        (Action.PAUSE, "alice", "gateway incident", {"task": "testapp.noop", "queue": ""}),
        (Action.PAUSE, "alice", "", {"task": "", "queue": "other"}),
        (Action.PAUSE, "bob", "one kind only", {"task": "testapp.record", "queue": "other"}),
        (Action.RESUME, "bob", "fixed", {"task": "testapp.record", "queue": "other"}),
    ]


def test_a_task_object_can_be_paused():
    from tests.testapp.tasks import noop

    assert services.pause(noop).task_name == "testapp.noop"
    services.resume(noop)
    assert not Pause.objects.exists()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({}, InvalidArgumentsError, "task or queue must be given"),
        ({"task": "no.such.task"}, UnknownTaskError, "'no.such.task' is not a registered"),
        ({"task": "scheduler.dispatch"}, UnknownTaskError, "is not a registered"),
        ({"queue": "not a queue!"}, InvalidArgumentsError, "queue 'not a queue!' is not valid"),
        ({"task": 42}, TypeError, "expected a Celery task or a task name"),
    ],
)
def test_bad_pauses_are_refused_and_write_nothing(arguments, error, message):
    with pytest.raises(error, match=message):
        services.pause(**arguments, actor="alice", reason="x")
    assert not Pause.objects.exists()
    assert not AuditEntry.objects.exists()


def test_pausing_twice_or_resuming_what_is_not_paused_is_refused():
    services.pause("testapp.noop", actor="alice")
    with pytest.raises(PauseError, match=r"task testapp\.noop is already paused"):
        services.pause("testapp.noop", actor="bob")
    with pytest.raises(PauseError, match="queue other is not paused"):
        services.resume(queue="other", actor="bob")
    # A pause of the task everywhere is not lifted by resuming it on one queue.
    with pytest.raises(PauseError, match=r"task testapp\.noop on queue other is not paused"):
        services.resume("testapp.noop", "other", actor="bob")
    assert Pause.objects.count() == 1
    assert [action for action, *_ in trail()] == [Action.PAUSE]


def test_a_task_no_longer_registered_can_still_be_resumed():
    Pause.objects.create(task_name="gone.task")
    services.resume("gone.task", actor="alice", reason="task removed")
    assert not Pause.objects.exists()


def test_resend_asks_the_dispatcher_to_send_an_enqueued_job_again_with_its_token():
    enqueued = job(Status.ENQUEUED)
    token = enqueued.dispatch_token
    resent = services.resend(enqueued, actor="alice", reason="dead-lettered")
    assert (resent.status, resent.dispatch_token, resent.resend_at) == (
        Status.ENQUEUED,
        token,
        T0,
    )
    # The dispatcher's next tick sends it again, with the same token.
    publisher = InMemoryPublisher()
    Dispatcher(publisher=publisher).run_once()
    assert [(m.job_id, m.dispatch_token) for m in publisher.published] == [
        (enqueued.pk, str(token))
    ]


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.RUNNING, Status.SUCCEEDED])
def test_resend_of_a_job_that_is_not_enqueued_says_why_and_changes_nothing(status):
    other = job(status)
    with pytest.raises(
        InvalidTransitionError, match=f"cannot resend job {other.pk}: it is {status}"
    ):
        services.resend(other, actor="alice", reason="dead-lettered")
    assert ScheduledJob.objects.get(pk=other.pk).resend_at is None
    assert not AuditEntry.objects.exists()


def test_an_actor_as_long_as_an_email_address_is_recorded_whole():
    # A custom user model whose username is the email address (EmailField: 254): at 150
    # characters every action of such an operator failed, and the admin's bulk actions
    # reported each job as skipped.
    operator = "o" * 242 + "@example.com"
    scheduled = services.schedule_at("testapp.noop", T0 + timedelta(hours=1), actor=operator)
    assert services.cancel(scheduled, actor=operator)
    services.pause(task="testapp.noop", actor=operator)
    assert set(AuditEntry.objects.values_list("actor", flat=True)) == {operator}
    assert Pause.objects.get().paused_by == operator
