"""Creating the scheduler's SQS queue and its dead-letter queue, idempotently.

A missing queue is created with the attributes below. An existing one may carry other
work than jobs (Celery's default queue, for a drop-in user), so it keeps whatever
serves jobs as well: a longer visibility timeout or retention, its own dead-letter
queue, its default delay. Only what falls short of what jobs need is raised, and a
dead-letter queue is added to a queue without one: a second run changes nothing.
"""

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from scheduler.conf import scheduler_settings
from scheduler.queue_needs import (
    Shortfall,
    minimums,
    name_in_arn,
    queue_attributes,
    redrive_policy,
    shortfalls,
)
from scheduler.registry import sqs_queue_name
from scheduler.sqs import (
    DLQ_SUFFIX,
    MISSING_QUEUE_CODES,
    dead_letter_queue,
    error_code,
    get_client,
    region,
)
from scheduler.validation import QUEUE_NAME_RULE, is_valid_queue_name

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

#: SQS's maximum: a message in the dead-letter queue is kept long enough to be examined.
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
#: SQS's longest queue name; a dead-letter queue's name adds ``DLQ_SUFFIX`` to its queue's.
_LONGEST_NAME = 80


@dataclass(frozen=True)
class QueueSetup:
    """The queue and its dead-letter queue after :func:`ensure_queue`, and what it did."""

    url: str
    arn: str
    dlq_arn: str
    #: A line for each queue created and each attribute set, changed or kept.
    done: list[str] = field(default_factory=list)
    #: What about the queue as it was kept may fail jobs or their monitoring.
    warnings: list[str] = field(default_factory=list)


def ensure_queue(name: str | None = None) -> QueueSetup:
    """Create the queue of the Celery queue ``name`` (default ``SCHEDULER_QUEUE_NAME``)
    and its dead-letter queue, or bring an existing one up to what jobs need.

    ``name`` is translated to the SQS queue kombu polls for it (``reports.slow`` is
    ``reports-slow``). Raises ValueError for a name that gives no usable queue.
    """
    given = name or scheduler_settings.QUEUE_NAME
    queue = _queue_name(given)
    done = [] if queue == given else [f"the Celery queue {given!r} is the SQS queue {queue!r}"]
    client = get_client()
    url, current = _existing(client, queue)
    kept = redrive_policy(current)
    own_dlq = dead_letter_queue(queue)
    if kept is None or name_in_arn(kept.get("deadLetterTargetArn")) == own_dlq:
        dlq_arn = _ensure_dead_letter_queue(client, own_dlq, done)
    else:
        dlq_arn = str(kept.get("deadLetterTargetArn"))
    wanted = queue_attributes(dlq_arn)
    if url is None:
        url = client.create_queue(QueueName=queue, Attributes=wanted)["QueueUrl"]  # type: ignore[arg-type]
        done.append(f"created {queue}: " + ", ".join(f"{k}={v}" for k, v in wanted.items()))
        made = wanted
    else:
        changes = _changes(queue, current, wanted, done)
        if changes:
            client.set_queue_attributes(QueueUrl=url, Attributes=changes)  # type: ignore[arg-type]
        made = {**current, **changes}
    logger.info("sqs queue ready queue=%s url=%s dlq_arn=%s", queue, url, dlq_arn)
    arn = _arn(client, url, current)
    # What it kept short of what jobs need: a queue's own RedrivePolicy, as workers and
    # dispatchers tell of it as they start.
    warnings = [_warning(queue, shortfall) for shortfall in shortfalls(queue, made)]
    return QueueSetup(url=url, arn=arn, dlq_arn=dlq_arn, done=done, warnings=warnings)


def refusal(error: Exception) -> str:
    """One line on an SQS error while creating the queues: where, and what to check."""
    where = scheduler_settings.SQS_ENDPOINT_URL or (
        f"Amazon SQS in {found}"
        if (found := region())
        else "Amazon SQS, no region set: SCHEDULER_SQS_REGION or AWS_DEFAULT_REGION"
    )
    return (
        f"SQS refused or could not be reached ({where}): {error}. Check the "
        "credentials, the region and the IAM policy (sqs:GetQueueUrl, sqs:CreateQueue, "
        "sqs:SetQueueAttributes, sqs:GetQueueAttributes; README, Deploying to AWS)."
    )


