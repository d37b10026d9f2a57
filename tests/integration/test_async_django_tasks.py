"""An ``async def`` django.tasks task runs on asgiref's event loop in a thread of its
own, while the worker's thread waits for it: what interrupts that thread (Celery's soft
time limit) ends the coroutine too."""

import signal
import threading
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from celery.exceptions import SoftTimeLimitExceeded

from scheduler.registry import get_task
from tests.tasksapp import tasks
from tests.testapp.tasks import read_runs


def _soft_time_limit(signum, frame):
    raise SoftTimeLimitExceeded()


def _direct(call):
    return call()


def _under_an_event_loop(call):
    """``call()`` from a thread an outer ``async_to_sync`` lent to ``sync_to_async``:
    the coroutine then runs on that outer loop."""

    async def outer():
        return await sync_to_async(call)()

    return async_to_sync(outer)()


@pytest.mark.parametrize("called", [_direct, _under_an_event_loop], ids=["direct", "nested"])
def test_an_async_task_interrupted_by_a_soft_time_limit_ends_before_the_limit_is_raised(
    tmp_path, called
):
    # The coroutine went on after the limit interrupted the worker's thread waiting for
    # it: its retry overlapped it, and its effects were done after the job was
    # recorded as failed.
    path = tmp_path / "runs"
    previous = signal.signal(signal.SIGALRM, _soft_time_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            called(lambda: get_task(tasks.record_slowly.module_path)(str(path), 1))
        ended = [label for label, _ in read_runs(path)]
        time.sleep(1.2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Its clean-up's sync call ran in the worker's thread, as any while it was waited for.
    cancelled = f"cancelled:{threading.get_ident()}"
    assert ended == [label for label, _ in read_runs(path)] == ["start", cancelled]
