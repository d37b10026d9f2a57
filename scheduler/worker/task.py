"""The app-wide Celery Task class: jobs run as their own task, long countdowns become jobs.

Set it on the project's Celery app (``Celery(..., task_cls="scheduler.worker.task:
SchedulerTask")``; the system check ``scheduler.E020`` says when it is missing) and
every task is one:

- A message the dispatcher sent for a job (its headers name the job and its dispatch
  token, see :mod:`scheduler.protocol`) claims the job, runs the task's body with the
  job's stored arguments under a heartbeat, and records the outcome. The worker hands
  it over a moment before its eta (:mod:`scheduler.worker.request`) and the claim
  commits at the eta, so the body starts on time. Celery's tracer
  wraps it all, so logs and signals carry the task's own name, and its time limits,
  rate limit and ``autoretry_for`` apply; ``self.retry()`` becomes a retry through
  PostgreSQL. A malformed, forged, replayed or stale message is dropped with one log
  line. Any other message is an ordinary Celery task call.
- ``apply_async(countdown=…/eta=…)`` and ``self.retry(countdown=…)`` of any task go to
  SQS with a per-message ``DelaySeconds`` within ``SCHEDULER_MAX_DELAY_SECONDS``, and
  become a job beyond it.
- ``@shared_task(atomic=True)`` runs the body in one database transaction, which for a
  job also holds the success transition; for an ordinary call, a ``self.retry()`` that
  becomes a job is scheduled once that transaction has ended.
"""

import inspect
import logging
import os
import secrets
import socket
import threading
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from functools import cache, partial
from numbers import Real
from typing import Any

from celery import Task
from celery.app.task import Context
from celery.backends.base import DisabledBackend
from celery.exceptions import Ignore, Reject, Retry
from celery.result import AsyncResult
from celery.signals import worker_process_init
from celery.utils.serialization import raise_with_context
from celery.utils.time import maybe_iso8601, maybe_make_aware
from django.db import transaction
from django.utils import timezone
from kombu.utils.uuid import uuid
from typing_extensions import override

from scheduler import protocol, validation
from scheduler.conf import scheduler_settings
from scheduler.exceptions import InvalidArgumentsError
from scheduler.integrations.coroutines import outside_event_loop
from scheduler.registry import check_arguments, routed_queue, sqs_queue_of
from scheduler.services.scheduling import schedule_call
from scheduler.services.transitions import retry_delay
from scheduler.worker.execution import Handled, JobRun, Outcome, run_job

logger = logging.getLogger(__name__)

#: The request attribute that holds the job a task body runs for.
_JOB_RUN = "scheduler_job_run"
#: apply_async options that a job cannot keep: it runs no callbacks and joins no chord.
#: A group's id is not among them: without a chord nothing waits for the group's members
#: together, and the job keeps the member's own task id, which the GroupResult holds
#: (Celery sends a task's several callbacks, and its error callbacks, as a group).
_CANVAS_OPTIONS = ("link", "link_error", "chain", "chord")
#: apply_async options of the call's message that a job cannot keep: the task's own
#: settings apply when it runs.
_MESSAGE_OPTIONS = ("headers", "shadow", "soft_time_limit", "time_limit")

#: While a task's ordinary call runs: what its ``self.retry()`` made a job, to schedule
#: once the body has ended. Celery's retry sends the call again before it raises Retry,
#: which rolls back the transaction the body is in (``atomic=True``'s or one the body
#: opened), and the job with it.
_after_body: ContextVar[list[Callable[[], object]] | None] = ContextVar(
    "scheduler_after_body", default=None
)
#: While Celery's retry of an ordinary call sends it again.
_in_celery_retry: ContextVar[bool] = ContextVar("scheduler_in_celery_retry", default=False)


