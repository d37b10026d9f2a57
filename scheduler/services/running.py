"""The worker's transitions: claim a job for one delivery, renew its lease, record how it ran."""

import contextlib
import enum
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, cast
from uuid import UUID

from django.db import DatabaseError, Error, connection, transaction
from django.db.models import F
from django.utils import timezone

from scheduler import signals, states, tracebacks, validation
from scheduler.conf import scheduler_settings
from scheduler.exceptions import ResultRefusedError
from scheduler.models import JobAttempt, Pause, ScheduledJob, paused_sql
from scheduler.protocol import as_token
from scheduler.services import dispatching, pausing, refusals
from scheduler.services.transitions import (
    LAZY_COMMIT,
    apply,
    apply_delivery,
    retry_delay,
    waiting_until,
)
from scheduler.states import Status

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

logger = logging.getLogger(__name__)

_LAST_ERROR_LENGTH = 2000

#: The most of an error's text an attempt keeps: its start (the call stack) and its end
#: (the exception), the rest left out.
ERROR_LENGTH = 65_536


class _Attempt(TypedDict):
    claimed_attempt_id: int


class Refusal(enum.StrEnum):
    """Why a message did not claim its job (it is acknowledged and nothing runs)."""

    #: A duplicate, a job cancelled, moved, finished or re-dispatched since, or a
    #: message for another task than the job's.
    NOT_CURRENT = "not-current"
    #: The job's deadline passed before it could start: it is now expired.
    EXPIRED = "expired"
    #: The job's kind is paused: it goes back to scheduled, to be sent on resume.
    PAUSED = "paused"


@dataclass(frozen=True)
class Claim:
    """A job taken by one delivery, and the attempt it runs as."""

    job: ScheduledJob
    attempt: JobAttempt


def claim(
    *,
    job_id: int,
    token: UUID | str,
    task_name: str,
    worker: str,
    not_before: datetime | None = None,
    retrying: bool = False,
) -> Claim | Refusal:
    """Take an enqueued job for this delivery, or say why the message may not run it.

    ``task_name`` is the task the message was delivered to: a message for another
    task than the job's is not current, whatever its token.

    The usual delivery (the job enqueued with this token, not paused, its deadline
    ahead) is claimed by one statement that also starts its attempt: it sits between
    the eta and the body, so every round trip saved is lateness saved. Any other case
    takes the row lock to tell why.

    ``not_before`` is when the body may start at the earliest: a worker hands a job's
    message over a moment before its eta (:mod:`scheduler.worker.request`). While it is
    ahead, the claim is made at once in a transaction that holds the job's row until
    then and commits at that instant: the job is never running before its time, and
    only the commit stands between the instant and the body. A pause made meanwhile
    waits for that instant (:func:`~scheduler.services.pausing.hold_off_pauses`).

    ``retrying`` says this delivery's previous call lost its connection, maybe after
    PostgreSQL committed the claim (a failover): a claim of this token by this worker
    that is still running is then this delivery's own, and is returned.

    ``token`` may be given as its text, as a published message carries it.
    """
    current = as_token(token)

    def claim_as_of(now: datetime) -> Claim | Refusal:
        return _claim_at_once(
            job_id=job_id, token=current, task_name=task_name, worker=worker, now=now
        ) or _claim_locked(
            job_id=job_id,
            token=current,
            task_name=task_name,
            worker=worker,
            now=now,
            retrying=retrying,
        )

    def claim_renewed(now: datetime) -> Claim | Refusal:
        claimed = claim_as_of(now)
        # Stamped ``now``, before it waited for a lock (on the row or the table), a claim
        # held up about a lease left a lease-old heartbeat: recovery could take the job
        # for dead before its first beat. Renewed at once, on this rare path only; a
        # recovery that came first has retried the job, which this delivery must not run.
        interval = timedelta(seconds=scheduler_settings.HEARTBEAT_INTERVAL_SECONDS)
        if (
            isinstance(claimed, Claim)
            and timezone.now() - now >= interval
            and not heartbeat(job_id=job_id, token=current)
        ):
            return Refusal.NOT_CURRENT
        return claimed

    now = timezone.now()
    if not_before is None or not_before <= now:
        return claim_renewed(now)
    durable = connection.in_atomic_block
    while True:
        try:
            with transaction.atomic():
                # Before the claim reads the pauses: one made until the claim commits,
                # at not_before, would not stop the job, which would start after it.
                pausing.hold_off_pauses(job_id=job_id, nested=durable)
                # As of the eta, or of the end of a wait for a pause (in a caller's
                # longer transaction) past it: its deadline judged, and its start
                # stamped, as they are.
                claimed = claim_renewed(max(not_before, timezone.now()))
                if isinstance(claimed, Claim):
                    _hold_until(not_before, lazy=not durable)
            return claimed
        except pausing.PauseUnderWay:
            # Rolled back (in a caller's transaction, to the savepoint): the job's row
            # let go, for whoever pauses to take it.
            pausing.wait_for_pauses()


