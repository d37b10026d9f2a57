"""As a worker starts consuming and a dispatcher starts, it reads its queues' attributes
once and says, one warning a line, where they fall short of what jobs need, by the
thresholds `scheduler_create_queue` applies; a queue it cannot read is one line, and the
process goes on. Against the SQS server (moto, over HTTP)."""

import io
import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from celery import current_app
from celery.signals import worker_ready
from django.core.management import call_command
from django.utils import timezone
from kombu import Queue

from scheduler.dispatch.beat import (
    DISPATCH_PERIODIC_TASK_NAME,
    DispatchingScheduler,
    ensure_dispatch_schedule,
)
from scheduler.dispatch.dispatcher import check_at_start
from scheduler.dispatch.queues import ensure_queue
from scheduler.sqs import MISSING_QUEUE_CODES
from tests.conftest import SqsQueue, postgresql_out_of_reach
from tests.factories import make_jobs

pytestmark = pytest.mark.django_db(transaction=True)  # a worker's start closes connections


class Consumer:
    """What a worker's consumer shows of itself: the queues its task consumer reads."""

    def __init__(self, queues: list[str]) -> None:
        self.task_consumer = SimpleNamespace(queues=[Queue(name) for name in queues])


def consuming(*queues: str) -> None:
    """Tell this process's receivers that a worker consuming ``queues`` is ready."""
    worker_ready.send(sender=Consumer(list(queues)))


def set_attributes(queue: SqsQueue, **attributes: str) -> None:
    queue.client.set_queue_attributes(QueueUrl=queue.url, Attributes=attributes)


def redrive_policy(queue: SqsQueue, dead_letters: str, receives: int) -> str:
    """A RedrivePolicy sending ``queue``'s dead letters to ``dead_letters``, created."""
    url = queue.client.create_queue(QueueName=dead_letters)["QueueUrl"]
    arn = queue.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(receives)})


def said(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(start)]


