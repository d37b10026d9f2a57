"""Values past PostgreSQL's limits: refused clearly, without being quoted, and a worker
records its job's outcome all the same."""

import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from freezegun import freeze_time

from scheduler import JobSpec, schedule_at, schedule_many, validation
from scheduler.exceptions import InvalidArgumentsError, ResultRefusedError
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.testing import run_due_jobs
from scheduler.worker.execution import Outcome
from tests.factories import deliver, dispatch_one
from tests.testapp.models import Effect
from tests.testapp.tasks import nested

pytestmark = pytest.mark.django_db

NOON = datetime(2030, 1, 1, 12, tzinfo=UTC)
SECRET = "SECRET-card-4242"
Status = ScheduledJob.Status

CALLS = {
    "schedule_at": lambda huge: schedule_at("testapp.noop", NOON, [huge]),
    "schedule_many": lambda huge: schedule_many(
        [JobSpec("testapp.noop", NOON), JobSpec("testapp.noop", NOON, [], {"k": huge})]
    ),
}
#: What each call's refusal starts with: schedule_many names the job.
REFUSED_AS = {"schedule_at": "args are too large", "schedule_many": "jobs[1]: kwargs are too large"}


@pytest.mark.parametrize("call", list(CALLS))
def test_arguments_past_postgresqls_limit_are_refused_without_being_quoted(call):
    # PostgreSQL's error quoted the start of the arguments: a secret there reached the
    # error tracker. One JSON string past the longest that jsonb holds (2**28 - 1 bytes):
    huge = SECRET + "x" * 2**28
    with transaction.atomic():
        with pytest.raises(InvalidArgumentsError) as refused:
            CALLS[call](huge)
        assert not ScheduledJob.objects.exists()  # the caller's transaction goes on
    error = refused.value
    assert str(error).startswith(REFUSED_AS[call])
    assert "for PostgreSQL to store" in str(error)
    # Nothing carries the database's error, not even as a suppressed context.
    assert error.__cause__ is None
    assert error.__context__ is None
    assert SECRET not in "".join(traceback.format_exception(error))


# PostgreSQL's own refusals of what validation lets through (a jsonb form past 256 MB,
# which takes tens of millions of numbers), played by JSON nested deeper than its stack
# allows, with the least stack it can be given (about 690 levels here): validation, which
# Python's stack limits to fewer levels on Python 3.12, is left out. The secret comes
# first, where PostgreSQL's error would quote the statement.
DEPTH = 800


@pytest.fixture
def deep(monkeypatch) -> Iterator[list[object]]:
    """JSON that PostgreSQL refuses, in :func:`short_stack`, with validation left out."""
    monkeypatch.setattr(validation, "_require_json", lambda value, field: None)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 8 * DEPTH)
    try:
        yield [SECRET, nested(DEPTH)]
    finally:
        sys.setrecursionlimit(limit)


@contextmanager
def changed_database(change: list[str], undo: list[str]) -> Iterator[None]:
    """The statements ``change`` run, then ``undo`` once the block ends, however it ends."""
    with connection.cursor() as cursor:
        for statement in change:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in undo:
                cursor.execute(statement)


def short_stack() -> AbstractContextManager[None]:
    """Lowers the stack of PostgreSQL's backends to its least: this connection's, and any
    new one's in this database (a worker replaces a connection between its steps)."""
    database = connection.ops.quote_name(connection.settings_dict["NAME"])
    return changed_database(
        [
            f"ALTER DATABASE {database} SET max_stack_depth = '100kB'",
            "SET max_stack_depth = '100kB'",
        ],
        [f"ALTER DATABASE {database} RESET max_stack_depth", "RESET max_stack_depth"],
    )


@pytest.mark.parametrize("call", list(CALLS))
def test_arguments_postgresql_refuses_are_refused_without_being_quoted(call, deep):
    with short_stack(), transaction.atomic():
        with pytest.raises(InvalidArgumentsError) as refused:
            CALLS[call](deep)
        assert not ScheduledJob.objects.exists()
    error = refused.value
    assert "too large for PostgreSQL to store (stack depth limit exceeded)" in str(error)
    assert (error.__cause__, error.__context__) == (None, None)
    assert SECRET not in "".join(traceback.format_exception(error))


def _deliver(job: ScheduledJob):
    return deliver(job_id=job.pk, token=dispatch_one(job, now=NOON), task_name=job.task_name)


def _quoted_nowhere(job: ScheduledJob, handled, caplog) -> None:
    """The secret is in no error of the job's, nor in the one handed back, nor logged."""
    job.refresh_from_db()
    errors = [job.last_error, *job.history.values_list("error", flat=True), caplog.text]
    errors.append("".join(traceback.format_exception(handled.error)))
    assert not [error for error in errors if SECRET in error]


