import base64
import json
import uuid
from datetime import UTC, datetime

from scheduler.dispatch.publisher import OutgoingMessage, encode_message
from scheduler.protocol import DISPATCH_TOKEN_HEADER, JOB_ID_HEADER, job_ref


def test_the_sqs_body_is_a_celery_protocol_2_message_for_the_jobs_own_task():
    token = uuid.uuid4()
    eta = datetime(2026, 12, 8, 12, 0, 0, 250000, tzinfo=UTC)
    body = encode_message(
        OutgoingMessage(
            job_id=42,
            dispatch_token=token,
            task_name="shop.capture",
            queue="jobs",
            eta=eta,
            delay_seconds=7,
        )
    )
    envelope = json.loads(base64.b64decode(body))
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == "shop.capture"
    assert envelope["headers"][JOB_ID_HEADER] == "42"
    assert envelope["headers"][DISPATCH_TOKEN_HEADER] == str(token)
    assert job_ref(envelope["headers"]).dispatch_token == token
    assert envelope["headers"]["eta"] == "2026-12-08T12:00:00.250000+00:00"
    assert envelope["headers"]["id"] == envelope["properties"]["correlation_id"]
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "jobs"}
    # The arguments stay in PostgreSQL.
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert (args, kwargs) == ([], {})


def test_every_message_gets_its_own_task_id_and_delivery_tag():
    message = OutgoingMessage(
        job_id=1,
        dispatch_token=uuid.uuid4(),
        task_name="t",
        queue="q",
        eta=datetime.now(UTC),
        delay_seconds=0,
    )
    first, second = (json.loads(base64.b64decode(encode_message(message))) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
