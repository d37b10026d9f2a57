"""System checks of the worker side: jobs run only through the scheduler's Task class."""

from collections.abc import Sequence
from typing import Any

from celery import current_app
from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, register

from scheduler.registry import get_task, schedulable_task_names
from scheduler.worker.task import SchedulerTask

_TASK_CLS = "scheduler.worker.task:SchedulerTask"


@register()
def check_task_class(
    app_configs: Sequence[AppConfig] | None = None,  # noqa: ARG001 - Django passes it
    **kwargs: Any,
) -> list[CheckMessage]:
    """The Celery app's Task class, and each schedulable task's, must be SchedulerTask.

    Otherwise a job's message runs the task's body with no arguments and no claim.
    """
    app_task_class = current_app.Task
    if not issubclass(app_task_class, SchedulerTask):
        return [
            Error(
                f"The Celery app {current_app.main!r} creates tasks of class "
                f"{app_task_class.__module__}.{app_task_class.__qualname__}, not the "
                "scheduler's SchedulerTask: a job's message would run without its claim "
                "and arguments.",
                hint=f'Create the app with Celery(..., task_cls="{_TASK_CLS}").',
                id="scheduler.E020",
            )
        ]
    return [
        Error(
            f"The task {name!r} does not derive from SchedulerTask (another base= was "
            "given): its jobs cannot run.",
            hint="Give it a base class that derives from scheduler.worker.task.SchedulerTask.",
            id="scheduler.E021",
        )
        for name in schedulable_task_names()
        if not isinstance(get_task(name), SchedulerTask)
    ]
