"""Messages of scheduler 0.1.0, still in SQS when 0.2 workers take over.

0.1.0's dispatcher sent every job as a ``scheduler.execute_job(job_id, dispatch_token)``
task, up to ``SCHEDULER_LOOKAHEAD_SECONDS`` (300 by default) before its run_at. A worker
without that task would reject them, and their jobs would wait for recovery to send them
again, ``SCHEDULER_STALE_AFTER_SECONDS`` late. Here each runs its job as the job's own
task does for a message of this version: the same claim on the same token, so a job
runs once whichever message reaches a worker first. What Celery does around the
message's task is done for this one, not the job's: the job task's time limits do not
apply, its ``on_success``/``on_failure`` hooks are not called, ``task_success`` and
``task_failure`` name ``scheduler.execute_job``, and the body's ``self.request`` has no
id or hostname.
"""

import logging
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from scheduler import protocol
from scheduler.models import ScheduledJob
from scheduler.worker.task import SchedulerTask, celery_return

logger = logging.getLogger(__name__)

#: The task name of 0.1.0's messages.
TASK_NAME = "scheduler.execute_job"


def run_message(
    message_task: Task,  # type: ignore[type-arg]
    *,
    job_id: object,
    dispatch_token: object,
) -> Any:
    """Run the job a 0.1.0 message names, as the job's own task would for its message.

    ``message_task`` is the task the message arrived as: its request (the worker, the
    eta) is the delivery's. A message that names no job this worker can run is dropped with
    one log line.
    """
    try:
        ref = protocol.read_job_ref(job_id, dispatch_token)
    except protocol.MalformedMessageError as error:
        logger.warning("message dropped task=%s reason=malformed detail=%.200s", TASK_NAME, error)
        raise Ignore() from None
    task_name = (
        ScheduledJob.objects.filter(pk=ref.job_id).values_list("task_name", flat=True).first()
    )
    task = message_task.app.tasks.get(task_name) if task_name is not None else None
    if not isinstance(task, SchedulerTask):
        # No such job (a stale message), or a task this worker cannot run as a job: if
        # the job is still enqueued, recovery sends it again in this version's format.
        logger.warning(
            "message dropped job_id=%s task=%s reason=%s job_task=%s",
            ref.job_id,
            TASK_NAME,
            "not-current" if task_name is None else "unregistered-task",
            task_name,
        )
        raise Ignore()
    return celery_return(task.handle_job_message(ref, request=message_task.request), message_task)
