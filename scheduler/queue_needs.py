"""What jobs need of an SQS queue's attributes, and where a queue falls short of it.

``scheduler_create_queue`` gives a queue these attributes and warns of what it keeps
short of them; a worker as it starts consuming, and a dispatcher as it starts, read each
of their queues once and log the same shortfalls (:func:`check_queues`): a queue edited
by hand, or one kombu made without a dead-letter queue, would otherwise fail jobs
silently.
"""

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler.conf import MAX_RESEND_WAIT_SECONDS, scheduler_settings
from scheduler.sqs import (
    HAND_BACK_RECEIVES,
    NOT_ANSWERED,
    SideBySide,
    dead_letter_queue,
    error_code,
    get_client,
    queue_url,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

#: An unclaimed job is sent again with the same token, each copy waiting twice as long
#: as the last but at most half a day (``services.dispatching.MAX_RESEND_WAIT``), so a
#: copy always outlives the gap to the next; a day keeps few copies after a long outage.
MESSAGE_RETENTION_SECONDS = 24 * 3600
#: A message is deleted when its job starts, so it is received again only when a worker
#: died holding it or waited past the visibility timeout; five such receives make it
#: poison. Its job is not lost: the dispatcher sends a job that stays enqueued again.
MAX_RECEIVE_COUNT = 5

#: How each attribute of :func:`minimums` below its value fails jobs.
_TOO_SHORT = {
    "VisibilityTimeout": "a job's message a worker holds longer than this (until its eta, "
    "or for a free process) is delivered again, a receive more toward the dead-letter queue",
    "MessageRetentionPeriod": "after a long outage of workers, a job's last copy may expire "
    f"before the next is sent (up to {MAX_RESEND_WAIT_SECONDS // 3600} h apart), and the job "
    "waits for it",
}
#: The hints of a shortfall: scheduler_create_queue mends some, and keeps a queue's own
#: RedrivePolicy (a drop-in user's queue may carry other work), which is set by hand.
_RUN_COMMAND = "run scheduler_create_queue"
_BY_HAND = "aws sqs set-queue-attributes (scheduler_create_queue keeps a queue's own RedrivePolicy)"


def minimums() -> dict[str, int]:
    """The attributes jobs need at least a value of, with it.

    An existing queue's is raised to it when below and kept when above: a longer
    visibility timeout only delays a message whose worker died before its job started
    (the dispatcher sends a stale job again anyway), and a longer retention keeps copies
    the worker drops on arrival.
    """
    return {
        "VisibilityTimeout": scheduler_settings.SQS_VISIBILITY_TIMEOUT_SECONDS,
        "MessageRetentionPeriod": MESSAGE_RETENTION_SECONDS,
    }


def queue_attributes(dlq_arn: str) -> dict[str, str]:
    """The main queue's attributes, from the ``SCHEDULER_SQS_*`` settings.

    kombu passes the visibility timeout only when it creates a missing queue and never
    on ReceiveMessage, so the queue attribute is what the worker gets: Celery's
    ``visibility_timeout`` transport option should equal it. Long polling is passed on
    every receive by kombu and set here too for any other consumer.
    """
    minimum = minimums()
    return {
        "VisibilityTimeout": str(minimum["VisibilityTimeout"]),
        "ReceiveMessageWaitTimeSeconds": str(scheduler_settings.SQS_WAIT_TIME_SECONDS),
        "MessageRetentionPeriod": str(minimum["MessageRetentionPeriod"]),
        # A job's message carries its own DelaySeconds, which overrides the queue's; 0
        # leaves any other sender's message undelayed.
        "DelaySeconds": "0",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
        ),
    }


@dataclass(frozen=True)
class Shortfall:
    """An attribute of a queue that falls short of what jobs need."""

    attribute: str
    #: As the queue has it (``unset`` when it has none).
    value: str
    needs: str
    #: What it does to jobs, or to their monitoring.
    effect: str
    hint: str