def _queue_name(given: str) -> str:
    """The SQS queue of the Celery queue ``given``, if the command may make it."""
    queue = sqs_queue_name(given)
    called = repr(given) if queue == given else f"{given!r} (the SQS queue {queue!r})"
    if not is_valid_queue_name(queue):
        raise ValueError(f"{called} is not a valid SQS queue name. {QUEUE_NAME_RULE}")
    if queue.endswith(DLQ_SUFFIX):
        source = queue.removesuffix(DLQ_SUFFIX)
        raise ValueError(
            f"{called} is the name of {source!r}'s dead-letter queue, made with it: as a "
            "queue of jobs it would keep messages a day, not 14, and get a dead-letter "
            f"queue of its own. Run scheduler_create_queue --name {source}"
        )
    dlq = dead_letter_queue(queue)
    if not is_valid_queue_name(dlq):
        longest = _LONGEST_NAME - len(DLQ_SUFFIX)
        raise ValueError(
            f"{called} leaves no room for its dead-letter queue: {dlq!r} would be "
            f"{len(dlq)} characters, over SQS's {_LONGEST_NAME}. Use a queue name of at "
            f"most {longest}."
        )
    return queue


def _existing(client: "SQSClient", name: str) -> tuple[str | None, dict[str, str]]:
    """The URL and attributes of the queue ``name``; None and none when it does not exist."""
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error_code(error) in MISSING_QUEUE_CODES:
            return None, {}
        raise
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return url, {str(key): value for key, value in attributes.items()}


def _ensure_dead_letter_queue(client: "SQSClient", name: str, done: list[str]) -> str:
    """The ARN of the dead-letter queue ``name``, created or its retention raised."""
    url, current = _existing(client, name)
    wanted = {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
    if url is None:
        url = client.create_queue(QueueName=name, Attributes=wanted)["QueueUrl"]  # type: ignore[arg-type]
        done.append(f"created {name}: MessageRetentionPeriod={DLQ_RETENTION_SECONDS}")
    elif changes := _changes(name, current, wanted, done):
        client.set_queue_attributes(QueueUrl=url, Attributes=changes)  # type: ignore[arg-type]
    return _arn(client, url, current)


def _changes(
    name: str, current: dict[str, str], wanted: dict[str, str], done: list[str]
) -> dict[str, str]:
    """The attributes of the existing queue ``name`` to set, each said in ``done``."""
    changes: dict[str, str] = {}
    for key, value in wanted.items():
        now = current.get(key)
        if key == "RedrivePolicy" and now:
            policy = redrive_policy(current) or {}
            done.append(
                f"{name}: RedrivePolicy kept (dead letters to "
                f"{name_in_arn(policy.get('deadLetterTargetArn'))} after "
                f"{policy.get('maxReceiveCount')} receives)"
            )
        elif key == "DelaySeconds" and now is not None:
            # Each job's message carries its own delay; other senders' keep the queue's.
            done.append(f"{name}: DelaySeconds={now} kept")
        elif now == value:
            done.append(f"{name}: {key}={now} kept")
        elif key in minimums() and now is not None and int(now) > int(value):
            done.append(f"{name}: {key}={now} kept (longer than {value})")
        else:
            changes[key] = value
            done.append(f"{name}: {key} {now if now is not None else 'unset'} changed to {value}")
    return changes


def _warning(name: str, shortfall: Shortfall) -> str:
    """What the command says of an attribute of the queue ``name`` it kept short."""
    return (
        f"{name}: {shortfall.attribute}={shortfall.value}, jobs need {shortfall.needs}: "
        f"{shortfall.effect}. Hint: {shortfall.hint}."
    )


def _arn(client: "SQSClient", url: str, current: dict[str, str]) -> str:
    """The queue's ARN: among its ``current`` attributes if it existed, else asked."""
    if "QueueArn" in current:
        return current["QueueArn"]
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
