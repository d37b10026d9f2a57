"""Operator actions on many jobs at once (the admin's bulk actions), set-based.

The transitions, checks, audit entries, signals and log lines of :mod:`.operations`, in
a fixed number of statements whatever the number of jobs: on the worst day an operator
acts on thousands of jobs in one request, which job by job took longer than a proxy
waits for the answer. All or nothing: the chosen jobs are locked, then moved together.
A job that is not in a legal state, or whose deadline, unique key or new time forbids
the move, is left as it was and counted by reason.
"""

import enum
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import CharField, DateTimeField, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.expressions import Case, Combinable, RawSQL, When
from django.utils import timezone

from scheduler import signals, states, validation
from scheduler.exceptions import KeyContentionError
from scheduler.models import AuditAction, AuditEntry, ScheduledJob
from scheduler.services import audit
from scheduler.services.refusals import deadlocked
from scheduler.services.scheduling import UNIQUE_KEY_CONSTRAINT
from scheduler.services.transitions import apply_chosen, array_literal, waiting_until
from scheduler.states import Transition

logger = logging.getLogger(__name__)

#: How many times an action is tried again after a job that another request scheduled
#: meanwhile took a unique key the action gives back: each try sees that job.
KEY_RACE_ATTEMPTS = 3

#: The operator actions that move a job's run_at: one since the selection was made
#: would make a shift move the job twice.
_MOVES = (AuditAction.RESCHEDULE, AuditAction.RUN_NOW, AuditAction.RETRY)

_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


class Skip(enum.Enum):
    """Why a selected job was left as it was."""

    #: Not in a state the operation applies to (maybe changed meanwhile), or gone.
    STATE = enum.auto()
    #: Another active job holds its unique key.
    UNIQUE_KEY = enum.auto()
    #: Its deadline is not after its new time: only a new deadline lets it run.
    DEADLINE = enum.auto()
    #: Its new time would be outside the years 1-9999.
    OUT_OF_RANGE = enum.auto()
    #: An operator acted on it since the selection was made: moved by an offset again,
    #: it would move twice as far (two operators, or a form posted again).
    CHANGED = enum.auto()


@dataclass(frozen=True)
class BulkResult:
    """How many of the selected jobs changed, and why the others were left as they were."""

    changed: int
    skipped: Counter[Skip]
    #: The ids of the jobs that changed.
    changed_ids: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class _Move:
    """One transition for the selected jobs in its sources, with what may refuse a job."""

    transition: Transition
    changes: dict[str, Any]
    #: Each reason with the condition that gives it, the first that holds winning (the
    #: order in which the single-job services find them).
    refusals: tuple[tuple[Skip, Q], ...] = ()
    #: What each job's audit entry records besides its new run_at.
    details: dict[str, str] = field(default_factory=dict)


def cancel_many(
    jobs: QuerySet[ScheduledJob], *, reason: str = "", actor: str | None = None
) -> BulkResult:
    """Cancel every scheduled or enqueued job among ``jobs``, as :func:`.cancel` does."""
    move = _Move(states.CANCEL, {"finished_at": timezone.now(), "dispatch_token": None})
    return _act(jobs, lambda _: [move], audit.Action.CANCEL, reason=reason, actor=actor)


def reschedule_many(
    jobs: QuerySet[ScheduledJob], *, to: datetime, reason: str = "", actor: str | None = None
) -> BulkResult:
    """Move every scheduled or enqueued job among ``jobs`` to ``to``; those whose
    deadline is not after it are skipped."""
    to = validation.aware_datetime(to, "run_at")
    move = _pending_to(to, checked=to)
    return _act(jobs, lambda _: [move], audit.Action.RESCHEDULE, reason=reason, actor=actor)


