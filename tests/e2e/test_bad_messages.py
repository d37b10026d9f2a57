"""Malformed, forged, replayed and stale messages sent straight to a real worker's queue.

Each must be dropped with one log line (``message dropped …``), no error and no effect,
and the worker must keep going: a good job sent after all of them runs once.
"""

import base64
import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import cancel, reschedule
from scheduler.conf import scheduler_settings
from scheduler.dispatch.publisher import OutgoingMessage, encode_message
from scheduler.models import ScheduledJob
from tests.processes import wait_until
from tests.testapp.models import Effect

pytestmark = pytest.mark.timeout(240)

#: How long a worker gets to log its verdict on one message.
VERDICT_SECONDS = 15


def _enqueued(label, *, task_name="testapp.effect"):
    """A job already sent, as the dispatcher leaves it: enqueued with a token.

    Its re-send is an hour away: no copy of the dispatcher's interferes.
    """
    now = timezone.now()
    return ScheduledJob.objects.create(
        task_name=task_name,
        args=[label],
        queue=scheduler_settings.QUEUE_NAME,
        run_at=now - timedelta(seconds=1),
        status="enqueued",
        dispatch_token=uuid.uuid4(),
        enqueued_at=now,
        resend_at=now + timedelta(hours=1),
        max_attempts=3,
    )


def _body(job, *, token=None, task_name=None, job_id=None):
    return encode_message(
        OutgoingMessage(
            job_id=job_id if job_id is not None else job.pk,
            dispatch_token=token or job.dispatch_token,
            task_name=task_name or job.task_name,
            queue=scheduler_settings.QUEUE_NAME,
            eta=job.run_at,
            delay_seconds=0,
        )
    )


def _tampered(body, change):
    envelope = json.loads(base64.b64decode(body))
    change(envelope)
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def _with_arguments(envelope):
    _, _, embed = json.loads(base64.b64decode(envelope["body"]))
    payload = json.dumps([["forged"], {"amount": 10**6}, embed]).encode()
    envelope["body"] = base64.b64encode(payload).decode()


def _unreadable_headers(envelope):
    envelope["headers"]["scheduler_job_id"] = "not-a-number"


def _headers_no_mapping(envelope):
    envelope["headers"] = "not a mapping"


def _no_task_id(envelope):
    del envelope["headers"]["id"]


def _unreadable_eta(envelope):
    envelope["headers"]["eta"] = "soon"


def _pickled(envelope):
    envelope["content-type"] = "application/x-python-serialize"


def _bad_messages():
    """The job that ran once, and (name, SQS body, the job it must not touch or None)."""
    forged = _enqueued("forged")
    ran = _enqueued("replayed")
    cancelled = _enqueued("cancelled")
    moved = _enqueued("moved")
    cancelled_body, moved_body = _body(cancelled), _body(moved)
    assert cancel(cancelled)
    reschedule(moved, timezone.now() + timedelta(hours=1))
    return ran, [
        ("not base64", "%%% not a celery message %%%", None),
        ("base64 of no JSON", base64.b64encode(b"{not json").decode(), None),
        (
            "an envelope without a body",
            base64.b64encode(json.dumps({"headers": {}, "properties": {}}).encode()).decode(),
            None,
        ),
        ("headers that are no mapping", _tampered(_body(forged), _headers_no_mapping), None),
        ("a task message without an id", _tampered(_body(forged), _no_task_id), forged),
        ("an unreadable eta", _tampered(_body(forged), _unreadable_eta), forged),
        ("a serializer the worker refuses", _tampered(_body(forged), _pickled), forged),
        ("unreadable scheduler headers", _tampered(_body(forged), _unreadable_headers), forged),
        ("a forged token", _body(forged, token=uuid.uuid4()), forged),
        ("arguments in the message", _tampered(_body(forged), _with_arguments), forged),
        ("a job that does not exist", _body(forged, job_id=2**40), None),
        ("another task than the job's", _body(forged, task_name="testapp.noop"), forged),
        ("an unregistered task", _body(forged, task_name="testapp.nope"), forged),
        ("a cancelled job", cancelled_body, cancelled),
        ("a rescheduled job", moved_body, moved),
        ("a replay of a message that ran", _body(ran), ran),
    ]


def _verdict_lines(text):
    # Celery's own per-message lines (received, succeeded) come with any message.
    return [line for line in text.splitlines() if "message dropped" in line]


def _trouble_lines(text):
    return [
        line
        for line in text.splitlines()
        if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
    ]


def _output_after_verdict(worker, start):
    """The worker's log from ``start`` on, once it has judged the message (or time ran out)."""
    wait_until(lambda: bool(_verdict_lines(worker.output()[start:])), timeout=VERDICT_SECONDS)
    time.sleep(0.5)  # a second line, if any, has time to appear
    return worker.output()[start:]


def test_bad_messages_are_dropped_with_one_line_and_no_effect(worker, sqs_queue):
    ran, bad_messages = _bad_messages()

    def send(body):
        sqs_queue.client.send_message(QueueUrl=sqs_queue.url, MessageBody=body)

    # The replayed message first ran once, for real.
    send(_body(ran))
    assert wait_until(lambda: ScheduledJob.objects.get(pk=ran.pk).status == "succeeded", timeout=30)
    before = {job.pk: (job.status, job.updated_at) for job in ScheduledJob.objects.all()}

    problems = []
    for name, body, job in bad_messages:
        start = len(worker.output())
        send(body)
        new = _output_after_verdict(worker, start)
        verdicts, trouble = _verdict_lines(new), _trouble_lines(new)
        if len(verdicts) != 1 or trouble:
            problems.append(
                f"{name}: {len(verdicts)} drop lines, {len(trouble)} error lines\n{new}"
            )
        if body in new:
            problems.append(f"{name}: the message's body is in the log")
        if worker.popen.poll() is not None:
            problems.append(f"{name}: the worker exited")
            break
        if job is not None:
            current = ScheduledJob.objects.get(pk=job.pk)
            if (current.status, current.updated_at) != before[job.pk]:
                problems.append(f"{name}: job #{job.pk} changed to {current.status}")
    assert not problems, "\n\n".join(problems)

    assert Effect.objects.filter(label__in=["forged", "cancelled", "moved"]).count() == 0
    assert Effect.objects.filter(label="replayed").count() == 1
    # The worker kept going.
    good = _enqueued("good")
    send(_body(good))
    assert wait_until(lambda: Effect.objects.filter(label="good").count() == 1, timeout=30)
    assert worker.popen.poll() is None
