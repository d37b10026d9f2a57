"""The dispatcher's transitions: jobs sent to SQS, lost messages, dead workers, retention.

The hot path is one statement per batch: :func:`dispatch_due` claims and marks the due
jobs (``UPDATE … RETURNING`` of a ``SELECT … FOR UPDATE SKIP LOCKED``) in the caller's
transaction, which sends them before it commits; :func:`undispatch` puts back, in the same
transaction, those SQS refused. Rows are read as tuples, never as models.
"""

import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.db.models import BooleanField, DateTimeField, QuerySet, UUIDField
from django.db.models.expressions import RawSQL

from scheduler import signals, states
from scheduler.conf import MAX_RESEND_WAIT_SECONDS, scheduler_settings
from scheduler.models import (
    DispatcherHeartbeat,
    FormSubmission,
    JobAttempt,
    Pause,
    ScheduledJob,
    held_kinds_sql,
    oldest_held_of_kind_sql,
    paused_sql,
)
from scheduler.services.transitions import (
    LAZY_COMMIT,
    apply,
    apply_chosen,
    apply_each,
    apply_next,
    array_literal,
    waiting_until,
)
from scheduler.validation import LARGEST_JOB_ID

logger = logging.getLogger(__name__)


class TickTotals(NamedTuple):
    """Jobs sent and errors of a dispatcher's ticks whose heartbeat could not be written,
    added to its totals by the next one written."""

    sent: int = 0
    errors: int = 0


NOTHING_UNRECORDED = TickTotals()

#: The longest wait between two copies of an unclaimed job's message (see
#: :data:`scheduler.conf.MAX_RESEND_WAIT_SECONDS`).
MAX_RESEND_WAIT = timedelta(seconds=MAX_RESEND_WAIT_SECONDS)


class Pending(NamedTuple):
    """A job locked by a dispatcher to be sent: what its message needs."""

    job_id: int
    task_name: str
    queue: str
    run_at: datetime
    #: The token its message carries (as text): a fresh one to dispatch, the current one
    #: to re-send.
    dispatch_token: str
    #: Messages sent so far with the current token.
    sends: int
    #: The task id of the Celery call that made the job, if one did: its messages carry it.
    celery_task_id: str | None
    #: A dispatched job's ``_UNDONE`` fields as they were before, for :func:`undispatch`.
    was: tuple[str | None, ...] = ()


_PENDING_COLUMNS = (
    "id",
    "task_name",
    "queue",
    "run_at",
    "dispatch_token",
    "sends",
    "celery_task_id",
)
#: What a dispatch changes besides the status, put back as it was should SQS refuse.
_UNDONE = ("dispatch_token", "sends", "enqueued_at", "resend_at", "updated_at")
#: A dispatch's token, made by PostgreSQL in the claim. The output fields given, as
#: :func:`enqueued_changes` gives its own: left out, Django makes one per expression.
_FRESH_TOKEN = RawSQL("gen_random_uuid()", [], output_field=UUIDField())
_RESEND_AT_FIELD: "DateTimeField[Any, Any]" = DateTimeField()


def any_due(
    *,
    now: datetime,
    dispatcher: str,
    skip_queues: Collection[str] = (),
    within: timedelta | None = None,
) -> bool:
    """Whether a job not on ``skip_queues`` is due within the lookahead (``within``, by
    default ``SCHEDULER_LOOKAHEAD_SECONDS``): one indexed probe, no lock.

    The same statement records an empty tick on ``dispatcher``'s heartbeat (see
    :func:`record_tick`), so a tick that finds nothing to do costs this one statement,
    whatever the table holds; a tick that does more records its figures at its end.
    """
    beat, beat_params = _tick_upsert(Tick(dispatcher=dispatcher, now=now))
    probe, probe_params = _due_query(
        now=now, limit=1, lock=False, skip_queues=skip_queues, within=within
    )
    with connection.cursor() as cursor:
        cursor.execute(f"{LAZY_COMMIT}, beat AS ({beat}) {probe}", [*beat_params, *probe_params])
        return cursor.fetchone() is not None


