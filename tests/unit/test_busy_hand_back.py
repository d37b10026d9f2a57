"""Job messages waiting in a worker for a process go back to SQS once every process is long
busy; one SQS has delivered more than twice waits where it is, short of the dead-letter
queue. A worker stopping hands back every job's message no process has started."""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from celery.worker import state
from celery.worker.state import (  # type: ignore[attr-defined]  # not in Celery's stubs
    scheduled_requests,
    task_scheduled,
)
from kombu.asynchronous.semaphore import LaxBoundedSemaphore
from kombu.asynchronous.timer import Timer

from scheduler import protocol
from scheduler.sqs import HAND_BACK_RECEIVES
from scheduler.worker.consumer import (
    BUSY_SECONDS,
    _hand_back_taken,
    _hand_back_waiting,
    _Held,
    _split_at_answers,
    _take_held_jobs,
)


@dataclass(eq=False)
class FakeRequest:
    """What the hand-back reads of Celery's request, and the reject it makes."""

    id: str
    job: bool = True
    receive_count: int | None = 1
    time_start: float | None = None
    rejected: list[bool] = field(default_factory=list)
    #: Celery's timer entry for a message held until its eta.
    _eta_timer_entry: Any = None

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


@dataclass
class FakeQoS:
    """The prefetch count Celery raised for each message held until its eta."""

    raised: int = 0

    def decrement_eventually(self) -> None:
        self.raised -= 1


@pytest.fixture
def stopping(consumer: Any) -> Iterator[Any]:
    """The consumer of a worker with an event loop: its timer, its prefetch count."""
    consumer.hub, consumer.timer, consumer.qos = object(), Timer(), FakeQoS()
    yield consumer
    scheduled_requests.clear()


def _held_until(consumer: Any, request: FakeRequest, *, eta_in: float) -> None:
    """As Celery's strategy holds a message with an eta: in its timer, until then."""
    request._eta_timer_entry = consumer.timer.call_after(eta_in, lambda: None)
    consumer.qos.raised += 1
    task_scheduled(request)


def test_a_stopping_worker_takes_every_jobs_message_no_process_started(stopping: Any) -> None:
    running = _running(stopping, started_ago=0)
    held = FakeRequest("held")
    often = FakeRequest("often", receive_count=HAND_BACK_RECEIVES + 1)
    plain_held = FakeRequest("plain-held", job=False)
    for request in (held, often, plain_held):
        _held_until(stopping, request, eta_in=60)
    # Its eta passed: Celery's rate limiter has it, out of the timer.
    limited = FakeRequest("limited")
    _held_until(stopping, limited, eta_in=0)
    _, fired = next(iter(stopping.timer))  # as the event loop fires it
    assert fired is limited._eta_timer_entry
    due, plain_due = FakeRequest("due"), FakeRequest("plain-due", job=False)
    started: list[str] = []
    _waiting(stopping, due, plain_due, started=started)

    taken = _take_held_jobs(stopping)

    assert {item.request.id for item in taken} == {"held", "often", "due"}
    assert {item.request.id: item.eta is None for item in taken}["due"]
    # Nothing starts them now: their eta timers are cancelled, they left the semaphore.
    assert held._eta_timer_entry.canceled
    assert often._eta_timer_entry.canceled
    assert not plain_held._eta_timer_entry.canceled
    assert _waiters(stopping) == ["plain-due"]
    stopping.controller.semaphore.release()
    assert started == ["plain-due"]

    _hand_back_taken(stopping, taken)
    assert held.rejected == often.rejected == due.rejected == [True]
    assert plain_held.rejected == plain_due.rejected == limited.rejected == running.rejected == []
    assert stopping.qos.raised == 2  # of the four held until their eta, two went back
    assert held not in scheduled_requests
    assert due not in state.reserved_requests


def test_without_an_event_loop_a_stopping_worker_takes_nothing(stopping: Any) -> None:
    # Celery's timer then fires in a thread of its own: an entry may be firing already.
    stopping.hub = None
    held = FakeRequest("held")
    _held_until(stopping, held, eta_in=60)
    assert _take_held_jobs(stopping) == []
    assert not held._eta_timer_entry.canceled


def test_what_may_meet_the_receive_in_flight_goes_back_only_if_due_and_seldom_received() -> None:
    answered_by = time.monotonic() + 12
    due, soon, later = (
        _Held(FakeRequest("due"), None),
        _Held(FakeRequest("soon"), answered_by - 1),
        _Held(FakeRequest("later"), answered_by + 1),
    )
    often = _Held(FakeRequest("often", receive_count=HAND_BACK_RECEIVES + 1), None)
    unknown = _Held(FakeRequest("unknown", receive_count=None), answered_by - 1)

    first, then = _split_at_answers([due, soon, later, often, unknown], answered_by)

    # SQS may hand those to the worker's own receive: one receive more, for a job that
    # would otherwise start late. The others go once it is answered.
    assert first == [due, soon]
    assert then == [later, often, unknown]
