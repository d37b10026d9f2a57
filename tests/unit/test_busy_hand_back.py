"""Job messages waiting in a worker for a process go back to SQS once every process is long
busy, each at most once from any other worker: one handed back before waits where it lands,
unless this worker handed it back (its own long poll received it again)."""

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from celery.worker import state
from kombu.asynchronous.semaphore import LaxBoundedSemaphore

from scheduler import protocol
from scheduler.worker.consumer import BUSY_SECONDS, _hand_back_waiting


@dataclass(eq=False)
class FakeRequest:
    """What the hand-back reads of Celery's request, and the reject it makes."""

    id: str
    job: bool = True
    receive_count: int = 1
    time_start: float | None = None
    rejected: list[bool] = field(default_factory=list)

    @property
    def request_dict(self) -> dict[str, Any]:
        return {protocol.JOB_ID_HEADER: self.id} if self.job else {}

    @property
    def message(self) -> Any:
        attributes = {"ApproximateReceiveCount": str(self.receive_count)}
        sqs_message = {"MessageId": f"sqs-{self.id}", "Attributes": attributes}
        return SimpleNamespace(delivery_info={"sqs_message": sqs_message})

    def reject(self, requeue: bool = False) -> None:
        self.rejected.append(requeue)


@pytest.fixture
def consumer() -> Iterator[Any]:
    """A consumer of one process: its worker's semaphore, Celery's request sets."""
    semaphore = LaxBoundedSemaphore(1)
    yield SimpleNamespace(
        controller=SimpleNamespace(semaphore=semaphore, max_concurrency=None),
        pool=SimpleNamespace(num_processes=1),
        handed_back=deque(["sqs-ours"], maxlen=10),
    )
    state.active_requests.clear()
    state.reserved_requests.clear()


def _running(consumer: Any, started_ago: float) -> FakeRequest:
    """The task its process runs (kept by the caller: Celery's sets hold weak references)."""
    running = FakeRequest("running", time_start=time.time() - started_ago)
    state.active_requests.add(running)
    state.reserved_requests.add(running)
    consumer.controller.semaphore.acquire(lambda request: None, running)
    return running


def _waiting(consumer: Any, *requests: FakeRequest) -> None:
    for request in requests:
        state.reserved_requests.add(request)
        consumer.controller.semaphore.acquire(lambda request: None, request)


def _waiters(consumer: Any) -> list[str]:
    return [args[0].id for _, args, _ in consumer.controller.semaphore._waiting]


def test_nothing_goes_back_while_the_running_task_is_young(consumer: Any) -> None:
    running = _running(consumer, started_ago=BUSY_SECONDS / 2)
    job = FakeRequest("job")
    _waiting(consumer, job)
    _hand_back_waiting(consumer)
    assert _waiters(consumer) == ["job"]
    assert job.rejected == running.rejected == []


def test_once_it_is_long_a_waiting_jobs_message_goes_back_once(consumer: Any) -> None:
    running = _running(consumer, started_ago=BUSY_SECONDS + 0.1)
    first = FakeRequest("first")
    plain = FakeRequest("plain", job=False)
    again = FakeRequest("again", receive_count=2)
    ours = FakeRequest("ours", receive_count=2)
    last = FakeRequest("last")
    _waiting(consumer, first, plain, again, ours, last)

    _hand_back_waiting(consumer)

    assert first.rejected == ours.rejected == last.rejected == [True]
    assert list(consumer.handed_back) == ["sqs-ours", "sqs-first", "sqs-ours", "sqs-last"]
    assert first not in state.reserved_requests
    # A plain task is not the app's to move; a job's message another worker handed back
    # (its receive count) waits here for a process, not toward the dead-letter queue.
    assert plain.rejected == again.rejected == []
    assert _waiters(consumer) == ["plain", "again"]
    assert set(state.reserved_requests) == {running, plain, again}
