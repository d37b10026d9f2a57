"""A message that SQS dead-letters leads back to its job, which the operator can re-send.

The message is moved by a real redrive policy of the SQS server (moto, over HTTP):
received twice without being deleted, with maxReceiveCount 1.
"""

import base64
import json
import re
import socket
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from scheduler import schedule_at
from scheduler.admin import monitoring
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import WATCHED_QUEUES, AuditEntry, ScheduledJob, watched_queues
from scheduler.sqs import dead_letter_queue, peek_dead_letters
from tests.conftest import SqsQueue
from tests.integration.admin_helpers import MONITORING, job, messages_of

pytestmark = pytest.mark.django_db

Status = ScheduledJob.Status


@pytest.fixture
def dlq_url(sqs_queue):
    """The test queue's dead-letter queue, with a redrive policy of one receive."""
    return with_dead_letter_queue(sqs_queue)


def with_dead_letter_queue(queue: SqsQueue) -> str:
    """Give ``queue`` a dead-letter queue with a redrive policy of one receive; its URL."""
    client = queue.client
    url = client.create_queue(QueueName=dead_letter_queue(queue.name))["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client.set_queue_attributes(
        QueueUrl=queue.url,
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "1"})
        },
    )
    return url


def dead_letter(sqs_queue):
    """Receive the queue's message twice without deleting it: SQS moves it to the DLQ."""
    for _ in range(2):
        sqs_queue.client.receive_message(
            QueueUrl=sqs_queue.url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )


def test_a_dead_lettered_message_is_linked_to_its_job_and_the_job_re_sent(
    sqs_queue, dlq_url, publisher, admin_client
):
    poisoned = schedule_at("testapp.noop", timezone.now())
    Dispatcher(publisher=publisher).run_once()
    poisoned.refresh_from_db()
    assert poisoned.status == Status.ENQUEUED
    dead_letter(sqs_queue)
    # An ordinary Celery message (no job) dead-lettered too.
    sqs_queue.client.send_message(
        QueueUrl=dlq_url,
        MessageBody=base64.b64encode(json.dumps({"headers": {"task": "x"}}).encode()).decode(),
    )

    letters = peek_dead_letters(sqs_queue.name)
    assert (letters.depth, letters.job_ids, letters.unreadable, letters.error) == (
        2,
        [poisoned.pk],
        1,
        "",
    )
    # Peeking leaves the messages where they are.
    assert peek_dead_letters(sqs_queue.name).depth == 2
    assert sqs_queue.count() == 0

    [dlq] = monitoring.snapshot().dead_letters
    assert [job.pk for job in dlq.jobs] == [poisoned.pk]
    content = admin_client.get(MONITORING).content.decode()
    job_url = reverse("admin:scheduler_scheduledjob_change", args=[poisoned.pk])
    assert '<span class="monitoring-figure dlq-depth monitoring-bad">2</span>' in content
    assert f'<a href="{job_url}">#{poisoned.pk}</a>' in content
    assert "1 message names no job." in content

    # From the job's page, through the service: same token, re-sent at the next tick.
    response = admin_client.post(
        reverse("admin:scheduler_scheduledjob_resend", args=[poisoned.pk]),
        {"reason": "dead-lettered"},
        follow=True,
    )
    assert "sent again at the dispatcher's next tick" in messages_of(response)[0]
    resent = ScheduledJob.objects.get(pk=poisoned.pk)
    assert (resent.status, resent.dispatch_token) == (Status.ENQUEUED, poisoned.dispatch_token)
    assert resent.resend_at is not None
    assert AuditEntry.objects.get().action == AuditEntry.Action.RESEND


def test_a_missing_dead_letter_queue_is_reported_not_raised(sqs_queue):
    letters = peek_dead_letters(sqs_queue.name)
    assert letters.depth is None
    assert "NonExistentQueue" in letters.error or "does not exist" in letters.error


def test_a_job_purged_since_its_message_was_dead_lettered_is_named(sqs_queue, dlq_url, publisher):
    gone = schedule_at("testapp.noop", timezone.now())
    Dispatcher(publisher=publisher).run_once()
    dead_letter(sqs_queue)
    ScheduledJob.objects.filter(pk=gone.pk).delete()
    [dlq] = monitoring.dead_letter_queues([peek_dead_letters(sqs_queue.name)])
    assert (dlq.jobs, dlq.missing_ids) == ([], [gone.pk])


def test_the_dead_letters_of_every_queue_jobs_were_sent_to_are_shown(
    sqs_queue, dlq_url, publisher, admin_client
):
    # A task routed to a queue of its own: its dead letters are watched too.
    payments = sqs_queue.client.create_queue(QueueName=f"{sqs_queue.name}-payments")["QueueUrl"]
    other = SqsQueue(f"{sqs_queue.name}-payments", payments, sqs_queue.client)
    with_dead_letter_queue(other)
    # A queue kombu created, without a dead-letter queue.
    unwatched = f"{sqs_queue.name}-plain"
    sqs_queue.client.create_queue(QueueName=unwatched)
    capture = schedule_at("testapp.noop", timezone.now(), queue=other.name)
    schedule_at("testapp.noop", timezone.now() + timedelta(days=14), queue=unwatched)
    Dispatcher(publisher=publisher).run_once()
    dead_letter(other)

    dlqs = monitoring.snapshot().dead_letters
    assert [(dlq.letters.queue, dlq.letters.depth) for dlq in dlqs] == [
        (f"{sqs_queue.name}-dlq", 0),
        (f"{other.name}-dlq", 1),
        (f"{unwatched}-dlq", None),
    ]
    assert [job.pk for job in dlqs[1].jobs] == [capture.pk]
    content = admin_client.get(MONITORING).content.decode()
    assert f'<div class="dlq" data-queue="{other.name}-dlq">' in content
    assert '<span class="monitoring-figure dlq-depth monitoring-bad">1</span>' in content
    job_url = reverse("admin:scheduler_scheduledjob_change", args=[capture.pk])
    assert f'<a href="{job_url}">#{capture.pk}</a>' in content
    assert f"{unwatched}-dlq is unavailable" in content


def test_the_queues_watched_are_the_default_then_the_others_by_name(settings):
    for name in ("payments", "emails", "scheduler-jobs", "reports", "emails"):
        job(queue=name)
    assert watched_queues(default="reports") == ["reports", "emails", "payments"]
    assert watched_queues(default="reports", limit=2) == ["reports", "emails"]
    assert watched_queues(default="scheduler-jobs") == [
        "scheduler-jobs",
        "emails",
        "payments",
        "reports",
    ]


def test_a_scrape_waits_for_a_silent_sqs_no_longer_than_its_slowest_call(settings):
    # SQS takes connections and never answers: each call gives up after its read timeout.
    # Queue after queue (eight at a time), 25 dead-letter queues took four timeouts, and
    # Prometheus gives up on a scrape after 10 s.
    for n in range(WATCHED_QUEUES):
        job(queue=f"queue-{n:02}")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        settings.SCHEDULER_SQS_ENDPOINT_URL = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        response = Client().get("/metrics")
        waited = time.monotonic() - started
    assert response.status_code == 200
    readable = re.findall(r"^scheduler_dlq_readable\{.*\} (\S+)$", response.text, re.MULTILINE)
    assert readable == ["0.0"] * WATCHED_QUEUES
    assert waited < 4.5, waited