def shortfalls(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings of queue attributes short of what jobs need."""
    records = said(caplog, "sqs queue falls short ")
    assert all(r.levelno == logging.WARNING for r in records)
    return [r.getMessage() for r in records]


def test_a_queue_with_sqs_defaults_is_told_as_the_worker_starts(sqs_queue, caplog):
    # A queue nobody ran scheduler_create_queue on (the test's, made with SQS's
    # defaults): no dead-letter queue, a 30 s visibility timeout. Workers ran on it
    # silently.
    caplog.set_level(logging.INFO)
    consuming(sqs_queue.name)
    redrive, visibility = sorted(shortfalls(caplog))
    assert redrive == (
        f"sqs queue falls short process=worker queue={sqs_queue.name} attribute=RedrivePolicy "
        f"value=unset needs={sqs_queue.name}-dlq effect='a message that keeps failing is "
        "received again without end, and the dead-letter metric and alert never see it' "
        "hint='run scheduler_create_queue'"
    )
    assert visibility.startswith(
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        "attribute=VisibilityTimeout value=30 needs=>=300 effect="
    )
    assert visibility.endswith(" hint='run scheduler_create_queue'")


def test_a_max_receive_count_lowered_by_hand_is_told(sqs_queue, caplog):
    ensure_queue()
    policy = redrive_policy(sqs_queue, f"{sqs_queue.name}-dlq", 2)
    set_attributes(sqs_queue, RedrivePolicy=policy)
    consuming(sqs_queue.name)
    [told] = shortfalls(caplog)
    assert told.startswith(
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        "attribute=RedrivePolicy.maxReceiveCount value=2 needs=>=3 effect="
    )
    assert "handed back" in told
    # scheduler_create_queue keeps a queue's own RedrivePolicy: it would not mend this.
    assert "set-queue-attributes" in told


def test_a_short_retention_and_a_removed_redrive_policy_are_told(sqs_queue, caplog):
    ensure_queue()
    set_attributes(sqs_queue, MessageRetentionPeriod="3600", RedrivePolicy="")
    consuming(sqs_queue.name)
    told = sorted(shortfalls(caplog))
    assert [line.split(" effect=")[0] for line in told] == [
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        "attribute=MessageRetentionPeriod value=3600 needs=>=86400",
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        f"attribute=RedrivePolicy value=unset needs={sqs_queue.name}-dlq",
    ]


def test_dead_letters_sent_to_another_queue_are_told(sqs_queue, caplog):
    ensure_queue()
    set_attributes(sqs_queue, RedrivePolicy=redrive_policy(sqs_queue, f"{sqs_queue.name}-x", 5))
    consuming(sqs_queue.name)
    [told] = shortfalls(caplog)
    assert told.startswith(
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        f"attribute=RedrivePolicy.deadLetterTargetArn value={sqs_queue.name}-x "
        f"needs={sqs_queue.name}-dlq effect="
    )


def test_a_queue_made_by_scheduler_create_queue_is_only_noted(sqs_queue, caplog):
    caplog.set_level(logging.INFO)
    ensure_queue()
    # A Celery queue's name is its SQS queue's with a dot for a dash; a FIFO queue
    # cannot carry jobs (no per-message delay) and is not checked.
    ensure_queue(f"{sqs_queue.name}.slow")
    consuming(sqs_queue.name, f"{sqs_queue.name}.slow", "other.fifo")
    assert not shortfalls(caplog)
    assert not said(caplog, "sqs queue not checked")
    assert [r.getMessage() for r in said(caplog, "sqs queue checked")] == [
        f"sqs queue checked process=worker queue={sqs_queue.name}",
        f"sqs queue checked process=worker queue={sqs_queue.name}-slow",
    ]


def test_a_missing_queue_is_one_line_and_the_others_are_still_checked(sqs_queue, caplog):
    consuming(f"{sqs_queue.name}-gone", sqs_queue.name)
    [skipped] = said(caplog, "sqs queue not checked")
    assert skipped.levelno == logging.WARNING
    line, reason = skipped.getMessage().split(" reason=")
    assert line == f"sqs queue not checked process=worker queue={sqs_queue.name}-gone"
    assert reason in MISSING_QUEUE_CODES
    assert shortfalls(caplog)  # the test queue's, made with SQS's defaults


def test_a_denied_read_is_one_line_per_queue_and_the_worker_goes_on(sqs_queue, caplog, monkeypatch):
    # A worker whose IAM policy does not grant sqs:GetQueueAttributes on its queue.
    call = BaseClient._make_api_call

    def denied(self: Any, operation: str, params: Any) -> Any:
        if operation == "GetQueueAttributes":
            error = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
            raise ClientError(error, operation)
        return call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", denied)
    consuming(sqs_queue.name)
    assert [r.getMessage() for r in said(caplog, "sqs queue not checked")] == [
        f"sqs queue not checked process=worker queue={sqs_queue.name} reason=AccessDenied"
    ]
    assert not shortfalls(caplog)


def test_sqs_out_of_reach_is_one_line_for_every_queue(caplog):
    # The autouse offline_sqs fixture: nothing answers at the endpoint.
    consuming("first", "second")
    [skipped] = said(caplog, "sqs queue not checked")
    assert skipped.getMessage() == (
        "sqs queue not checked process=worker queue=first,second reason=EndpointConnectionError"
    )


def test_the_dispatcher_checks_the_queues_jobs_are_sent_to_as_it_starts(sqs_queue, caplog):
    # Each a queue it sends to: the default, and those jobs in the table name.
    make_jobs([timezone.now() + timedelta(days=1)], queue=f"{sqs_queue.name}-other")
    call_command("scheduler_dispatch", "--once", stdout=io.StringIO())
    told = shortfalls(caplog)
    assert any(f"process=dispatcher queue={sqs_queue.name} " in line for line in told)
    assert said(caplog, f"sqs queue not checked process=dispatcher queue={sqs_queue.name}-other")


def test_a_dispatcher_started_while_postgresql_is_out_of_reach_checks_its_default_queue(
    sqs_queue, caplog
):
    with postgresql_out_of_reach():
        check_at_start(process="dispatcher")
    told = shortfalls(caplog)
    assert told
    assert all(f"process=dispatcher queue={sqs_queue.name} " in line for line in told)


def test_beat_checks_its_queues_at_its_first_tick_only(sqs_queue, caplog):
    ensure_dispatch_schedule()
    scheduler = DispatchingScheduler(app=current_app)
    try:
        entry = scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME]
        scheduler.apply_entry(entry, producer=None)
        scheduler.apply_entry(entry, producer=None)
    finally:
        scheduler._finalize.cancel()
    told = shortfalls(caplog)
    assert told
    assert len(told) == len({*told})  # once, not at every tick
    assert all(f"process=beat queue={sqs_queue.name} " in line for line in told)
