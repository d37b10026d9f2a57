"""Which Celery tasks a job may name, and how a name becomes a task."""

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from celery import Task, current_app
from django.utils.module_loading import autodiscover_modules

# The scheduler's own tasks and Celery's built-ins are never the target of a job.
_RESERVED_PREFIXES = ("celery.", "scheduler.")


def task_name_of(task: Task[Any, Any] | str) -> str:
    """The registered name of a task object, or the name itself."""
    if isinstance(task, str):
        return task
    name = getattr(task, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a Celery task or a task name, got {task!r}")
    return name


def routed_queue(
    task: Task[Any, Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    explicit: str | None = None,
) -> object:
    """The name of the queue a call of ``task`` goes to under Celery's routing.

    ``explicit`` wins, then the task's own ``queue`` option, then the first
    ``task_routes`` match (a name, or a kombu Queue); None when nothing names a queue
    (the caller picks its default). What is not a name is returned as it is, for
    validation to reject.
    """
    queue = explicit or getattr(task, "queue", None)
    if not queue:
        router: Any = task.app.amqp.router
        route = (
            router.lookup_route(task.name, list(args), dict(kwargs), {}, task)
            if router.routes
            else None
        )
        queue = route.get("queue") if isinstance(route, Mapping) else route
    return getattr(queue, "name", queue)


def schedulable_task_names() -> list[str]:
    """Every registered task that a job may run, sorted."""
    tasks = _registered_tasks()
    return sorted(name for name in tasks if not name.startswith(_RESERVED_PREFIXES))


def check_arguments(task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """TypeError if ``task``'s signature refuses ``args`` and ``kwargs``, as Celery's
    ``apply_async`` checks them (a task made from a function, unless ``typing=False``)."""
    header = getattr(task, "__header__", None)
    if task.typing and header is not None:
        header(*args, **kwargs)


def get_task(name: str) -> Task[Any, Any]:
    """The registered task called ``name``; ``KeyError`` if it cannot be scheduled."""
    if name.startswith(_RESERVED_PREFIXES):
        raise KeyError(name)
    return _registered_tasks()[name]


def _registered_tasks() -> Mapping[str, Task[Any, Any]]:
    _import_task_modules()
    tasks: Mapping[str, Task[Any, Any]] = current_app.tasks
    return tasks


@cache
def _import_task_modules() -> None:
    # Outside a worker, installed apps' tasks modules are imported only on demand.
    # Django's own discovery, not Celery's loader: that one runs the system checks
    # inside a worker, and a check may ask for the task names.
    autodiscover_modules("tasks")
