"""Running one delivery of a job: claim it, run its body under a heartbeat, record the outcome.

:func:`run_job` is the one path every delivery takes: a Celery worker's (through
:class:`~scheduler.worker.task.SchedulerTask`), :func:`scheduler.testing.run_due_jobs`,
and any other front end that runs jobs, which passes its own :class:`JobRunner`.
"""

import enum
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from django.db import DatabaseError, Error, InterfaceError, OperationalError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from scheduler import validation
from scheduler.backoff import exponential_backoff
from scheduler.conf import scheduler_settings
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.protocol import as_token
from scheduler.services import refusals, running
from scheduler.states import Status
from scheduler.tracebacks import exception_summary
from scheduler.worker.connections import refresh_connections
from scheduler.worker.heartbeat import Heartbeat
from scheduler.worker.time_limits import soft_time_limit_held

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a delivery waits for PostgreSQL to come back (a failover) to claim its job,
#: or to record its outcome. Given up, the job stays enqueued and recovery sends it again
#: once it is stale (``SCHEDULER_STALE_AFTER_SECONDS`` after its run_at), or stays
#: running until its lease expires; waiting, the pool process could run no other job
#: without PostgreSQL anyway.
DATABASE_WAIT_SECONDS = 120.0

#: The most of an exception's line a log message quotes (the attempt keeps more).
_LOGGED_ERROR_LENGTH = 500


class Outcome(enum.StrEnum):
    """What handling one delivery did."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    #: The message was a duplicate, or its job was cancelled, rescheduled, expired,
    #: paused or lost its lease: it was acknowledged and nothing ran.
    DROPPED = "dropped"
    #: The job ran but its lease expired meanwhile, so another outcome was recorded
    #: (an atomic body's writes were rolled back).
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True)
class PendingRetry:
    """The body asked to run again at ``run_at``, with new arguments, queue or deadline
    if given."""

    run_at: datetime
    reason: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    queue: str | None = None
    deadline: datetime | None = None


@dataclass
class JobRun:
    """One attempt of a claimed job, as its body's runner sees it."""

    job: ScheduledJob
    attempt: JobAttempt
    #: Set when the body asks to run again (``self.retry()``): recorded when it ends.
    retry: PendingRetry | None = None
    #: Set when the body gives up retrying (Celery's ``max_retries``, or a Reject without
    #: requeue): an error fails the job even with attempts left.
    final: bool = False
    #: An exception to hand back to the caller (:attr:`Handled.error`) although the job
    #: succeeded: set by a runner whose body ended the job without a result, as Celery's
    #: Ignore does (which ``self.replace()`` raises once it has sent the replacement),
    #: or by an on-commit callback that failed after an atomic success committed.
    reraise: Exception | None = None
    #: Set when PostgreSQL refuses the arguments of the retry the body asked for: the
    #: attempt's error then, whatever the body did, and handed back as its error.
    refused: InvalidArgumentsError | None = None

    @property
    def attempts_left(self) -> int:
        """Attempts after this one that the job's ``max_attempts`` allows."""
        return self.job.max_attempts - self.job.attempts

    def request_retry(
        self,
        *,
        run_at: datetime,
        reason: str,
        args: Any = None,
        kwargs: Any = None,
        queue: Any = None,
        deadline: Any = None,
    ) -> None:
        """Run the job again at ``run_at`` once the body ends, on ``queue`` and with
        ``deadline`` if given (raises on arguments that JSON cannot store, a queue SQS
        cannot have or a deadline not after ``run_at``, so that the body fails rather
        than the recording)."""
        when = validation.aware_datetime(run_at, "run_at")
        self.retry = PendingRetry(
            run_at=when,
            reason=reason,
            args=None if args is None else validation.job_args(args),
            kwargs=None if kwargs is None else validation.job_kwargs(kwargs),
            queue=validation.queue_name(queue),
            deadline=validation.deadline(deadline, run_at=when),
        )


class JobRunner(Protocol):
    """What runs a job's body: a :class:`~scheduler.worker.task.SchedulerTask`, or
    another front end's adapter."""

    #: Run the body and the success transition in one database transaction.
    atomic: bool

    def run_job_body(self, run: JobRun) -> Any:
        """Call the body with the job's stored arguments and return its result."""
        ...


@dataclass(frozen=True)
class Handled:
    """What one delivery did, and what its body returned or raised (already recorded):
    ``error`` is for the caller to re-raise, also after a success (:attr:`JobRun.reraise`)."""

    outcome: Outcome
    result: Any = None
    error: Exception | None = None
    #: False when the job succeeded without keeping ``result``, which its JSON could not
    #: hold (it keeps None).
    result_kept: bool = True


