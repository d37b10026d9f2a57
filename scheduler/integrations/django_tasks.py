"""A ``django.tasks`` backend whose tasks are scheduler jobs (``scheduler.backends``).

``TASKS = {"default": {"BACKEND": "scheduler.backends.SchedulerBackend"}}`` with Django
6.0's ``django.tasks``, or with the ``django-tasks`` backport on Django 5.2. Then
``my_task.enqueue(...)`` — or ``my_task.using(run_after=<any time>).enqueue(...)`` — is
:func:`scheduler.schedule_at` in the caller's transaction, and ``get_result(id)`` reads
the job back.

How a ``django.tasks`` task runs on the Celery worker: each task declared with this
backend is also a Celery task of the project's app, named after the function's module
path and built on the app's Task class. The dispatcher sends its job as a message for
that name, so the worker's usual claim / run / record path runs it — logs and signals
show the function's own path — and the function's return value becomes the job's
result. A worker knows the tasks of the modules it imports: declare them in an installed
app's ``tasks.py``, where Celery's autodiscovery finds them (as for Celery tasks).

Not supported, with the framework's own clear error: ``priority`` (SQS has none; jobs
start at their time, in ``run_after`` order). Retries follow the scheduler's back-off up
to ``OPTIONS["MAX_ATTEMPTS"]`` (default ``SCHEDULER_DEFAULT_MAX_ATTEMPTS``); a return
value JSON cannot hold fails the job at once, as in ``django.tasks``.
"""

# Annotations stay text: Django 6.0's Task and TaskResult are not generic at run time.
from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import django
from celery import Task as CeleryTask
from celery import shared_task
from django.core import checks
from django.dispatch import receiver
from django.utils import timezone
from django.utils.module_loading import import_string
from typing_extensions import override

from scheduler import services, signals, validation
from scheduler.conf import scheduler_settings
from scheduler.integrations.coroutines import call_coroutine_function
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.registry import get_task, routed_queue
from scheduler.states import Status
from scheduler.tracebacks import exception_line
from scheduler.worker.task import job_run

if TYPE_CHECKING or django.VERSION < (6, 0):
    from django_tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json
else:
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

logger = logging.getLogger(__name__)

#: django.tasks' view of a job's status.
STATUS = {
    Status.SCHEDULED: TaskResultStatus.READY,
    Status.ENQUEUED: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    # Raised on its last attempt, or unable to start at all.
    Status.FAILED: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
    Status.EXPIRED: TaskResultStatus.FAILED,
}
_OPTIONS = {"MAX_ATTEMPTS"}
# The last line of a Python traceback: "package.module.Error: message" (or "Error").
_EXCEPTION_LINE = re.compile(r"^(?P<path>[A-Za-z_][\w.]*)(?::|$)")

#: Every task declared with this backend, by its module path (its Celery task's name).
_declared: dict[str, SchedulerBackendTask] = {}


class WorkerLost(Exception):  # noqa: N818 - named like what happened, as TaskError shows it
    """An attempt's worker stopped heartbeating (it was killed): the attempt was abandoned."""


class SchedulerBackendTask(Task):  # type: ignore[type-arg]
    """A ``django.tasks`` task of :class:`SchedulerBackend`: also a Celery task of its path."""

    __slots__ = ()

    @override
    def __post_init__(self) -> None:
        Task.__post_init__(self)
        _declare(self)


