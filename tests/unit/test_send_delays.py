"""A message's delay is counted by SQS from when it takes the message: a call made after
a slow one asks for less, so the message still reaches a worker before its eta."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from scheduler.dispatch.publisher import SQS_BATCH_LIMIT, OutgoingMessage, SQSPublisher
from scheduler.sqs import get_client


class SlowFirstCallClient:
    """An SQS client whose first SendMessageBatch call takes ``seconds``; it records the
    DelaySeconds of every call's entries."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[list[int]] = []

    def get_queue_url(self, *, QueueName):  # noqa: N803 - boto3's argument names
        return {"QueueUrl": f"https://sqs.example/{QueueName}"}

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803 - boto3's argument names
        self.calls.append([entry["DelaySeconds"] for entry in Entries])
        if len(self.calls) == 1:
            time.sleep(self.seconds)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries]}


def _messages(count: int, delay_seconds: int) -> list[OutgoingMessage]:
    eta = datetime.now(UTC) + timedelta(seconds=delay_seconds + 2)
    return [
        OutgoingMessage(job_id, str(uuid.uuid4()), "testapp.noop", "jobs", eta, delay_seconds)
        for job_id in range(1, count + 1)
    ]


def test_a_call_made_after_a_slow_one_asks_for_the_delay_less_the_seconds_it_waited():
    client = SlowFirstCallClient(seconds=2.5)
    publisher = SQSPublisher(client=client)
    publisher.concurrency.current = 1  # the calls go one after another
    result = publisher.publish(_messages(2 * SQS_BATCH_LIMIT, delay_seconds=120))
    assert len(result.sent) == 2 * SQS_BATCH_LIMIT
    # The second call began 2.5 s after the publish: two whole seconds less.
    assert client.calls == [[120] * SQS_BATCH_LIMIT, [118] * SQS_BATCH_LIMIT]


def test_a_delay_is_never_asked_below_zero():
    client = SlowFirstCallClient(seconds=1.1)
    publisher = SQSPublisher(client=client)
    publisher.concurrency.current = 1
    publisher.publish(_messages(2 * SQS_BATCH_LIMIT, delay_seconds=0))
    assert client.calls == [[0] * SQS_BATCH_LIMIT] * 2


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "SendMessageBatch")


class FailingFirstCallClient(SlowFirstCallClient):
    """Its first SendMessageBatch call takes ``seconds``, then fails with ``error``."""

    def __init__(self, seconds: float, error: Exception) -> None:
        super().__init__(seconds)
        self.error = error

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803 - boto3's argument names
        response = super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        if len(self.calls) == 1:
            raise self.error
        return response


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="https://sqs.example"),
        EndpointConnectionError(endpoint_url="https://sqs.example"),
        _client_error("InternalError", 500),
    ],
    ids=["read-timeout", "connection", "5xx"],
)
def test_a_call_tried_again_asks_for_the_delay_less_the_seconds_its_first_try_took(error, caplog):
    # botocore's own retry sent the same DelaySeconds after a 10 s read timeout: the
    # messages reached the workers late.
    client = FailingFirstCallClient(seconds=2.5, error=error)
    publisher = SQSPublisher(client=client)
    result = publisher.publish(_messages(SQS_BATCH_LIMIT, delay_seconds=120))
    assert len(result.sent) == SQS_BATCH_LIMIT
    assert result.error is None
    assert client.calls == [[120] * SQS_BATCH_LIMIT, [118] * SQS_BATCH_LIMIT]
    # Which queue, and how many jobs: with several queues, the line named neither.
    [line] = [r.getMessage() for r in caplog.records if "sqs send tried again" in r.getMessage()]
    assert f"queue=jobs messages={SQS_BATCH_LIMIT} attempt=2 " in line, line


def test_a_call_sqs_refuses_for_good_is_not_tried_again():
    refused = _client_error("AWS.SimpleQueueService.NonExistentQueue", 400)
    client = FailingFirstCallClient(seconds=0, error=refused)
    result = SQSPublisher(client=client).publish(_messages(SQS_BATCH_LIMIT, delay_seconds=120))
    assert (len(client.calls), result.sent, len(result.failed)) == (1, [], SQS_BATCH_LIMIT)


def test_botocore_tries_a_send_only_once_so_that_the_publisher_sets_each_delay():
    assert get_client().meta.config.retries["total_max_attempts"] == 1


def test_a_delay_counts_from_when_it_was_computed_not_from_the_publish_call():
    # Computed 3.5 s before the publish (a slow claim, a queue URL looked up), with
    # 120.9 s to go then: 117.4 s left at the first call, so 117.
    client = SlowFirstCallClient(seconds=2.5)
    publisher = SQSPublisher(client=client)
    publisher.concurrency.current = 1
    computed = time.monotonic() - 3.5
    messages = [
        message._replace(delay_from=computed + 0.9)
        for message in _messages(2 * SQS_BATCH_LIMIT, delay_seconds=120)
    ]
    publisher.publish(messages)
    # The second call, 2.5 s after the first: 114.9 s left, so 114.
    assert client.calls == [[117] * SQS_BATCH_LIMIT, [114] * SQS_BATCH_LIMIT]
