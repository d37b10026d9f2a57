"""The worker's timer hands a job's message to the pool a moment before its eta."""

import base64
import json
import uuid
from datetime import UTC, datetime

from celery import current_app
from celery.utils.imports import symbol_by_name
from kombu import Message

from scheduler.dispatch.dispatcher import _messages
from scheduler.dispatch.publisher import OutgoingMessage, encode_message
from scheduler.services.dispatching import Pending
from scheduler.worker.request import HANDOFF_AHEAD
from tests.testapp.tasks import noop

ETA = datetime(2026, 12, 8, 12, 0, 0, 250000, tzinfo=UTC)


def _worker_request(envelope):
    """The request a worker makes of an SQS message's envelope, with the task's Request."""
    task = current_app.tasks[noop.name]
    message = Message(
        body=base64.b64decode(envelope["body"]),
        headers=envelope["headers"],
        content_type=envelope["content-type"],
        content_encoding=envelope["content-encoding"],
    )
    return symbol_by_name(task.Request)(message, app=current_app, task=task)


def test_a_jobs_message_is_due_in_the_worker_ahead_of_its_eta_and_the_task_sees_the_eta():
    outgoing = OutgoingMessage(
        job_id=42,
        dispatch_token=str(uuid.uuid4()),
        task_name=noop.name,
        queue="jobs",
        eta=ETA,
        delay_seconds=0,
    )
    request = _worker_request(json.loads(base64.b64decode(encode_message(outgoing))))

    assert request.eta == ETA - HANDOFF_AHEAD  # when the worker's timer hands it over
    assert request.request_dict["eta"] == ETA.isoformat()  # what the task is told


def test_any_other_message_keeps_celerys_eta():
    task_id = str(uuid.uuid4())
    plain = current_app.amqp.as_task_v2(task_id, noop.name, eta=ETA)
    envelope = {
        "body": base64.b64encode(json.dumps(plain.body).encode()),
        "headers": plain.headers,
        "content-type": "application/json",
        "content-encoding": "utf-8",
    }

    assert _worker_request(envelope).eta == ETA


def test_a_job_due_at_the_start_of_year_1_reaches_the_pool():
    # Any aware datetime is a valid run_at ("as soon as possible" when past); the worker's
    # hand-off subtracted from 0001-01-01 and overflowed, so the message was dropped as
    # an error at every re-send and the job stayed enqueued for ever.
    earliest = datetime.min.replace(tzinfo=UTC)
    job = Pending(
        job_id=42,
        task_name=noop.name,
        queue="jobs",
        run_at=earliest,
        dispatch_token=str(uuid.uuid4()),
        sends=0,
        celery_task_id=None,
    )
    [outgoing] = _messages([job], now=ETA)
    request = _worker_request(json.loads(base64.b64decode(encode_message(outgoing))))
    assert earliest < request.eta < ETA