def _hold_until(moment: datetime, *, lazy: bool) -> None:
    """Keep the claim's transaction open until ``moment``. With ``lazy``, its commit does
    not wait for the disk, as :func:`_claim_at_once`'s alone does not: that commit is
    all that stands between the instant and the body."""
    if lazy:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO off")
    wait = (moment - timezone.now()).total_seconds()
    if wait > 0:
        time.sleep(wait)


def _claim_at_once(
    *, job_id: int, token: UUID, task_name: str, worker: str, now: datetime
) -> Claim | None:
    """The claim and its attempt's INSERT in one statement, starting the job at ``now``,
    or None if the job's committed row is not one to run now, or another transaction
    holds it.

    Committed on its own (as in a worker), its commit does not wait for the disk
    (``synchronous_commit`` off for it alone): that wait was the largest part of the
    claim. A database crash may then undo a claim of the last few hundred
    milliseconds: the job is ``enqueued`` again and its re-send runs it again, as after a
    worker's crash. The body of an atomic task cannot have committed meanwhile (its
    commit, durable, would have made the claim durable too), and any other task is
    at-least-once anyway.
    """
    params = {
        "job_id": job_id,
        "token": token,
        "task_name": task_name,
        "worker": worker,
        "now": now,
        "sources": list(states.CLAIM.sources),
        "target": states.CLAIM.target,
        "outcome": JobAttempt.Outcome.RUNNING,
    }
    job = cast(
        "WithAnnotations[ScheduledJob, _Attempt] | None",
        next(
            iter(ScheduledJob.objects.raw(_claim_statement(connection.in_atomic_block), params)),
            None,
        ),
    )
    if job is None:
        return None
    started = _attempt(job, token=token, worker=worker, now=now)
    started.pk = job.claimed_attempt_id
    started._state.adding, started._state.db = False, job._state.db
    return Claim(job=job, attempt=started)


def _attempt(job: ScheduledJob, *, token: UUID, worker: str, now: datetime) -> JobAttempt:
    """The attempt that claiming ``job`` starts, unsaved."""
    return JobAttempt(
        job=job,
        task_name=job.task_name,
        number=job.attempts,
        dispatch_token=token,
        scheduled_for=job.run_at,
        started_at=now,
        worker=worker,
    )


