"""Job messages waiting in a worker for a process go back to SQS once every process is long
busy; one SQS has delivered more than twice waits where it is, short of the dead-letter
queue."""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from celery.worker import state
from kombu.asynchronous.semaphore import LaxBoundedSemaphore

from scheduler import protocol
from scheduler.sqs import HAND_BACK_RECEIVES
from scheduler.worker.consumer import BUSY_SECONDS, _hand_back_waiting


@dataclass(eq=False)
class FakeRequest:
    """What the hand-back reads of Celery's request, and the reject it makes."""

    id: str
    job: bool = True
    receive_count: int | None = 1
    time_start: float | None = None
    rejected: list[bool] = field(default_factory=list)

    @property
    def request_dict(self) -> dict[str, Any]:
        return {protocol.JOB_ID_HEADER: self.id} if self.job else {}

    @property
    def message(self) -> Any:
        attributes = (
            {}
            if self.receive_count is None
            else {"ApproximateReceiveCount": str(self.receive_count)}
        )
        return SimpleNamespace(delivery_info={"sqs_message": {"Attributes": attributes}})

    def reject(self, requeue: bool = False) -> None:
        self.rejected.append(requeue)


@pytest.fixture
def consumer() -> Iterator[Any]:
    """A consumer of one process: its worker's semaphore, Celery's request sets."""
    state.active_requests.clear()
    state.reserved_requests.clear()
    yield SimpleNamespace(
        controller=SimpleNamespace(semaphore=LaxBoundedSemaphore(1), max_concurrency=None),
        pool=SimpleNamespace(num_processes=1),
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


def _waiting(consumer: Any, *requests: FakeRequest, started: list[str]) -> None:
    for request in requests:
        state.reserved_requests.add(request)
        consumer.controller.semaphore.acquire(lambda request: started.append(request.id), request)


def _waiters(consumer: Any) -> list[str]:
    return [args[0].id for _, args, _ in consumer.controller.semaphore._waiting]


def test_nothing_goes_back_while_the_running_task_is_young(consumer: Any) -> None:
    running = _running(consumer, started_ago=BUSY_SECONDS / 2)
    job = FakeRequest("job")
    _waiting(consumer, job, started=[])
    _hand_back_waiting(consumer)
    assert _waiters(consumer) == ["job"]
    assert job.rejected == running.rejected == []


def test_once_it_is_long_waiting_jobs_messages_go_back_short_of_the_dead_letter_queue(
    consumer: Any,
) -> None:
    running = _running(consumer, started_ago=BUSY_SECONDS + 0.1)
    first = FakeRequest("first")
    plain = FakeRequest("plain", job=False)
    again = FakeRequest("again", receive_count=HAND_BACK_RECEIVES)
    often = FakeRequest("often", receive_count=HAND_BACK_RECEIVES + 1)
    unknown = FakeRequest("unknown", receive_count=None)
    started: list[str] = []
    _waiting(consumer, first, plain, again, often, unknown, started=started)

    _hand_back_waiting(consumer)

    assert first.rejected == again.rejected == [True]
    assert first not in state.reserved_requests
    # A plain task is not the app's to move; a job's message SQS delivered that often
    # waits here for a process, not toward the dead-letter queue.
    assert plain.rejected == often.rejected == unknown.rejected == []
    assert _waiters(consumer) == ["plain", "often", "unknown"]
    assert set(state.reserved_requests) == {running, plain, often, unknown}
    # The semaphore is as it was: the process's end starts the next one still waiting.
    assert consumer.controller.semaphore.value == 0
    consumer.controller.semaphore.release()
    assert started == ["plain"]
