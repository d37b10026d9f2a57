"""A publisher has as many calls in flight as cover SQS's round trip, and no more."""

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from botocore.exceptions import EndpointConnectionError

from scheduler.dispatch.concurrency import SATURATED, TARGET_BUSY, SendConcurrency
from scheduler.dispatch.publisher import SEND_ATTEMPTS, SEND_THREADS, OutgoingMessage, SQSPublisher


def test_it_starts_at_its_limit_and_stays_within_one_and_the_limit():
    concurrency = SendConcurrency(10)
    assert concurrency.current == 10
    concurrency.observe(in_flight=10, wall=1.0, cpu=0.001)
    assert concurrency.current == 10
    concurrency.observe(in_flight=1, wall=1.0, cpu=1.0)
    assert concurrency.current == 1


def test_sends_that_kept_the_cpu_busy_halve_the_calls_until_one_is_left():
    concurrency = SendConcurrency(10)
    seen = []
    for _ in range(5):
        concurrency.observe(in_flight=concurrency.current, wall=0.010, cpu=0.010 * SATURATED)
        seen.append(concurrency.current)
    assert seen == [5, 2, 1, 1, 1]


def test_sends_waiting_on_the_network_get_as_many_calls_as_keep_one_cpu_busy():
    concurrency = SendConcurrency(10)
    concurrency.observe(in_flight=10, wall=0.010, cpu=0.010)
    concurrency.observe(in_flight=5, wall=0.010, cpu=0.010)
    assert concurrency.current == 2
    # Two calls at a time, busy a quarter of the time: six keep the CPU 3/4 busy.
    concurrency.observe(in_flight=2, wall=0.040, cpu=0.010)
    assert concurrency.current == 2 * TARGET_BUSY / 0.25 == 6


def test_while_the_cpu_has_room_the_calls_are_not_cut():
    concurrency = SendConcurrency(10)
    concurrency.observe(in_flight=10, wall=0.010, cpu=0.010 * (SATURATED - 0.05))
    assert concurrency.current == 10
    concurrency.observe(in_flight=1, wall=0.010, cpu=0.005)
    assert concurrency.current == 10


@pytest.mark.parametrize(
    ("current", "calls", "threads"),
    [(10, 10, 10), (9, 10, 5), (5, 10, 5), (4, 10, 4), (3, 10, 3), (10, 1, 1), (10, 100, 10)],
)
def test_a_publish_uses_as_few_threads_as_take_the_same_rounds(current, calls, threads):
    concurrency = SendConcurrency(10)
    concurrency.current = current
    assert concurrency.threads_for(calls) == threads


def test_a_publish_of_no_call_or_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        SendConcurrency(10).threads_for(0)
    with pytest.raises(ValueError, match="at least 1"):
        SendConcurrency(0)


def test_a_publish_that_took_no_time_changes_nothing():
    concurrency = SendConcurrency(4)
    concurrency.observe(in_flight=4, wall=0.0, cpu=0.0)
    assert concurrency.current == 4


class StandInClient:
    """An SQS client that answers every call at once, after ``cpu_ms`` of work, or that
    waits ``wait_ms`` for an answer, recording the threads and overlap of its calls.

    With ``meet``, each call also waits (2 s at most) until ``meet`` calls have been in
    flight at once, so that a slow thread start cannot hide calls that do overlap.
    """

    def __init__(self, *, cpu_ms: float = 0.0, wait_ms: float = 0.0, meet: int = 0) -> None:
        self.cpu_ms, self.wait_ms, self.meet = cpu_ms, wait_ms, meet
        self.lock = threading.Condition()
        self.in_flight = self.most_in_flight = 0
        self.threads: list[str] = []

    def get_queue_url(self, *, QueueName):  # noqa: N803 - boto3's argument names
        return {"QueueUrl": f"https://sqs.example/{QueueName}"}

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803 - boto3's argument names
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.threads.append(threading.current_thread().name)
            self.lock.notify_all()
            self.lock.wait_for(lambda: self.most_in_flight >= self.meet, timeout=2)
        try:
            time.sleep(self.wait_ms / 1000)
            busy_until = time.thread_time() + self.cpu_ms / 1000
            while time.thread_time() < busy_until:
                pass
            return {"Successful": [{"Id": entry["Id"]} for entry in Entries]}
        finally:
            with self.lock:
                self.in_flight -= 1


def _batch(first_id: int) -> list[OutgoingMessage]:
    now = datetime.now(UTC)
    return [
        OutgoingMessage(job_id, str(uuid.uuid4()), "testapp.noop", "jobs", now, 0)
        for job_id in range(first_id, first_id + 100)
    ]


def test_a_publish_has_as_many_calls_in_flight_as_its_concurrency_says():
    client = StandInClient(wait_ms=20)
    publisher = SQSPublisher(client=client)
    publisher.concurrency.observe = lambda **_: None
    for current in (1, 3, SEND_THREADS):
        publisher.concurrency.current = current
        client.threads.clear()
        client.most_in_flight = 0
        client.meet = current
        result = publisher.publish(_batch(current * 1000))
        assert sorted(result.sent) == list(range(current * 1000, current * 1000 + 100))
        assert client.most_in_flight == current
        caller = threading.current_thread().name
        # One call at a time goes from the caller's own thread, with no hand-over.
        assert (set(client.threads) == {caller}) is (current == 1), client.threads


def test_a_publish_tells_its_concurrency_how_long_its_sends_took_and_what_cpu_they_used():
    seen = []
    publisher = SQSPublisher(client=StandInClient(cpu_ms=3, wait_ms=10))
    publisher.concurrency.current = 2
    publisher.concurrency.observe = lambda **kwargs: seen.append(kwargs)
    publisher.publish(_batch(0))
    [observed] = seen
    assert observed["in_flight"] == 2
    # Ten calls, five after one another in each of two threads.
    assert observed["wall"] >= 5 * 0.010
    assert observed["cpu"] >= 10 * 0.003


class FailingClient(StandInClient):
    """An SQS that cannot be reached."""

    calls = 0

    def send_message_batch(self, **kwargs):
        self.calls += 1
        raise EndpointConnectionError(endpoint_url="https://sqs.example")


def test_a_publish_whose_calls_failed_leaves_the_concurrency_as_it_was():
    publisher = SQSPublisher(client=FailingClient())
    result = publisher.publish(_batch(0))
    assert result.sent == []
    assert len(result.failed) == 100
    assert publisher.concurrency.current == SEND_THREADS


def test_in_an_outage_a_thread_tries_one_call_and_fails_the_rest_of_its_share_unsent():
    client = FailingClient()
    publisher = SQSPublisher(client=client)
    publisher.concurrency.current = 1
    result = publisher.publish(_batch(0))
    assert result.sent == []
    assert sorted(result.failed) == list(range(100))
    assert "EndpointConnectionError" in (result.error or "")
    assert client.calls == SEND_ATTEMPTS  # one call, tried as often as a failed call is