def dispatch_due(
    *,
    now: datetime,
    limit: int,
    skip_queues: Collection[str] = (),
    within: timedelta | None = None,
    idle_limit: timedelta | None = None,
) -> list[Pending]:
    """Mark up to ``limit`` jobs due within the lookahead (``within``, by default
    ``SCHEDULER_LOOKAHEAD_SECONDS``) enqueued, oldest first, each with a fresh token,
    and return them to send: one statement.

    Jobs another dispatcher holds, and jobs on ``skip_queues``, are skipped. The caller
    sends them before its transaction commits, and puts back with :func:`undispatch`
    those SQS refuses; until then the rows stay locked, and a worker whose message
    arrives first waits for the commit; ``idle_limit`` bounds how long the transaction
    may then sit idle before PostgreSQL ends it. Each is sent again if still unclaimed
    ``SCHEDULER_STALE_AFTER_SECONDS`` after it was due, or after now for a job sent late.

    The commit need not wait for the disk: should a database crash undo it, the jobs
    are scheduled again and their messages carry tokens that never were, which the
    worker drops, as after a dispatcher killed between its sends and its commit. The
    job's outcome commits durably after this commit, and with it everything before.
    """
    rows = apply_chosen(
        states.DISPATCH,
        _due_query(now=now, limit=limit, lock=True, skip_queues=skip_queues, within=within),
        returning=_PENDING_COLUMNS,
        returning_was=_UNDONE,
        order_by=("run_at", "id"),
        durable=False,
        idle_limit=idle_limit,
        dispatch_token=_FRESH_TOKEN,
        **enqueued_changes(now=now),
    )
    split = len(_PENDING_COLUMNS)
    return [Pending._make((*row[:split], row[split:])) for row in rows]


def enqueued_changes(*, now: datetime) -> dict[str, Any]:
    """What a dispatch at ``now`` sets on a job, besides its status and token."""
    return {
        "sends": 1,
        "enqueued_at": now,
        "updated_at": now,
        "resend_at": RawSQL(
            "GREATEST(run_at, %s) + %s",
            [now, min(timedelta(seconds=scheduler_settings.STALE_AFTER_SECONDS), MAX_RESEND_WAIT)],
            output_field=_RESEND_AT_FIELD,
        ),
    }


def undispatch(jobs: Sequence[Pending]) -> int:
    """Put ``jobs``, dispatched in the caller's transaction, back as they were before:
    SQS refused their messages. The next tick sends them again."""
    if not jobs:
        return 0
    return apply_each(
        states.REFUSED,
        [job.job_id for job in jobs],
        dict(zip(_UNDONE, zip(*(job.was for job in jobs), strict=True), strict=True)),
    )


#: The "now" the due queries are compiled with; see :func:`_due_query`.
_COMPILED_AT = datetime(2000, 1, 1, tzinfo=UTC)
_compiled: dict[tuple[float, int, bool, bool], tuple[str, tuple[Any, ...]]] = {}
#: Stands for the queues to skip in a compiled due query.
_SKIP_QUEUES = object()


