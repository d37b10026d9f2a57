"""The worker's SQS transport: kombu's, polling on through failed receives.

kombu 5.7's asynchronous SQS client turns a ``ReceiveMessage`` that times out or gets a
5xx (a refused connection is reported as HTTP 599) into ``[]``, on which
``Channel._on_messages_ready`` fails (``'list' object has no attribute 'get'``); any
other failed receive (a 4xx: the queue deleted, expired credentials) raises out of the
event loop. Either way the worker exits ("Unrecoverable error") when SQS restarts or
answers a 500. This transport logs one line per failed receive and polls again after a
back-off that doubles per failure in a row; the first good receive resets it. And a
message whose envelope kombu cannot read reaches the worker's consumer as a plain body
(:mod:`scheduler.worker.consumer` drops it), instead of stopping the worker.

kombu's transport also polls late when the worker is busy: with every prefetch slot
taken it looks again a polling interval later, so a worker of two processes running
short tasks takes at most two messages per interval (20 a second at 0.1 s), whatever SQS
holds. This one polls again on the event loop's next turn once there is room: a slot
freed (an ack, a reject, a larger prefetch count, as when Celery holds a message until
its eta) or, when the worker's consumer bounds what it receives by what its pool can
start (:attr:`Channel.room`), a process freed; and while every process is busy its
receives do not wait (a long poll would bring messages for up to ``wait_time_seconds``
after the pool's room is gone). And a message the worker hands back unstarted (at a
warm shutdown, those it holds until their eta) is visible again at once, where kombu's
waits ``wait_time_seconds``. At a warm shutdown, the channel also waits for its receives
in flight (a long poll lasts up to ``wait_time_seconds``) and hands back what they bring:
SQS may answer a long poll whose client has gone, and what it brings would stay hidden
for the queue's visibility timeout.

A failed acknowledgement (``DeleteMessage``) is one line naming the job and its queue
(an error for a refusal, or a plain task's message, which runs again when it comes
back), and the worker goes on: kombu raised a refusal (``AccessDenied``) out of the event loop,
which stopped the worker (and each one started after it, at its first ack), logged a
lost answer as a CRITICAL with three tracebacks and the receipt handle, and said nothing
of a 5xx.

Acks and hand-backs are made on the event loop, which waits for them: they go through a
client of their own that gives up after 2 s (:attr:`Channel.bounded_client_config`), built
once per channel from the channel's client and signed with its credentials (refreshed
with them). Through the broker's client (``client-config``: longer than a long poll, which
a worker without the event loop makes through it) an SQS that took the connection and
never answered held the loop 2 x 15 s per call: jobs due with the acked one started that
late, and a warm shutdown holding four messages took two minutes. A warm shutdown's
hand-backs (the consumer's of job messages, then kombu's restore of the rest) stop at the
first that gets no answer, with one line: the rest come back after their visibility
timeout.

Configure it as Celery's broker transport, with the usual ``sqs://`` broker URL:
``CELERY_BROKER_TRANSPORT = "scheduler.worker.transport:Transport"`` (``manage.py
check`` warns, ``scheduler.W020``, when an SQS broker uses another transport).
"""

import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from kombu.transport import SQS, virtual
from typing_extensions import override
from vine import ensure_promise, promise

from scheduler.protocol import named_job_id
from scheduler.sqs import error_code

logger = logging.getLogger(__name__)

#: The most messages one ``ReceiveMessage`` returns.
SQS_MAX_MESSAGES: int = SQS.SQS_MAX_MESSAGES

#: This module's transport, as Celery's ``broker_transport`` names it.
TRANSPORT = "scheduler.worker.transport:Transport"

#: Beyond ``wait_time_seconds``, how long a stopping worker waits for a receive's answer.
ANSWER_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class ReceiveFailed:
    """What a receive that raised delivers instead of a response."""

    error: BaseException


class Room(NamedTuple):
    """What the worker's pool can take now, as its consumer judges it."""

    #: How many messages; 0: none until the pool's room changes.
    messages: int
    #: Whether a receive may wait for them (``wait_time_seconds``).
    long_poll: bool


#: kombu's SQS channel and QoS, untyped: its stubs leave out the internals overridden here.
_SQSChannel: Any = SQS.Channel
_SQSQoS: Any = SQS.QoS


@dataclass
class _Restore:
    """A stopping worker's hand-backs, once one got no answer: the rest are not tried."""

    #: The queue and error of the first hand-back that got no answer.
    queue: str | None = None
    error: BaseException | None = None
    #: Messages not handed back from that one on, that one included; 0: none so far.
    given_up: int = 0


