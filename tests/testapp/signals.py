"""Celery signal receivers that record, as Effect rows, what a worker process reports.

Only tasks declared with ``record_signals=True`` are recorded (label ``"<signal>
<task name>"``), so the other tests pay nothing.
"""

import os
from typing import Any

from celery import signals
from django.utils import timezone

from tests.testapp.models import Effect


def _record(signal: str, task: Any) -> None:
    if getattr(task, "record_signals", False):
        Effect.objects.create(
            label=f"{signal} {task.name}", atomic=False, at=timezone.now(), pid=os.getpid()
        )


@signals.task_prerun.connect
def _prerun(sender: Any = None, **kwargs: Any) -> None:
    _record("task_prerun", sender)


@signals.task_postrun.connect
def _postrun(sender: Any = None, **kwargs: Any) -> None:
    _record("task_postrun", sender)


@signals.task_success.connect
def _success(sender: Any = None, **kwargs: Any) -> None:
    _record("task_success", sender)


@signals.task_failure.connect
def _failure(sender: Any = None, **kwargs: Any) -> None:
    _record("task_failure", sender)


@signals.task_retry.connect
def _retry(sender: Any = None, **kwargs: Any) -> None:
    _record("task_retry", sender)
