import base64
import json
import uuid
from datetime import UTC, datetime

from scheduler.dispatch.publisher import EXECUTE_TASK_NAME, OutgoingMessage, encode_message


def test_the_sqs_body_is_a_celery_protocol_2_message_in_kombus_envelope():
    token = uuid.uuid4()
    eta = datetime(2026, 12, 8, 12, 0, 0, 250000, tzinfo=UTC)
    body = encode_message(
        OutgoingMessage(job_id=42, dispatch_token=token, queue="jobs", eta=eta, delay_seconds=7)
    )
    envelope = json.loads(base64.b64decode(body))
    assert envelope["content-type"] == "application/json"
    assert envelope["headers"]["task"] == EXECUTE_TASK_NAME
    assert envelope["headers"]["eta"] == "2026-12-08T12:00:00.250000+00:00"
    assert envelope["headers"]["id"] == envelope["properties"]["correlation_id"]
    assert envelope["properties"]["body_encoding"] == "base64"
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "jobs"}
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert (args, kwargs) == ([42, str(token)], {})


def test_every_message_gets_its_own_task_id_and_delivery_tag():
    message = OutgoingMessage(
        job_id=1, dispatch_token=uuid.uuid4(), queue="q", eta=datetime.now(UTC), delay_seconds=0
    )
    first, second = (json.loads(base64.b64decode(encode_message(message))) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