@functools.cache
def _claim_statement(durable: bool) -> str:
    """:func:`_claim_at_once`'s SQL, written out once: compiling it through the ORM
    took longer than running it. Not ``durable``: its commit does not wait for the disk."""
    quote = connection.ops.quote_name
    job, attempt = (quote(model._meta.db_table) for model in (ScheduledJob, JobAttempt))
    columns = ", ".join(quote(field.column) for field in ScheduledJob._meta.concrete_fields)
    head, source = ("WITH ", "") if durable else (f"{LAZY_COMMIT}, ", "FROM lazy ")
    return (
        f"{head}claimed AS (UPDATE {job} SET status = %(target)s, "  # noqa: S608 - names only
        "attempts = attempts + 1, started_at = %(now)s, heartbeat_at = %(now)s, "
        f"finished_at = NULL, updated_at = %(now)s {source}"
        # A row another transaction holds takes the locked path: waiting here, the
        # statement would judge the pauses as they were before the wait.
        f"WHERE id = (SELECT held.id FROM {job} AS held WHERE held.id = %(job_id)s "
        "FOR NO KEY UPDATE SKIP LOCKED) "
        "AND status = ANY(%(sources)s) AND dispatch_token = %(token)s "
        "AND task_name = %(task_name)s "
        # The deadline at the time the statement got its locks (a table's may be waited
        # for), not at the time it was sent.
        "AND (deadline IS NULL OR "
        "deadline > %(now)s + (clock_timestamp() - statement_timestamp())) "
        # Not paused: no pause covers it (empty = any).
        f"AND NOT {paused_sql(task_name=f'{job}.task_name', queue=f'{job}.queue')} "
        f"RETURNING {columns}), "
        f"attempt AS (INSERT INTO {attempt} (job_id, task_name, number, dispatch_token, "
        "scheduled_for, started_at, outcome, error, worker) "
        "SELECT id, task_name, attempts, dispatch_token, run_at, %(now)s, %(outcome)s, '', "
        "%(worker)s FROM claimed RETURNING id AS claimed_attempt_id) "
        "SELECT claimed.*, claimed_attempt_id FROM claimed CROSS JOIN attempt"
    )


def _claim_locked(
    *, job_id: int, token: UUID, task_name: str, worker: str, now: datetime, retrying: bool
) -> Claim | Refusal:
    """The claim after the row lock: the job's row as committed says what to do.

    The lock is what waits when a message arrives before the dispatcher that sent it
    commits. A bare conditional UPDATE would not wait then, because PostgreSQL only
    waits on rows whose committed version matches the WHERE clause (still
    ``scheduled``, without the token), and :func:`_claim_at_once` waits for no row;
    ``SELECT … FOR UPDATE`` waits for the dispatcher's lock and returns the row as
    committed. The pauses and the clock are read after it.
    """
    if not retrying and _ran(job_id):
        return Refusal.NOT_CURRENT
    with transaction.atomic():
        job = ScheduledJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.dispatch_token != token or job.task_name != task_name:
            return Refusal.NOT_CURRENT
        if job.status not in states.CLAIM.sources:
            own = _own_attempt(job, token, worker) if retrying else None
            # Its body starts only now: the lease counts from now, not from the claim
            # whose answer was lost, maybe most of a lease ago.
            if own is None or not heartbeat(job_id=job_id, token=token):
                return Refusal.NOT_CURRENT
            return Claim(job=job, attempt=own)
        # The lock may have waited for a dispatcher's sends: the job starts now, at
        # ``now`` only if that is still ahead (a claim made at the message's eta).
        now = max(now, timezone.now())
        current = ScheduledJob.objects.filter(pk=job_id, dispatch_token=token)
        if job.deadline is not None and now >= job.deadline:
            apply(states.EXPIRE, current, finished_at=now, dispatch_token=None, updated_at=now)
            signals.send_on_commit(
                signals.job_expired, job_id=job_id, task_name=job.task_name, deadline=job.deadline
            )
            logger.warning("job expired job_id=%s reason=deadline at=claim", job_id)
            return Refusal.EXPIRED
        # Read after the lock: the statement that waited for it saw the pauses as they
        # were before, and one made meanwhile (an incident) did not stop the job.
        if Pause.objects.covering(task_name=job.task_name, queue=job.queue).exists():
            apply(
                states.PUT_BACK,
                current,
                dispatch_token=None,
                enqueued_at=None,
                resend_at=None,
                sends=0,
                updated_at=now,
            )
            return Refusal.PAUSED
        # Still a compare-and-set, though the row lock already guarantees the match.
        apply(
            states.CLAIM,
            current,
            attempts=F("attempts") + 1,
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            updated_at=now,
        )
        job.status, job.attempts, job.started_at = states.CLAIM.target, job.attempts + 1, now
        attempt = _attempt(job, token=token, worker=worker, now=now)
        attempt.save(force_insert=True)
    return Claim(job=job, attempt=attempt)


#: How long the worker's main process waits for a lost job's row (PostgreSQL's syntax).
LOST_LOCK_WAIT = "1s"