class _AttemptError(Exception):
    """Carries what ended an attempt without its success past the atomic block it rolls
    back: the body's exception, or the error of an atomic success's record or commit."""

    def __init__(self, error: Exception, *, maybe_recorded: bool = False) -> None:
        super().__init__(error)
        self.error = error
        #: A commit that failed may have recorded the retry the body asked for.
        self.maybe_recorded = maybe_recorded


def run_job(
    *,
    job_id: int,
    token: UUID | str,
    task_name: str,
    worker: str,
    runner: JobRunner,
    not_before: datetime | None = None,
) -> Handled:
    """Handle one delivery of job ``job_id`` to ``task_name``, exactly once in effect.

    The claim commits first, at ``not_before`` if that is ahead (the message's eta: a
    worker hands a job's message over a moment early). The body then runs under a
    heartbeat that renews the lease; the heartbeat stops before the outcome is recorded,
    which Celery's soft time limit does not interrupt.
    An atomic runner's body and its success commit together, so an error, a crash or a
    lost lease rolls its writes back; a success whose commit lost its answer is read back,
    not committed again, and one that did not commit (PostgreSQL refused it, or the
    connection dropped before) is recorded as an error. An exception of the body is
    recorded (a retry through PostgreSQL, or failed) and returned in
    :attr:`Handled.error` for the caller to re-raise. ``token`` may be given as its text,
    as a published message carries it.
    """
    token = as_token(token)
    claimed = _claim(
        job_id=job_id, token=token, task_name=task_name, worker=worker, not_before=not_before
    )
    if isinstance(claimed, running.Refusal):
        logger.info("message dropped job_id=%s task=%s reason=%s", job_id, task_name, claimed)
        return Handled(Outcome.DROPPED)
    run = JobRun(job=claimed.job, attempt=claimed.attempt)
    job = run.job
    logger.info(
        "job started job_id=%s task=%s attempt=%s/%s lateness=%.3fs",
        job.pk,
        job.task_name,
        job.attempts,
        job.max_attempts,
        job.lateness.total_seconds() if job.lateness else 0.0,
    )
    interval = scheduler_settings.HEARTBEAT_INTERVAL_SECONDS
    # Celery's soft time limit is held from the body's end to the delivery's (an atomic
    # body's commit included).
    with ExitStack() as after_body:
        try:
            with Heartbeat(job_id=job.pk, token=token, interval=interval) as heartbeat:
                if runner.atomic:
                    result, outcome = _run_atomic(runner, run, heartbeat, after_body)
                else:
                    with apart_from_the_callers_transaction():
                        result = _call_body(runner, run, after_body)
                    heartbeat.stop()
                    _refresh_connections()
                    # Given up, the job would stay running until its lease expired,
                    # and the body that ran would run again.
                    outcome = _waiting_for_database(
                        lambda retrying: _record_return(run, result, retrying=retrying),
                        job_id=job.pk,
                        step="outcome",
                    )
        except _AttemptError as failed:
            _refresh_connections()
            error, maybe_recorded = failed.error, failed.maybe_recorded
            outcome = _waiting_for_database(
                lambda retrying: _record_raise(run, error, retrying=retrying or maybe_recorded),
                job_id=job.pk,
                step="outcome",
            )
            return Handled(outcome, error=run.refused or error)
        if outcome is Outcome.SUCCEEDED:
            # Only now: an atomic success is one once committed.
            logger.info("job succeeded job_id=%s task=%s", job.pk, job.task_name)
        return Handled(
            outcome,
            result=result,
            error=run.refused or run.reraise,
            result_kept=outcome is not Outcome.SUCCEEDED
            or job.result is not None
            or result is None,
        )


