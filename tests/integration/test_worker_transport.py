"""The worker's SQS transport keeps polling through failed receives, on a real event loop.

kombu's own transport makes the worker exit when a ``ReceiveMessage`` fails: a refused
connection (the SQS server restarting) or a missing queue raise out of the event loop.
"""

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError
from django.conf import settings
from kombu import Connection, Consumer, Queue
from kombu.asynchronous import Hub, set_event_loop

from scheduler.protocol import JobRef
from scheduler.worker.transport import TRANSPORT, Channel, Room
from tests.chaos.harness import SqsServer
from tests.conftest import sqs_client

pytestmark = [pytest.mark.timeout(60), pytest.mark.one_django]


class Polling:
    """A kombu consumer on ``queue`` with the app's transport, driven by our own hub."""

    def __init__(
        self,
        endpoint: str,
        queue: str,
        *,
        polling_interval: float = 0.1,
        prefetch_count: int | None = None,
        ack_after: float = 0.0,
        wait_time_seconds: int = 1,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        self.endpoint, self.queue = endpoint, queue
        self.ack_after = ack_after
        self.bodies: list[Any] = []
        self.hub = Hub()
        set_event_loop(self.hub)
        self.connection = Connection(
            f"sqs://local:local@{endpoint.removeprefix('http://')}",
            transport=TRANSPORT,
            transport_options={
                "region": "us-east-1",
                "is_secure": False,
                "wait_time_seconds": wait_time_seconds,
                "polling_interval": polling_interval,
                **({"client-config": client_config} if client_config else {}),
            },
        )
        self.consumer = Consumer(
            self.connection.channel(),
            queues=[Queue(queue)],
            callbacks=[self._on_message],
            accept=["json"],
            prefetch_count=prefetch_count,
        )
        self.consumer.consume()
        self._loop = self.hub.create_loop()

    def _on_message(self, body: Any, message: Any) -> None:
        self.bodies.append(body)
        if self.ack_after:
            # Later, from the event loop: as a worker does once its pool has run the task.
            self.hub.call_later(self.ack_after, message.ack)
        else:
            message.ack()

    def run_until(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Turn the event loop (an error in it fails the test) until ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            next(self._loop)
            if predicate():
                return True
        return False

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, timeout=seconds)

    def send(self, body: dict[str, Any]) -> None:
        with self.connection.Producer() as producer:
            producer.publish(body, routing_key=self.queue, serializer="json")

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.release()
        self.hub.close()
        set_event_loop(None)


@contextmanager
def polling(endpoint: str, queue: str, **options: Any) -> Iterator[Polling]:
    sqs_client(endpoint).create_queue(QueueName=queue)
    consumer = Polling(endpoint, queue, **options)
    try:
        yield consumer
    finally:
        consumer.close()


@contextmanager
def long_poll_in_flight(endpoint: str) -> Iterator[tuple[Polling, Channel]]:
    """A consumer whose first long poll (5 s) waits in the SQS server, and its channel."""
    with polling(endpoint, f"transport-{uuid.uuid4().hex[:10]}", wait_time_seconds=5) as consumer:
        consumer.run_for(0.5)
        channel = consumer.consumer.channel
        assert isinstance(channel, Channel)
        yield consumer, channel


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    # kombu's hub logs, and goes on from, an error in a timer: the stock transport's
    # AttributeError there leaves the queue unpolled.
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def _log_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        f"{record.levelname} {record.getMessage()}"
        for record in caplog.records
        if record.name == "scheduler.worker.transport" and text in record.getMessage()
    ]