def shortfalls(queue: str, attributes: dict[str, str]) -> list[Shortfall]:
    """Where the queue ``queue``, with ``attributes`` (GetQueueAttributes'), falls short
    of what jobs need: :func:`minimums`, and a RedrivePolicy to its own dead-letter queue
    that leaves a handed-back message receives to spare."""
    found = [
        Shortfall(key, now or "unset", f">={least}", _TOO_SHORT[key], _RUN_COMMAND)
        for key, least in minimums().items()
        if (now := attributes.get(key)) is None or int(now) < least
    ]
    own_dlq = dead_letter_queue(queue)
    policy = redrive_policy(attributes)
    if policy is None:
        found.append(
            Shortfall(
                "RedrivePolicy",
                "unset",
                own_dlq,
                "a message that keeps failing is received again without end, and the "
                "dead-letter metric and alert never see it",
                _RUN_COMMAND,
            )
        )
        return found
    target = name_in_arn(policy.get("deadLetterTargetArn"))
    if target != own_dlq:
        found.append(
            Shortfall(
                "RedrivePolicy.deadLetterTargetArn",
                target,
                own_dlq,
                "the scheduler's monitoring (scheduler_dlq_messages, the admin's monitoring "
                f"page) watches {own_dlq}, and does not count these dead letters",
                _BY_HAND,
            )
        )
    receives = str(policy.get("maxReceiveCount"))
    if receives.isdigit() and int(receives) <= HAND_BACK_RECEIVES:
        found.append(
            Shortfall(
                "RedrivePolicy.maxReceiveCount",
                receives,
                f">={HAND_BACK_RECEIVES + 1}",
                "a job's message that a busy or stopping worker handed back (received up to "
                f"{HAND_BACK_RECEIVES} times) goes to the dead-letter queue before a worker "
                "runs it, and its job waits to be sent again (SCHEDULER_STALE_AFTER_SECONDS); "
                f"{MAX_RECEIVE_COUNT} is the scheduler's",
                _BY_HAND,
            )
        )
    return found


def check_queues(queues: Sequence[str], *, process: str) -> None:
    """Read each of ``queues``' attributes once and log a warning for each shortfall.

    For a process as it starts, never on a path a job waits on: the queues are read side
    by side, and waited for :data:`~scheduler.sqs.PEEK_DEADLINE_SECONDS` at most. A queue
    SQS does not describe by then (missing, not allowed, out of reach, late) is named in
    one line per reason. Nothing is raised: the process goes on.
    """
    if not queues:
        return
    try:
        # Built here, before the threads (boto3's session is not thread-safe); without a
        # region boto3 refuses to build it.
        client = get_client(quick=True)
    except Exception as error:  # whatever it is, the process goes on
        _not_checked(process, {_reason(error): list(queues)})
        return
    # Closed once every read has ended, a late one too: a worker's pool forks again (a
    # child replaced), and no two children may share the connections this kept.
    reads = SideBySide(
        [functools.partial(_attributes, client, queue) for queue in queues], then=client.close
    )
    failed: dict[tuple[str, str], list[str]] = {}
    for queue, read in zip(queues, reads.results(), strict=True):
        if isinstance(read, dict):
            _tell(process, queue, shortfalls(queue, read))
        else:
            failed.setdefault(_reason(read), []).append(queue)
    _not_checked(process, failed)


def _attributes(client: "SQSClient", queue: str) -> dict[str, str] | Exception:
    """The queue's attributes, or what reading them raised (botocore's, or another: a
    refresh of credentials still expired raises a RuntimeError)."""
    try:
        attributes = client.get_queue_attributes(QueueUrl=queue_url(queue), AttributeNames=["All"])
    except Exception as error:  # told for the queue; the process goes on
        return error
    return {str(key): value for key, value in attributes["Attributes"].items()}


def _reason(read: Exception | None) -> tuple[str, str]:
    """Why a queue was not checked: SQS's error code, else what was raised and the first
    line it says, or ``deadline`` (``read`` None)."""
    if read is None:
        return "deadline", NOT_ANSWERED
    if code := error_code(read):
        return code, ""
    return type(read).__name__, next(iter(str(read).splitlines()), "")


def _not_checked(process: str, failed: dict[tuple[str, str], list[str]]) -> None:
    """One line for each reason (with what was said) of the queues it kept unchecked."""
    for (reason, error), queues in failed.items():
        logger.warning(
            "sqs queue not checked process=%s queue=%s reason=%s%s",
            process,
            ",".join(queues),
            reason,
            f" error={error!r}" if error else "",
        )


def _tell(process: str, queue: str, found: list[Shortfall]) -> None:
    if not found:
        logger.info("sqs queue checked process=%s queue=%s", process, queue)
    for shortfall in found:
        logger.warning(
            "sqs queue falls short process=%s queue=%s attribute=%s value=%s needs=%s "
            "effect=%r hint=%r",
            process,
            queue,
            shortfall.attribute,
            shortfall.value,
            shortfall.needs,
            shortfall.effect,
            shortfall.hint,
        )


def redrive_policy(attributes: dict[str, str]) -> dict[str, Any] | None:
    """A queue's RedrivePolicy, or None when it has none (or none that can be read)."""
    try:
        policy = json.loads(attributes.get("RedrivePolicy") or "null")
    except ValueError:
        return None
    return policy if isinstance(policy, dict) else None


def name_in_arn(arn: object) -> str:
    """The queue an SQS ARN names (``arn:aws:sqs:region:account:name``)."""
    return str(arn).rsplit(":", 1)[-1]