def _run_atomic(
    runner: JobRunner, run: JobRun, heartbeat: Heartbeat, after_body: ExitStack
) -> tuple[Any, Outcome]:
    """The body's result and its outcome, recorded in the body's transaction.

    A commit is not tried again (the body's writes went with it). When the record or
    the commit fails, a success whose commit lost its answer counts if it reached
    PostgreSQL; otherwise :class:`_AttemptError` carries the error, to be recorded as the
    attempt's (the job is not left running, for its lease to retry it as "lease
    expired"). Errors of PostgreSQL's (a deferred constraint checked at the commit, a
    transaction the body broke) leave no doubt, but an on-commit callback may also raise
    after the commit: the attempt's outcome, read back, tells which.
    """
    recorded: Outcome | None = None
    try:
        with transaction.atomic():
            result = _call_body(runner, run, after_body)
            heartbeat.stop(wait=False)  # joined once the transaction has ended
            recorded = _record_return(run, result, retrying=False, atomic=True)
            if recorded is Outcome.LEASE_LOST:
                # Another delivery may run the job again: not this body's writes.
                transaction.set_rollback(True)
    except _AttemptError:
        raise
    except Exception as error:
        if isinstance(error.__context__, _AttemptError):
            # The rollback after the body's error failed (the connection, say): the
            # body's error is the attempt's.
            raise error.__context__ from None
        lost_answer = isinstance(error, OperationalError | InterfaceError)
        if recorded is Outcome.SUCCEEDED and _success_committed(run, result):
            if not lost_answer:
                # Committed: an on-commit callback of the body's failed after it, and
                # Django dropped the callbacks after it (the signal sent just now).
                logger.warning(
                    "job on-commit callback failed job_id=%s task=%s error=%r",
                    run.job.pk,
                    run.job.task_name,
                    error,
                )
                run.reraise = error
            return result, recorded
        # A success was just read back; a retry asked for without raising, whose commit
        # may also have been done (its answer lost, or a callback failing after it), is
        # read back as it is recorded again.
        retry_recorded = recorded in (Outcome.RETRYING, Outcome.FAILED)
        raise _AttemptError(error, maybe_recorded=retry_recorded) from error
    return result, recorded


def _success_committed(run: JobRun, result: Any) -> bool:
    """Whether an atomic success whose commit lost its answer reached PostgreSQL (its
    signal is then sent), read once PostgreSQL answers again."""
    _refresh_connections()
    return _waiting_for_database(
        lambda _retrying: running.confirm_success(job=run.job, attempt=run.attempt, result=result),
        job_id=run.job.pk,
        step="outcome",
    )


def _refresh_connections() -> None:
    # A long body may leave the connection unused while PostgreSQL drops it (a
    # failover): the outcome recorded on it would be lost, and a plain job run again once
    # its lease expired. Not inside a transaction of the caller's (tests, eager calls).
    if not transaction.get_connection().in_atomic_block:
        refresh_connections()


def _claim(
    *, job_id: int, token: UUID, task_name: str, worker: str, not_before: datetime | None
) -> running.Claim | running.Refusal:
    """:func:`running.claim`, waiting for PostgreSQL while it is out of reach."""
    return _waiting_for_database(
        lambda retrying: running.claim(
            job_id=job_id,
            token=token,
            task_name=task_name,
            worker=worker,
            not_before=not_before,
            retrying=retrying,
        ),
        job_id=job_id,
        step="claim",
    )


def _waiting_for_database(action: Callable[[bool], T], *, job_id: int, step: str) -> T:
    """``action(retrying)``, tried again while PostgreSQL is out of reach, for up to
    :data:`DATABASE_WAIT_SECONDS`, not inside a transaction of the caller's.

    ``retrying`` says an earlier try lost its connection, maybe after its commit.
    """
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    failures = 0
    while True:
        try:
            return action(failures > 0)
        except Error as error:
            if not refusals.out_of_reach(error):
                raise  # PostgreSQL answered: it would refuse the statement again
            failures += 1
            pause = exponential_backoff(failures, base=0.5, cap=8.0)
            if transaction.get_connection().in_atomic_block or (
                time.monotonic() + pause > deadline
            ):
                raise
            logger.warning(
                "job %s waits for the database job_id=%s failures=%s retry_in=%.1fs error=%s",
                step,
                job_id,
                failures,
                pause,
                str(error).split("\n", 1)[0] or type(error).__name__,
            )
            if refusals.on_a_reader(error):
                transaction.get_connection().close()
            time.sleep(pause)
            refresh_connections()


def _call_body(runner: JobRunner, run: JobRun, after_body: ExitStack) -> Any:
    """The body's result; once it has ended, ``after_body`` holds the soft time limit."""
    try:
        return runner.run_job_body(run)
    except Exception as error:
        raise _AttemptError(error) from error
    finally:
        after_body.enter_context(soft_time_limit_held(job_id=run.job.pk))


#: libpq's PQTRANS_INERROR, as psycopg2 and psycopg 3 both report a connection's
#: transaction status: a statement failed, and the transaction takes none until rolled back.
_TRANSACTION_FAILED = 3