def test_polling_goes_on_through_an_sqs_server_restart(caplog: pytest.LogCaptureFixture) -> None:
    server = SqsServer()
    server.start()
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    try:
        with polling(server.endpoint, queue) as consumer:
            consumer.send({"n": 1})
            assert consumer.run_until(lambda: consumer.bodies == [{"n": 1}], timeout=10)

            server.stop()  # every receive is now refused: kombu's HTTP 599, then []
            consumer.run_for(3.2)
            failed = _log_lines(caplog, "sqs receive failed")
            # One line per failed receive, backed off 0.5, 1 and 2 s (not every 0.1 s).
            assert 2 <= len(failed) <= 4, failed
            assert failed[0] == (
                f"WARNING sqs receive failed queue={queue} failures=1 retry_in=0.5s "
                "error=timeout or server error"
            )

            server.start()
            sqs_client(server.endpoint).create_queue(QueueName=queue)
            consumer.send({"n": 2})
            assert consumer.run_until(lambda: len(consumer.bodies) == 2, timeout=15)
    finally:
        server.stop()
    assert consumer.bodies == [{"n": 1}, {"n": 2}]
    assert _log_lines(caplog, "sqs receive recovered") == [
        f"INFO sqs receive recovered queue={queue} failures={len(failed)}"
    ]
    assert not _errors(caplog)


def test_polling_goes_on_while_the_queue_is_missing(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    client = sqs_client(sqs_endpoint)
    with polling(sqs_endpoint, queue) as consumer:
        consumer.run_for(0.5)
        client.delete_queue(QueueUrl=client.get_queue_url(QueueName=queue)["QueueUrl"])
        # A 400 (AWS.SimpleQueueService.NonExistentQueue) raises in kombu's client.
        assert consumer.run_until(lambda: bool(_log_lines(caplog, "failed")), timeout=5)
        client.create_queue(QueueName=queue)
        consumer.send({"n": 1})
        assert consumer.run_until(lambda: consumer.bodies == [{"n": 1}], timeout=10)
    [failed] = _log_lines(caplog, "sqs receive failed")[:1]
    assert failed.startswith(
        f"WARNING sqs receive failed queue={queue} failures=1 retry_in=0.5s error=Exception: "
        "Request HTTP Error HTTP 400 Bad Request"
    ), failed
    assert "QueueDoesNotExist" in failed
    assert _log_lines(caplog, "sqs receive recovered")
    assert not _errors(caplog)


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        "1" * 5000,
        '{"a": ' + "1" * 5000 + "}",
        # kombu's own JSON types, rebuilt from what anyone may write.
        '{"__type__": "decimal", "__value__": "x"}',
        '{"__type__": "bytes", "__value__": 5}',
    ],
    ids=["nested-too-deep", "number-too-long", "field-too-long", "bad-decimal", "bad-bytes"],
)
def test_a_body_json_cannot_decode_is_passed_on_and_polling_goes_on(
    sqs_endpoint: str, body: str
) -> None:
    # kombu decodes the body before any envelope is built, catching only JSONDecodeError:
    # a 10 KB message anyone can send raised out of the event loop, and the worker exited
    # ("Unrecoverable error"), again at each of the message's deliveries.
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    with polling(sqs_endpoint, queue) as consumer:
        client = sqs_client(sqs_endpoint)
        client.send_message(
            QueueUrl=client.get_queue_url(QueueName=queue)["QueueUrl"], MessageBody=body
        )
        consumer.send({"after": "it"})
        assert consumer.run_until(lambda: {"after": "it"} in consumer.bodies, timeout=10)


def test_a_freed_prefetch_slot_is_filled_at_once(sqs_endpoint: str) -> None:
    # kombu's transport, every slot taken, looks again a polling interval later (5 s
    # here): a worker whose short tasks finish sooner sits idle until then.
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    with polling(
        sqs_endpoint, queue, polling_interval=5, prefetch_count=2, ack_after=0.05
    ) as consumer:
        for n in range(10):  # before the first receive: no empty poll, no interval
            consumer.send({"n": n})
        started = time.monotonic()
        assert consumer.run_until(lambda: len(consumer.bodies) == 10, timeout=20)
        elapsed = time.monotonic() - started
    assert sorted(body["n"] for body in consumer.bodies) == list(range(10))
    # Five rounds of two, each a receive and a 50 ms task: well under one interval.
    assert elapsed < 3, elapsed


