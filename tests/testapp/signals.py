"""Celery signal receivers that record, as Effect rows, what a worker process reports.

Only tasks declared with ``record_signals=True`` are recorded (label ``"<signal>
<task name>"``), so the other tests pay nothing.
"""

import os
from collections.abc import Callable
from typing import Any

from celery import signals
from django.utils import timezone

from tests.testapp.models import Effect

RECORDED = ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry")


def _recorder(signal: str) -> Callable[..., None]:
    def record(sender: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "record_signals", False):
            Effect.objects.create(
                label=f"{signal} {sender.name}", atomic=False, at=timezone.now(), pid=os.getpid()
            )

    return record


for _signal in RECORDED:
    getattr(signals, _signal).connect(_recorder(_signal), weak=False)