def shift_many(
    jobs: QuerySet[ScheduledJob],
    *,
    offset: timedelta,
    unchanged_since: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> BulkResult:
    """Move every scheduled or enqueued job among ``jobs`` by ``offset`` from its own
    run_at; those it would take past their deadline or the years 1-9999 are skipped, and
    so are those an operator acted on after ``unchanged_since`` (when the operator chose
    them), which would otherwise move twice."""
    if not isinstance(offset, timedelta):
        raise TypeError(f"offset must be a timedelta, got {offset!r}")
    span = _LAST - _FIRST
    if abs(offset) > span:
        outside = Q(pk__isnull=False)
    else:
        # As bounds on run_at, which PostgreSQL computes nothing for: its timestamps
        # reach 294276 AD but not 10000 BC, and Python's only 9999.
        within = (_FIRST, _LAST - offset) if offset >= timedelta(0) else (_FIRST - offset, _LAST)
        outside = ~Q(run_at__range=within)
    # Elapsed microseconds, not an interval of days, which PostgreSQL adds as calendar
    # days of the session's time zone (23 or 25 hours across a daylight-saving change).
    moved = RawSQL(  # noqa: S611 - a column's name; the offset is a parameter
        f"{connection.ops.quote_name('run_at')} + %s * interval '1 microsecond'",
        # Bounded, as PostgreSQL computes it even for no row: beyond the span every job
        # is out of range, and not moved.
        [max(-span, min(offset, span)) // timedelta(microseconds=1)],
        output_field=DateTimeField(),
    )
    shifted = _pending_to(moved, checked=moved)
    acted_on = (
        Q(pk__isnull=True)
        if unchanged_since is None
        else Q(
            Exists(
                AuditEntry.objects.filter(
                    job=OuterRef("pk"),
                    action__in=_MOVES,
                    at__gt=validation.aware_datetime(unchanged_since, "unchanged_since"),
                )
            )
        )
    )
    move = replace(
        shifted,
        refusals=((Skip.CHANGED, acted_on), (Skip.OUT_OF_RANGE, outside), *shifted.refusals),
    )
    return _act(jobs, lambda _: [move], audit.Action.RESCHEDULE, reason=reason, actor=actor)


def retry_many(
    jobs: QuerySet[ScheduledJob],
    *,
    deadline: datetime | None = None,
    reason: str = "",
    actor: str | None = None,
) -> BulkResult:
    """Schedule every failed, cancelled or expired job among ``jobs`` again, now, with a
    fresh set of attempts; those whose unique key an active job holds are skipped.

    Each keeps its deadline, and one past it is skipped, unless a new ``deadline`` (after
    now, else InvalidArgumentsError) replaces them all: what jobs that expired while
    workers were down need.
    """
    now = timezone.now()
    deadline = validation.deadline(deadline, run_at=now)
    return _act(
        jobs,
        lambda selection: [_ended_to(now, selection, deadline=deadline)],
        audit.Action.RETRY,
        reason=reason,
        actor=actor,
    )


def run_many_now(
    jobs: QuerySet[ScheduledJob], *, reason: str = "", actor: str | None = None
) -> BulkResult:
    """Run every job among ``jobs`` that has not started as soon as possible: pending
    jobs are moved to now, ended ones retried, as :func:`.run_now` does."""
    now = timezone.now()
    return _act(
        jobs,
        lambda selection: [_pending_to(now, checked=now), _ended_to(now, selection)],
        audit.Action.RUN_NOW,
        reason=reason,
        actor=actor,
    )


def _pending_to(run_at: datetime | RawSQL, *, checked: datetime | Combinable) -> _Move:
    """Reschedule a pending job to ``run_at``, which the deadline check reads as ``checked``."""
    return _Move(
        states.RESCHEDULE, waiting_until(run_at), ((Skip.DEADLINE, Q(deadline__lte=checked)),)
    )


def _ended_to(
    run_at: datetime, selection: QuerySet[Any], *, deadline: datetime | None = None
) -> _Move:
    """Retry an ended job at ``run_at`` (with a new ``deadline``, if given): it takes its
    unique key back if no job holds it."""
    past_deadline = Q(deadline__lte=run_at) if deadline is None else Q(pk__isnull=True)
    held = ScheduledJob.objects.active().filter(unique_key=OuterRef("unique_key"))
    # Of several selected jobs with one key, the first (by id) takes it, as one by one.
    first = ScheduledJob.objects.filter(
        ~past_deadline,
        pk__in=selection,
        status__in=states.RETRY.sources,
        unique_key=OuterRef("unique_key"),
        pk__lt=OuterRef("pk"),
    )
    new_deadline = {} if deadline is None else {"deadline": deadline}
    return _Move(
        states.RETRY,
        {"attempts": 0, "finished_at": None, **waiting_until(run_at), **new_deadline},
        (
            (Skip.DEADLINE, past_deadline),
            (Skip.UNIQUE_KEY, Q(unique_key__isnull=False) & (Exists(held) | Exists(first))),
        ),
        {name: value.isoformat() for name, value in new_deadline.items()},
    )


class _Moved(NamedTuple):
    """A job moved: its id, task name, run_at after the move and before it, and the move."""

    job_id: int
    task_name: str
    run_at: datetime
    previous_run_at: datetime
    move: _Move


def _act(
    jobs: QuerySet[ScheduledJob],
    moves: Callable[[QuerySet[Any]], list[_Move]],
    action: AuditAction,
    *,
    reason: str,
    actor: str | None,
) -> BulkResult:
    """Apply the ``moves`` made for the selection's ids in one transaction, with the
    audit entries; then announce each job moved."""
    reason, actor = validation.reason(reason), validation.actor(actor)
    selection = jobs.order_by().values("pk")
    for attempt in range(1, KEY_RACE_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                selected = selection.count()
                moved: list[_Moved] = []
                skipped: Counter[Skip] = Counter()
                for move in moves(selection):
                    moved_now, skipped_now = _apply(move, selection)
                    moved += moved_now
                    skipped += skipped_now
                audit.record_many(
                    action,
                    actor=actor,
                    reason=reason,
                    details={job.job_id: _details(job) for job in moved},
                )
            break
        except (IntegrityError, OperationalError) as error:
            if not _key_race(error):
                raise
            if attempt == KEY_RACE_ATTEMPTS:
                raise KeyContentionError(tries=attempt) from error
            # Another request took a key being given back after this one looked: the
            # next try sees it, and skips that job.
            logger.info(
                "bulk jobs tried again action=%s attempt=%s error=%s", action, attempt, error
            )
    for job in moved:
        _announce(job, action, actor)
    # Not among the candidates: in another state, or gone.
    skipped[Skip.STATE] += selected - len(moved) - skipped.total()
    result = BulkResult(
        changed=len(moved), skipped=+skipped, changed_ids=tuple(job.job_id for job in moved)
    )
    logger.info(
        "bulk jobs action=%s actor=%s changed=%s skipped=%s",
        action,
        actor,
        result.changed,
        {why.name.lower(): count for why, count in result.skipped.items()},
    )
    return result


def _key_race(error: DatabaseError) -> bool:
    """Whether ``error`` is another request's job taking a unique key this action gives
    back: the key's index refused it, or the two took each other's keys in opposite
    orders and PostgreSQL broke the deadlock."""
    if isinstance(error, IntegrityError):
        return UNIQUE_KEY_CONSTRAINT in str(error)
    return deadlocked(error)


def _apply(move: _Move, selection: QuerySet[Any]) -> tuple[list[_Moved], Counter[Skip]]:
    """Lock the selected jobs in ``move``'s sources (by id, as every bulk action does:
    two never deadlock on the rows, only on unique keys, see :func:`_key_race`), then
    move those that no refusal holds for."""
    # Their run_at as the move finds it: a row another transaction changed while this
    # one waited for its lock is read again, as it is now.
    previous_run_at = dict(
        ScheduledJob.objects.filter(pk__in=selection, status__in=move.transition.sources)
        .order_by("pk")
        .select_for_update(of=("self",))
        .values_list("pk", "run_at")
    )
    locked = list(previous_run_at)
    if not locked:
        return [], Counter()
    movable, skipped = _judged(move, locked) if move.refusals else (locked, Counter[Skip]())
    if not movable:
        return [], skipped
    # Locked above: every one of them moves.
    moved = apply_chosen(
        move.transition,
        ("SELECT unnest(%s::bigint[])", [array_literal(movable)]),
        returning=("id", "task_name", "run_at"),
        updated_at=timezone.now(),
        **move.changes,
    )
    return [
        _Moved(job_id, task_name, run_at, previous_run_at[job_id], move)
        for job_id, task_name, run_at in moved
    ], skipped


def _judged(move: _Move, locked: list[int]) -> tuple[list[int], Counter[Skip]]:
    """Of the ``locked`` jobs, those no refusal of ``move`` holds for, and why the others
    are left.

    Judged once locked, in a statement of its own: its snapshot sees what a request that
    held the locks first committed (its audit entries, the keys it took), which the
    locking statement's own snapshot, taken before it waited, does not.
    """
    why = Case(
        *(When(refused, then=Value(skip.name)) for skip, refused in move.refusals),
        default=Value(None),
        output_field=CharField(),
    )
    judged = (
        ScheduledJob.objects.filter(pk__in=locked)
        .annotate(why=why)
        .order_by("pk")
        .values_list("pk", "why")
    )
    movable, skipped = [], Counter[Skip]()
    for job_id, refused in judged:
        if refused is None:
            movable.append(job_id)
        else:
            skipped[Skip[refused]] += 1
    return movable, skipped


def _details(job: _Moved) -> dict[str, Any]:
    """The audit details the single-job service writes."""
    if job.move.transition == states.CANCEL:
        return {}  # its run_at stays as it was
    return {
        "run_at": job.run_at.isoformat(),
        "previous_run_at": job.previous_run_at.isoformat(),
        **job.move.details,
    }


def _announce(job: _Moved, action: AuditAction, actor: str | None) -> None:
    """The signal and log line of the single-job service, for one job moved."""
    if job.move.transition == states.CANCEL:
        signals.send_on_commit(signals.job_cancelled, job_id=job.job_id, task_name=job.task_name)
        logger.info("job cancelled job_id=%s actor=%s", job.job_id, actor)
    elif job.move.transition == states.RETRY:
        logger.info("job retried job_id=%s action=%s actor=%s", job.job_id, action, actor)
    else:
        logger.info(
            "job rescheduled job_id=%s run_at=%s action=%s actor=%s",
            job.job_id,
            job.run_at.isoformat(),
            action,
            actor,
        )
