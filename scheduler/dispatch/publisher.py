"""Sends due jobs to SQS as Celery messages, ten to a SendMessageBatch call, concurrently.

A job's message is a Celery protocol-2 message for the job's own task, inside kombu's
SQS envelope, with no arguments and the job's reference in its headers
(:mod:`scheduler.protocol`): a worker runs it as that task, under its name.
The payload stays in PostgreSQL: SQS size limits do not apply and a forged or stale
message can do nothing.
"""

import base64
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from celery import current_app
from kombu.serialization import dumps

from scheduler.backoff import exponential_backoff
from scheduler.dispatch.concurrency import SendConcurrency
from scheduler.protocol import (
    DISPATCH_TOKEN_HEADER,
    JOB_ID_HEADER,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
)
from scheduler.sqs import MISSING_QUEUE_CODES, error_code, get_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

#: SendMessageBatch takes at most ten entries.
SQS_BATCH_LIMIT = 10
#: The most SendMessageBatch calls a publisher has in flight at once: a batch of 100 jobs
#: (the default SCHEDULER_BATCH_SIZE) can go out in one round trip. boto3 clients are
#: thread-safe, and their connection pool holds ten connections.
SEND_THREADS = 10
#: Tries of one SendMessageBatch call; each asks for the delays less the time gone.
SEND_ATTEMPTS = 3
#: A publish starts no call (nor try) after this long: the messages left fail unsent, as
#: in an outage, and their jobs wait for the next batch. The batch's rows stay locked
#: while it sends, and the claim's transaction is ended by PostgreSQL once idle longer
#: (:data:`scheduler.dispatch.dispatcher.CLAIM_IDLE_TIMEOUT`): against an SQS that
#: answers slowly, a batch's calls one after another (a chunk sent one message to a
#: call, a batch of more than a hundred jobs) would take minutes.
PUBLISH_SECONDS = 90.0


class OutgoingMessage(NamedTuple):
    """One job to hand to SQS.

    A named tuple: one is made per job, and a frozen dataclass costs twice as much.
    """

    job_id: int
    #: As text, as the job's row returns it to the claim.
    dispatch_token: str
    task_name: str
    queue: str
    eta: datetime
    #: How long SQS holds the message back, as of ``delay_from``: a call made later asks
    #: for the delay less the time gone since, so the message lands no later for it.
    delay_seconds: int
    #: The message's Celery task id: that of the Celery call that made the job (its
    #: AsyncResult's), or a fresh one per message.
    celery_task_id: str | None = None
    #: When (``time.monotonic()``) ``delay_seconds`` were exactly what was left until SQS
    #: should release the message: the dispatcher computes the delay before it claims
    #: the jobs, and the publisher may look up a queue's URL before it sends, so each
    #: call counts the time gone from here, to the fraction of a second. None: from the
    #: start of the publish's sends, in whole seconds.
    delay_from: float | None = None


@dataclass
class PublishResult:
    """Which jobs reached SQS; the others stay as they were for the next tick."""

    sent: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    #: Why SQS failed, when it did for more than queues it refused.
    error: str | None = None
    #: The queues SQS refused for good (one that does not exist, one the dispatcher may
    #: not send to), with what it said: their jobs are in ``failed``.
    refused_queues: dict[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    """Hands jobs to a queue and says which arrived: SQS, or memory in tests."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Send ``messages``; a job missing from ``sent`` stays as it was for the next tick."""
        ...


#: The per-message fields of a template, each replaced by a marker while Celery encodes.
_JOB_FIELDS = (JOB_ID_HEADER, DISPATCH_TOKEN_HEADER)
_FIELDS = ("task_id", "eta", "delivery_tag", *_JOB_FIELDS)
#: The variant digit of a random UUID (RFC 4122: binary 10xx) for each random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _random_uuid() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, at a third of its cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class MessageEncoder:
    """Encodes jobs' messages from one template per task and queue, built from Celery.

    Celery's ``as_task_v2`` output (and kombu's SQS envelope around it) is made once
    per task name and queue, as a ``%``-format string with a named field where each
    per-message value goes: the task id, the eta, the delivery tag and the job
    reference headers. Encoding a job then fills in its values, so the message stays
    exactly what Celery sends at a fraction of its cost. Those values (decimal ids,
    UUIDs, ISO datetimes) need no JSON escaping, but for a caller's own task id.
    """

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str], str] = {}

    def encode(self, message: OutgoingMessage) -> str:
        """The SQS message body a Celery worker runs as the job's own task."""
        key = (message.task_name, message.queue)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = _template(message.task_name, message.queue)
        task_id = message.celery_task_id
        text = template % {
            # A caller's own task id may hold anything: escaped for its JSON string.
            "task_id": json.dumps(task_id)[1:-1] if task_id else _random_uuid(),
            # The eta makes the worker wait out the time DelaySeconds does not cover (the
            # delivery lead and the fraction of a second), so no job starts early.
            "eta": message.eta.isoformat(),
            "delivery_tag": _random_uuid(),
            JOB_ID_HEADER: message.job_id,
            DISPATCH_TOKEN_HEADER: message.dispatch_token,
        }
        # kombu's SQS transport base64-encodes the JSON envelope (sqs_base64_encoding).
        return base64.b64encode(text.encode()).decode()