def _due_query(
    *,
    now: datetime,
    limit: int,
    lock: bool,
    skip_queues: Collection[str],
    within: timedelta | None = None,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of ``ScheduledJob.objects.due()`` at ``now``, in claim
    order, without the jobs on ``skip_queues``.

    Building the query with the ORM costs more than running it, so it is compiled once
    per process (and lookahead, limit, lock and whether queues are skipped): every time
    in it is now plus a fixed offset, so shifting the compiled times by ``now`` gives the
    query at ``now``, and the queues to skip are one array parameter. In the claim's
    order, (run_at, id), so that PostgreSQL reads the partial index of due jobs, never
    the plain run_at index whose oldest entries are every job already sent.
    """
    lookahead = scheduler_settings.LOOKAHEAD_SECONDS if within is None else within.total_seconds()
    key = (lookahead, limit, lock, bool(skip_queues))
    if key not in _compiled:
        cutoff = _COMPILED_AT + timedelta(seconds=lookahead)
        due = (
            ScheduledJob.objects.due(within=timedelta(seconds=lookahead), now=_COMPILED_AT)
            .filter(_due_index_condition(cutoff))
            .order_by("run_at", "id")
        )
        if skip_queues:
            # Only then: PostgreSQL plans the statement anew each time, and the tick
            # with nothing due is one of them.
            due = due.filter(_not_on_queues())
        rows: QuerySet[Any, Any] = due.values_list("id")
        if lock:
            rows = due.select_for_update(skip_locked=True).values_list("id", *_UNDONE)
        # Django compiles FOR UPDATE only inside a transaction; no savepoint, as nothing
        # runs here: inside a batch's transaction it would cost two more statements.
        with transaction.atomic(savepoint=False):
            _compiled[key] = rows[:limit].query.sql_with_params()
    sql, params = _compiled[key]
    shift = now - _COMPILED_AT
    shifted = [value + shift if isinstance(value, datetime) else value for value in params]
    if not skip_queues:
        return sql, shifted
    skipped = array_literal(sorted(skip_queues))
    return sql, [skipped if value is _SKIP_QUEUES else value for value in shifted]


def _not_on_queues() -> RawSQL:
    """``queue`` is none of the (compiled-in) queues to skip."""
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    # The table's name from the model; the queues are a parameter.
    return RawSQL(  # noqa: S611
        f"NOT ({table}.queue = ANY(%s::text[]))", [_SKIP_QUEUES], output_field=BooleanField()
    )


def _due_index_condition(cutoff: datetime) -> RawSQL:
    """``(run_at, id) <= (cutoff, largest id)``: no filter, but the due index's condition.

    It holds whenever ``run_at <= cutoff`` does, so it drops no row; only the due index
    (on ``run_at, id``) can use it, which keeps PostgreSQL there when its statistics
    say every row is scheduled, as after a bulk load. It would otherwise read the plain
    run_at index, sorting each batch by id, and every batch of a tick would step again
    over every job the earlier ones sent.
    """
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    # The table's name from the model; both values are parameters.
    return RawSQL(  # noqa: S611
        f"({table}.run_at, {table}.id) <= (%s, %s)",
        [cutoff, LARGEST_JOB_ID],
        output_field=BooleanField(),
    )


def any_resend(*, now: datetime, skip_queues: Collection[str] = ()) -> bool:
    """Whether an enqueued job not on ``skip_queues`` waits to be sent again: one
    indexed probe, no lock."""
    return ScheduledJob.objects.resend_due(now=now).exclude(queue__in=skip_queues).exists()


def take_resends(*, now: datetime, limit: int, skip_queues: Collection[str] = ()) -> list[Pending]:
    """Count one more copy for up to ``limit`` jobs nobody claimed by their ``resend_at``,
    but for those on ``skip_queues``.

    Returns them to send again with their token; the next copy waits twice as long.
    One statement, committed before the copies go out: a worker claiming one of these
    jobs meanwhile never waits for the sends. Should the process die before sending,
    the job keeps the copies it had and gets the next after the doubled wait.
    """
    stale_after = scheduler_settings.STALE_AFTER_SECONDS
    rows = apply_next(
        states.RESEND,
        ScheduledJob.objects.resend_due(now=now).exclude(queue__in=skip_queues),
        order_by="resend_at",
        limit=limit,
        returning=_PENDING_COLUMNS,
        sends=RawSQL("sends + 1", []),
        # The wait after the (sends + 1)-th copy: STALE_AFTER * 2 ** sends, capped.
        resend_at=RawSQL(
            "%s + LEAST(%s * power(2, LEAST(sends, 32)), %s) * interval '1 second'",
            [now, stale_after, MAX_RESEND_WAIT.total_seconds()],
        ),
        updated_at=now,
    )
    return [Pending(*row) for row in rows]


def untake_resends(jobs: Sequence[Pending], *, now: datetime) -> int:
    """Give back the copies of ``jobs`` that SQS did not take: the next recovery retries.

    Only to jobs still as :func:`take_resends` left them: one sent anew meanwhile (an
    operator's "run now", then another dispatcher) keeps its new token's count.

    Their rows are locked first, in id order, as an operator's bulk action locks them:
    the update alone took them in its plan's order, and the two deadlocked. Only those
    still enqueued with a token of theirs: one that moved on meanwhile (rescheduled, then
    held by another dispatcher's batch while it sends) is not waited for.
    """
    ids = [job.job_id for job in jobs]
    with transaction.atomic():
        list(
            ScheduledJob.objects.filter(
                pk__in=ids,
                status__in=states.RESEND.sources,
                dispatch_token__in={job.dispatch_token for job in jobs},
            )
            .order_by("pk")
            .select_for_update(no_key=True)
            .values_list("pk", flat=True)
        )
        return apply_each(
            states.RESEND,
            ids,
            {"sends": [job.sends - 1 for job in jobs]},
            matching={
                "dispatch_token": [job.dispatch_token for job in jobs],
                "sends": [job.sends for job in jobs],
            },
            resend_at=now,
            updated_at=now,
        )


def expire_missed(*, now: datetime) -> int:
    """Expire pending jobs whose deadline has passed: they must never start.

    A message already in SQS for such a job is dropped by the worker. One query when
    there is nothing to expire.
    """
    missed = ScheduledJob.objects.missed_deadline(now=now)
    if not missed.exists():
        return 0
    with transaction.atomic():
        # In the deadline index's order: each batch reads one batch of it, where the
        # model's order (newest run_at) read the whole backlog, and every job to come.
        locked = list(
            missed.order_by("deadline")
            .select_for_update(skip_locked=True)
            .values_list("pk", "task_name", "deadline")[: scheduler_settings.BATCH_SIZE]
        )
        apply(
            states.EXPIRE,
            ScheduledJob.objects.filter(pk__in=[pk for pk, _, _ in locked]),
            finished_at=now,
            dispatch_token=None,
            resend_at=None,
            updated_at=now,
        )
        for pk, task_name, deadline in locked:
            signals.send_on_commit(
                signals.job_expired, job_id=pk, task_name=task_name, deadline=deadline
            )
    logger.warning(
        "jobs expired count=%s job_ids=%s reason=deadline", len(locked), [pk for pk, _, _ in locked]
    )
    return len(locked)


#: Jobs one statement holds or releases at most. Larger than a dispatch batch: each
#: statement walks its index from the oldest entry, over the entries the last ones left
#: behind until a vacuum removes them; in batches of 100 that walk was the cost (40,000
#: jobs held in a 5 s recovery, against 200,000 in batches of 5,000).
HOLD_BATCH_SIZE = 5000


def hold_paused(*, now: datetime, limit: int = HOLD_BATCH_SIZE) -> int:
    """Mark held up to ``limit`` due scheduled jobs of paused kinds, oldest first; how
    many. One statement.

    A held job is out of the due index: a long pause's backlog, due and with the oldest
    run_at, would otherwise sit at the index's head, and every tick's probe and every
    claim would step over each of its jobs (1.4 s an empty tick with a million). Read
    from the due index, in its order, and only while a pause exists (checked once per
    statement): without one, the statement reads no job. Jobs another transaction
    holds are skipped.
    """
    table, pause = _tables()
    cutoff = now + timedelta(seconds=scheduler_settings.LOOKAHEAD_SECONDS)
    # Names from the models; every value is a parameter.
    sql = (
        f"WITH chosen AS (SELECT id FROM {table} AS job "  # noqa: S608
        "WHERE job.status = %s AND NOT job.held AND (job.run_at, job.id) <= (%s, %s) "
        f"AND EXISTS (SELECT FROM {pause}) "
        f"AND {paused_sql(task_name='job.task_name', queue='job.queue')} "
        "ORDER BY job.run_at, job.id LIMIT %s FOR UPDATE SKIP LOCKED) "
        # The rows are locked, and were checked when they were: by id alone, which only
        # the primary key serves (a condition matching the due index's predicate let
        # the planner read that index whole, filtering by id).
        f"UPDATE {table} SET held = true WHERE id = ANY(ARRAY(SELECT id FROM chosen))"
    )
    params: list[Any] = [
        states.Status.SCHEDULED,
        cutoff,
        LARGEST_JOB_ID,
        limit,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        held: int = cursor.rowcount
    if held:
        logger.info("paused jobs held count=%s", held)
    return held


def release_unpaused(*, now: datetime, limit: int = HOLD_BATCH_SIZE) -> int:
    """Release up to ``limit`` held jobs that no pause covers any more (resumed), oldest
    run time first across their kinds; how many. One statement.

    The kinds held are found in the index of held jobs one probe each (a loose index
    scan), those still paused are left alone without reading their jobs, and the oldest
    ``limit`` jobs of each other kind are read from that index by kind: a million jobs
    still paused cost a probe, not a million rows. Only the oldest ``limit`` of those
    are locked and released. A released job is due again: the tick that follows sends
    it. Any held row is released once its kind is not paused, whatever its status.
    """
    del now  # for the recovery's signature: a release does not depend on the time
    table, _ = _tables()
    # Names from the models; the limits are parameters.
    sql = (
        f"{held_kinds_sql(table)}, "  # noqa: S608
        "candidates AS (SELECT oldest.id FROM kinds CROSS JOIN LATERAL ("
        f"{oldest_held_of_kind_sql(table)}) AS oldest "
        f"WHERE NOT {paused_sql(task_name='kinds.task_name', queue='kinds.queue')} "
        "ORDER BY oldest.run_at, oldest.id LIMIT %s), "
        # Locked by id alone, as in hold_paused: with ``AND held`` the planner read the
        # whole held index (its predicate), filtering by id, 120 ms with 200,000 held
        # jobs. A row released meanwhile is released again, which changes nothing.
        f"chosen AS (SELECT id FROM {table} WHERE id = ANY(ARRAY(SELECT id FROM candidates)) "
        "FOR UPDATE SKIP LOCKED) "
        f"UPDATE {table} SET held = false WHERE id = ANY(ARRAY(SELECT id FROM chosen))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit, limit])
        released: int = cursor.rowcount
    if released:
        logger.info("resumed jobs released count=%s", released)
    return released


def _tables() -> tuple[str, str]:
    """The job and pause tables' names, quoted."""
    quote = connection.ops.quote_name
    return quote(ScheduledJob._meta.db_table), quote(Pause._meta.db_table)


def expire_leases(*, now: datetime) -> int:
    """Retry (or fail, when out of attempts) running jobs whose worker presumably died."""
    lease = timedelta(seconds=scheduler_settings.LEASE_SECONDS)
    with transaction.atomic():
        expired = list(
            ScheduledJob.objects.lease_expired(lease=lease, now=now)
            .select_for_update(skip_locked=True)
            .values_list("pk", "attempts", "max_attempts", "task_name")[
                : scheduler_settings.BATCH_SIZE
            ]
        )
        if not expired:
            return 0
        # Due at once, without the error back-off: the lease already waited, and a
        # killed worker is no error of the task's (max_attempts still bounds a job that
        # kills its workers, a lease apart).
        retried = end_lost_attempts(
            expired, error=f"lease expired: no heartbeat for {lease}", now=now, retry_at=now
        )
    logger.warning(
        "job leases expired retried=%s failed=%s job_ids=%s",
        retried,
        len(expired) - retried,
        [pk for pk, *_ in expired],
    )
    return len(expired)


def end_lost_attempts(
    lost: Sequence[tuple[int, int, int, str]],
    *,
    error: str,
    now: datetime,
    retry_at: datetime,
    attempt_id: int | None = None,
) -> int:
    """End the running attempts of ``lost`` jobs (``(pk, attempts, max_attempts,
    task_name)``, locked, running) whose worker is gone, or only ``attempt_id`` when the
    one that is lost is known: each job is retried at ``retry_at``, or fails when out of
    attempts. Returns how many are retried."""
    retried = [pk for pk, attempts, limit, _ in lost if attempts < limit]
    failed = {pk: task for pk, attempts, limit, task in lost if attempts >= limit}
    if retried:
        apply(
            states.LEASE_RETRY,
            ScheduledJob.objects.filter(pk__in=retried),
            last_error=error,
            updated_at=now,
            **waiting_until(retry_at),
        )
    if failed:
        apply(
            states.LEASE_FAIL,
            ScheduledJob.objects.filter(pk__in=list(failed)),
            finished_at=now,
            last_error=error,
            updated_at=now,
        )
        for pk, task_name in failed.items():
            signals.send_on_commit(signals.job_failed, job_id=pk, task_name=task_name, error=error)
    ended = JobAttempt.objects.filter(
        job_id__in=[pk for pk, *_ in lost], outcome=JobAttempt.Outcome.RUNNING
    )
    if attempt_id is not None:
        ended = ended.filter(pk=attempt_id)
    ended.update(outcome=JobAttempt.Outcome.LEASE_EXPIRED, finished_at=now, error=error)
    return len(retried)


#: Jobs one purge deletes at most. A purge that deletes as many leaves more behind: the
#: dispatcher purges again at its next recovery rather than an hour later.
PURGE_BATCH_SIZE = 1000
#: How long a purge waits for a lock (a migration's on a table that references jobs, a
#: long transaction holding such a row) before it gives up until its next turn: it runs
#: in the dispatcher's tick, which would wait as long, sending nothing.
PURGE_LOCK_TIMEOUT = "1s"
#: The purge's parts, in order: the statuses of one partial index of finished jobs on
#: finished_at each (succeeded_idx, ended_badly_idx), whose predicate ``status IN …``
#: matches.
PURGED: tuple[tuple[states.Status, ...], ...] = ((states.Status.SUCCEEDED,), states.ENDED_BADLY)


def purge_finished(*, now: datetime, limit: int = PURGE_BATCH_SIZE) -> int:
    """Delete up to ``limit`` jobs that finished more than the retention period ago,
    succeeded jobs first, then those that ended badly (failed, cancelled, expired), in
    each part those that finished first first, and return how many.

    The rows are chosen and locked in the transaction that deletes them: a job an
    operator retries meanwhile is either retried first and kept, or waits for the
    purge and is not found. Also deletes the heartbeats of dispatchers silent for a day,
    and admin form submissions a day old. A lock it waits for longer than
    ``PURGE_LOCK_TIMEOUT`` fails it (``canceling statement due to lock timeout``).

    Each part is read from its own partial index on finished_at (:data:`PURGED`), in
    order: a batch reads as many entries as it locks. Oldest first over all four
    statuses, which no one index holds in that order, PostgreSQL read and sorted every
    job past the retention for each batch (0.56 s a batch with a million of them).
    """
    cutoff = now - timedelta(days=scheduler_settings.RETENTION_DAYS)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{PURGE_LOCK_TIMEOUT}'")
        old: list[int] = []
        for statuses in PURGED:
            if len(old) >= limit:
                break
            old += (
                ScheduledJob.objects.filter(status__in=statuses, finished_at__lt=cutoff)
                .order_by("finished_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[: limit - len(old)]
            )
        # Django reads the jobs it deletes (their attempts cascade): their ids only, not
        # arguments and results of up to 256 MB each.
        _, deleted = ScheduledJob.objects.filter(pk__in=old).only("pk").delete()
        # Every dispatcher process leaves a heartbeat row, and every one-time admin form
        # a submission: forget those a day old.
        forgotten = now - DispatcherHeartbeat.FORGOTTEN_AFTER
        DispatcherHeartbeat.objects.filter(last_tick_at__lt=forgotten).delete()
        FormSubmission.objects.filter(submitted_at__lt=now - timedelta(days=1)).delete()
    return deleted.get(ScheduledJob._meta.label, 0)


class Tick(NamedTuple):
    """What one tick of ``dispatcher`` records on its heartbeat row."""

    dispatcher: str
    now: datetime
    sent: int = 0
    recovered: int = 0
    errors: Sequence[str] = ()
    #: Earlier ticks' figures, whose heartbeat could not be written.
    unrecorded: TickTotals = NOTHING_UNRECORDED


def record_tick(*, tick: Tick) -> None:
    """Record a dispatcher's tick on its heartbeat row: this tick's figures, and totals.

    One upsert, whether or not the row exists: the totals only grow (Prometheus
    counters), added to in the same statement that writes the tick, with the figures of
    earlier ticks whose heartbeat could not be written. A heartbeat lost in a database
    crash costs nothing, so its commit does not wait for the disk (``synchronous_commit``
    off for its own transaction only): waiting would cost several milliseconds a tick.
    """
    upsert, params = _tick_upsert(tick)
    with connection.cursor() as cursor:
        cursor.execute(f"{LAZY_COMMIT}{upsert}", params)


def _tick_upsert(tick: Tick) -> tuple[str, list[Any]]:
    """The heartbeat's upsert, reading the ``lazy`` CTE of :data:`LAZY_COMMIT`."""
    table = connection.ops.quote_name(DispatcherHeartbeat._meta.db_table)
    latest = ["last_tick_at", "jobs_sent", "jobs_recovered", "errors", "last_error"]
    totals = ["sent_total", "errors_total"]
    columns = ["dispatcher", *latest, *totals]
    assignments = [f"{name} = EXCLUDED.{name}" for name in latest]
    assignments += [f"{name} = {table}.{name} + EXCLUDED.{name}" for name in totals]
    # Names from this module and the model; every value is a parameter.
    upsert = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(['%s'] * len(columns))} FROM lazy "
        f"ON CONFLICT (dispatcher) DO UPDATE SET {', '.join(assignments)}"
    )
    errors, unrecorded = len(tick.errors), tick.unrecorded
    return upsert, [
        tick.dispatcher,
        tick.now,
        tick.sent,
        tick.recovered,
        errors,
        "\n".join(tick.errors)[:2000],
        tick.sent + unrecorded.sent,
        errors + unrecorded.errors,
    ]
