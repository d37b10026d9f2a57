"""What operators (and code) do to jobs that exist: cancel, reschedule, retry, run now, re-send."""

import logging
from datetime import datetime
from typing import Any, NamedTuple

from django.db import transaction
from django.utils import timezone

from scheduler import signals, states, validation
from scheduler.exceptions import InvalidArgumentsError, InvalidTransitionError
from scheduler.models import AuditAction, ScheduledJob
from scheduler.services import audit
from scheduler.services.scheduling import unique_key_guard
from scheduler.services.transitions import JobOrId, apply_one, job_id_of, waiting_until

logger = logging.getLogger(__name__)


def cancel(job_or_id: JobOrId, *, reason: str = "", actor: str | None = None) -> bool:
    """Cancel a scheduled or enqueued job; False if it was already cancelled.

    A message already in SQS is dropped by the worker: its dispatch token no longer
    matches. Cancelling a running or finished job raises InvalidTransitionError.
    With an ``actor``, the audit trail records who cancelled it and why.
    """
    reason, actor = validation.reason(reason), validation.actor(actor)
    job_id = job_id_of(job_or_id)
    try:
        with transaction.atomic():
            apply_one(job_id, states.CANCEL, finished_at=timezone.now(), dispatch_token=None)
            audit.record(audit.Action.CANCEL, actor=actor, reason=reason, job_id=job_id)
    except InvalidTransitionError as error:
        if error.status == states.CANCEL.target:
            return False
        raise
    task_name = ScheduledJob.objects.filter(pk=job_id).values_list("task_name", flat=True).get()
    signals.send_on_commit(signals.job_cancelled, job_id=job_id, task_name=task_name)
    logger.info("job cancelled job_id=%s actor=%s", job_id, actor)
    return True


