"""Creating the scheduler's SQS queue and its dead-letter queue, idempotently.

CreateQueue fails when the queue exists with other attributes, so each queue is
created by name alone (which returns the existing queue's URL) and its attributes are
then set with SetQueueAttributes: a second run converges instead of failing.
"""

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.conf import scheduler_settings
from scheduler.sqs import dead_letter_queue, get_client
from scheduler.validation import is_valid_queue_name

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

#: An unclaimed job is sent again with the same token, each copy waiting twice as long
#: as the last but at most half a day (``services.dispatching.MAX_RESEND_WAIT``), so a
#: copy always outlives the gap to the next; a day keeps few copies after a long outage.
MESSAGE_RETENTION_SECONDS = 24 * 3600
#: SQS's maximum: a message in the dead-letter queue is kept long enough to be examined.
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: A message is deleted when its job starts, so it is received again only when a worker
#: died holding it or waited past the visibility timeout; five such receives make it
#: poison. Its job is not lost: the dispatcher sends a job that stays enqueued again.
MAX_RECEIVE_COUNT = 5


@dataclass(frozen=True)
class QueueSetup:
    """The queue and dead-letter queue as they are after :func:`ensure_queue`."""

    url: str
    arn: str
    dlq_url: str
    dlq_arn: str
    attributes: dict[str, str]


def queue_attributes(dlq_arn: str) -> dict[str, str]:
    """The main queue's attributes, from the ``SCHEDULER_SQS_*`` settings.

    kombu passes the visibility timeout only when it creates a missing queue and never
    on ReceiveMessage, so the queue attribute is what the worker gets: Celery's
    ``visibility_timeout`` transport option should equal it. Long polling is passed on
    every receive by kombu and set here too for any other consumer.
    """
    return {
        "VisibilityTimeout": str(scheduler_settings.SQS_VISIBILITY_TIMEOUT_SECONDS),
        "ReceiveMessageWaitTimeSeconds": str(scheduler_settings.SQS_WAIT_TIME_SECONDS),
        "MessageRetentionPeriod": str(MESSAGE_RETENTION_SECONDS),
        # Each message carries its own DelaySeconds; a queue default would add to it.
        "DelaySeconds": "0",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
        ),
    }


def ensure_queue(name: str | None = None) -> QueueSetup:
    """Create or update the queue ``name`` (default ``SCHEDULER_QUEUE_NAME``) and its DLQ."""
    name = name or scheduler_settings.QUEUE_NAME
    # The DLQ name adds four characters, and must be valid too.
    if not is_valid_queue_name(dead_letter_queue(name)):
        raise ValueError(f"{name!r} is not a valid SQS queue name (1-76 letters, digits, - or _)")
    client = get_client()
    dlq_url, dlq_arn = _ensure(
        client, dead_letter_queue(name), {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
    )
    attributes = queue_attributes(dlq_arn)
    url, arn = _ensure(client, name, attributes)
    logger.info("sqs queue ready queue=%s url=%s dlq_url=%s", name, url, dlq_url)
    return QueueSetup(url=url, arn=arn, dlq_url=dlq_url, dlq_arn=dlq_arn, attributes=attributes)


def refusal(error: Exception) -> str:
    """One line on an SQS error while creating the queues: where, and what to check."""
    where = scheduler_settings.SQS_ENDPOINT_URL or f"Amazon SQS in {scheduler_settings.SQS_REGION}"
    return (
        f"SQS refused or could not be reached ({where}): {error}. Check the "
        "credentials, the region and the IAM policy (sqs:CreateQueue, "
        "sqs:SetQueueAttributes, sqs:GetQueueAttributes; README, Deploying to AWS)."
    )


def _ensure(client: "SQSClient", name: str, attributes: dict[str, str]) -> tuple[str, str]:
    url = client.create_queue(QueueName=name)["QueueUrl"]
    client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn
