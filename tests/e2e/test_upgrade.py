"""Upgrading from 0.1.0: the messages its dispatcher left in SQS run on this worker.

0.1.0 sent each job up to five minutes ahead as a ``scheduler.execute_job(job_id,
dispatch_token)`` task message. Those still in SQS when this version's workers take over
run their jobs on time, once, through the same claim as this version's messages.
"""

import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone
from kombu import Connection

from scheduler.conf import scheduler_settings
from scheduler.models import ScheduledJob
from tests.conftest import SqsQueue
from tests.processes import Process, wait_until
from tests.testapp.models import Effect

pytestmark = pytest.mark.timeout(120)


def _sent_by_0_1(job: ScheduledJob) -> ScheduledJob:
    """``job`` as 0.1.0's dispatcher left it, after this version's migrations."""
    job.status = ScheduledJob.Status.ENQUEUED
    job.dispatch_token = uuid.uuid4()
    job.enqueued_at = timezone.now()
    job.sends = 1
    # Migration 0006 gives it a re-send STALE_AFTER after its run_at.
    job.resend_at = job.run_at + timedelta(seconds=scheduler_settings.STALE_AFTER_SECONDS)
    job.save()
    return job


def _drops(worker: Process) -> list[str]:
    return [line for line in worker.output().splitlines() if "message dropped" in line]


def test_a_message_of_0_1_runs_its_job_on_time_and_once(
    worker: Process, broker: Connection, sqs_queue: SqsQueue
):
    run_at = timezone.now() + timedelta(seconds=3)
    job = _sent_by_0_1(
        ScheduledJob.objects.create(
            task_name="testapp.effect",
            args=["upgraded"],
            queue=sqs_queue.name,
            run_at=run_at,
            max_attempts=3,
        )
    )

    def send(job_id: object, token: object) -> None:
        # 0.1.0's message, as Celery publishes it.
        current_app.send_task(
            "scheduler.execute_job",
            args=[job_id, token],
            eta=run_at,
            queue=sqs_queue.name,
            connection=broker,
        )

    # 0.1.0 sent the message with a DelaySeconds ending at run_at; any earlier is as
    # good, since the message's eta holds it.
    send(job.pk, str(job.dispatch_token))
    assert wait_until(lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=30)
    job.refresh_from_db()
    [effect] = Effect.objects.filter(label="upgraded")
    assert job.started_at is not None
    assert run_at <= job.started_at < run_at + timedelta(seconds=2)
    assert effect.at >= run_at
    [attempt] = job.history.all()
    assert (attempt.dispatch_token, attempt.outcome) == (job.dispatch_token, "succeeded")

    # A duplicate of the message, one whose job is gone, and an unreadable one: dropped,
    # one line each, and the job ran once.
    send(job.pk, str(job.dispatch_token))
    send(2**40, str(uuid.uuid4()))
    send("not-a-number", "x")
    assert wait_until(lambda: len(_drops(worker)) == 3, timeout=30), worker.output()
    reasons = sorted(line.split("reason=")[1].split()[0] for line in _drops(worker))
    assert reasons == ["malformed", "not-current", "not-current"]
    assert Effect.objects.filter(label="upgraded").count() == 1
    assert worker.popen.poll() is None