class QoS(_SQSQoS):  # type: ignore[misc]
    """kombu's SQS QoS, whose restore gives up once SQS does not answer a hand-back."""

    @override
    def restore_unacked(self) -> list[tuple[BaseException, Any]]:
        # A warm shutdown's (kombu's restore_unacked_once), for every message the worker
        # holds; each got no answer in 2 s at most, one after the other.
        with self.channel.stopping_hand_backs():
            errors: list[tuple[BaseException, Any]] = super().restore_unacked()
        return errors


class Channel(_SQSChannel):  # type: ignore[misc]
    """kombu's SQS channel, which survives a failed ``ReceiveMessage``."""

    #: Seconds before the receive after a first failed one; doubled per failure in a row.
    receive_retry_seconds = 0.5
    #: The longest wait between receives while they keep failing.
    receive_retry_max_seconds = 10.0
    #: The client of the calls the event loop waits for (acks, hand-backs), over the
    #: broker's ``client-config``: a stalled SQS holds the loop about 2 s per call. Two
    #: tries: one 500 or dropped connection lost a plain task's ack (it ran again).
    bounded_client_config = Config(
        connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 2}
    )

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Failed receives in a row, by queue; a queue with none is not listed.
        self._receive_failures: dict[str, int] = {}
        #: Queues whose polling waits for room: a free prefetch slot, a free process.
        self._waiting_for_room: set[str] = set()
        #: Receives sent and not answered yet.
        self._receiving = 0
        #: What the worker's pool can take now, when it receives only that (set by
        #: :mod:`scheduler.worker.consumer`); None: no bound but the prefetch count.
        self.room: Callable[[], Room] | None = None
        #: :meth:`bounded_sqs`'s clients, by the client each was built from.
        self._bounded_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        #: The stopping worker's hand-backs under way (:meth:`stopping_hand_backs`), if any.
        self._restoring: _Restore | None = None

    @contextlib.contextmanager
    def stopping_hand_backs(self) -> Iterator[None]:
        """A stopping worker's hand-backs: from the first that gets no answer on, none is
        tried (each would hold the worker 2 s), and one line says how many were not."""
        self._restoring = restore = _Restore()
        try:
            yield
        finally:
            self._restoring = None
        if restore.given_up:
            logger.warning(
                "sqs hand backs given up queue=%s messages=%s error=%.200s",
                restore.queue,
                restore.given_up,
                _one_line(restore.error) if restore.error is not None else None,
            )

    def bounded_sqs(self, queue: str | None = None) -> Any:
        """The SQS client for ``queue`` of the calls the event loop waits for.

        :meth:`sqs`'s client with :attr:`bounded_client_config`, built once (and again
        should :meth:`sqs` give another client, as kombu does when an assumed role's
        credentials expire).
        """
        return self._bounded(self.sqs(queue=queue))

    @override
    def _new_release_client(self, client: Any) -> Any:
        # kombu's, for what a receive brings once the consumer is gone: a new client per
        # call (5 s to read), on credentials frozen then.
        return self._bounded(client)

    def _bounded(self, client: Any) -> Any:
        """``client`` with :attr:`bounded_client_config`, built once per client.

        It signs with ``client``'s credentials object, not a copy of them as kombu's
        ``_new_release_client`` does: those of a provider (an ECS task role, an instance
        profile) are refreshed as they expire, for both clients.
        """
        bounded = self._bounded_clients.get(client)
        if bounded is None:
            credentials = client._request_signer._credentials
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
            bounded = self._new_boto_client(
                service="sqs",
                region=client.meta.region_name,
                access_key_id=frozen.access_key if frozen is not None else None,
                secret_access_key=frozen.secret_key if frozen is not None else None,
                session_token=frozen.token if frozen is not None else None,
                config=self.bounded_client_config,
            )
            bounded._request_signer._credentials = credentials
            self._bounded_clients[client] = bounded
        return bounded

    @override
    def _get_from_sqs(
        self,
        queue_name: str,
        queue_url: str,
        connection: Any,
        count: int = 1,
        callback: Any = None,
    ) -> Any:
        # The response goes on to ``callback`` (which parses and delivers the messages,
        # whose own errors must still propagate); a receive that raised sends it a
        # ReceiveFailed instead, so polling goes on.
        delivered = ensure_promise(callback)
        received = promise(on_error=lambda error: delivered(ReceiveFailed(error)))
        received.then(delivered)
        request = connection.receive_message(
            queue_name,
            queue_url,
            number_messages=count,
            wait_time_seconds=(
                self.wait_time_seconds if self.room is None or self.room().long_poll else 0
            ),
            callback=received,
        )
        # Counted once sent: a receive that raised here (a credential refresh failing as
        # it is signed) gets no answer.
        self._receiving += 1
        return request

    @override
    def _on_messages_ready(self, queue: str, qname: str, messages: object) -> int:
        # kombu names its arguments oddly: ``queue`` is the URL, ``qname`` the queue.
        # Every answer to _get_from_sqs's receives comes here once, failed or not.
        self._receiving -= 1
        if isinstance(messages, Mapping):
            failures = self._receive_failures.pop(qname, 0)
            if failures:
                logger.info("sqs receive recovered queue=%s failures=%s", qname, failures)
            received: int = super()._on_messages_ready(queue, qname, messages)
            return received
        failures = self._receive_failures[qname] = self._receive_failures.get(qname, 0) + 1
        error = (
            _one_line(messages.error)
            if isinstance(messages, ReceiveFailed)
            else "timeout or server error"  # kombu's [] says no more
        )
        logger.warning(
            "sqs receive failed queue=%s failures=%s retry_in=%.1fs error=%.200s",
            qname,
            failures,
            self._receive_retry_delay(failures),
            error,
        )
        return 0

    @override
    def _prepare_json_payload(self, text: str) -> dict[str, Any]:
        # kombu catches only JSONDecodeError: a body nested deeper than Python's decoder
        # goes, a number past its digit limit, or one of kombu's own typed values that
        # does not rebuild ({"__type__": "decimal", "__value__": "x"}) raised out of the
        # event loop, and the worker exited. Not JSON to us either: a plain body.
        try:
            payload: dict[str, Any] = super()._prepare_json_payload(text)
        except Exception:  # whatever a forged body holds
            return {}
        return payload

    @override
    def _envelope_payload(
        self, payload: dict[str, Any], raw_text: str, message: Any, q_url: str
    ) -> dict[str, Any]:
        # kombu passes a body that is no envelope on as a plain body, but an envelope it
        # cannot build a Message from (headers or properties that are no mapping, a body
        # that does not decode) raises in the event loop. Passed on as a plain body too,
        # it reaches the consumer, which drops it with one line.
        envelope: dict[str, Any]
        try:
            envelope = super()._envelope_payload(payload, raw_text, message, q_url)
            self.Message(envelope, channel=self)
        except Exception:  # whatever a forged envelope holds
            envelope = super()._envelope_payload({}, raw_text, message, q_url)
        return envelope

    @override
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if not message.get("redelivered"):
            super()._put(queue, message, **kwargs)
            return
        # A message handed back unstarted: by a worker's warm shutdown, all it holds
        # ahead of their eta, or a job's due behind long tasks. kombu makes it visible
        # again only wait_time_seconds later (10 s here), so a deploy ran such jobs that
        # late; another worker takes it now.
        restore = self._restoring
        if restore is not None and restore.given_up:
            restore.given_up += 1
            return
        try:
            self.bounded_sqs(self.canonical_queue_name(queue)).change_message_visibility(
                QueueUrl=self._new_queue(queue),
                ReceiptHandle=message["properties"]["delivery_tag"],
                VisibilityTimeout=0,
            )
        except (BotoCoreError, ClientError) as error:
            # Raised out of the reject, it kept the delivery's prefetch slot for good (a
            # worker of one process received nothing more), or stopped the worker. The
            # message comes back when its visibility timeout ends.
            if restore is not None and not isinstance(error, ClientError):
                # No answer (a timeout, a lost connection): nor would the rest get one.
                restore.queue, restore.error, restore.given_up = queue, error, 1
                return
            logger.warning("sqs hand back failed queue=%s error=%.200s", queue, _one_line(error))

    @override
    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        try:
            delivered = self.qos.get(delivery_tag)
            info = delivered.delivery_info
            queue_url, receipt = info["sqs_queue"], info["sqs_message"]["ReceiptHandle"]
        except KeyError:  # not received from SQS: kombu's own bookkeeping
            super().basic_ack(delivery_tag, multiple)
            return
        queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
        try:
            self.bounded_sqs(queue).delete_message(QueueUrl=queue_url, ReceiptHandle=receipt)
        except (BotoCoreError, ClientError) as error:
            # The message comes back after its visibility timeout. A job's is dropped as
            # not current (its outcome is in PostgreSQL); a plain task's runs again. A
            # refusal is a permission to fix, not a fault that passes.
            headers = delivered.headers if isinstance(delivered.headers, Mapping) else {}
            job_id = named_job_id(headers)
            refused = error_code(error) == "AccessDenied"
            logger.log(
                logging.ERROR if refused or job_id is None else logging.WARNING,
                "sqs ack failed queue=%s job_id=%s task=%.100a redelivery=%s error=%.200s",
                queue,
                job_id,
                headers.get("task"),
                "dropped" if job_id is not None else "runs-again",
                _one_line(error),
            )
        finally:
            # Released whatever happened: a delivery kept holds its prefetch slot for good.
            virtual.Channel.basic_ack(self, delivery_tag)

    @override
    def _loop1(self, queue: str, messages_fetched: int | None = None) -> None:
        failures = self._receive_failures.get(queue)
        if failures:
            self.hub.call_later(self._receive_retry_delay(failures), self._schedule_queue, queue)
            return
        super()._loop1(queue, messages_fetched)

    @override
    def _schedule_queue(self, queue: str) -> None:
        # Called by the polling loop alone (kombu's call_soon/call_later) and by
        # _poll_if_room, so a queue is either waiting here or being polled, never both.
        if queue in self._active_queues and not self._has_room():
            if not self._waiting_for_room:
                self.hub.on_tick.add(self._poll_if_room)
            self._waiting_for_room.add(queue)
            return
        super()._schedule_queue(queue)

    def _has_room(self) -> bool:
        """Whether the worker may take another message: a prefetch slot, and its pool."""
        return self.qos.can_consume() and (self.room is None or self.room().messages > 0)

    def _poll_if_room(self) -> None:
        """At each turn of the event loop while queues wait: poll them once there is room.

        Room is made in the loop (an ack, a reject, a prefetch count raised, a task's
        result reaching the worker), and this runs before the loop waits again: called
        from here, not through ``call_soon``, the receive does not wait for that.
        """
        if not self._has_room():
            return
        self.hub.on_tick.discard(self._poll_if_room)
        waiting, self._waiting_for_room = self._waiting_for_room, set()
        for queue in waiting:
            self._schedule_queue(queue)

    @override
    def _get_message_estimate(self, max_if_unlimited: int = SQS_MAX_MESSAGES) -> int:
        estimate: int = super()._get_message_estimate(max_if_unlimited)
        if self.room is None:
            return estimate
        # No more than the pool can start: the rest would wait in this worker.
        return max(1, min(estimate, self.room().messages))

    @override
    def close(self) -> None:
        if self.hub:  # none where the channel only publishes
            self.hub.on_tick.discard(self._poll_if_room)
        super().close()

    def await_answers(self, *, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Stop consuming, and run the event loop until the receives in flight are answered.

        For a worker's warm shutdown, outside its event loop: with no consumer left, kombu
        hands back what the answers bring. A long poll is answered within
        ``wait_time_seconds`` (this waits ``ANSWER_MARGIN_SECONDS`` more at most, or until
        ``interrupted()``); a receive whose HTTP client is closed (the loop reset after an
        error) never is.
        """
        for consumer_tag in list(self._consumers):
            self.basic_cancel(consumer_tag)
        # kombu's HTTP client for the hub: gone once an error reset the loop (which
        # dropped its requests), closed once the hub is.
        client = getattr(self.hub, "_current_http_client", None)
        if self._receiving <= 0 or client is None or getattr(client, "_closed", True):
            return
        deadline = time.monotonic() + self.wait_time_seconds + ANSWER_MARGIN_SECONDS
        logger.info("sqs receives awaited receives=%s", self._receiving)
        try:
            for _ in self.hub.create_loop():  # one turn of the loop per step
                if self._receiving <= 0 or time.monotonic() >= deadline or interrupted():
                    break
        except Exception as error:  # the worker goes on stopping whatever the loop raised
            logger.warning("sqs receives not awaited error=%.200s", _one_line(error))
            return
        if self._receiving > 0:
            logger.warning("sqs receives not answered receives=%s", self._receiving)

    def _receive_retry_delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed receives in a row."""
        return float(
            min(
                self.receive_retry_max_seconds,
                self.receive_retry_seconds * 2 ** min(failures - 1, 32),
            )
        )


def _one_line(error: BaseException) -> str:
    """An SQS error on one line: kombu's and botocore's hold double spaces and newlines."""
    return " ".join(f"{type(error).__name__}: {error}".split())


class Transport(SQS.Transport):
    """kombu's SQS transport with :class:`Channel`."""

    Channel = Channel
