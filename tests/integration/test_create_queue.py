"""`scheduler_create_queue` against the SQS server: one queue, a DLQ, the same on a rerun."""

import io
import json
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from scheduler.dispatch.queues import (
    DLQ_RETENTION_SECONDS,
    MAX_RECEIVE_COUNT,
    MESSAGE_RETENTION_SECONDS,
)
from tests.conftest import sqs_client


@pytest.fixture
def queue_name(sqs_endpoint: str, settings: Any) -> str:
    name = f"create-{uuid.uuid4().hex[:12]}"
    settings.SCHEDULER_SQS_ENDPOINT_URL = sqs_endpoint
    settings.SCHEDULER_QUEUE_NAME = name
    return name


@pytest.fixture
def client(sqs_endpoint: str) -> Any:
    return sqs_client(sqs_endpoint)


def attributes(client: Any, name: str) -> dict[str, str]:
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    result: dict[str, str] = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return result


def test_creates_queue_and_dead_letter_queue_idempotently(
    queue_name: str, client: Any, settings: Any
) -> None:
    out = io.StringIO()
    call_command("scheduler_create_queue", stdout=out)
    # A changed setting is applied by the second run instead of failing on the name.
    settings.SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS = 600
    call_command("scheduler_create_queue", stdout=out)

    names = [
        url.rsplit("/", 1)[-1]
        for url in client.list_queues(QueueNamePrefix=queue_name)["QueueUrls"]
    ]
    assert sorted(names) == [queue_name, f"{queue_name}-dlq"]

    main, dlq = attributes(client, queue_name), attributes(client, f"{queue_name}-dlq")
    assert main["VisibilityTimeout"] == "600"
    assert main["ReceiveMessageWaitTimeSeconds"] == str(
        settings.CELERY_BROKER_TRANSPORT_OPTIONS["wait_time_seconds"]
    )
    assert main["MessageRetentionPeriod"] == str(MESSAGE_RETENTION_SECONDS)
    assert main["DelaySeconds"] == "0"
    assert json.loads(main["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    assert dlq["MessageRetentionPeriod"] == str(DLQ_RETENTION_SECONDS)
    assert "RedrivePolicy" not in dlq
    assert f"queue url={client.get_queue_url(QueueName=queue_name)['QueueUrl']}" in out.getvalue()


def test_rejects_a_name_sqs_would_refuse(queue_name: str) -> None:
    with pytest.raises(CommandError, match="not a valid SQS queue name"):
        call_command("scheduler_create_queue", "--name", "no spaces allowed")


def test_sqs_out_of_reach_is_one_clear_line(settings: Any) -> None:
    # The operator's one deploy step ended in a 40-line botocore traceback.
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"
    with pytest.raises(CommandError, match=r"SQS refused or could not be reached.*127\.0\.0\.1:9"):
        call_command("scheduler_create_queue", "--name", f"create-{uuid.uuid4().hex[:12]}")


def test_an_empty_name_is_refused_not_read_as_the_default(queue_name: str, client: Any) -> None:
    with pytest.raises(CommandError, match="--name"):
        call_command("scheduler_create_queue", "--name", "")
    assert not client.list_queues(QueueNamePrefix=queue_name).get("QueueUrls")
