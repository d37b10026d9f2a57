"""The scheduler's Celery tasks (where Celery's autodiscovery looks): thin entry points.

Jobs run as their own tasks (see :mod:`scheduler.worker.task`); the dispatcher's tick
is here for beat schedulers that send it as a task, its code in :mod:`scheduler.dispatch`,
and so is the task of scheduler 0.1.0's messages, for an upgrade.
"""

import logging
import threading
from dataclasses import asdict
from functools import cache
from typing import Any

from celery import Task, shared_task

from scheduler.dispatch.dispatcher import Dispatcher, TickResult
from scheduler.worker import legacy

logger = logging.getLogger(__name__)


@cache
def _dispatcher() -> Dispatcher:
    # One per process: it keeps the SQS queue URLs and the time of the last purge.
    return Dispatcher()


# A threads, gevent or eventlet pool can take the next tick's message while the last
# tick still runs; the process's dispatcher and its send pool serve one tick at a time.
_ticking = threading.Lock()


@shared_task(name="scheduler.dispatch", ignore_result=True)
def dispatch() -> dict[str, Any]:
    """One dispatcher tick, for a beat scheduler other than ``DispatchingScheduler``.

    That one runs the tick in beat itself; any other sends this task every dispatch
    interval, and the tick then waits in the job queue (``scheduler.W001`` warns). A
    tick that comes while another runs in this process (a threads pool) is skipped.
    """
    if not _ticking.acquire(blocking=False):
        logger.info("dispatch tick skipped reason=another_tick_of_this_process_runs")
        return asdict(TickResult())
    try:
        return asdict(_dispatcher().run_once())
    finally:
        _ticking.release()


@shared_task(name=legacy.TASK_NAME, bind=True, ignore_result=True)
def execute_job(self: Task, job_id: object = None, dispatch_token: object = None) -> Any:  # type: ignore[type-arg]
    """A message of scheduler 0.1.0 (see :mod:`scheduler.worker.legacy`): runs its job."""
    return legacy.run_message(self, job_id=job_id, dispatch_token=dispatch_token)