class SchedulerTask(Task):  # type: ignore[type-arg]
    """A Celery task that also runs the scheduler's jobs of its name."""

    #: ``@shared_task(atomic=True)``: the body runs in one database transaction; for a
    #: job, the success transition commits with it.
    atomic: bool = False

    #: The worker hands a job's message to the pool a moment before its eta.
    Request = "scheduler.worker.request:Request"

    @override
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # A direct call from inside a job's body is an ordinary call, not a delivery.
        if job_run(self) is None:
            try:
                ref = protocol.job_ref(vars(self.request))
            except protocol.MalformedMessageError as error:
                logger.warning(
                    "message dropped task=%s reason=%s detail=%.200s",
                    self.name,
                    error.reason,
                    error,
                )
                raise Ignore() from None
            if ref is not None:
                if args or kwargs:
                    # A job's arguments live in PostgreSQL: a message bringing its own is forged.
                    logger.warning(
                        "message dropped job_id=%s task=%s reason=unexpected-arguments",
                        ref.job_id,
                        self.name,
                    )
                    raise Ignore()
                return celery_return(self.handle_job_message(ref), self)
        after_body: list[Callable[[], object]] = []
        scope = _after_body.set(after_body)
        try:
            if self.atomic:
                with transaction.atomic():
                    try:
                        return super().__call__(*args, **kwargs)
                    except Ignore as error:
                        # The body ended without an error (self.replace() raises Ignore
                        # once the replacement is on its way, sent on commit): its work
                        # commits, as a job's does.
                        ended = error
                raise ended
            return super().__call__(*args, **kwargs)
        finally:
            _after_body.reset(scope)
            for schedule in after_body:
                schedule()

    def handle_job_message(
        self, ref: protocol.JobRef, *, request: Context | None = None
    ) -> Handled:
        """Claim, run and record the job ``ref`` names, as a worker does for its message.

        ``request`` is the delivery's Celery request: this task's own by default.
        """
        request = request or self.request
        worker = _delivering(request)
        eta = vars(request).get("eta")  # an ISO 8601 string, which the worker read
        return run_job(
            job_id=ref.job_id,
            token=ref.dispatch_token,
            task_name=self.name,
            worker=worker,
            runner=self,
            # The worker hands the message over a moment early; the job starts at its eta.
            not_before=_aware(self, eta) if isinstance(eta, str | datetime) else None,
        )

    @override
    def on_replace(self, sig: Any) -> Any:
        """Celery's ``self.replace()``; an atomic task's replacement is sent once the
        body's transaction has committed: sent before, it could run before the work it
        carries on was there, and again after a commit that failed (the attempt
        retried). A send that fails after the commit is logged, the job left succeeded."""
        if not self.atomic or self.request.is_eager:
            return super().on_replace(sig)
        transaction.on_commit(sig.delay)
        raise Ignore("Replaced by new task")

    def run_job_body(self, run: JobRun) -> Any:
        """Run the body with the job's arguments (a :class:`JobRunner`).

        The request shows the job's arguments, and Celery's retry count continued by
        the job's attempts, so ``self.request.retries`` and ``retry_backoff`` work.

        Celery's control exceptions end the job as they end a task: Ignore (which
        ``self.replace()`` raises once the replacement is sent) is a success without a
        result, committed with an atomic body's work; ``Reject(requeue=False)`` fails
        the job; ``Reject(requeue=True)`` is a retry through PostgreSQL after the job's
        back-off (failed with no attempt left). Celery is handed what the job did: an
        Ignore, a Reject that does not requeue (the message is deleted, the failure
        reported), or a Retry (acknowledged): never a requeued copy of a message whose
        job is already scheduled again.
        """
        job = run.job
        self.push_request(
            args=job.args, kwargs=job.kwargs, retries=job.attempts - 1, **{_JOB_RUN: run}
        )
        try:
            return self.run(*job.args, **job.kwargs)
        except Ignore as ignored:
            run.reraise = ignored
            return None
        except Reject as rejected:
            # Set by Celery's Reject, whose stubs omit them.
            reason, requeue = getattr(rejected, "reason", None), getattr(rejected, "requeue", False)
            if not requeue:
                run.final = True
                raise
            if run.attempts_left < 1:
                run.final = True
                raise Reject(reason, requeue=False) from rejected
            run_at = timezone.now() + retry_delay(job.attempts)
            run.request_retry(run_at=run_at, reason="".join(traceback.format_exception(rejected)))
            raise Retry(exc=rejected, when=run_at) from rejected
        finally:
            self.pop_request()

    @override
    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Celery's retry; inside a job, a retry through PostgreSQL (no new message).

        The job goes back to scheduled for ``eta`` or ``countdown`` (the task's
        ``default_retry_delay`` by default), with new ``args``/``kwargs``, ``queue``
        and ``expires`` (its deadline) if given, while both the job's ``max_attempts``
        and Celery's ``max_retries`` allow it; otherwise, as Celery does, ``exc`` (or
        MaxRetriesExceededError) is raised and the job fails. Other options of a
        message (``priority``, ``headers``…) are not kept, with a warning.
        """
        run = job_run(self)
        if run is None:
            scope = _in_celery_retry.set(True)
            try:
                return super().retry(
                    args, kwargs, exc, throw, eta, countdown, max_retries, **options
                )
            finally:
                _in_celery_retry.reset(scope)
        limit = self.max_retries if max_retries is None else max_retries
        if run.attempts_left < 1 or (limit is not None and self.request.retries >= limit):
            run.final = True
            if exc is not None:
                raise_with_context(exc)
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{self.request.id}]: job {run.job.pk} made "
                f"{run.job.attempts} of its {run.job.max_attempts} attempts "
                f"(max_retries={limit})"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        when: Any = countdown or eta  # Celery shows seconds or a time; a countdown wins
        signal = Retry(exc=exc, when=when)
        if args is not None or kwargs is not None:
            args, kwargs = _tuples_as_lists(
                _retry_arguments(self, run.job.args, run.job.kwargs, args, kwargs)
            )
            # Refused now, failing this attempt: stored, they failed every later one.
            check_arguments(self, args, kwargs)
        now = timezone.now()
        expires = options.pop("expires", None)
        queue = options.pop("queue", None)
        _warn_unkept("job retry", options, job_id=run.job.pk, task=self.name)
        run.request_retry(
            run_at=_eta(self, {"countdown": countdown, "eta": eta}) or now,
            reason=str(signal),
            args=args,
            kwargs=kwargs,
            queue=None if queue is None else sqs_queue_of(queue),
            deadline=None if expires is None else _point_in_time(self, expires, now=now),
        )
        if throw:
            raise signal
        return signal

    @override
    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Celery's apply_async; a delay beyond SQS's reach makes a job instead.

        With a ``countdown`` or ``eta`` within ``SCHEDULER_MAX_DELAY_SECONDS`` the
        message carries its own SQS ``DelaySeconds`` (up to the delivery lead before
        its eta), so no worker holds it for long. Beyond that the call becomes a job in
        the caller's transaction (arguments must be JSON; ``expires`` becomes its
        deadline) and the AsyncResult's id is the job's ``celery_task_id``. Options of
        the message (``headers``, ``shadow``, time limits) are not kept, with a warning.
        """
        _refuse_long_steps_with_followers(self, options.get("chain"))
        eta = _eta(self, options)
        if eta is not None and not self.app.conf.task_always_eager:
            now = timezone.now()
            if (eta - now).total_seconds() > scheduler_settings.MAX_DELAY_SECONDS:
                options.update(link=link, link_error=link_error, shadow=shadow)
                return self._schedule_as_job(eta, args, kwargs, task_id, options, now=now)
            delay = protocol.delivery_delay_seconds(
                eta,
                now=now,
                max_delay=scheduler_settings.MAX_DELAY_SECONDS,
                lead=scheduler_settings.DELIVERY_LEAD_SECONDS,
            )
            if delay:
                _refuse_fifo_delay(self, args, kwargs, options.get("queue"))
                options["delay_seconds"] = delay
        return super().apply_async(
            args, kwargs, task_id, producer, link, link_error, shadow, **options
        )

    def _schedule_as_job(
        self,
        eta: datetime,
        args: Any,
        kwargs: Any,
        task_id: str | None,
        options: dict[str, Any],
        *,
        now: datetime,
    ) -> AsyncResult[Any]:
        # As Celery's JSON serializer sends them: a chain's step gets the step before's
        # result first among its arguments, in the worker, once that step has run.
        if not isinstance(args, list | tuple):
            args = validation.job_args(args or ())  # refuses what is no list: a string
        args, kwargs = _tuples_as_lists(args), _tuples_as_lists(kwargs or {})
        # As Celery's apply_async checks them before it sends: a job would fail only
        # at its time.
        check_arguments(self, args, kwargs)
        canvas = [name for name in _CANVAS_OPTIONS if options.get(name)]
        if canvas and not _in_celery_retry.get():
            raise InvalidArgumentsError(
                canvas[0],
                "cannot be kept: a call delayed beyond SCHEDULER_MAX_DELAY_SECONDS "
                "becomes a scheduled job, which runs no callbacks and joins no canvas",
            )
        ignore_result = options.get("ignore_result")
        if ignore_result not in (None, self.ignore_result):
            # The job's messages carry none: its result is kept as the task says, and
            # result.get() would wait for one never stored (or the reverse).
            refused = InvalidArgumentsError(
                "ignore_result",
                "cannot be kept: a call delayed beyond SCHEDULER_MAX_DELAY_SECONDS becomes "
                "a scheduled job, whose result is kept as the task says "
                f"(ignore_result={self.ignore_result}); set it on the task",
            )
            if not _in_celery_retry.get():
                raise refused
            # A retry (Celery carries the call's own): refused, it would drop the task.
            logger.warning("task retry kept no ignore_result task=%s: %s", self.name, refused)
        expires, queue = options.get("expires", self.expires), options.get("queue")
        deadline = None if expires is None else _point_in_time(self, expires, now=now)
        if deadline is not None and deadline <= eta:
            # Celery would send it and drop it, expired, at its time: never run.
            raise InvalidArgumentsError(
                "expires",
                f"must be after the call's eta: {deadline.isoformat()} is not after "
                f"{eta.isoformat()}, so the task could never run",
            )
        # As its message would carry it: a UUID object, say, as its text.
        celery_task_id = str(task_id or uuid())
        if canvas:
            # Celery's retry carries the task's canvas on. Refused, the retry would be
            # lost (Celery rejects the message when its send fails): the task runs again,
            # its canvas does not.
            logger.warning(
                "retry became a job without its canvas task=%s celery_task_id=%s dropped=%s",
                self.name,
                celery_task_id,
                ",".join(canvas),
            )
        if not _in_celery_retry.get():
            # Not for a retry: Celery carries on those its message had, which were kept
            # for its first run.
            _warn_unkept(
                "call",
                {name: options.get(name) for name in _MESSAGE_OPTIONS},
                celery_task_id=celery_task_id,
                task=self.name,
            )
        # From async code (an async view) Django refuses the INSERT in this thread;
        # Celery's apply_async works there.
        schedule = partial(
            outside_event_loop,
            partial(
                schedule_call,
                self,
                eta,
                args,
                kwargs,
                celery_task_id=celery_task_id,
                queue=sqs_queue_of(queue),  # Celery's: a name or a kombu Queue
                deadline=deadline,
                retries=options.get("retries") or 0,
            ),
        )
        after_body = _after_body.get()
        if after_body is not None and _in_celery_retry.get():
            after_body.append(schedule)
        else:
            schedule()
        result = self.AsyncResult(celery_task_id)
        # As Celery's send_task: get() then returns None at once, waiting for no result.
        result.ignored = self.ignore_result
        return result


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _tuples_as_lists(value: Any) -> Any:
    """``value`` with every tuple (and list and dict) in it a plain list (and dict), as
    JSON carries it; anything else as it is, for the job's validation to refuse (args
    that are a string, say, are no list)."""
    if isinstance(value, tuple | list):
        return [_tuples_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _tuples_as_lists(item) for key, item in value.items()}
    return value


