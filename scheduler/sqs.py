"""The SQS client, configured from the ``SCHEDULER_SQS_*`` settings, and a look at a DLQ."""

import contextlib
import functools
import logging
import platform
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.conf import scheduler_settings
from scheduler.protocol import job_ref_from_sqs_body

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def client_kwargs() -> dict[str, Any]:
    """boto3 client arguments: an SQS-compatible server with dummy credentials, or AWS."""
    kwargs: dict[str, Any] = {}
    if scheduler_settings.SQS_REGION:
        kwargs["region_name"] = scheduler_settings.SQS_REGION
    if endpoint := scheduler_settings.SQS_ENDPOINT_URL:
        kwargs.update(
            endpoint_url=endpoint,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - emulators accept any key
        )
    return kwargs


def region() -> str | None:
    """The region the app's SQS client signs for: ``SCHEDULER_SQS_REGION``, else boto3's
    (``AWS_DEFAULT_REGION``, the AWS config file); None when neither names one."""
    return scheduler_settings.SQS_REGION or boto3.Session().region_name


logger = logging.getLogger(__name__)
#: The most dead-letter queues one page or scrape peeks at side by side, one thread and
#: one kept connection each (botocore keeps ten, and dropped the others after each call).
PEEKS_AT_ONCE = 25

#: A queue's dead-letter queue is named after it with this suffix.
DLQ_SUFFIX = "-dlq"

#: A job's message received more often than this stays in the worker that has it, busy
#: or not (a stopping worker hands it back only after its own receive in flight): each
#: receive counts toward the dead-letter queue's five (``maxReceiveCount``), and every
#: worker may be as busy. A second one covers a hand-back by a worker's warm
#: shutdown, or one that the same worker's long poll, started while a process was free,
#: received again; three receives are left for the worker it lands on and for crashes.
HAND_BACK_RECEIVES = 2

#: The error codes (SQS's JSON and query protocols) of a queue that does not exist.
MISSING_QUEUE_CODES = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})


#: The User-Agent of every request, fixed: botocore otherwise builds its own twice for
#: each request, a fifth of the Python function calls a SendMessageBatch call makes.
_USER_AGENT = (
    f"Boto3/{boto3.__version__} botocore/{botocore.__version__} "
    f"Python/{platform.python_version()} scheduler"
)


@cache
def _client(frozen_kwargs: tuple[tuple[str, Any], ...], *, quick: bool) -> "SQSClient":
    # The app builds every request itself and SQS validates them anyway: checking each
    # one against the service model first would cost a fifth of a call's CPU.
    base = Config(parameter_validation=False, user_agent=_USER_AGENT)
    if quick:
        # For a page or a scrape that shows a queue's depth: answer fast or not at all;
        # a connection kept for each dead-letter queue it peeks at side by side.
        config = base.merge(
            Config(
                connect_timeout=1,
                read_timeout=2,
                retries={"max_attempts": 0},
                max_pool_connections=PEEKS_AT_ONCE,
            )
        )
    else:
        # Short timeouts: the dispatcher holds row locks while it sends. No retry: the
        # publisher tries a send again itself, with the delays less the time gone.
        config = base.merge(Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 0}))
    return boto3.client("sqs", config=config, **dict(frozen_kwargs))


def error_code(error: BaseException) -> str:
    """The code of SQS's answer to a failed call (``AccessDenied``, ``InternalError``…);
    empty for a call SQS did not answer."""
    if not isinstance(error, ClientError):
        return ""
    return str(error.response.get("Error", {}).get("Code") or "")


def get_client(*, quick: bool = False) -> "SQSClient":
    """A cached SQS client for the current settings (thread-safe, as boto3 clients are).

    ``quick``: second-long timeouts and no retry, for a read that must not hold up its
    caller (a metrics scrape) when SQS is slow or out of reach.
    """
    return _client(tuple(sorted(client_kwargs().items())), quick=quick)


def queue_url(name: str) -> str:
    """The URL of the queue ``name``, looked up (quickly) once per queue and endpoint."""
    return _queue_url(tuple(sorted(client_kwargs().items())), name)


@cache
def _queue_url(frozen_kwargs: tuple[tuple[str, Any], ...], name: str) -> str:
    # One lookup per queue and endpoint: a queue's URL does not change.
    return _client(frozen_kwargs, quick=True).get_queue_url(QueueName=name)["QueueUrl"]


def dead_letter_queue(queue: str) -> str:
    """The name of ``queue``'s dead-letter queue."""
    return f"{queue}{DLQ_SUFFIX}"