class AfterLoss(enum.StrEnum):
    """What becomes of a job once the process of the delivery running it is lost."""

    #: It fails: its last attempt gone, or it failed, expired or was cancelled. The
    #: call failed, as Celery has it.
    FAILS = "fails"
    #: It is retried: it had attempts left.
    RETRIED = "retried"
    #: It runs again, or runs already: it waits to, or another delivery has it.
    RUNS_AGAIN = "runs again"
    #: It had succeeded, its outcome recorded before the loss.
    SUCCEEDED = "succeeded"
    #: Unknown: PostgreSQL could not tell (out of reach, or the job's row held past
    #: :data:`LOST_LOCK_WAIT`), and nothing was changed. Its lease retries it (or fails
    #: it, out of attempts), as a job whose whole worker died; no failure of the call is
    #: told meanwhile, which could be told of a job that then succeeds.
    LEFT_TO_LEASE = "left to its lease"


def end_lost_delivery(*, job_id: int, token: UUID, process: str | None, reason: str) -> AfterLoss:
    """End the attempt of the delivery with ``token``, whose process is gone (killed, out
    of memory, past its hard time limit: ``reason``), and say what becomes of its job.

    The worker saw the process go: the job is retried after the error back-off (or
    fails, out of attempts), not a lease later. An outcome the process
    recorded before it went stands (the row's lock is waited for, for
    :data:`LOST_LOCK_WAIT` at most: this is the worker's main process, whose event loop
    waits meanwhile; held longer, the job is left to its lease).

    ``process`` is the lost process as the names of its deliveries' attempts begin
    (:func:`scheduler.worker.task.delivery_process`; None if the worker cannot tell): a
    copy of the job's message (a re-send, or SQS's second delivery) has the same token,
    and the loss of a process that held one is no loss of the job, which another
    delivery runs.
    """
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOST_LOCK_WAIT}'")
            lost = (
                ScheduledJob.objects.select_for_update()
                .filter(pk=job_id, status=Status.RUNNING, dispatch_token=token)
                .values_list("pk", "attempts", "max_attempts", "task_name")
                .first()
            )
            if lost is not None:
                attempt = _attempt_of(process, job_id=job_id, token=token)
                if attempt is None:  # a copy's process: the delivery running the job goes on
                    return AfterLoss.RUNS_AGAIN
                now, attempts = timezone.now(), lost[1]
                # The body's text (a ``sys.exit()`` message) may hold what PostgreSQL
                # cannot store: refused, the job would stay running for its lease. The
                # job's last_error too, so bounded as that is.
                error = validation.storable_text(
                    tracebacks.bounded(f"worker process lost: {reason}", length=_LAST_ERROR_LENGTH)
                )
                retried = dispatching.end_lost_attempts(
                    [lost],
                    error=error,
                    now=now,
                    # The error back-off: a job whose process keeps dying (out of memory)
                    # must not spend its attempts within seconds.
                    retry_at=now + retry_delay(attempts),
                    attempt_id=attempt,
                )
                return AfterLoss.RETRIED if retried else AfterLoss.FAILS
    except Error as error:  # a connection the server dropped: InterfaceError after
        if not refusals.lock_timed_out(error):
            return _not_judged(job_id, error)
        logger.warning("job lost delivery left to its lease job_id=%s", job_id)
    try:
        return _fate(job_id, token, process)
    except Error as error:
        return _not_judged(job_id, error)


def _attempt_of(process: str | None, *, job_id: int, token: UUID) -> int | None:
    """The id of the running attempt of the job with ``token`` that ``process`` started."""
    if process is None:
        return None
    return (
        JobAttempt.objects.filter(
            job_id=job_id,
            dispatch_token=token,
            outcome=JobAttempt.Outcome.RUNNING,
            worker__startswith=f"{process}:",
        )
        .values_list("pk", flat=True)
        .first()
    )


def _not_judged(job_id: int, error: Error) -> AfterLoss:
    """The fate of a lost delivery's job PostgreSQL could not tell: its lease's."""
    logger.warning(
        "job lost delivery not judged job_id=%s error=%s", job_id, refusals.reason(error)
    )
    return AfterLoss.LEFT_TO_LEASE