def reschedule(
    job_or_id: JobOrId,
    run_at: datetime,
    *,
    deadline: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> ScheduledJob:
    """Move a scheduled or enqueued job to a new ``run_at`` (a message in SQS is dropped).

    The job keeps its deadline unless a new ``deadline`` is given; a ``run_at`` not
    before the deadline raises InvalidArgumentsError.
    """
    return _reschedule(
        job_or_id, run_at, deadline, audit.Action.RESCHEDULE, reason=reason, actor=actor
    )


def retry(
    job_or_id: JobOrId,
    run_at: datetime | None = None,
    *,
    deadline: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> ScheduledJob:
    """Schedule an ended job again (now by default), with a fresh set of attempts.

    Failed, cancelled and expired jobs can be retried. The job keeps its deadline
    unless a new ``deadline`` is given: an expired job needs one.
    """
    return _retry(job_or_id, run_at, deadline, audit.Action.RETRY, reason=reason, actor=actor)


def run_now(
    job_or_id: JobOrId,
    *,
    deadline: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> ScheduledJob:
    """Run a job as soon as possible: reschedule it to now, or retry it if it ended.

    ``deadline``, if given, replaces the job's deadline (an expired job needs one).
    """
    job_id = job_id_of(job_or_id)

    def retried() -> ScheduledJob:
        return _retry(job_id, None, deadline, audit.Action.RUN_NOW, reason=reason, actor=actor)

    def moved() -> ScheduledJob:
        now = timezone.now()
        return _reschedule(job_id, now, deadline, audit.Action.RUN_NOW, reason=reason, actor=actor)

    # Read unlocked (locking here would take the row before retry's unique-key lock): a
    # job that ends, or is retried, before the move locks it is given the other move.
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    moves = (retried, moved) if status in states.RETRY.sources else (moved, retried)
    accepted = (*states.RESCHEDULE.sources, *states.RETRY.sources)
    for move in moves:
        try:
            return move()
        except InvalidTransitionError as error:
            refused = error.status
        if refused not in accepted:
            break
    raise InvalidTransitionError(job_id=job_id, action="run now", status=refused, allowed=accepted)


def resend(job_or_id: JobOrId, *, reason: str = "", actor: str | None = None) -> ScheduledJob:
    """Send an enqueued job's message again, through the dispatcher's fenced path.

    The job keeps its dispatch token: the dispatcher re-sends it at its next tick, and
    whichever copy a worker claims first runs, the other is dropped. For use when its
    message was dead-lettered or lost. A job that is not enqueued any more raises
    InvalidTransitionError saying what it is now (running, finished, moved back).
    """
    reason, actor = validation.reason(reason), validation.actor(actor)
    job_id = job_id_of(job_or_id)
    with transaction.atomic():
        apply_one(job_id, states.RESEND, resend_at=timezone.now())
        audit.record(audit.Action.RESEND, actor=actor, reason=reason, job_id=job_id)
    logger.info("job re-send requested job_id=%s actor=%s", job_id, actor)
    return ScheduledJob.objects.get(pk=job_id)


def _reschedule(
    job_or_id: JobOrId,
    run_at: datetime,
    deadline: datetime | None,
    action: AuditAction,
    *,
    reason: str,
    actor: str | None,
) -> ScheduledJob:
    run_at = validation.aware_datetime(run_at, "run_at")
    reason, actor = validation.reason(reason), validation.actor(actor)
    job_id = job_id_of(job_or_id)
    with transaction.atomic():
        was = _locked(job_id)
        changes = _deadline_changes(was, run_at, deadline, states.RESCHEDULE)
        apply_one(job_id, states.RESCHEDULE, **waiting_until(run_at), **changes)
        _record(action, job_id, run_at, changes, was, reason=reason, actor=actor)
    logger.info(
        "job rescheduled job_id=%s run_at=%s action=%s actor=%s",
        job_id,
        run_at.isoformat(),
        action,
        actor,
    )
    return ScheduledJob.objects.get(pk=job_id)


def _retry(
    job_or_id: JobOrId,
    run_at: datetime | None,
    deadline: datetime | None,
    action: AuditAction,
    *,
    reason: str,
    actor: str | None,
) -> ScheduledJob:
    if run_at is not None:
        run_at = validation.aware_datetime(run_at, "run_at")
    reason, actor = validation.reason(reason), validation.actor(actor)
    run_at = run_at or timezone.now()
    job_id = job_id_of(job_or_id)
    unique_key = (
        job_or_id.unique_key
        if isinstance(job_or_id, ScheduledJob)
        else ScheduledJob.objects.filter(pk=job_id).values_list("unique_key", flat=True).first()
    )
    with transaction.atomic(), unique_key_guard(unique_key):
        was = _locked(job_id)
        changes = _deadline_changes(was, run_at, deadline, states.RETRY)
        apply_one(
            job_id,
            states.RETRY,
            attempts=0,
            finished_at=None,
            **waiting_until(run_at),
            **changes,
        )
        _record(action, job_id, run_at, changes, was, reason=reason, actor=actor)
    logger.info("job retried job_id=%s action=%s actor=%s", job_id, action, actor)
    return ScheduledJob.objects.get(pk=job_id)


def _record(
    action: AuditAction,
    job_id: int,
    run_at: datetime,
    changes: dict[str, Any],
    was: "_Locked",
    *,
    reason: str,
    actor: str | None,
) -> None:
    details = audit.times(run_at, changes.get("deadline"), previous_run_at=was.run_at)
    audit.record(action, actor=actor, reason=reason, job_id=job_id, **details)


class _Locked(NamedTuple):
    """A job as it is before a move, read with its row locked until the move (all None
    for a job that is not there, which the move refuses)."""

    status: str | None
    deadline: datetime | None
    run_at: datetime | None


def _locked(job_id: int) -> _Locked:
    """The job's status, deadline and run_at, its row locked for the transaction's move:
    a deadline or run time another transaction sets meanwhile is the one read."""
    row = (
        ScheduledJob.objects.select_for_update()
        .filter(pk=job_id)
        .values_list("status", "deadline", "run_at")
        .first()
    )
    return _Locked(*row) if row else _Locked(None, None, None)


def _deadline_changes(
    was: _Locked, run_at: datetime, deadline: datetime | None, move: states.Transition
) -> dict[str, Any]:
    """The deadline to store when a job (as it ``was``, locked) moves to ``run_at``: a new
    one, or a check of its own.

    The job's row stays locked from the check to the move, so a deadline another
    transaction sets meanwhile is the one checked (read before, unlocked, it was not,
    and a job moved past its new deadline expired unrun). A job the ``move`` cannot take
    (running, say) is left to it to refuse, whatever its deadline: "give a new deadline"
    would only lead to that refusal.
    """
    if deadline is not None:
        return {"deadline": validation.deadline(deadline, run_at=run_at)}
    current = was.deadline
    if was.status not in move.sources:
        return {}
    if current is not None and current <= run_at:
        raise InvalidArgumentsError(
            "deadline",
            f"{current.isoformat()} is not after the new run_at {run_at.isoformat()}: "
            "give a new deadline",
        )
    now = timezone.now()
    if current is not None and current <= now:
        # Kept, it would only expire the job (a new deadline is refused as much).
        raise InvalidArgumentsError(
            "deadline",
            f"{current.isoformat()} has passed (now is {now.isoformat()}): give a new deadline",
        )
    return {}
