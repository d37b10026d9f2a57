"""Pausing and resuming a kind of job: a task, a queue, or a task on one queue.

A pause is a ``Pause`` row: the dispatcher sends no job it covers, and the worker puts
back a job whose message was already in SQS. The dispatcher's recovery marks the due
jobs a pause covers ``held``, out of the due index, so that a long pause costs the
ticks nothing. Resuming deletes the row and releases the oldest held jobs
(:data:`RELEASED_ON_RESUME`) in the same transaction; the next recoveries release the
rest, a batch per statement. Released jobs are sent like any due job, oldest run_at
first, each once.
"""

import logging
from typing import Any

from celery import Task
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler import validation
from scheduler.exceptions import InvalidArgumentsError, PauseError, UnknownTaskError
from scheduler.models import Pause, ScheduledJob
from scheduler.registry import get_task, task_name_of
from scheduler.services import audit, dispatching

logger = logging.getLogger(__name__)

_PAUSE_ONCE_CONSTRAINT = "scheduler_pause_once"
#: Held jobs a resume releases itself, oldest first (one statement, some tens of
#: milliseconds): a short pause's jobs go with the next tick. A larger backlog is
#: released by the dispatcher's recoveries (every SCHEDULER_RECOVERY_INTERVAL_SECONDS),
#: not in an operator's request.
RELEASED_ON_RESUME = 1000


#: The advisory lock every pause takes, and that a claim made ahead of its job's time
#: shares until that time (:func:`hold_off_pauses`).
_PAUSES_LOCK = "scheduler.pause"


class PauseUnderWay(Exception):  # noqa: N818 - a state, not an error
    """A pause is being made: :func:`hold_off_pauses` took no lock, and the claim's
    transaction (or savepoint) must let go of its job's row and :func:`wait_for_pauses`."""


def hold_off_pauses(*, job_id: int, nested: bool) -> None:
    """Make no pause until the caller's transaction ends, nor let one made since it
    began go unseen by its next statement: a claim of job ``job_id`` made ahead of its
    time, held until that time (:func:`scheduler.services.running.claim`). A pause waits
    for such claims (a moment, ``HANDOFF_AHEAD``): their jobs start before it.

    A claim never waits while it holds a lock, so it closes no cycle: one statement waits
    for the job's row (a dispatcher's send, a caller's transaction holding it), holding
    nothing else, then only tries the pauses' lock. Raises :class:`PauseUnderWay` when a
    pause holds that lock or waits for it: waiting for it while holding the row
    deadlocked with a transaction that pauses, then cancels the job, and holding the
    pauses' lock while waiting for the row held pauses, and every later claim queued
    behind them, back. ``nested`` (a claim in a caller's transaction, in a savepoint):
    that transaction may hold the pauses' lock itself, and a try fails for good while
    another pause waits for it; the claim then goes on under the lock already held.
    """
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    taking = "pg_try_advisory_xact_lock_shared(hashtext(%s))"
    params = [_PAUSES_LOCK]
    if nested:
        # Either side may be evaluated first: a try made while the lock is held takes it
        # again or fails, and changes nothing either way. pg_locks shows a bigint key
        # as its high and low halves.
        taking = (
            "(EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
            f"AND (classid::bigint << 32 | objid::bigint) = hashtext(%s)) OR {taking})"
        )
        params.append(_PAUSES_LOCK)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {taking} "  # noqa: S608 - names
            f"FROM (SELECT 1 FROM {table} WHERE id = %s FOR NO KEY UPDATE) AS its_row",
            [*params, job_id],
        )
        taken = cursor.fetchone()
    if taken is not None and not taken[0]:  # no row: no such job, the claim refuses it
        raise PauseUnderWay


def wait_for_pauses() -> None:
    """Wait, holding nothing else of the claim's, until no pause is being made: the lock
    is taken shared in a transaction (or, in a caller's, a savepoint) that is then rolled
    back, letting it go (a statement cancelled meanwhile leaves none held, as a session's
    lock would be; kept by the caller's transaction, it would be held while the claim
    waits for its job's row next)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", [_PAUSES_LOCK])
        transaction.set_rollback(True)


def _lock_pauses() -> None:
    """Take the pauses' advisory lock alone until the caller's transaction ends, as a
    pause does (claims share it: :func:`hold_off_pauses`)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_PAUSES_LOCK])


