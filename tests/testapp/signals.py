"""Celery signal receivers that record, in the database, what a worker process reports.

Only tasks declared with ``record_signals=True`` are recorded, so the other tests pay
nothing.
"""

from typing import Any

from celery import signals

from tests.testapp.models import SignalRecord


def _record(name: str, task: Any, task_id: str | None, detail: object = "") -> None:
    if getattr(task, "record_signals", False):
        SignalRecord.objects.create(
            signal=name, task_name=task.name, task_id=task_id or "", detail=str(detail)
        )


@signals.task_prerun.connect
def _prerun(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    _record("task_prerun", sender, task_id)


@signals.task_postrun.connect
def _postrun(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    _record("task_postrun", sender, task_id, kwargs.get("state"))


@signals.task_success.connect
def _success(sender: Any = None, result: object = None, **kwargs: Any) -> None:
    _record("task_success", sender, sender.request.id if sender else None, result)


@signals.task_failure.connect
def _failure(
    sender: Any = None, task_id: str | None = None, exception: object = None, **kwargs: Any
) -> None:
    _record("task_failure", sender, task_id, repr(exception))


@signals.task_retry.connect
def _retry(sender: Any = None, request: Any = None, reason: object = None, **kwargs: Any) -> None:
    _record("task_retry", sender, getattr(request, "id", None), reason)
