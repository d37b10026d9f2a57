"""Reading a dead-lettered SQS message back to its job, whatever the message holds."""

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from scheduler.dispatch.publisher import OutgoingMessage, encode_message
from scheduler.protocol import JobRef, job_ref_from_sqs_body

TOKEN = uuid.UUID("6f1c8f0e-2a35-4a3b-9a53-4c3f0e8b1d11")


def job_message(job_id=42):
    return encode_message(
        OutgoingMessage(
            job_id=job_id,
            dispatch_token=TOKEN,
            task_name="shop.capture",
            queue="jobs",
            eta=datetime(2026, 12, 8, 12, tzinfo=UTC),
            delay_seconds=0,
        )
    )


def envelope(headers):
    return base64.b64encode(json.dumps({"body": "", "headers": headers}).encode()).decode()


def test_a_job_message_names_its_job_and_token():
    assert job_ref_from_sqs_body(job_message()) == JobRef(job_id=42, dispatch_token=TOKEN)


def test_bytes_and_an_envelope_that_is_not_base64_are_read_too():
    plain = base64.b64decode(job_message())
    assert job_ref_from_sqs_body(plain) == JobRef(job_id=42, dispatch_token=TOKEN)
    assert job_ref_from_sqs_body(plain.decode()) == JobRef(job_id=42, dispatch_token=TOKEN)


@pytest.mark.parametrize(
    "body",
    [
        envelope({"task": "shop.ordinary", "id": "x"}),  # an ordinary Celery task message
        envelope({"scheduler_job_id": "42"}),  # half the headers
        envelope({"scheduler_job_id": "x", "scheduler_dispatch_token": str(TOKEN)}),
        envelope({"scheduler_job_id": "0", "scheduler_dispatch_token": str(TOKEN)}),
        envelope({"scheduler_job_id": "42", "scheduler_dispatch_token": "not-a-uuid"}),
        envelope(["not", "a", "mapping"]),
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b"\xff\xfe not utf-8").decode(),
        "not base64 and not JSON {",
        # Deeper than Python's JSON decoder goes; a number past its digit limit.
        "[" * 5000 + "]" * 5000,
        base64.b64encode(b"[" * 5000 + b"]" * 5000).decode(),
        "1" * 5000,
        '{"a": ' + "1" * 5000 + "}",
        "",
        None,
        42,
    ],
)
def test_anything_else_names_no_job(body):
    assert job_ref_from_sqs_body(body) is None
