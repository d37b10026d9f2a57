"""The app-wide Celery Task class: a message for a scheduled job runs through the claim.

Set it on the project's Celery app (``Celery(..., task_cls="scheduler.worker.task:
SchedulerTask")``) and every task is one: a message the dispatcher sent for a job (its
headers name the job and its dispatch token, see :mod:`scheduler.protocol`) claims the
job, runs the task's body with the job's stored arguments and records the outcome; any
other message is an ordinary Celery task call.
"""

import logging
import os
from typing import Any

from celery import Task
from typing_extensions import override

from scheduler import protocol
from scheduler.worker.execution import run_job

logger = logging.getLogger(__name__)


class SchedulerTask(Task):  # type: ignore[type-arg]
    """A Celery task that also runs the scheduler's jobs of its name."""

    @override
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            ref = protocol.job_ref(vars(self.request))
        except protocol.MalformedMessageError as error:
            logger.warning("message dropped task=%s reason=malformed detail=%s", self.name, error)
            return None
        if ref is None:
            return super().__call__(*args, **kwargs)
        if args or kwargs:
            # The arguments of a job live in PostgreSQL; a message bringing its own is forged.
            logger.warning("message dropped job_id=%s reason=unexpected-arguments", ref.job_id)
            return None
        worker = f"{self.request.hostname or 'worker'}:{os.getpid()}"
        return run_job(
            job_id=ref.job_id, token=ref.dispatch_token, task_name=self.name, worker=worker
        ).value