def pause(
    task: Task[Any, Any] | str | None = None,
    queue: str | None = None,
    *,
    reason: str = "",
    actor: str | None = None,
) -> Pause:
    """Stop jobs of ``task`` (a task or its name), of ``queue``, or of ``task`` on ``queue``.

    Raises UnknownTaskError for a task that jobs cannot run, InvalidArgumentsError for
    an invalid queue name or when neither is given, and PauseError when that kind is
    already paused; nothing is written then. Waits for the claims that hold their jobs
    until their time (:func:`hold_off_pauses`): those jobs start before the pause.
    Inside a transaction of the caller's, every job's start then waits for its end.
    """
    task_name, queue_name = _kind(task, queue)
    if task_name:
        try:
            get_task(task_name)
        except KeyError:
            raise UnknownTaskError(task_name) from None
    reason, actor = validation.reason(reason), validation.actor(actor)
    try:
        with transaction.atomic():
            _lock_pauses()
            paused = Pause.objects.create(
                task_name=task_name, queue=queue_name, reason=reason, paused_by=actor or ""
            )
            audit.record(
                audit.Action.PAUSE, actor=actor, reason=reason, task=task_name, queue=queue_name
            )
    except IntegrityError as error:
        if _PAUSE_ONCE_CONSTRAINT not in str(error):
            raise
        raise PauseError(
            f"{describe(task_name, queue_name)} is already paused",
            task_name=task_name,
            queue=queue_name,
        ) from None
    logger.warning(
        "jobs paused task=%s queue=%s actor=%s reason=%r", task_name, queue_name, actor, reason
    )
    return paused


def resume(
    task: Task[Any, Any] | str | None = None,
    queue: str | None = None,
    *,
    reason: str = "",
    actor: str | None = None,
) -> None:
    """Lift the pause of exactly that kind (as it was given to :func:`pause`).

    The task need not be registered any more. Raises PauseError when that kind is not
    paused (a broader pause, e.g. of its whole queue, is lifted by resuming that one).
    Releases up to :data:`RELEASED_ON_RESUME` held jobs no pause covers any more, in the
    same transaction; the dispatcher's next recoveries release the others.
    """
    task_name, queue_name = _kind(task, queue)
    reason, actor = validation.reason(reason), validation.actor(actor)
    with transaction.atomic():
        deleted, _ = Pause.objects.filter(task_name=task_name, queue=queue_name).delete()
        if not deleted:
            raise PauseError(
                f"{describe(task_name, queue_name)} is not paused",
                task_name=task_name,
                queue=queue_name,
            )
        audit.record(
            audit.Action.RESUME, actor=actor, reason=reason, task=task_name, queue=queue_name
        )
        released = dispatching.release_unpaused(now=timezone.now(), limit=RELEASED_ON_RESUME)
    logger.warning(
        "jobs resumed task=%s queue=%s actor=%s reason=%r released=%s",
        task_name,
        queue_name,
        actor,
        reason,
        released,
    )


def describe(task_name: str, queue: str) -> str:
    """A paused kind as operators read it: "task x", "queue q", "task x on queue q"."""
    parts = [f"task {task_name}" if task_name else "", f"queue {queue}" if queue else ""]
    return " on ".join(part for part in parts if part)


def _kind(task: Task[Any, Any] | str | None, queue: str | None) -> tuple[str, str]:
    """The (task name, queue) of a pause, "" meaning any; raises for bad input."""
    task_name = "" if task is None else task_name_of(task).strip()
    queue_name = validation.queue_name(queue) or ""
    if not task_name and not queue_name:
        raise InvalidArgumentsError(
            "task", "or queue must be given: pause a task, a queue, or a task on one queue"
        )
    return task_name, queue_name