def _warn_unkept(event: str, options: dict[str, Any], **names: object) -> None:
    """Warn that the job ``event`` made keeps none of ``options`` that are set: a job has
    no message of the call's own to carry them."""
    unkept = sorted(name for name, value in options.items() if value is not None)
    if unkept:
        logger.warning(
            "%s kept no %s %s",
            event,
            ",".join(unkept),
            " ".join(f"{key}={value}" for key, value in names.items()),
        )


def _retry_arguments(
    task: Task,  # type: ignore[type-arg]
    old_args: list[Any],
    old_kwargs: dict[str, Any],
    args: Any,
    kwargs: Any,
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments of a retry given ``args`` or ``kwargs``, as Celery's ``retry``
    makes them: new keywords replace the job's positional arguments of the same name,
    and new positional arguments drop the job's keywords they now fill."""
    new_args = list(old_args if args is None else args)
    new_kwargs = dict(old_kwargs if kwargs is None else kwargs)
    try:
        parameters = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return new_args, new_kwargs  # the signature check decides
    positional = [p for p in parameters if p.kind in _POSITIONAL][: len(new_args)]
    for index, parameter in enumerate(positional):
        if parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue  # positional only: no keyword names it
        if args is not None and kwargs is None:
            new_kwargs.pop(parameter.name, None)
        elif kwargs is not None and args is None and parameter.name in new_kwargs:
            new_args[index] = new_kwargs.pop(parameter.name)
    return new_args, new_kwargs


def celery_return(handled: Handled, task: Task) -> Any:  # type: ignore[type-arg]
    """A job delivery's outcome, as Celery's tracer for ``task`` understands it: the
    body's return value, its exception re-raised (already recorded: raising tells
    Celery, for task_failure / task_retry and the log; a Reject or Ignore as
    :meth:`SchedulerTask.run_job_body` made it), or Ignore for a dropped message and for
    a success whose lease was lost (not recorded, an atomic body's writes rolled back:
    the job runs again, and Celery's success, its ``on_success`` and ``task_success``,
    would be told twice).

    A value the job could not keep is handed over as the None it keeps when the task's
    result backend cannot encode it either: the backend then stored FAILURE for the
    call and Celery sent task_failure, for a job that had succeeded.
    """
    if handled.error is not None:
        raise handled.error
    if handled.outcome in (Outcome.DROPPED, Outcome.LEASE_LOST):
        raise Ignore()
    stores = not task.ignore_result and not isinstance(task.backend, DisabledBackend)
    if not handled.result_kept and stores:
        # A task that stores no result (DisabledBackend, ignore_result) encodes none.
        try:
            task.backend.encode(handled.result)
        except Exception:  # whatever its serializer raises: it could not store it
            return None
    return handled.result


def job_run(task: Task) -> JobRun | None:  # type: ignore[type-arg]
    """The job whose body ``task`` is running, if any."""
    run: JobRun | None = getattr(task.request, _JOB_RUN, None)
    return run


def _refuse_fifo_delay(task: Task, args: Any, kwargs: Any, queue: Any) -> None:  # type: ignore[type-arg]
    """Refuse a delayed call to a FIFO queue: SQS takes no per-message delay there (kombu
    drops it with a warning), so a worker would get the message at once and hold it
    unacknowledged until its eta, SQS handing it out again after each visibility
    timeout (every copy runs) and the queue's other messages waiting behind it."""
    name = (
        routed_queue(task, args or (), kwargs or {}, sqs_queue_of(queue))
        or task.app.conf.task_default_queue
    )
    if isinstance(name, str) and name.endswith(".fifo"):
        raise InvalidArgumentsError(
            "queue",
            f"{name!r} is an SQS FIFO queue, which takes no delay per message: a call "
            "with an eta or countdown would be held by a worker and run again after each "
            "visibility timeout. Send it to a standard queue.",
        )


def _refuse_long_steps_with_followers(task: Task, chain: Any) -> None:  # type: ignore[type-arg]
    """InvalidArgumentsError when a later step of the chain this call starts is delayed
    beyond ``SCHEDULER_MAX_DELAY_SECONDS`` and is not its last, or carries a callback or
    a chord (a chain's ``link_error`` is on every step; its ``link``, and the chord it is
    in, on the last).

    The worker that ran the step before it would make it a job, which carries no chain
    or callback on: it refused, after that step had run (failing it, and running the
    error callback), and the steps after never ran, while the caller had been told
    nothing.
    """
    max_delay = scheduler_settings.MAX_DELAY_SECONDS
    # Celery hands the first step the others, the last one first.
    for position, step in enumerate(chain or ()):
        options = step.get("options") or {}
        eta = _eta(task, options)
        if eta is None or (eta - timezone.now()).total_seconds() <= max_delay:
            continue
        # Its own chain is the steps after it; anything else of a canvas a job cannot keep.
        kept = [name for name in _CANVAS_OPTIONS if name != "chain" and options.get(name)]
        if position:
            kept.insert(0, "steps after it")
        if kept:
            raise InvalidArgumentsError(
                "chain",
                f"its step {step.get('task')!r} is delayed beyond SCHEDULER_MAX_DELAY_SECONDS "
                f"({max_delay} s) and has {' and '.join(kept)}: it would become a scheduled "
                "job, which carries no chain or callback on, and the chain would fail once "
                "the steps before it ran (make it the last step, without callbacks, or call "
                "the rest from its body)",
            )


def _eta(task: Task, options: dict[str, Any]) -> datetime | None:  # type: ignore[type-arg]
    """When apply_async's options ask the task to run; Celery's countdown wins."""
    countdown = options.get("countdown")
    if countdown:
        # As Celery: a countdown that is no number raises TypeError.
        return timezone.now() + timedelta(seconds=countdown)
    eta = options.get("eta")
    return _aware(task, eta) if eta else None


def _point_in_time(task: Task, value: Any, *, now: datetime) -> datetime:  # type: ignore[type-arg]
    """Celery's ``expires``: seconds from now, a datetime or an ISO 8601 string."""
    if isinstance(value, Real) and not isinstance(value, bool):
        try:
            return now + timedelta(seconds=float(value))
        except (ValueError, OverflowError):  # NaN, infinite, past year 9999
            raise InvalidArgumentsError(
                "expires", f"must be a point in time, got {value!r} seconds"
            ) from None
    return _aware(task, value)


def _aware(task: Task, value: datetime | date | str) -> datetime:  # type: ignore[type-arg]
    """A datetime from Celery's options; naive ones are in UTC, as Celery reads them
    (``maybe_make_aware``)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        # Celery sends a date's isoformat(), which its worker reads as that midnight, UTC.
        value = value.isoformat()
    # Celery's own parser for an eta (its parse_iso8601 warns of its deprecation, and a
    # worker logs that for every job).
    moment = maybe_iso8601(value)
    if moment is None:
        raise ValueError(f"not a point in time: {value!r}")
    aware: datetime = maybe_make_aware(moment, task.app.timezone)
    # In UTC: in one time zone, an eta and an expiry across a clock change compare as
    # wall-clock times (Python's rule), not as instants.
    return aware.astimezone(UTC)


@cache
def _process_mark(pid: int) -> str:
    """A random part of the names of this process's deliveries, drawn once per process
    (by pid: a pool process forked from another draws its own)."""
    del pid  # the cache's key
    return secrets.token_hex(2)


#: The node name of the worker this pool process serves, as its main process knows it
#: (``worker_process_init``'s sender); None outside a prefork pool process.
_pool_node_name: str | None = None


@worker_process_init.connect(weak=False)
def _remember_node_name(sender: str | None = None, **_: Any) -> None:
    # Celery's slow trace path (a prefork WorkController built in code, not `celery
    # worker`) gives requests the bare host name: the main process, which ends the
    # attempt of a lost pool process by its name (delivery_process), would not find it.
    global _pool_node_name
    _pool_node_name = sender


def _delivering(request: Context) -> str:
    """Who handles a delivery, as its attempt names it: host and process, and the thread
    (or greenlet) when the pool runs several deliveries in one process (threads, gevent,
    eventlet). A claim tried again takes back a running attempt of this name as its
    own: another copy of the job's message (a re-send) in the process must not, nor one
    in a process with the same host and pid (a pool process of a worker in another
    container on the host's network), which the process's random part tells apart."""
    pid = os.getpid()
    name = f"{delivery_process(_pool_node_name or request.hostname, pid)}:{_process_mark(pid)}"
    if threading.current_thread() is not threading.main_thread():
        name = f"{name}/{threading.get_ident()}"
    return name


def delivery_process(hostname: str | None, pid: int) -> str:
    """How the names of the deliveries that the process ``pid`` of worker ``hostname``
    runs begin (then ``:`` and its random part): all that the worker's main process can
    tell of one of its pool processes."""
    return f"{hostname or socket.gethostname()}:{pid}"
