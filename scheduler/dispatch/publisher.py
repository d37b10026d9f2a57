"""Sends due jobs to SQS as Celery messages, ten to a SendMessageBatch call.

A job's message is a Celery protocol-2 message for the job's own task, inside kombu's
SQS envelope, with no arguments and the job's reference in its headers
(:mod:`scheduler.protocol`): a worker runs it as that task, under its name.
The payload stays in PostgreSQL: SQS size limits do not apply and a forged or stale
message can do nothing.
"""

import base64
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from celery import current_app
from kombu.serialization import dumps

from scheduler.protocol import JobRef
from scheduler.sqs import get_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

#: SendMessageBatch takes at most ten entries.
SQS_BATCH_LIMIT = 10


@dataclass(frozen=True)
class OutgoingMessage:
    """One job to hand to SQS."""

    job_id: int
    dispatch_token: uuid.UUID
    task_name: str
    queue: str
    eta: datetime
    delay_seconds: int


@dataclass
class PublishResult:
    """Which jobs reached SQS; the others stay scheduled for the next tick."""

    sent: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    error: str | None = None


class Publisher(Protocol):
    """Hands jobs to a queue and says which arrived: SQS, or memory in tests."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Send ``messages``; a job missing from ``sent`` stays scheduled for the next tick."""
        ...


def encode_message(message: OutgoingMessage) -> str:
    """The SQS message body a Celery worker runs as the job's own task."""
    task_id = str(uuid.uuid4())
    # The eta makes the worker wait out the fraction of a second DelaySeconds cannot
    # express, so the job never starts before its run_at.
    headers, properties, body, _ = current_app.amqp.as_task_v2(
        task_id, message.task_name, args=(), kwargs={}, eta=message.eta
    )
    headers.update(JobRef(message.job_id, message.dispatch_token).headers())
    content_type, content_encoding, payload = dumps(body, serializer="json")
    envelope = {
        "body": base64.b64encode(payload.encode()).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": message.queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    # kombu's SQS transport base64-encodes the JSON envelope (sqs_base64_encoding).
    return base64.b64encode(json.dumps(envelope).encode()).decode()


class SQSPublisher:
    """A :class:`Publisher` that sends with SendMessageBatch and reports per job."""

    def __init__(self, client: "SQSClient | None" = None) -> None:
        self._client = client
        self._queue_urls: dict[str, str] = {}

    @property
    def client(self) -> "SQSClient":
        return self._client or get_client()

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Send every message; stop at the first call that fails outright (an outage)."""
        result = PublishResult()
        by_queue: dict[str, list[OutgoingMessage]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(message)
        chunks = [
            (queue, batch[start : start + SQS_BATCH_LIMIT])
            for queue, batch in by_queue.items()
            for start in range(0, len(batch), SQS_BATCH_LIMIT)
        ]
        for index, (queue, chunk) in enumerate(chunks):
            try:
                self._send_chunk(queue, chunk, result)
            except (BotoCoreError, ClientError) as error:
                result.error = f"{type(error).__name__}: {error}"
                unsent = [message for _, rest in chunks[index:] for message in rest]
                result.failed.update((message.job_id, result.error) for message in unsent)
                logger.error(
                    "sqs publish failed queue=%s unsent=%s error=%s",
                    queue,
                    len(unsent),
                    result.error,
                )
                break
        return result

    def _send_chunk(
        self, queue: str, chunk: Sequence[OutgoingMessage], result: PublishResult
    ) -> None:
        entries: list[Any] = [
            {
                "Id": str(message.job_id),
                "MessageBody": encode_message(message),
                "DelaySeconds": message.delay_seconds,
            }
            for message in chunk
        ]
        response = self.client.send_message_batch(QueueUrl=self._queue_url(queue), Entries=entries)
        result.sent.extend(int(entry["Id"]) for entry in response.get("Successful", []))
        for entry in response.get("Failed", []):
            reason = f"{entry.get('Code')}: {entry.get('Message', '')}"
            result.failed[int(entry["Id"])] = reason
            logger.warning("sqs entry rejected job_id=%s reason=%s", entry["Id"], reason)

    def _queue_url(self, queue: str) -> str:
        if queue not in self._queue_urls:
            self._queue_urls[queue] = self.client.get_queue_url(QueueName=queue)["QueueUrl"]
        return self._queue_urls[queue]
