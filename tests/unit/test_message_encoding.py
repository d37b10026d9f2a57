import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from celery import current_app
from kombu import Connection

from scheduler.dispatch.publisher import MessageEncoder, OutgoingMessage, encode_message
from scheduler.protocol import (
    DISPATCH_TOKEN_HEADER,
    JOB_ID_HEADER,
    PROTOCOL_HEADER,
    JobRef,
    MalformedMessageError,
    job_ref,
    named_job_id,
)


def _message(**fields):
    values = {
        "job_id": 42,
        "dispatch_token": str(uuid.uuid4()),
        "task_name": "shop.capture",
        "queue": "jobs",
        "eta": datetime(2026, 12, 8, 12, 0, 0, 250000, tzinfo=UTC),
        "delay_seconds": 7,
    }
    return OutgoingMessage(**{**values, **fields})


def _decode(body):
    return json.loads(base64.b64decode(body))


def test_the_sqs_body_is_a_celery_protocol_2_message_for_the_jobs_own_task():
    message = _message()
    envelope = _decode(encode_message(message))
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == "shop.capture"
    assert envelope["headers"][JOB_ID_HEADER] == "42"
    assert envelope["headers"][DISPATCH_TOKEN_HEADER] == str(message.dispatch_token)
    assert envelope["headers"][PROTOCOL_HEADER] == "1"
    assert str(job_ref(envelope["headers"]).dispatch_token) == message.dispatch_token
    assert envelope["headers"]["eta"] == "2026-12-08T12:00:00.250000+00:00"
    assert envelope["headers"]["id"] == envelope["properties"]["correlation_id"]
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "jobs"}
    # As Celery's send_task: the worker keeps the result or not as the task says (False
    # kept it for a task with ignore_result=True).
    assert envelope["headers"]["ignore_result"] is None
    # The arguments stay in PostgreSQL.
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert (args, kwargs) == ([], {})


def test_every_message_gets_its_own_task_id_and_delivery_tag():
    message = _message()
    first, second = (_decode(encode_message(message)) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def celery_envelope(message, *, task_id, delivery_tag):
    """The envelope Celery's own ``send_task`` makes of ``message`` with kombu.

    kombu's SQS transport is its virtual transport, whose envelope the in-memory one
    keeps as it is; SQS then only base64-encodes it as JSON. kombu draws its own
    delivery tag, replaced by ``delivery_tag``.
    """
    task = current_app.amqp.as_task_v2(
        task_id, message.task_name, args=(), kwargs={}, eta=message.eta, ignore_result=None
    )
    task.headers.update(JobRef(message.job_id, message.dispatch_token).headers())
    with Connection("memory://") as connection:
        channel = connection.default_channel
        current_app.amqp.send_task_message(
            connection.Producer(channel), message.task_name, task, queue=message.queue, retry=False
        )
        envelope = channel._get(message.queue)
    envelope["properties"]["delivery_tag"] = delivery_tag
    return envelope


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"task_name": "payments.capture_payment", "queue": "other-queue"},
        {"job_id": 9_000_000_000, "eta": datetime(2027, 1, 1, tzinfo=UTC)},
        {"task_name": 'odd "name" \\ é', "queue": "q_1"},
        {"task_name": "100% odd %(eta)s %s", "queue": "q%"},
    ],
)
def test_the_template_encodes_exactly_what_celery_encodes(fields):
    encoder = MessageEncoder()
    for _ in range(3):  # the first builds the template, the others reuse it
        message = _message(dispatch_token=str(uuid.uuid4()), **fields)
        ours = _decode(encoder.encode(message))
        expected = celery_envelope(
            message,
            task_id=ours["headers"]["id"],
            delivery_tag=ours["properties"]["delivery_tag"],
        )
        assert ours == expected
        uuid.UUID(ours["headers"]["id"])
        uuid.UUID(ours["properties"]["delivery_tag"])


def test_celery_encodes_once_per_task_and_queue_not_once_per_job(monkeypatch):
    calls = []
    real = current_app.amqp.as_task_v2

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(current_app.amqp, "as_task_v2", counting)
    encoder = MessageEncoder()
    for job_id in range(1, 101):
        encoder.encode(_message(job_id=job_id))
    encoder.encode(_message(task_name="other.task"))
    encoder.encode(_message(queue="other-queue"))
    assert calls == ["shop.capture", "other.task", "shop.capture"]


def test_task_ids_and_delivery_tags_are_random_version_4_uuids():
    envelopes = [_decode(encode_message(_message())) for _ in range(200)]
    drawn = [e["headers"]["id"] for e in envelopes] + [
        e["properties"]["delivery_tag"] for e in envelopes
    ]
    for text in drawn:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    assert len(set(drawn)) == len(drawn)


@pytest.mark.parametrize("task_id", ["my-own-id", 'quote " backslash \\ é %s'])
def test_a_celery_calls_task_id_is_the_messages_whatever_it_holds(task_id):
    envelope = _decode(encode_message(_message(celery_task_id=task_id)))
    assert envelope["headers"]["id"] == envelope["properties"]["correlation_id"] == task_id
    fresh = [_decode(encode_message(_message()))["headers"]["id"] for _ in range(2)]
    assert fresh[0] != fresh[1]


def test_a_message_of_another_protocol_version_is_not_read_as_this_ones():
    # A later release may change what a job's message means: a worker of this one must
    # not run it as it reads it (as an ordinary call, say, with no arguments).
    ref = JobRef(42, uuid.uuid4())
    assert job_ref(ref.headers()) == ref
    # Before the version header (this release's pre-releases, hand-made messages): 1.
    legacy = {JOB_ID_HEADER: "42", DISPATCH_TOKEN_HEADER: str(ref.dispatch_token)}
    assert job_ref(legacy) == ref
    for headers in ({**ref.headers(), PROTOCOL_HEADER: "2"}, {PROTOCOL_HEADER: "2"}):
        with pytest.raises(MalformedMessageError, match="protocol 2") as error:
            job_ref(headers)
        assert error.value.reason == "unknown-protocol"
        # Its log lines still name the job.
        assert named_job_id(headers) == (42 if JOB_ID_HEADER in headers else None)
    assert job_ref({"task": "shop.capture"}) is None