def _fate(job_id: int, token: UUID, process: str | None) -> AfterLoss:
    """What becomes of the job whose delivery with ``token`` in ``process`` was lost, as
    committed: a job still running that delivery is its lease's to retry or fail."""
    row = ScheduledJob.objects.filter(pk=job_id).values_list("status", "dispatch_token").first()
    if row is None:
        return AfterLoss.FAILS
    status, current = row
    if (
        status == Status.RUNNING
        and current == token
        and _attempt_of(process, job_id=job_id, token=token) is not None
    ):
        # Its row held past the wait: the holder may be its success committing, slowly.
        # Judged as it reads now, a last attempt's loss was the call's failure, and the
        # job then succeeded.
        return AfterLoss.LEFT_TO_LEASE
    if status == Status.RUNNING or status in states.PENDING:
        return AfterLoss.RUNS_AGAIN
    return AfterLoss.SUCCEEDED if status == Status.SUCCEEDED else AfterLoss.FAILS


def _ran(job_id: int) -> bool:
    """Whether the job, as committed, is running or finished (or does not exist): no
    dispatch of it can then be on its way to a commit (one takes a job committed as
    scheduled), so no message can become current, and a copy of a message is dropped
    without the row's lock, nor its arguments and result (up to 256 MB each) read.
    Workers back after a while receive most jobs' later copies so."""
    waiting = (Status.SCHEDULED, *states.CLAIM.sources)
    status = ScheduledJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    return status not in waiting


def _own_attempt(job: ScheduledJob, token: UUID, worker: str) -> JobAttempt | None:
    """The running attempt of ``job`` with ``token``, if ``worker`` started it."""
    attempt = JobAttempt.objects.filter(
        job=job, dispatch_token=token, outcome=JobAttempt.Outcome.RUNNING
    ).first()
    if attempt is None or attempt.worker != worker:
        return None
    logger.warning("job claim found committed job_id=%s worker=%s", job.pk, worker)
    return attempt