def _template(task_name: str, queue: str) -> str:
    """The envelope of ``task_name``'s message on ``queue``, as a ``%``-format string."""
    marker = uuid.uuid4().hex
    marks = {name: f"<{marker}:{name}>" for name in _FIELDS}
    # Celery takes an eta already in ISO format as it is, so the marker goes in its place.
    eta: Any = marks["eta"]
    # ignore_result None, as Celery's send_task: the worker keeps the result or not as
    # the task says (False kept it for a task with ignore_result=True).
    unset: Any = None  # typed bool in celery-types; Celery's send_task passes None
    headers, properties, body, _ = current_app.amqp.as_task_v2(
        marks["task_id"], task_name, args=(), kwargs={}, eta=eta, ignore_result=unset
    )
    headers[PROTOCOL_HEADER] = PROTOCOL_VERSION
    headers.update({name: marks[name] for name in _JOB_FIELDS})
    content_type, content_encoding, payload = dumps(body, serializer="json")
    envelope = {
        "body": base64.b64encode(payload.encode()).decode(),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": marks["delivery_tag"],
        },
    }
    literal = json.dumps(envelope).replace("%", "%%")
    return re.sub(f"<{marker}:([a-z_]+)>", r"%(\1)s", literal)


_encoder = MessageEncoder()


def encode_message(message: OutgoingMessage) -> str:
    """The SQS message body of ``message``, from this process's templates."""
    return _encoder.encode(message)


@cache
def _send_pool() -> ThreadPoolExecutor:
    # One per process, shared by its publishers, started on first use.
    return ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="sqs-send")


#: The error codes of a queue that does not exist, and of one the dispatcher may not send
#: to (IAM).
_QUEUE_REFUSALS = MISSING_QUEUE_CODES | {"AccessDenied", "AccessDeniedException"}


def _refuses_queue(code: str) -> bool:
    """Whether an error code says SQS refuses one queue for good: waiting will not help,
    and it says nothing of the other queues. Besides :data:`_QUEUE_REFUSALS`, the queue's
    KMS key denied, disabled or missing (``Kms…``, ``KMS.…``), but not KMS throttling."""
    kms = code.startswith(("Kms", "KMS.")) and "Throttl" not in code
    return code in _QUEUE_REFUSALS or kms


#: The error codes (without a query-protocol prefix) of SQS refusing a call's messages
#: themselves: one longer than the queue's ``MaximumMessageSize``, a batch too long.
_MESSAGE_REFUSALS = frozenset(
    {"InvalidParameterValue", "BatchRequestTooLong", "InvalidMessageContents"}
)


def _queue_refused(error: Exception) -> bool:
    """Whether a call's ``error`` is SQS refusing its queue for good: one of
    :func:`_refuses_queue`'s codes, or its messages (:func:`_refuses_messages`). Any
    other error (refused credentials, a bad signature, throttling, a code unknown here)
    is said of every queue alike: an outage."""
    return _refuses_queue(error_code(error)) or _refuses_messages(error)


