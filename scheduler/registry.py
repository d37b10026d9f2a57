"""Which Celery tasks a job may name, and how a name becomes a task."""

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import import_module
from typing import Any

from celery import Task, current_app
from celery.canvas import Signature
from celery.utils.functional import maybe_list
from django.utils.module_loading import autodiscover_modules
from kombu.transport.SQS import CHARS_REPLACE_TABLE

# The scheduler's own tasks and Celery's built-ins are never the target of a job.
_RESERVED_PREFIXES = ("celery.", "scheduler.")


def task_name_of(task: Task[Any, Any] | str) -> str:
    """The registered name of a task object, or the name itself: a ``django.tasks``
    task's is its module path, the name the scheduler's backend registers it under."""
    if isinstance(task, str):
        return task
    if isinstance(task, Signature):
        # Its name alone would do, and the job run without the arguments and options it
        # carries; they are not quoted (a card's token, say).
        raise TypeError(
            f"expected a Celery task or a task name, got a signature of {task.name!r}: "
            "pass the task, and its arguments and options apart"
        )
    module_path = getattr(task, "module_path", None)
    if isinstance(module_path, str) and callable(getattr(task, "func", None)):
        # Its name is its function's bare name ("add"): another task's, or none at all.
        return module_path
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
    """The name of the SQS queue a call of ``task`` goes to under Celery's routing.

    ``explicit`` (an SQS queue's name) wins, then the task's own ``queue`` option, then
    the first ``task_routes`` match (a name, or a kombu Queue); None when nothing names a
    queue (the caller picks its default). A name Celery's routing gives is a Celery
    queue's: the SQS queue's as kombu's transport names it (:func:`sqs_queue_name`), the
    one a worker consuming it polls. What is not a name is returned as it is, for
    validation to reject.
    """
    if explicit:
        return explicit
    queue = getattr(task, "queue", None)
    if not queue:
        router: Any = task.app.amqp.router
        route = (
            router.lookup_route(task.name, list(args), dict(kwargs), {}, task)
            if router.routes
            else None
        )
        queue = route.get("queue") if isinstance(route, Mapping) else route
    return sqs_queue_of(queue)


def sqs_queue_of(queue: Any) -> Any:
    """The name of the SQS queue a Celery queue (a name or a kombu Queue) is; anything
    else as it is, for validation to reject."""
    name = getattr(queue, "name", queue)
    return sqs_queue_name(name) if isinstance(name, str) else name


def sqs_queue_name(name: str) -> str:
    """The SQS queue a Celery queue named ``name`` is, as kombu's SQS transport names it:
    a dot becomes a dash and other punctuation an underscore (``reports.slow`` is
    ``reports-slow``), and a FIFO queue keeps its ``.fifo``."""
    base, fifo = (name.removesuffix(".fifo"), ".fifo") if name.endswith(".fifo") else (name, "")
    return base.translate(CHARS_REPLACE_TABLE) + fifo


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
    # Outside a worker, the task modules a worker imports are imported only on demand:
    # installed apps' tasks modules, and those Celery's imports and include name.
    # Django's own discovery and plain imports, not Celery's loader: that one runs the
    # system checks inside a worker (its import_modules signal), and a check may ask for
    # the task names.
    autodiscover_modules("tasks")
    conf = current_app.conf
    for module in (*(maybe_list(conf.imports) or ()), *(maybe_list(conf.include) or ())):
        import_module(module)
