"""A message's delay is counted by SQS from when it takes the message: a call made after
a slow one asks for less, so the message still reaches a worker before its eta."""

import time
import uuid
from datetime import UTC, datetime, timedelta

from scheduler.dispatch.publisher import SQS_BATCH_LIMIT, OutgoingMessage, SQSPublisher


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
        OutgoingMessage(job_id, uuid.uuid4(), "testapp.noop", "jobs", eta, delay_seconds)
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