@dataclass(frozen=True)
class DeadLetters:
    """What a dead-letter queue holds: its depth and the jobs of the messages peeked at."""

    queue: str
    depth: int | None = None
    job_ids: list[int] = field(default_factory=list)
    #: Messages peeked at that name no job (ordinary task messages, garbage).
    unreadable: int = 0
    error: str = ""


def peek_dead_letters(queue: str, *, limit: int = 10) -> DeadLetters:
    """The depth of ``queue``'s DLQ and the jobs of up to ``limit`` (≤ 10) of its messages.

    The messages are received with a visibility timeout of 0, so they stay where they
    are; a ``limit`` of 0 reads the depth only. An SQS error is reported in ``error``,
    never raised.
    """
    name = dead_letter_queue(queue)
    try:
        # Built in the try: without a region (none set, none in the environment) boto3
        # refuses to build it.
        client = get_client(quick=True)
        url = queue_url(name)
        attributes = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        received = (
            client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=limit, VisibilityTimeout=0, WaitTimeSeconds=0
            ).get("Messages", [])
            if limit
            else []
        )
    except (BotoCoreError, ClientError) as error:
        logger.warning("dead-letter queue unavailable queue=%s error=%s", name, error)
        return DeadLetters(name, error=f"{type(error).__name__}: {error}")
    refs = [job_ref_from_sqs_body(message.get("Body")) for message in received]
    job_ids = sorted({ref.job_id for ref in refs if ref is not None})
    return DeadLetters(
        name,
        depth=int(attributes.get("ApproximateNumberOfMessages", 0)),
        job_ids=job_ids,
        unreadable=sum(ref is None for ref in refs),
    )


#: How long a page, a scrape or a process's start waits for its reads of SQS side by
#: side in all: each SQS call of the quick client gives up after about 3 s, and a read
#: makes up to three (a peek) or two (a queue's check).
PEEK_DEADLINE_SECONDS = 4.0
#: What a read not ended by then is reported with.
NOT_ANSWERED = f"SQS did not answer within {PEEK_DEADLINE_SECONDS:g} s"

_T = TypeVar("_T")


class SideBySide(Generic[_T]):
    """Calls to SQS under way side by side (one thread each, so the wait is the slowest
    call's, not their sum) while the caller goes on, waited for at most
    :data:`PEEK_DEADLINE_SECONDS` from their start.

    Threads of this object's own: nothing outlives a fork or a request. Build the quick
    client first: boto3's default session, which builds clients, is not thread-safe.
    """

    def __init__(
        self, calls: Sequence[Callable[[], _T]], *, then: Callable[[], None] | None = None
    ) -> None:
        """Start each of ``calls``; ``then`` runs once the last has ended (a late one
        with its own timeout, in its thread)."""
        self._started = time.monotonic()
        self._threads = ThreadPoolExecutor(
            max_workers=max(1, len(calls)), thread_name_prefix="scheduler-sqs"
        )
        self._calls = [self._threads.submit(call) for call in calls]
        self._left = len(calls)
        self._lock = threading.Lock()
        self._then = then
        for call in self._calls:
            call.add_done_callback(self._ended)

    def results(self) -> list[_T | None]:
        """Each call's result, in order, None for one not ended by the deadline; a
        call's exception is raised here."""
        left = PEEK_DEADLINE_SECONDS - (time.monotonic() - self._started)
        wait(self._calls, timeout=max(0.0, left))
        self._threads.shutdown(wait=False, cancel_futures=True)
        return [call.result() if call.done() else None for call in self._calls]

    def _ended(self, _: "Future[_T]") -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last and self._then is not None:
            self._then()


class DeadLetterPeeks:
    """Peeks at several dead-letter queues, side by side while the caller runs its
    queries (:class:`SideBySide`)."""

    def __init__(self, queues: Sequence[str], *, limit: int = 10) -> None:
        """Start ``peek_dead_letters`` of each queue; :meth:`results` waits for them."""
        with contextlib.suppress(BotoCoreError):
            # No region: each peek reports it.
            get_client(quick=True)
        self._queues = list(queues)
        self._peeks = SideBySide(
            [functools.partial(peek_dead_letters, queue, limit=limit) for queue in queues]
        )

    def results(self) -> list[DeadLetters]:
        """Each queue's peek, in order; a queue SQS has not answered for by the deadline
        is reported unreadable (its thread ends with its call's own timeout)."""
        return [
            DeadLetters(dead_letter_queue(queue), error=NOT_ANSWERED) if peek is None else peek
            for queue, peek in zip(self._queues, self._peeks.results(), strict=True)
        ]