@freeze_time(NOON)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("task", "throw"),
    [
        ("testapp.retries_nested", True),
        ("testapp.retries_nested", False),
        ("testapp.atomic_retries_nested", True),
        ("testapp.atomic_retries_nested", False),
    ],
)
def test_a_retry_whose_arguments_postgresql_refuses_is_recorded_as_the_attempts_error(
    task, throw, deep, caplog
):  # deep: validation left out, Python encodes what the task asks for
    # Taken for PostgreSQL out of reach, the outcome waited two minutes, then the job
    # stayed running until its lease expired, and a plain job's body ran again. As one
    # whose arguments JSON cannot store, it is the attempt's error: the job is retried
    # with the arguments it has, as on any error.
    job = schedule_at(task, NOON, [SECRET, DEPTH, throw], max_attempts=2)
    with caplog.at_level(logging.INFO), short_stack():
        handled = _deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert isinstance(handled.error, InvalidArgumentsError)  # for Celery: a failure
    job.refresh_from_db()
    assert (job.status, job.args) == (Status.SCHEDULED, [SECRET, DEPTH, throw])
    [attempt] = job.history.all()
    assert attempt.outcome == JobAttempt.Outcome.ERROR
    assert (
        "InvalidArgumentsError: args or kwargs are too large for PostgreSQL to store "
        "(stack depth limit exceeded)"
    ) in attempt.error
    _quoted_nowhere(job, handled, caplog)
    assert "waits for the database" not in caplog.text
    # A plain body's effect stays; an atomic one's is rolled back with the refused retry.
    assert Effect.objects.count() == (0 if task.startswith("testapp.atomic") else 1)


def results_refused_by_a_trigger() -> AbstractContextManager[None]:
    """PostgreSQL refuses, for a reason of its own, any job result with a ``refuse`` key
    (a trigger of the user's, say, or an allocation PostgreSQL cannot make)."""
    table = connection.ops.quote_name(ScheduledJob._meta.db_table)
    return changed_database(
        [
            "CREATE FUNCTION test_refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.result ? 'refuse' THEN "
            "RAISE EXCEPTION 'result refused by a trigger'; END IF; RETURN NEW; END $$",
            f"CREATE TRIGGER test_refuse_result BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_result()",
        ],
        [f"DROP TRIGGER test_refuse_result ON {table}", "DROP FUNCTION test_refuse_result()"],
    )


#: Results PostgreSQL refuses, how, and in its words: past its limits (JSON deeper than
#: its stack), or for a reason of its own (a trigger's exception).
REFUSALS = {
    "past_limits": (lambda deep: deep, short_stack, "stack depth limit exceeded"),
    "trigger": (
        lambda deep: {"refuse": SECRET},
        results_refused_by_a_trigger,
        "result refused by a trigger",
    ),
}


@freeze_time(NOON)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_result_postgresql_refuses_is_dropped_and_the_success_recorded(deep, caplog, refusal):
    # A trigger's refusal went out of the worker, the job stayed running, and once its
    # lease had expired the body that had succeeded ran again.
    value, refusing, said = REFUSALS[refusal]
    job = schedule_at("testapp.echo", NOON, [value(deep)])
    with caplog.at_level(logging.INFO), refusing():
        handled = _deliver(job)

    assert handled.outcome == Outcome.SUCCEEDED
    assert handled.error is None
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (Status.SUCCEEDED, None, 1)
    assert job.history.get().outcome == JobAttempt.Outcome.SUCCEEDED
    assert (
        f"job result not stored job_id={job.pk} reason=PostgreSQL refused to store the "
        f"result ({said})"
    ) in caplog.text
    assert "waits for the database" not in caplog.text
    assert SECRET not in caplog.text


@freeze_time(NOON)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_an_atomic_result_postgresql_refuses_is_the_attempts_error(deep, caplog, refusal):
    # Its transaction broken by the refusal, the success cannot be recorded in it.
    value, refusing, said = REFUSALS[refusal]
    job = schedule_at("testapp.atomic_echo", NOON, [value(deep)], max_attempts=2)
    with caplog.at_level(logging.INFO), refusing():
        handled = _deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert isinstance(handled.error, ResultRefusedError)
    job.refresh_from_db()
    assert job.status == Status.SCHEDULED
    assert job.history.get().outcome == JobAttempt.Outcome.ERROR
    assert f"ResultRefusedError: PostgreSQL refused to store the result ({said})" in (
        job.last_error
    )
    _quoted_nowhere(job, handled, caplog)


@freeze_time(NOON)
@pytest.mark.django_db
def test_run_due_jobs_in_a_tests_transaction_drops_a_refused_result_as_a_worker_does():
    # Inside the test's transaction the plain task's success was taken for an atomic
    # one's: ResultRefusedError went out of run_due_jobs, and the transaction was broken.
    job = schedule_at("testapp.echo", NOON, [{"refuse": SECRET}])
    with results_refused_by_a_trigger():
        [ran] = run_due_jobs()
    assert (ran.pk, ran.status, ran.result) == (job.pk, Status.SUCCEEDED, None)
    assert ScheduledJob.objects.get(pk=job.pk).status == Status.SUCCEEDED


@freeze_time(NOON)
@pytest.mark.django_db
@pytest.mark.parametrize("throw", [True, False])
def test_run_due_jobs_in_a_tests_transaction_records_a_refused_retry_as_a_worker_does(
    deep, throw
):  # deep: validation left out, Python encodes what the task asks for
    # The retry's record, refused inside the test's transaction, was raised out of
    # run_due_jobs and broke the transaction: a worker records it as the attempt's error.
    job = schedule_at("testapp.retries_nested", NOON, [SECRET, DEPTH, throw], max_attempts=2)
    with short_stack():
        ran = run_due_jobs()
    assert {each.pk for each in ran} == {job.pk}
    first = JobAttempt.objects.filter(job=job).order_by("number").first()
    assert first is not None
    assert (first.outcome, first.error.splitlines()[-1]) == (
        JobAttempt.Outcome.ERROR,
        "scheduler.exceptions.InvalidArgumentsError: args or kwargs are too large for "
        "PostgreSQL to store (stack depth limit exceeded)",
    )