def _declare(task: SchedulerBackendTask) -> None:
    """Make ``task`` a Celery task named after its module path (once per path)."""
    name = task.module_path
    declared = _declared.get(name)
    if declared is not None and declared.func is task.func:
        # A copy that .using() made, with another call's run_after, queue or backend: the
        # declared task stays (get_result() gives it the job's queue and run time).
        return
    # A first declaration, or the function's module imported again (a new function).
    _declared[name] = task
    if declared is not None:
        return

    def run(*args: Any, **kwargs: Any) -> Any:
        # Bound, it is given its Celery task first, under no name: any name could be one
        # of the function's parameters (Celery's signature check ignores a "/").
        return _execute(args[0], _declared[name], args[1:], kwargs)

    run.__doc__ = task.func.__doc__
    # The header Celery and the scheduler (a job scheduled by the task's path, the
    # admin's form) check a call's arguments with: run's takes anything, and such a job
    # failed at its time, on every attempt. A partial, as a bound task's header is
    # (Celery's errbacks tell them apart by it).
    header = staticmethod(partial(_check_declared, name))
    # Celery's own option (a task class attribute), which its stubs do not list.
    shared_task(name=name, bind=True, typing=True, __header__=header)(run)  # type: ignore[call-overload]


def _check_declared(name: str, /, *args: Any, **kwargs: Any) -> None:
    # The function declared last under that path: a reload's.
    _check_arguments(_declared[name], args, kwargs)