def _refuses_messages(error: Exception) -> bool:
    """Whether a call's ``error`` is SQS refusing the call's messages
    (:data:`_MESSAGE_REFUSALS`): made again, the call fails again, and it says nothing
    of the other queues."""
    return error_code(error).rpartition(".")[2] in _MESSAGE_REFUSALS


class _Sent(NamedTuple):
    """What a SendMessageBatch call that SQS answered did, entry by entry."""

    sent: list[int]
    failed: dict[int, str]
    #: What SQS said of an entry when it refused the queue itself (its KMS key, say):
    #: it may say so entry by entry rather than as the call's error.
    refusal: str | None
    #: A chunk sent one message to a call (:func:`_send_alone`) that SQS
    #: failed part way: its error, an outage for the messages in ``failed`` it left.
    error: Exception | None = None


#: What one SendMessageBatch call gave: its entries' outcomes, or its error (a
#: ClientError, or whatever else the call raised: botocore refreshing credentials that
#: are still expired raises a RuntimeError).
_Outcome = _Sent | Exception


class SQSPublisher:
    """A :class:`Publisher`: concurrent SendMessageBatch calls, an outcome per job.

    How many calls are in flight at once follows the endpoint's round trip
    (:mod:`scheduler.dispatch.concurrency`): up to :data:`SEND_THREADS` against SQS, one
    at a time, in the calling thread, against an endpoint that answers at once.
    """

    def __init__(self, client: "SQSClient | None" = None) -> None:
        self._client = client
        self._queue_urls: dict[str, str] = {}
        self.concurrency = SendConcurrency(SEND_THREADS)

    @property
    def client(self) -> "SQSClient":
        return self._client or get_client()

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        """Send every message, ten to a call, several calls at once.

        A call that fails outright fails its jobs: an outage, unless SQS refused the
        queue itself (``refused_queues``), which it may also say of each entry of a call
        that succeeds. A queue whose URL cannot be looked up fails
        its own jobs alone; the others still count.
        """
        result = PublishResult()
        by_queue: dict[str, list[OutgoingMessage]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(message)
        chunks: list[tuple[str, Sequence[OutgoingMessage]]] = []
        for queue, batch in by_queue.items():
            try:
                # Looked up before the threads start, so they share one cached URL.
                url = self._queue_url(queue)
            except Exception as error:  # whatever the lookup raised fails its jobs alone
                # Only this queue's jobs fail: a job on a queue SQS refuses must not
                # hold back the others.
                self._fail(result, batch, error)
                continue
            chunks.extend(
                (url, batch[start : start + SQS_BATCH_LIMIT])
                for start in range(0, len(batch), SQS_BATCH_LIMIT)
            )
        if not chunks:
            return result
        in_flight = self.concurrency.threads_for(len(chunks))
        # Each of the in_flight threads sends its share of the chunks one after another.
        shares = [chunks[first::in_flight] for first in range(in_flight)]
        send_all = map if in_flight == 1 else _send_pool().map
        cpu, started = time.process_time(), time.perf_counter()
        # After the URL lookups, which the messages' delays must count too.
        send_share = partial(self._send_share, handed_over=time.monotonic())
        outcomes = list(send_all(send_share, shares))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        outage = False
        for share, share_outcomes in zip(shares, outcomes, strict=True):
            for (_, chunk), outcome in zip(share, share_outcomes, strict=True):
                if isinstance(outcome, Exception):
                    outage = self._fail(result, chunk, outcome) or outage
                else:
                    result.sent.extend(outcome.sent)
                    result.failed.update(outcome.failed)
                    if outcome.refusal:
                        _refuse(result, chunk[0].queue, outcome.refusal, len(outcome.failed))
                    if outcome.error is not None:
                        left = [message for message in chunk if message.job_id in outcome.failed]
                        outage = self._fail(result, left, outcome.error) or outage
        if not outage:
            # A failed call's time says nothing of the round trip.
            self.concurrency.observe(in_flight=in_flight, wall=wall, cpu=cpu)
        return result

    def _send_share(
        self, share: Sequence[tuple[str, Sequence[OutgoingMessage]]], *, handed_over: float
    ) -> list[_Outcome]:
        """Send ``share``'s chunks one after another; ``handed_over`` is when (the
        calling thread's ``time.monotonic()``) the publish handed the sends over."""
        # Read on the share's own thread, as every later reading, and added to
        # handed_over: freezegun (in tests) gives threads started by the standard library
        # the real clock, and the calling thread its frozen one.
        started = time.monotonic()
        outcomes: list[_Outcome] = []
        # After a call to a queue fails outright, its share's other chunks for that queue
        # fail with it unsent: the batch holds its row locks, and must not wait out one
        # timeout per call of an outage.
        outages: dict[str, Exception] = {}
        for queue_url, chunk in share:
            outcome = outages.get(queue_url) or self._send_chunk(
                queue_url, chunk, started=started, handed_over=handed_over
            )
            failure = outcome.error if isinstance(outcome, _Sent) else outcome
            if failure is not None:
                outages[queue_url] = failure
            outcomes.append(outcome)
        return outcomes

    def _send_chunk(
        self,
        queue_url: str,
        chunk: Sequence[OutgoingMessage],
        *,
        started: float,
        handed_over: float,
    ) -> _Outcome:
        """One SendMessageBatch call (tried again after a timeout, a lost connection, a
        5xx or throttling, up to :data:`SEND_ATTEMPTS` in all), its share having begun at
        ``started`` (this thread's ``time.monotonic()``) and the publish having handed it
        over at ``handed_over`` (the calling thread's). SQS counts a delay from when it
        takes the message: each try asks for the delays less the time gone since they
        were computed (the claim, a queue URL looked up, the calls or tries before), so
        no message reaches a worker later than its delay meant."""
        bodies = [encode_message(message) for message in chunk]
        attempt = 1
        while True:
            gone = time.monotonic() - started
            if gone >= PUBLISH_SECONDS:
                return TimeoutError(
                    f"sends took longer than {PUBLISH_SECONDS:.0f} s: the rest wait for the "
                    "next batch"
                )
            # On the calling thread's clock, that of the messages' delay_from.
            now = handed_over + gone
            entries: list[Any] = [
                {
                    "Id": str(message.job_id),
                    "MessageBody": body,
                    "DelaySeconds": _delay_seconds(message, now=now, gone=gone),
                }
                for message, body in zip(chunk, bodies, strict=True)
            ]
            try:
                response = self.client.send_message_batch(QueueUrl=queue_url, Entries=entries)
                break
            except Exception as error:  # the call's outcome, whatever it is
                if len(chunk) > 1 and _refuses_messages(error):
                    # One message the queue takes for none (too long) fails its whole
                    # call: each goes alone, and only the ones SQS refuses fail.
                    return _send_alone(
                        chunk,
                        partial(
                            self._send_chunk, queue_url, started=started, handed_over=handed_over
                        ),
                    )
                if attempt == SEND_ATTEMPTS or not _transient(error):
                    return error
                pause = exponential_backoff(attempt, base=0.05, cap=1.0)
                logger.warning(
                    "sqs send tried again queue=%s messages=%s attempt=%s retry_in=%.2fs error=%s",
                    chunk[0].queue,
                    len(chunk),
                    attempt + 1,
                    pause,
                    f"{type(error).__name__}: {error}",
                )
                time.sleep(pause)
                attempt += 1
        failed = {}
        refusal = None
        for_good = 0
        for entry in response.get("Failed", []):
            code = entry.get("Code") or ""
            reason = f"{code}: {entry.get('Message', '')}"
            failed[int(entry["Id"])] = reason
            if _refuses_queue(code):
                refusal = reason
                continue
            logger.warning(
                "sqs entry rejected queue=%s job_id=%s reason=%s",
                chunk[0].queue,
                entry["Id"],
                reason,
            )
            if entry.get("SenderFault") and not _throttled(code):
                for_good += 1
        if for_good == len(chunk) > 1:
            # Every message refused for good (a queue whose MaximumMessageSize is below
            # them): that queue refuses them, and its jobs hold back no other queue's.
            # Not one message alone: its queue may take the others.
            refusal = reason
        sent = [int(entry["Id"]) for entry in response.get("Successful", [])]
        return _Sent(sent, failed, refusal)

    def _fail(
        self,
        result: PublishResult,
        unsent: Sequence[OutgoingMessage],
        error: Exception,
    ) -> bool:
        """Fail the ``unsent`` messages, all for one queue, as an outage (returns True) or
        a refused queue."""
        reason = f"{type(error).__name__}: {error}"
        result.failed.update((message.job_id, reason) for message in unsent)
        queue = unsent[0].queue
        if _queue_refused(error):
            # Deleted after its URL was looked up, maybe: if it comes back, ask again.
            self._queue_urls.pop(queue, None)
            _refuse(result, queue, reason, len(unsent))
            return False
        result.error = reason
        # What is not botocore's is no answer of SQS's: its traceback says where it arose.
        unexpected = None if isinstance(error, BotoCoreError | ClientError) else error
        logger.error(
            "sqs publish failed queue=%s unsent=%s error=%s",
            queue,
            len(unsent),
            reason,
            exc_info=unexpected,
        )
        return True

    def _queue_url(self, queue: str) -> str:
        if queue not in self._queue_urls:
            self._queue_urls[queue] = self.client.get_queue_url(QueueName=queue)["QueueUrl"]
        return self._queue_urls[queue]


def _send_alone(
    chunk: Sequence[OutgoingMessage], send: Callable[[Sequence[OutgoingMessage]], _Outcome]
) -> _Outcome:
    """Send each of ``chunk``'s messages in a call of its own (``send``), after SQS
    refused the call of them all: only the messages SQS refuses fail. SQS failing
    otherwise (out of reach, slow) stops the sends there, the messages left failing with
    it; SQS refusing all of them is its refusal of their queue."""
    sent: list[int] = []
    failed: dict[int, str] = {}
    refusal = None
    refused: Exception | None = None
    for index, message in enumerate(chunk):
        outcome = send([message])
        if isinstance(outcome, _Sent):
            sent.extend(outcome.sent)
            failed.update(outcome.failed)
            refusal = refusal or outcome.refusal
        elif _refuses_messages(outcome):
            refused = refused or outcome
            failed[message.job_id] = f"{type(outcome).__name__}: {outcome}"
            logger.warning(
                "sqs message refused queue=%s job_id=%s error=%s",
                message.queue,
                message.job_id,
                failed[message.job_id],
            )
        else:
            reason = f"{type(outcome).__name__}: {outcome}"
            failed.update((left.job_id, reason) for left in chunk[index:])
            return _Sent(sent, failed, refusal, error=outcome)
    if refused is not None and not sent and len(failed) == len(chunk):
        return refused
    return _Sent(sent, failed, refusal)


def _delay_seconds(message: OutgoingMessage, *, now: float, gone: float) -> int:
    """The DelaySeconds to ask for ``message`` at ``now`` (``time.monotonic()``), its
    share's sends having begun ``gone`` seconds ago: its delay less as many whole seconds
    as have begun since ``delay_from`` (the time left then, rounded down, so that SQS
    never releases it later than its delay meant), or without a ``delay_from``, less the
    whole seconds gone."""
    if message.delay_from is None:
        return max(0, message.delay_seconds - int(gone))
    return max(0, message.delay_seconds - max(0, math.ceil(now - message.delay_from)))


#: SQS's throttling error codes (without a query-protocol prefix such as
#: ``AWS.SimpleQueueService.``): a call refused with one may be taken if sent again.
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
#: Other codes of a call botocore would make again: it may succeed then.
_TRANSIENT = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})


def _throttled(code: str) -> bool:
    """Whether an error code is SQS's (or its KMS key's) throttling."""
    return code.rpartition(".")[2] in _THROTTLED or "Throttl" in code


def _transient(error: Exception) -> bool:
    """Whether a failed SendMessageBatch call may succeed when made again."""
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error_code(error)
        return status >= 500 or status == 429 or _throttled(code) or code in _TRANSIENT
    return isinstance(error, ConnectionError | HTTPClientError)


def _refuse(result: PublishResult, queue: str, reason: str, unsent: int) -> None:
    """Record that SQS refused ``queue`` for good, saying ``reason``."""
    result.refused_queues[queue] = reason
    logger.error("sqs queue refused queue=%s unsent=%s reason=%s", queue, unsent, reason)
