"""The worker's Consumer: a message it cannot run is dropped with one log line.

Celery's own consumer logs an unreadable or unknown message over many lines, with the
message's body (which may hold data) and a traceback, and an envelope without a body
(``{"headers": {}, "properties": {}}``) makes the worker exit. This one logs one
``message dropped … reason=…`` line per such message, without its body, and goes on.

With Celery's ``worker_disable_prefetch`` (``--disable-prefetch``), which Celery applies to
Redis alone, an SQS worker takes messages only while its pool can start them: for its
free processes, or while a process runs a task that started less than ``BUSY_SECONDS``
ago (a burst of short tasks, where Celery's prefetch keeps the next ones at hand). One
whose every process has run its task that long takes none, leaving due jobs in SQS for
a worker that can start them, and hands back to SQS a job's message it holds (unless SQS
delivered it more than ``HAND_BACK_RECEIVES`` times): one received ahead of its eta that
comes due then, or one waiting for a process.

Stopped for a deploy (SIGTERM, Celery's warm shutdown), a worker hands back every job's
message it holds and has not given to its pool (held until its eta, or due and waiting
for a process) without waiting for its running jobs: those due soon at once, the others
once its receive in flight is answered. Celery hands them back only once the pool has
ended its running jobs: they started as late as the longest of those had left to run.

Configure it with Celery's ``worker_consumer`` setting:
``CELERY_WORKER_CONSUMER = "scheduler.worker.consumer:Consumer"`` (``manage.py check``
warns, ``scheduler.W021``, when it is another). Messages that Celery can read but that
name a job wrongly (forged, stale, replayed) are dropped by the Task class
(:mod:`scheduler.worker.task`), also with one line.
"""

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, NamedTuple

from celery import bootsteps, signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.exceptions import NotRegistered
from celery.utils.objects import Bunch
from celery.worker import state
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.asynchronous import Hub, set_event_loop
from kombu.message import Message
from typing_extensions import override
from vine import promise

from scheduler import protocol
from scheduler.sqs import HAND_BACK_RECEIVES
from scheduler.worker import transport

logger = logging.getLogger(__name__)

#: This module's consumer, as Celery's ``worker_consumer`` names it.
CONSUMER = "scheduler.worker.consumer:Consumer"

#: The start of the warning Celery's task consumer logs for ``worker_disable_prefetch``
#: on any broker but Redis, which :class:`ReceivingForThePool` makes untrue for SQS.
_REDIS_ONLY_WARNING = "worker_disable_prefetch is only supported for Redis"

#: A process that has run its task this long is not expected to be free soon: while
#: every process is so busy, the worker takes no message, and a job's message it holds
#: that comes due goes back to SQS for another worker. Below it, as in a burst of short
#: jobs, the worker goes on taking messages and the job waits for a process.
BUSY_SECONDS = 1.0

#: How often a worker looks for job messages waiting for a process that it hands back.
HAND_BACK_CHECK_SECONDS = 0.25

#: Why a job's message went back to SQS, as its log line says: every process long busy,
#: or the worker stopping.
_BUSY, _STOPPING = "processes-busy", "worker-stopping"

#: Celery's consumer steps, untyped: its stubs leave the blueprint out.
_ConsumerBlueprint: Any = CeleryConsumer.Blueprint


