"""The scheduler's Celery tasks (where Celery's autodiscovery looks): thin entry points.

The worker side lives in :mod:`scheduler.worker`, the dispatcher in
:mod:`scheduler.dispatch`.
"""

import logging
import os
from dataclasses import asdict
from functools import cache
from typing import Any
from uuid import UUID

from celery import Task, shared_task

from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.worker.execution import run_job

logger = logging.getLogger(__name__)


@shared_task(name="scheduler.execute_job", bind=True, ignore_result=True)
def execute_job(self: Task[Any, Any], job_id: int, dispatch_token: str) -> str:
    """Run the job a dispatched message names, if the message is still current."""
    try:
        token = UUID(dispatch_token)
        job_id = int(job_id)
    except (TypeError, ValueError):
        logger.warning("message dropped job_id=%r reason=malformed", job_id)
        return "dropped"
    worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
    return run_job(job_id=job_id, token=token, worker=worker).value


@cache
def _dispatcher() -> Dispatcher:
    # One per process: it keeps the SQS queue URLs and the time of the last purge.
    return Dispatcher()


@shared_task(name="scheduler.dispatch", ignore_result=True)
def dispatch() -> dict[str, Any]:
    """One dispatcher tick; django-celery-beat calls it every dispatch interval."""
    return asdict(_dispatcher().run_once())