def _check_arguments(task: Task[Any, Any], args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """TypeError if ``task``'s function cannot take ``args`` and ``kwargs`` (after its
    context, when it takes one)."""
    context = (None,) if task.takes_context else ()
    inspect.signature(task.func).bind(*context, *args, **kwargs)


def _same_function(declared: Callable[..., Any], function: Callable[..., Any]) -> bool:
    """Whether ``function`` is ``declared``, or its module's code run again (a reload)."""
    code, again = declared.__code__, function.__code__
    return declared is function or (code.co_filename, code.co_firstlineno) == (
        again.co_filename,
        again.co_firstlineno,
    )


def _execute(
    celery_task: CeleryTask[Any, Any],
    task: SchedulerBackendTask,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The Celery task's body: call the function, with its context if it takes one.

    A return value the job's result cannot hold (JSON, stored by PostgreSQL) fails the
    job at once (no retry runs it again)."""
    run = job_run(celery_task)
    backend = task.get_backend()
    result = backend.get_result(str(run.job.pk)) if run is not None else None
    if result is not None:
        task_started.send(sender=type(backend), task_result=result)
    if task.takes_context:
        if result is None:
            raise InvalidTask(f"{task.module_path} takes a context, so it runs only as a job")
        args = (TaskContext(task_result=result), *args)
    if inspect.iscoroutinefunction(task.func):
        value = call_coroutine_function(task.func, *args, **kwargs)
    else:
        value = task.call(*args, **kwargs)
    try:
        value = normalize_json(value)
        # JSON for Python, not for the job's jsonb: stored as None under a success.
        if (reason := validation.unstorable_json(value)) is not None:
            raise ValueError(f"the return value cannot be stored: {reason}")
    except (TypeError, ValueError, RecursionError):
        # The function has run: as django.tasks' ImmediateBackend, the task fails, and
        # no retry repeats its effects for a result that could never be kept (nested
        # deeper than Python's stack lets the encoder go, too).
        if run is not None:
            run.final = True
        raise
    return value


class SchedulerBackend(BaseTaskBackend):
    """``django.tasks`` on the scheduler: every enqueued task is a :class:`ScheduledJob`.

    ``run_after`` may be any time ahead, days or weeks; none means as soon as possible.
    The job is inserted in the caller's transaction. A result's id is the job's id.
    """

    task_class = SchedulerBackendTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    # SQS queues have no priority: jobs start at their time.
    supports_priority = False

    @override
    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        declared = _declared.get(task.module_path)
        if declared is not None and not _same_function(declared.func, task.func):
            # Two module-level lambdas, say: the jobs of one would run the other.
            raise InvalidTask(
                f"{task.module_path} already names another task's function: each task "
                "needs a module path of its own (jobs name their task by it)"
            )
        if not isinstance(task, SchedulerBackendTask):
            raise InvalidTask(
                f"{task.module_path} must be declared with the {self.alias!r} backend "
                f"(@task(backend={self.alias!r})) for the Celery workers to know it"
            )
        # QUEUES may be empty (any name) or list a bad one (scheduler.E032): said here, as
        # the framework's error, not at enqueue() as the scheduler's.
        if self._queue(task.queue_name) is not None and not validation.is_valid_queue_name(
            task.queue_name
        ):
            raise InvalidTask(
                f"Queue {task.queue_name!r} is no SQS queue's name (1-80 letters, digits, - or _)."
            )

    @override
    def enqueue(
        self,
        task: Task[Any, Any],
        args: Any,
        kwargs: Any,
    ) -> TaskResult[Any]:
        self.validate_task(task)
        # The Celery task that runs it takes anything: check the function's own signature
        # now, or a misspelt keyword fails only at its time, on every attempt.
        _check_arguments(task, args, kwargs)
        job = services.schedule_at(
            task.module_path,
            task.run_after or timezone.now(),
            _plain(normalize_json(args)),
            _plain(normalize_json(kwargs)),
            queue=self._queue(task.queue_name),
            max_attempts=self.options.get("MAX_ATTEMPTS"),
        )
        result = self._result(task, job, attempts=[])
        task_enqueued.send(sender=type(self), task_result=result)
        return result

    @override
    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The job ``result_id`` as a TaskResult; TaskResultDoesNotExist if it is none of ours."""
        job_id = validation.job_id_in(str(result_id))
        job = None if job_id is None else ScheduledJob.objects.filter(pk=job_id).first()
        task = _task_named(job.task_name) if job is not None else None
        if job is None or task is None:
            raise TaskResultDoesNotExist(result_id)
        # In the order they ran: a retry numbers its attempts from 1 again.
        attempts = list(job.history.order_by("started_at", "pk"))
        return self._result(self._as_enqueued(task, job), job, attempts=attempts)

    @override
    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        if not isinstance(self.options, Mapping):
            yield checks.Error(
                f"TASKS[{self.alias!r}]['OPTIONS'] must be a dict, got {self.options!r}.",
                hint=f"{type(self).__name__} accepts {sorted(_OPTIONS)}.",
                id="scheduler.E030",
            )
            return
        unknown = set(self.options) - _OPTIONS
        if unknown:
            yield checks.Error(
                f"TASKS[{self.alias!r}]['OPTIONS'] has unknown keys: {sorted(unknown)}.",
                hint=f"{type(self).__name__} accepts {sorted(_OPTIONS)}.",
                id="scheduler.E030",
            )
        max_attempts = self.options.get("MAX_ATTEMPTS")
        if max_attempts is not None and (
            not isinstance(max_attempts, int)
            or isinstance(max_attempts, bool)
            or not 1 <= max_attempts <= validation.MAX_ATTEMPTS_LIMIT
        ):
            yield checks.Error(
                f"TASKS[{self.alias!r}]['OPTIONS']['MAX_ATTEMPTS'] must be an integer from 1 "
                f"to {validation.MAX_ATTEMPTS_LIMIT}, got {max_attempts!r}.",
                id="scheduler.E031",
            )
        invalid = sorted(
            (
                name
                for name in self.queues
                if name != DEFAULT_TASK_QUEUE_NAME and not validation.is_valid_queue_name(name)
            ),
            key=repr,
        )
        if invalid:
            yield checks.Error(
                f"TASKS[{self.alias!r}]['QUEUES'] names no SQS queue: {invalid} (1-80 "
                "letters, digits, - or _): every enqueue() on it would fail.",
                id="scheduler.E032",
            )

    def _as_enqueued(self, task: SchedulerBackendTask, job: ScheduledJob) -> Task[Any, Any]:
        """``task`` as ``job`` has it: its queue, and its run time when that was deferred
        (or a retry's), so that another process, and the function's own context, read
        when and where it runs."""
        # The default queue is the one a job enqueued without a queue goes to.
        routed = routed_queue(get_task(job.task_name), job.args, job.kwargs)
        default = routed or scheduler_settings.QUEUE_NAME
        queue_name = DEFAULT_TASK_QUEUE_NAME if job.queue == default else job.queue
        # As this backend's, whose QUEUES the task's own backend may lack.
        backend = self.alias
        if self.queues and queue_name not in self.queues:
            # QUEUES changed since, or the job is another alias's: the task as declared,
            # not an error reading a result.
            queue_name, backend = task.queue_name, task.backend
        run_after = job.run_at if job.run_at > job.created_at else None
        if (queue_name, run_after, backend) == (task.queue_name, task.run_after, task.backend):
            return task
        return task.using(queue_name=queue_name, run_after=run_after, backend=backend)

    @staticmethod
    def _queue(queue_name: str) -> str | None:
        # django.tasks' default queue is the scheduler's; any other is an SQS queue's name.
        return None if queue_name == DEFAULT_TASK_QUEUE_NAME else queue_name

    def _result(
        self,
        task: Task[Any, Any],
        job: ScheduledJob,
        *,
        attempts: list[JobAttempt],
    ) -> TaskResult[Any]:
        status = STATUS[Status(job.status)]
        result: TaskResult[Any] = TaskResult(
            task=task,
            id=str(job.pk),
            status=status,
            enqueued_at=job.created_at,
            started_at=attempts[0].started_at if attempts else None,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            finished_at=job.finished_at
            if status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
            else None,
            args=job.args,
            kwargs=job.kwargs,
            backend=self.alias,
            errors=[_error(attempt) for attempt in attempts if attempt.error],
            worker_ids=[attempt.worker for attempt in attempts],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", job.result)
        return result


#: Task names that are no importable path (Celery tasks named otherwise): a job of one
#: that ends is not looked up again.
_not_importable: set[str] = set()


def _plain(value: Any) -> Any:
    """``value``, normalised by ``normalize_json``, with its str, int and float subclasses
    (a template's ``SafeString``, a choices member) as the plain values JSON keeps, as a
    database backend of ``django.tasks`` would store them: the scheduler refuses a value
    that would not come back as it went in."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    # Each base type's own conversion gives the plain value, whatever the subclass's
    # __str__ says (a choices member's label).
    for plain, convert in _PLAIN:
        if isinstance(value, plain) and not isinstance(value, bool):
            return convert(value)
    return value


_PLAIN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (str, str.__str__),
    (int, int.__int__),
    (float, float.__float__),
)


def _task_named(name: str) -> SchedulerBackendTask | None:
    """The task of this backend whose module path is ``name``, importing it if need be:
    a process may not have imported it (Celery's autodiscovery runs in workers and beat)."""
    if name not in _declared and name not in _not_importable:
        try:
            import_string(name)
        except (ImportError, ValueError, TypeError):  # no module path: ".x", "..x"
            # A task of a class body is no module's attribute: importing its module, on
            # the way, declared it all the same.
            _not_importable.add(name)
    return _declared.get(name)


def _error(attempt: JobAttempt) -> TaskError:
    if attempt.outcome == JobAttempt.Outcome.LEASE_EXPIRED:
        path = f"{WorkerLost.__module__}.{WorkerLost.__qualname__}"
    else:
        match = _EXCEPTION_LINE.match(exception_line(attempt.error))
        path = match["path"] if match else "Exception"
        # Built-in exceptions are printed without their module.
        path = path if "." in path else f"builtins.{path}"
    return TaskError(exception_class_path=path, traceback=attempt.error)


@receiver(signals.job_succeeded)
@receiver(signals.job_failed)
# Cancelled and expired jobs read back as FAILED, finished: Django says so as they end.
@receiver(signals.job_cancelled)
@receiver(signals.job_expired)
def _finished(
    sender: type[ScheduledJob],  # noqa: ARG001 - the signal's
    *,
    job_id: int,
    task_name: str,
    **kwargs: Any,
) -> None:
    """django.tasks' ``task_finished``, once a job of one of this backend's tasks has ended."""
    task = _task_named(task_name)
    if task is None:
        return
    backend = task.get_backend()
    task_finished.send(sender=type(backend), task_result=backend.get_result(str(job_id)))