class ReceivingForThePool(bootsteps.StartStopStep):
    """With ``worker_disable_prefetch``, an SQS worker takes only what its pool can start.

    Celery acknowledges a message as its task starts, which frees the message's prefetch
    slot: a worker whose every process runs a long job still took one message per
    process, and their jobs waited there while another worker was idle.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = bool(parent.app.conf.worker_disable_prefetch)
        self._hand_back_check: Any = None
        if self.enabled:
            # Celery's warning says it ignores the setting; start() logs what holds.
            logging.getLogger("celery.worker.consumer.tasks").addFilter(_not_redis_only_warning)

    def start(self, parent: Any) -> None:
        channel = parent.task_consumer.channel
        driver = parent.connection.transport.driver_type
        if driver == "redis":
            return  # Celery applies the setting to Redis itself
        if not isinstance(channel, transport.Channel):
            hint = f"CELERY_BROKER_TRANSPORT={transport.TRANSPORT}"
        elif not (channel.hub and isinstance(parent.pool, PreforkPool)):
            # Its counts are read on the event loop, where the prefork pool reports a
            # task's end; other pools poll without it, or end tasks in other threads.
            hint = "--pool=prefork"
        else:
            channel.room = partial(_room, parent)
            self._hand_back_check = parent.timer.call_repeatedly(
                HAND_BACK_CHECK_SECONDS, _hand_back_waiting, (parent,)
            )
            logger.info("receiving only what the pool can start driver=%s", driver)
            return
        logger.warning("worker_disable_prefetch ignored driver=%s hint=%s", driver, hint)

    def stop(self, parent: Any) -> None:  # noqa: ARG002 - a bootstep's signature
        if self._hand_back_check is not None:
            self._hand_back_check.cancel()
            self._hand_back_check = None


def _not_redis_only_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_REDIS_ONLY_WARNING)


def _pool_size(consumer: Any) -> int:
    """The pool's processes, as Celery's own ``worker_disable_prefetch`` counts them."""
    return int(getattr(consumer.controller, "max_concurrency", None) or consumer.pool.num_processes)


def _free_processes(consumer: Any) -> int:
    """The pool's processes not running a task nor about to (negative: tasks queued).

    Celery counts a task reserved from its hand-over to the pool until its result; a
    message held until its eta is not, until then.
    """
    return _pool_size(consumer) - len(state.reserved_requests)


def _busy_for_long(consumer: Any) -> bool:
    """Whether every process runs a task that started ``BUSY_SECONDS`` ago or more."""
    active, now = list(state.active_requests), time.time()
    return len(active) >= _pool_size(consumer) and all(
        request.time_start is not None and now - request.time_start >= BUSY_SECONDS
        for request in active
    )


def _hand_back(request: Any, *, reason: str) -> None:
    """Give a job's message back to SQS at once, for a worker with a free process."""
    logger.info(
        "job message handed back job_id=%s reason=%s",
        request.request_dict.get(protocol.JOB_ID_HEADER),
        reason,
    )
    state.task_ready(request)
    request.reject(requeue=True)


def _hand_back_from_eta(consumer: Any, request: Any, *, reason: str) -> None:
    """Hand back a message held until its eta, and the prefetch slot Celery added for it."""
    _hand_back(request, reason=reason)
    consumer.qos.decrement_eventually()


def _hand_back_waiting(consumer: Any) -> None:
    """Hand back the job messages waiting for a process once every process is long busy.

    A job that came due while a process had just started its task waits for a process
    (in the pool's semaphore, Celery's queue before the pool): nothing told yet that
    the task would be long.
    """
    if _waiting(consumer) and _busy_for_long(consumer):
        for request in _leaving_waiters(consumer, _may_go_back):
            _hand_back(request, reason=_BUSY)


class _Held(NamedTuple):
    """A job's message a stopping worker took from its timer or its pool's queue."""

    request: Any
    #: When its eta comes, on the timer's clock (``time.monotonic``); None: due already.
    eta: float | None


def _take_held_jobs(consumer: Any) -> list[_Held]:
    """At a warm shutdown, take every job's message no process has started out of the
    worker, to hand back (:func:`_hand_back_taken`): nothing starts them any more.

    Celery hands them back only once the pool has ended its running jobs: held until
    its eta, or due and waiting for a process, a job ran as late as the longest of
    those had left to run, or, the worker killed at its stop timeout, once the
    visibility timeout ended. A plain task's message stays, as in Celery.
    """
    if consumer.hub is None:
        # Celery's timer runs in a thread of its own, firing until the worker exits.
        return []
    etas = {id(item.entry): item.eta for item in consumer.timer.queue if not item.entry.canceled}
    held = []
    for request in list(state.scheduled_requests):  # type: ignore[attr-defined]  # not in its stubs
        entry = request._eta_timer_entry
        # One whose eta has passed is in Celery's rate limiter, out of the timer.
        if id(entry) in etas and _is_job(request):
            consumer.timer.cancel(entry)
            held.append(_Held(request, etas[id(entry)]))
    held.extend(_Held(request, None) for request in _leaving_waiters(consumer, _is_job))
    return held


def _split_at_answers(held: list[_Held], answered_by: float) -> tuple[list[_Held], list[_Held]]:
    """The held jobs to hand back before the worker's receive in flight is answered (by
    ``answered_by`` at the latest), and after.

    Before, SQS may hand a message to that receive, which hands it back at once: one
    receive more, toward the dead-letter queue. So only a job due by then (later, it
    would start late) whose message SQS delivered at most ``HAND_BACK_RECEIVES`` times.
    The others go after, however often SQS delivered them: they would go back anyway as
    the worker exits, one receive more, and sooner is no more.
    """
    first: list[_Held] = []
    then: list[_Held] = []
    for item in held:
        due = item.eta is None or item.eta < answered_by
        (first if due and _may_go_back(item.request) else then).append(item)
    return first, then