def test_with_a_bound_it_receives_only_what_the_pool_can_start(sqs_endpoint: str) -> None:
    # As the worker's consumer sets it with worker_disable_prefetch: a message received
    # while every process is busy would wait in this worker, not go to an idle one.
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    free = [0]
    with polling(sqs_endpoint, queue) as consumer:
        channel = consumer.consumer.channel
        assert isinstance(channel, Channel)
        channel.room = lambda: Room(messages=free[0], long_poll=True)
        # Each message takes a process, which this test frees by hand.
        consumer.consumer.register_callback(lambda body, message: free.__setitem__(0, free[0] - 1))
        for n in range(3):
            consumer.send({"n": n})
        consumer.run_for(1.5)
        assert consumer.bodies == []

        free[0] = 1  # no ack, no message: the loop's next turn sees the room
        assert consumer.run_until(lambda: len(consumer.bodies) == 1, timeout=5)
        consumer.run_for(1.5)
        assert len(consumer.bodies) == 1  # one receive of one message, for one process

        free[0] = 2
        assert consumer.run_until(lambda: len(consumer.bodies) == 3, timeout=5)
    assert sorted(body["n"] for body in consumer.bodies) == [0, 1, 2]


def test_a_hand_back_sqs_refuses_is_logged_and_frees_the_prefetch_slot(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Making the message visible again raised out of the reject: its delivery then held
    # a prefetch slot for good (a worker of one process never received again), and a
    # ClientError stopped the worker. The message comes back after its visibility timeout.
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    held: list[Any] = []
    with polling(sqs_endpoint, queue, prefetch_count=1) as consumer:
        consumer.consumer.callbacks = [lambda body, message: held.append(message)]
        consumer.send({"n": 0})
        assert consumer.run_until(lambda: len(held) == 1, timeout=10)
        [message] = held
        # A receipt handle SQS no longer accepts (as after the message's timeout expired).
        message.properties["delivery_tag"] = "expired"
        channel = consumer.consumer.channel
        assert isinstance(channel, Channel)
        assert not channel.qos.can_consume()
        with caplog.at_level(logging.WARNING, logger="scheduler.worker.transport"):
            message.reject(requeue=True)
        assert channel.qos.can_consume()
    assert _log_lines(caplog, "sqs hand back failed")


def test_a_receive_in_flight_is_awaited_and_what_it_brings_handed_back(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As a worker's warm shutdown does, its event loop no longer running: SQS answers a
    # long poll whose client has gone, and what it brings stays hidden for the visibility
    # timeout (30 s on this queue).
    with long_poll_in_flight(sqs_endpoint) as (consumer, channel):
        consumer.send({"n": 1})
        with caplog.at_level(logging.INFO):
            channel.await_answers()
    queue = consumer.queue
    assert consumer.bodies == []
    assert _log_lines(caplog, "sqs receives awaited") == ["INFO sqs receives awaited receives=1"]
    released = [r.getMessage() for r in caplog.records if "releasing" in r.getMessage()]
    assert released == [f"Consumer for queue {queue} is gone, releasing 1 received message(s)"]
    client = sqs_client(sqs_endpoint)
    url = client.get_queue_url(QueueName=queue)["QueueUrl"]
    assert client.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages")


def test_a_receive_dropped_by_a_loop_reset_is_not_awaited(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Celery's event loop resets the hub on an error, which closes kombu's HTTP client
    # and drops its requests: no answer comes, and a stopping worker must not wait for one.
    with long_poll_in_flight(sqs_endpoint) as (consumer, channel):
        consumer.hub.reset()
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            channel.await_answers()
        assert time.monotonic() - started < 0.5
    assert not _log_lines(caplog, "sqs receives")


def test_awaiting_answers_ends_when_interrupted(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As a cold shutdown asked for during a warm one's wait (SIGQUIT, a second Ctrl-C).
    with long_poll_in_flight(sqs_endpoint) as (_, channel):
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            channel.await_answers(interrupted=lambda: time.monotonic() - started > 0.5)
        assert time.monotonic() - started < 2
    assert _log_lines(caplog, "sqs receives not answered") == [
        "WARNING sqs receives not answered receives=1"
    ]


class _HttpAnswer:
    """What botocore's ``before-call`` hook returns in place of SQS's HTTP answer."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


def _refused(status: int, code: str) -> Callable[..., Any]:
    def answer(**_: Any) -> tuple[_HttpAnswer, dict[str, Any]]:
        return _HttpAnswer(status), {"Error": {"Code": code, "Message": f"{code} for the test"}}

    return answer


def _answer_lost(**_: Any) -> None:
    raise ConnectionClosedError(endpoint_url="http://sqs.test")


@pytest.mark.parametrize(
    ("fault", "level"),
    [
        # kombu raised AccessDeniedQueueException out of the event loop: "Unrecoverable
        # error", the worker exited, and so did each one started after it, at its first
        # ack. A permission to fix: an error.
        (_refused(403, "AccessDenied"), "ERROR"),
        # kombu rejected the message without a word (on a queue with a dead-letter queue).
        (_refused(500, "InternalError"), "WARNING"),
        # Celery logged "Couldn't ack '<receipt handle>'" with three tracebacks, no job.
        (_answer_lost, "WARNING"),
    ],
    ids=["access-denied", "server-error", "answer-lost"],
)
def test_a_failed_ack_is_one_line_naming_the_job_and_the_worker_goes_on(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture, fault: Callable[..., Any], level: str
) -> None:
    # A job's outcome is in PostgreSQL whatever the ack: a message left in the queue
    # comes back after its visibility timeout, and the claim drops it as not current.
    job = JobRef(job_id=42, dispatch_token=uuid.uuid4())
    [line] = _ack_failing(sqs_endpoint, caplog, fault, headers=job.headers())
    assert line.startswith(f"{level} "), line
    assert " job_id=42 task=None redelivery=dropped error=" in line, line


def test_a_failed_ack_of_a_plain_task_is_an_error_it_runs_again(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # No token fences a plain task's message: when it comes back, the task runs again.
    headers = {"task": "testapp.noop", "id": str(uuid.uuid4())}
    [line] = _ack_failing(sqs_endpoint, caplog, _refused(500, "InternalError"), headers=headers)
    assert line.startswith("ERROR "), line
    assert " job_id=None task='testapp.noop' redelivery=runs-again error=" in line, line


def _ack_failing(
    endpoint: str,
    caplog: pytest.LogCaptureFixture,
    fault: Callable[..., Any],
    *,
    headers: dict[str, str],
    event: str = "before-call",
) -> list[str]:
    """Receive a message with ``headers``, ack it with ``fault`` answering the delete (at
    botocore's ``event``), and check that the worker goes on; the transport's ``sqs ack
    failed`` lines."""
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    held: list[Any] = []
    with polling(endpoint, queue, prefetch_count=1) as consumer:
        consumer.consumer.callbacks = [lambda body, message: held.append(message)]
        with consumer.connection.Producer() as producer:
            producer.publish({"n": 0}, routing_key=queue, headers=headers)
        assert consumer.run_until(lambda: len(held) == 1, timeout=10)
        channel = consumer.consumer.channel
        assert isinstance(channel, Channel)
        channel.bounded_sqs(queue).meta.events.register(f"{event}.sqs.DeleteMessage", fault)
        with caplog.at_level(logging.WARNING):
            held[0].ack()
        assert channel.qos.can_consume()  # the delivery's prefetch slot is free
        consumer.send({"n": 1})  # and the consumer goes on receiving
        assert consumer.run_until(lambda: len(held) == 2, timeout=10)
    assert not [record for record in caplog.records if "Couldn't ack" in record.getMessage()]
    lines = _log_lines(caplog, "sqs ack failed")
    assert all(f"queue={queue} " in line for line in lines), lines
    return lines


#: The longest an ack or a hand-back may hold the event loop while SQS does not answer
#: (the bounded client's 2 s read timeout, and a margin for a loaded machine).
STALL_BOUND_SECONDS = 4.0


@contextmanager
def holding_while_sqs_stalls(
    count: int, *, headers: dict[str, str] | None = None
) -> Iterator[tuple[SqsServer, Polling, Channel, list[Any]]]:
    """A consumer holding ``count`` messages unacknowledged, on the project's SQS client
    (2 tries of 15 s to read), its SQS server then stopped (SIGSTOP): connections are
    taken, and nothing answers."""
    server = SqsServer()
    server.start()
    held: list[Any] = []
    queue = f"transport-{uuid.uuid4().hex[:10]}"
    client_config = settings.CELERY_BROKER_TRANSPORT_OPTIONS["client-config"]
    try:
        with polling(
            server.endpoint, queue, prefetch_count=count, client_config=client_config
        ) as consumer:
            consumer.consumer.callbacks = [lambda body, message: held.append(message)]
            with consumer.connection.Producer() as producer:
                for n in range(count):
                    producer.publish({"n": n}, routing_key=queue, headers=headers or {})
            assert consumer.run_until(lambda: len(held) == count, timeout=10)
            channel = consumer.consumer.channel
            assert isinstance(channel, Channel)
            server.pause()
            try:
                yield server, consumer, channel, held
            finally:
                server.resume()
    finally:
        server.stop()


def test_an_ack_sqs_does_not_answer_holds_the_event_loop_seconds_not_half_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The project's client, which must outwait a long poll (--pool=solo receives through
    # it), held the event loop 2 x 15 s per ack: a worker's jobs due with the first waited
    # that long to start, no eta timer firing meanwhile.
    job = JobRef(job_id=42, dispatch_token=uuid.uuid4())
    with holding_while_sqs_stalls(2, headers=job.headers()) as (server, consumer, channel, held):
        for message in held:
            started = time.monotonic()
            with caplog.at_level(logging.WARNING):
                message.ack()
            elapsed = time.monotonic() - started
            assert elapsed < STALL_BOUND_SECONDS, elapsed
        assert channel.qos.can_consume()
        server.resume()
        consumer.send({"n": "after"})  # and the consumer goes on receiving
        assert consumer.run_until(lambda: len(held) == 3, timeout=10)
    lines = _log_lines(caplog, "sqs ack failed")
    assert len(lines) == 2, lines
    assert all(
        line.startswith(f"WARNING sqs ack failed queue={consumer.queue} job_id=42 ")
        and "error=ReadTimeoutError: " in line
        for line in lines
    ), lines


def test_a_restore_sqs_does_not_answer_gives_up_after_the_first_hand_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As a warm shutdown restores what the worker holds (messages it waits to run until
    # their eta): 2 x 15 s each, so a worker holding four took two minutes to exit, and
    # ECS's stop timeout (30 s) would have killed it. Those not handed back come back
    # after their visibility timeout.
    with holding_while_sqs_stalls(3) as (_, consumer, channel, _held):
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            unrestored = channel.qos.restore_unacked()
        elapsed = time.monotonic() - started
    assert elapsed < STALL_BOUND_SECONDS, elapsed
    assert unrestored == []
    lines = _log_lines(caplog, "sqs hand back")
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"WARNING sqs hand backs given up queue={consumer.queue} messages=3 "
        "error=ReadTimeoutError: "
    ), lines


def test_an_ack_whose_connection_drops_once_is_made_again(
    sqs_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Tried once, a plain task's ack lost to one dropped connection ran the task again.
    dropped: list[str] = []

    def drop_once(request: Any, **_: Any) -> None:
        if not dropped:
            dropped.append(request.url)
            raise ConnectionClosedError(endpoint_url=request.url)

    headers = {"task": "testapp.noop", "id": str(uuid.uuid4())}
    assert _ack_failing(sqs_endpoint, caplog, drop_once, headers=headers, event="before-send") == []
    assert len(dropped) == 1


def test_acks_and_hand_backs_share_the_channels_credentials_and_client(sqs_endpoint: str) -> None:
    # One client, built once: a client per call costs a session and a connection. Signed
    # with the channel's own credentials, not a frozen copy: a provider that refreshes
    # them (an ECS task role's, an assumed role's) does so for both.
    with polling(sqs_endpoint, f"transport-{uuid.uuid4().hex[:10]}") as consumer:
        channel = consumer.consumer.channel
        assert isinstance(channel, Channel)
        bounded = channel.bounded_sqs(consumer.queue)
        assert channel.bounded_sqs(consumer.queue) is bounded
        assert channel.bounded_sqs(None) is bounded  # the channel's one client
        credentials = channel.sqs(queue=consumer.queue)._request_signer._credentials
        assert bounded._request_signer._credentials is credentials
        assert bounded.meta.config.read_timeout == 1
        assert bounded.meta.config.retries["total_max_attempts"] == 2