@contextmanager
def apart_from_the_callers_transaction() -> Iterator[None]:
    """What runs inside, in a transaction of the caller's (a test's, with run_due_jobs
    in it), runs in a savepoint, rolled back to only if it left that transaction broken
    (a query PostgreSQL refused): nothing after it could run in the transaction. Outside
    a transaction, where a refused statement undoes itself alone (a worker runs a plain
    body so, and on-commit callbacks run after the commit), it just runs.

    For a plain body, and for each on-commit callback that run_due_jobs runs."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        yield
        return
    savepoint = transaction.savepoint()
    callbacks = len(connection.run_on_commit)
    try:
        yield
    except BaseException:
        # The body's error is the one to tell (a connection it lost fails the savepoint).
        with suppress(DatabaseError):
            _end_savepoint(connection, savepoint, callbacks)
        raise
    _end_savepoint(connection, savepoint, callbacks)


def _end_savepoint(connection: BaseDatabaseWrapper, savepoint: str, callbacks: int) -> None:
    """Release ``savepoint``, or roll back to it if the transaction is broken, with the
    on-commit callbacks registered since (after the first ``callbacks``): their writes
    are gone."""
    raw = connection.connection
    if raw is None or raw.closed:
        return  # lost with the connection
    if connection.needs_rollback or raw.info.transaction_status == _TRANSACTION_FAILED:
        # Cleared first: while it is set, Django refuses every statement, this rollback's
        # too (an ORM query that PostgreSQL refused sets it).
        connection.needs_rollback = False
        transaction.savepoint_rollback(savepoint)
        del connection.run_on_commit[callbacks:]
    else:
        transaction.savepoint_commit(savepoint)


def _record_return(run: JobRun, result: Any, *, retrying: bool, atomic: bool = False) -> Outcome:
    """The body returned: success, or the retry it asked for without raising (or the
    error PostgreSQL's refusal of that retry made).

    ``retrying`` says the previous try lost its connection, maybe after its commit.
    """
    if run.refused is not None:
        return _record_raise(run, run.refused, retrying=retrying)
    if run.retry is not None:
        return _record_retry(run, run.retry, retrying=retrying, atomic=atomic)
    if running.record_success(
        job=run.job, attempt=run.attempt, result=result, retrying=retrying, atomic=atomic
    ):
        return Outcome.SUCCEEDED  # logged by run_job, once committed
    logger.warning("job lease lost job_id=%s outcome=succeeded", run.job.pk)
    return Outcome.LEASE_LOST


def _record_raise(run: JobRun, error: Exception, *, retrying: bool) -> Outcome:
    """The body raised: the retry it asked for, or an error (retried or failed)."""
    error = run.refused or error
    if run.retry is not None:
        return _record_retry(run, run.retry, retrying=retrying)
    job = run.job
    details = "".join(traceback.format_exception(error))
    status = running.record_error(
        job=job,
        attempt=run.attempt,
        error=details,
        retry=job.retry_on_error and not run.final,
        retrying=retrying,
    )
    outcome = _outcome(status)
    log = logger.info if outcome is Outcome.RETRYING else logger.warning
    log(
        "job error job_id=%s task=%s attempt=%s/%s outcome=%s error=%s",
        job.pk,
        job.task_name,
        job.attempts,
        job.max_attempts,
        outcome,
        exception_summary(details, length=_LOGGED_ERROR_LENGTH),
    )
    return outcome


def _record_retry(
    run: JobRun, retry: PendingRetry, *, retrying: bool, atomic: bool = False
) -> Outcome:
    job = run.job
    try:
        with running.refusal_kept_apart(atomic=atomic):
            status = running.record_retry(
                job=job,
                attempt=run.attempt,
                run_at=retry.run_at,
                reason=retry.reason,
                args=retry.args,
                kwargs=retry.kwargs,
                queue=retry.queue,
                deadline=retry.deadline,
                retrying=retrying,
            )
    except InvalidArgumentsError as refused:
        # PostgreSQL refused the new arguments: the attempt's error, as when self.retry()
        # refuses arguments JSON cannot store (recorded again, should the connection drop).
        run.retry, run.refused = None, refused
        logger.warning(
            "job retry refused job_id=%s task=%s error=%s", job.pk, job.task_name, refused
        )
        if atomic:
            raise  # the body's transaction, broken, rolls back; then it is recorded
        return _record_raise(run, refused, retrying=retrying)
    outcome = _outcome(status)
    logger.info(
        "job retry job_id=%s task=%s attempt=%s/%s outcome=%s run_at=%s",
        job.pk,
        job.task_name,
        job.attempts,
        job.max_attempts,
        outcome,
        retry.run_at.isoformat(),
    )
    return outcome


def _outcome(status: Status | None) -> Outcome:
    if status is None:
        return Outcome.LEASE_LOST
    return Outcome.RETRYING if status == Status.SCHEDULED else Outcome.FAILED