def heartbeat(*, job_id: int, token: UUID) -> bool:
    """Renew the lease of a job this delivery runs; False once it is no longer running.

    One small UPDATE of a column in no index (a HOT update), locking the row only for
    the statement: the lease counts from ``heartbeat_at``.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _heartbeat_statement(),
            {
                "now": timezone.now(),
                "job_id": job_id,
                "status": states.CLAIM.target,
                "token": token,
            },
        )
        return bool(cursor.rowcount)


@functools.cache
def _heartbeat_statement() -> str:
    """:func:`heartbeat`'s SQL. The stamp is this host's time plus however long the
    statement waited for a lock (on the table, or on the row: the row is locked before
    the stamp is worked out). Stamped before such a wait, a beat that waited about a
    lease wrote a lease-old time, and recovery, right after, retried the live job."""
    quote = connection.ops.quote_name
    job = quote(ScheduledJob._meta.db_table)
    return (
        f'UPDATE {job} SET "heartbeat_at" = '  # noqa: S608 - names only
        "%(now)s + (clock_timestamp() - statement_timestamp()) "
        f"FROM (SELECT id FROM {job} WHERE id = %(job_id)s AND status = %(status)s "
        "AND dispatch_token = %(token)s FOR NO KEY UPDATE) AS held "
        f"WHERE {job}.id = held.id"
    )


def refusal_kept_apart(*, atomic: bool) -> AbstractContextManager[Any]:
    """Where a plain task's outcome is recorded: in a savepoint when a transaction of the
    caller's is open (a test's, with run_due_jobs in it), which a refusal of
    PostgreSQL's would otherwise break; as it is for an ``atomic`` task's, whose
    transaction a refusal fails whole, and outside any transaction (a worker's)."""
    if connection.in_atomic_block and not atomic:
        return transaction.atomic()
    return contextlib.nullcontext()


def record_success(
    *,
    job: ScheduledJob,
    attempt: JobAttempt,
    result: Any = None,
    retrying: bool = False,
    atomic: bool = False,
) -> bool:
    """Mark a claimed job succeeded, keeping ``result`` if JSON and PostgreSQL can store
    it (None otherwise; in an ``atomic`` task's transaction, which goes with the body's
    writes, that raises ResultRefusedError).

    Returns False if the job's lease was taken away meanwhile (nothing is changed).
    ``retrying`` says the previous call lost its connection, maybe after its commit.
    """
    now = timezone.now()

    def succeed(stored: Any) -> bool:
        return _record(
            job,
            attempt,
            states.SUCCEED,
            JobAttempt.Outcome.SUCCEEDED,
            now=now,
            finished_at=now,
            last_error="",
            result=stored,
            retrying=retrying,
        )

    stored = _storable(job, result)
    refused: ResultRefusedError | None = None
    try:
        with refusal_kept_apart(atomic=atomic):
            updated = succeed(stored)
    except DatabaseError as error:
        # Past PostgreSQL's limits where validation cannot tell (see scheduling._write),
        # or refused by a trigger. Given up, the job would stay running and its body run
        # again once the lease expired.
        if stored is None or not refusals.refused_statement(error):
            raise
        refused = refusals.result_refused(refusals.reason(error))
    if refused is not None:
        # Out of the except block: the database's error may quote the value.
        if atomic:
            raise refused  # the body's transaction, broken now: the attempt's error
        logger.warning("job result not stored job_id=%s reason=%s", job.pk, refused)
        updated = succeed(None)
    if updated:
        job.result = stored if refused is None else None  # as PostgreSQL holds it
        _send_succeeded(job, result)
    return updated


def confirm_success(*, job: ScheduledJob, attempt: JobAttempt, result: Any = None) -> bool:
    """Whether a success whose commit lost its answer reached PostgreSQL all the same
    (an atomic task's, committed with its body's writes, cannot be written again).

    If it did, the job_succeeded signal that went with the lost commit is sent now.
    """
    if not _found_committed(job, attempt, JobAttempt.Outcome.SUCCEEDED):
        return False
    _send_succeeded(job, result)
    return True


def _send_succeeded(job: ScheduledJob, result: Any) -> None:
    signals.send_on_commit(
        signals.job_succeeded, job_id=job.pk, task_name=job.task_name, result=result
    )


def record_error(
    *,
    job: ScheduledJob,
    attempt: JobAttempt,
    error: str,
    retry: bool = True,
    retrying: bool = False,
) -> Status | None:
    """Retry a claimed job later through PostgreSQL, or fail it.

    The job fails when ``retry`` is false or it has used its ``max_attempts``. Returns
    the job's new status, or None if its lease was taken away meanwhile. ``retrying``
    as for :func:`record_success`.
    """
    now = timezone.now()
    retry_at = now + retry_delay(job.attempts) if retry else None
    return _retry_or_fail(
        job, attempt, retry_at, JobAttempt.Outcome.ERROR, error, now=now, retrying=retrying
    )


def record_retry(
    *,
    job: ScheduledJob,
    attempt: JobAttempt,
    run_at: datetime,
    reason: str,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    queue: str | None = None,
    deadline: datetime | None = None,
    retrying: bool = False,
) -> Status | None:
    """Run a claimed job again at ``run_at``, as its task asked (``self.retry()``).

    New ``args``/``kwargs``, when given, replace the stored ones (they must survive a
    JSON round trip and PostgreSQL must take them: InvalidArgumentsError, and nothing
    written, otherwise); so do a ``queue`` and a ``deadline`` (after ``run_at``). A job
    with no attempt left fails instead. Returns the job's new status, or None if its
    lease was taken away meanwhile. ``retrying`` as for :func:`record_success`.
    """
    changes: dict[str, Any] = {}
    if args is not None:
        changes["args"] = validation.job_args(args)
    if kwargs is not None:
        changes["kwargs"] = validation.job_kwargs(kwargs)
    if queue is not None:
        changes["queue"] = validation.queue_name(queue)
    if deadline is not None:
        changes["deadline"] = validation.deadline(deadline, run_at=run_at)
    return refusals.refusing(
        lambda: _retry_or_fail(
            job,
            attempt,
            run_at,
            JobAttempt.Outcome.RETRIED,
            reason,
            now=timezone.now(),
            retrying=retrying,
            **changes,
        ),
        refusals.arguments_too_large,
    )


def _retry_or_fail(
    job: ScheduledJob,
    attempt: JobAttempt,
    retry_at: datetime | None,
    outcome: str,
    error: str,
    *,
    now: datetime,
    retrying: bool,
    **changes: Any,
) -> Status | None:
    """Back to scheduled at ``retry_at`` while attempts are left, else failed."""
    if retry_at is not None and job.attempts < job.max_attempts:
        transition = states.RETRY_LATER
        changes.update(waiting_until(retry_at))
    else:
        transition = states.FAIL
        changes.update(finished_at=now)
    # An exception's text is the body's (a gateway's reply, say): it may hold what
    # PostgreSQL cannot store, or quote a whole page or dump, which every attempt would
    # keep (past 1 GB, refused); the outcome must be recorded all the same.
    error = validation.storable_text(tracebacks.bounded(error, length=ERROR_LENGTH))
    last_error = tracebacks.ending(error, length=_LAST_ERROR_LENGTH)
    if not _record(
        job,
        attempt,
        transition,
        outcome,
        now=now,
        error=error,
        retrying=retrying,
        last_error=last_error,
        **changes,
    ):
        return None
    if transition is states.FAIL:
        signals.send_on_commit(
            signals.job_failed, job_id=job.pk, task_name=job.task_name, error=error
        )
    return transition.target


def _record(
    job: ScheduledJob,
    attempt: JobAttempt,
    transition: states.Transition,
    outcome: str,
    *,
    now: datetime,
    retrying: bool,
    error: str = "",
    **changes: Any,
) -> bool:
    """Apply the outcome's transition and close the attempt, together: one statement.

    Only the delivery that claimed the job may record its outcome; its attempt is closed
    either way. ``retrying``, the previous call's commit (whose answer was lost) may have
    recorded it already.
    """
    # Read before this call writes, which closes a running attempt whatever the job
    # does: an attempt already closed with this outcome is the previous call's commit.
    if retrying and _found_committed(job, attempt, outcome):
        return True
    attempts = connection.ops.quote_name(JobAttempt._meta.db_table)
    close_attempt = (
        f"UPDATE {attempts} SET outcome = %s, finished_at = %s, error = %s "  # noqa: S608 - a name
        "WHERE id = %s AND outcome = %s"
    )
    return apply_delivery(
        transition,
        job_id=job.pk,
        token=job.dispatch_token,
        alongside=close_attempt,
        alongside_params=[outcome, now, error, attempt.pk, JobAttempt.Outcome.RUNNING],
        updated_at=now,
        **changes,
    )


def _found_committed(job: ScheduledJob, attempt: JobAttempt, outcome: str) -> bool:
    """Whether ``attempt`` is closed with ``outcome``: then an earlier commit, whose
    answer was lost, recorded it.

    While the attempt runs only its delivery moves the job; recovery closes the attempt
    as lease_expired in the transaction that takes the job away.

    The job's row lock is waited for first, then the attempt read in a statement of its
    own: PostgreSQL finishes a write whose client is gone (its statement waiting for the
    row, its commit slow), and read before that write ended the attempt still looked
    running; written again, the outcome then found the job moved, a lost lease.
    """
    with transaction.atomic():
        ScheduledJob.objects.select_for_update(no_key=True).filter(pk=job.pk).exists()
        if not JobAttempt.objects.filter(pk=attempt.pk, outcome=outcome).exists():
            return False
    logger.warning("job outcome found committed job_id=%s outcome=%s", job.pk, outcome)
    return True


def _storable(job: ScheduledJob, result: Any) -> Any:
    """``result`` if a JSON column can hold it; None (and a warning) otherwise: the
    success must be recorded whatever the body returned, or its lease would run it again."""
    reason = validation.unstorable_json(result)
    if reason is None:
        return result
    logger.warning("job result not stored job_id=%s reason=%s", job.pk, reason)
    return None