def _hand_back_taken(consumer: Any, held: list[_Held]) -> None:
    """Hand back the job messages :func:`_take_held_jobs` took."""
    for item in held:
        if item.eta is None:
            _hand_back(item.request, reason=_STOPPING)
        else:
            _hand_back_from_eta(consumer, item.request, reason=_STOPPING)


def _waiting(consumer: Any) -> Any:
    """The waiters of the pool's semaphore, (callback, args, kwargs); None without it."""
    semaphore = getattr(consumer.controller, "semaphore", None)
    # kombu's LaxBoundedSemaphore keeps its waiters there.
    return semaphore._waiting if semaphore is not None else None


def _leaving_waiters(consumer: Any, picks: Callable[[Any], bool]) -> Iterator[Any]:
    """The requests waiting for a process that ``picks`` picks, each taken out of the
    semaphore once the caller is done with it (should the caller raise, it still waits):
    the end of a running task, which starts the next waiter, then never starts it."""
    waiting = _waiting(consumer) or []
    for waiter in list(waiting):
        request = _waiter_request(waiter)
        if picks(request):
            yield request
            waiting.remove(waiter)


def _waiter_request(waiter: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> Any:
    """The request a semaphore waiter would hand to the pool (Celery's ``process_task``)."""
    _, args, _ = waiter
    return args[0] if args else None


def _is_job(request: Any) -> bool:
    """Whether a request is a job's message (not a plain task's, which Celery handles)."""
    return protocol.JOB_ID_HEADER in getattr(request, "request_dict", {})


def _may_go_back(request: Any) -> bool:
    """Whether a request is a job's message received at most ``HAND_BACK_RECEIVES`` times."""
    if not _is_job(request):
        return False
    sqs_message = request.message.delivery_info.get("sqs_message") or {}
    receives = str(sqs_message.get("Attributes", {}).get("ApproximateReceiveCount"))
    return receives.isdigit() and int(receives) <= HAND_BACK_RECEIVES


def _room(consumer: Any) -> transport.Room:
    """What the worker takes now (its prefetch count bounds it too).

    With a process free, as many messages as there are free processes, waiting for them
    (a long poll). With every process busy but one since less than ``BUSY_SECONDS``, as
    many as the prefetch count allows, without waiting: a message a long poll brought
    later could find every process long busy. Once all are, none.
    """
    free = _free_processes(consumer)
    if free > 0:
        return transport.Room(messages=free, long_poll=True)
    if _busy_for_long(consumer):
        return transport.Room(messages=0, long_poll=False)
    return transport.Room(messages=transport.SQS_MAX_MESSAGES, long_poll=False)


class Consumer(CeleryConsumer):
    """Celery's consumer, dropping what it cannot run with one ``key=value`` line.

    A message no worker can ever run (not a task message, undecodable, invalid,
    disallowed content) is acknowledged: SQS deletes it. A task this worker does not
    know is rejected, as Celery does, since another worker may know it: SQS deletes it,
    or with a redrive policy receives it again until it reaches the dead-letter queue.
    So is a message Celery's handler fails on in any other way (``reason=error``). At a
    warm shutdown it waits for the SQS receive in flight and hands back what it brings
    (:meth:`scheduler.worker.transport.Channel.await_answers`), then the job messages it
    holds, without waiting for the running jobs.
    """

    #: The broker's connection errors, set by Celery (its stubs leave it out).
    connection_errors: tuple[type[BaseException], ...]
    #: The worker's event loop (None without one), set by Celery.
    hub: Hub | None
    #: The prefetch count and the task consumer, set by Celery's Tasks step.
    qos: Any
    task_consumer: Any

    class Blueprint(_ConsumerBlueprint):  # type: ignore[misc]
        """Celery's consumer steps, and :class:`ReceivingForThePool`."""

        default_steps = [
            *_ConsumerBlueprint.default_steps,
            "scheduler.worker.consumer:ReceivingForThePool",
        ]

    @override
    def connect(self) -> Any:
        # On an error, Celery's event loop resets kombu's hub, which unsets it as the
        # current loop; a reconnected SQS channel takes the current loop, so it had none
        # and never polled: the worker stayed connected and idle.
        if self.hub is not None:
            set_event_loop(self.hub)
        return super().connect()

    @override
    def stop(self) -> None:
        # A warm shutdown. Celery's steps stop: the task consumer is cancelled, and what
        # the worker holds is forgotten, its messages handed back once the pool has ended
        # its running jobs; the job messages among them go back sooner. Its event loop no
        # longer runs: SQS would answer a long poll in flight to no one, and what it
        # brought would stay hidden for the visibility timeout.
        held = _take_held_jobs(self)
        super().stop()
        channel = getattr(self.task_consumer, "channel", None)
        if not isinstance(channel, transport.Channel):
            _hand_back_taken(self, held)
            return
        first, then = _split_at_answers(
            held,
            time.monotonic() + channel.wait_time_seconds + transport.ANSWER_MARGIN_SECONDS,
        )
        with channel.stopping_hand_backs():
            _hand_back_taken(self, first)
            # Until a cold shutdown is asked for meanwhile (SIGQUIT, a second Ctrl-C).
            channel.await_answers(interrupted=lambda: state.should_terminate is not None)
            _hand_back_taken(self, then)

    def terminate(self) -> None:
        """A cold shutdown: Celery's stop, without waiting for receives in flight."""
        super().stop()

    @override
    def apply_eta_task(self, task: Any) -> None:
        if not self._goes_back(task):
            super().apply_eta_task(task)
            return
        # A job's message, due now, that would wait here behind long tasks: visible in
        # SQS again at once (the transport's requeue) for a worker with a free process.
        _hand_back_from_eta(self, task, reason=_BUSY)

    def _goes_back(self, task: Any) -> bool:
        """Whether a message due now is a job's that no process will start soon."""
        return (
            getattr(self.task_consumer.channel, "room", None) is not None
            and _may_go_back(task)
            and _free_processes(self) <= 0
            and _busy_for_long(self)
        )

    @override
    def on_unknown_message(self, body: Any, message: Message) -> None:
        # No "task" header: not a Celery task message (or no envelope at all).
        _drop(message, reason="not-a-task-message")
        message.ack_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=None)

    @override
    def on_decode_error(self, message: Message, exc: Exception) -> None:
        _drop(message, reason="undecodable", error=exc)
        message.ack_log_error(logger, self.connection_errors)

    @override
    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        # InvalidTaskError, or ContentDisallowed (a serializer the worker refuses).
        _drop(message, reason="invalid-task", error=exc)
        message.ack_log_error(logger, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    @override
    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        headers = _headers(message)
        name, task_id = headers.get("task"), headers.get("id")
        _drop(message, reason="unregistered-task")
        message.reject_log_error(logger, self.connection_errors)
        if isinstance(task_id, str):
            # As Celery does: a caller waiting on the result learns the task is unknown.
            request = Bunch(
                name=name,
                chord=None,
                root_id=headers.get("root_id"),
                correlation_id=message.properties.get("correlation_id"),
                reply_to=message.properties.get("reply_to"),
                errbacks=None,
            )
            self.app.backend.mark_as_failure(task_id, NotRegistered(name), request=request)
        signals.task_unknown.send(sender=self, message=message, exc=exc, name=name, id=task_id)

    @override
    def create_task_handler(self, promise: Any = promise) -> Callable[[Message], Any]:
        handle = super().create_task_handler(promise)
        connection_errors = self.connection_errors

        def on_task_received(message: Message) -> Any:
            try:
                return handle(message)
            except connection_errors:
                raise  # the consumer reconnects
            except Exception as error:
                # Celery's handler lets anything but a few errors out, which stops the
                # worker ("Unrecoverable error"). Rejected, not acknowledged: the error
                # may be ours, and with a redrive policy SQS keeps the message.
                _drop(message, reason="error", error=error)
                if not message.acknowledged:
                    message.reject_log_error(logger, connection_errors)
                return None

        return on_task_received


def _headers(message: Message) -> Mapping[str, Any]:
    headers = message.headers
    return headers if isinstance(headers, Mapping) else {}


def _drop(message: Message, *, reason: str, error: BaseException | None = None) -> None:
    """Log one line for a dropped message: what it claimed to be, never its body."""
    headers = _headers(message)
    sqs_message = message.delivery_info.get("sqs_message")
    logger.warning(
        # %a: whatever a forged header holds, it stays on this line.
        "message dropped reason=%s task=%.100a job_id=%s sqs_message_id=%s error=%.200a",
        reason,
        headers.get("task"),
        protocol.named_job_id(headers),
        sqs_message.get("MessageId") if isinstance(sqs_message, Mapping) else None,
        f"{type(error).__name__}: {error}" if error is not None else None,
    )
