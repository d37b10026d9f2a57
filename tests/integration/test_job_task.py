"""A job runs as its own task: Celery's retry, autoretry, routing and results, in PostgreSQL.

Each message goes through the worker's own path (claim, run, record) against real
PostgreSQL; the end-to-end tests run the same with a real worker.
"""

import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from celery import states
from celery.app.trace import trace_task
from celery.backends.cache import CacheBackend
from celery.canvas import Signature
from celery.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from scheduler import schedule_at
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.protocol import JobRef
from scheduler.registry import get_task
from scheduler.services import running
from scheduler.worker.execution import Outcome
from tests.factories import deliver, dispatch_one
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


def dispatch_and_deliver(job, *, now=T0):
    """Dispatch ``job`` and hand its message to the worker's path."""
    token = dispatch_one(job, now=now)
    return deliver(job_id=job.pk, token=token, task_name=job.task_name)


@freeze_time(T0)
def test_self_retry_with_a_countdown_and_an_eta_waits_the_countdown_as_celery_does():
    # The eta won: a retry asked for in a minute waited until 2030.
    job = schedule_at("testapp.retry_countdown_and_eta", T0, [60, "2030-01-01T00:00:00+00:00"])
    assert dispatch_and_deliver(job).outcome == Outcome.RETRYING
    job.refresh_from_db()
    assert job.run_at == T0 + timedelta(seconds=60)


@freeze_time(T0)
def test_self_retry_keeps_its_queue_and_expiry_and_says_what_it_cannot_keep(caplog):
    # As Celery sends a retry: on that queue, expiring then. Both were dropped without a
    # word: the retry ran on the job's old workers, and after its expiry.
    options = {"queue": "reports.slow", "expires": 120, "priority": 9, "headers": None}
    job = schedule_at("testapp.retry_with_options", T0, [options])
    with caplog.at_level(logging.WARNING, logger="scheduler"):
        assert dispatch_and_deliver(job).outcome == Outcome.RETRYING
    job.refresh_from_db()
    assert (job.status, job.queue, job.run_at, job.deadline) == (
        Status.SCHEDULED,
        "reports-slow",  # the SQS queue kombu makes of that Celery queue
        T0 + timedelta(seconds=60),
        T0 + timedelta(seconds=120),
    )
    assert f"job retry kept no priority job_id={job.pk}" in caplog.text


@freeze_time(T0)
@pytest.mark.parametrize(
    ("options", "field"), [({"expires": 30}, "deadline"), ({"queue": "bad name"}, "queue")]
)
def test_a_self_retry_with_options_no_job_can_keep_fails_that_attempt(options, field):
    # An expiry before the retry's time: Celery would drop the retry, expired, unrun.
    job = schedule_at("testapp.retry_with_options", T0, [options])
    handled = dispatch_and_deliver(job)
    assert isinstance(handled.error, InvalidArgumentsError)
    assert handled.error.field == field
    job.refresh_from_db()
    assert (job.queue, job.deadline) == ("scheduler-jobs", None)


@pytest.mark.parametrize(("args", "kwargs"), [(["acct-1", 0], {}), (["acct-1"], {"page": 0})])
def test_self_retry_with_new_arguments_merges_them_as_celery_does(args, kwargs):
    # Stored as given: a retry with kwargs={"page": 1} of a job called with page
    # positionally ran next as paginate("acct-1", 0, page=1), a TypeError at every
    # attempt until the job failed.
    with freeze_time(T0) as frozen:
        job = schedule_at("testapp.paginate", T0, args, kwargs, max_attempts=5)
        seen = []
        for _ in range(3):
            handled = dispatch_and_deliver(job, now=timezone.now())
            job.refresh_from_db()
            seen.append((handled.outcome, job.args, job.kwargs))
            frozen.tick(timedelta(minutes=1))
    assert handled.error is None
    assert (job.status, job.result) == (Status.SUCCEEDED, 2)
    assert [outcome for outcome, _, _ in seen] == [Outcome.RETRYING] * 2 + [Outcome.SUCCEEDED]


@freeze_time(T0)
def test_a_self_retry_with_arguments_the_task_refuses_fails_that_attempt():
    job = schedule_at("testapp.paginate", T0, ["acct-1"], {"last": -1}, max_attempts=5)
    handled = dispatch_and_deliver(job)
    assert isinstance(handled.error, TypeError)
    job.refresh_from_db()
    assert (job.args, job.kwargs) == (["acct-1"], {"last": -1})  # as they were


@freeze_time(T0)
def test_self_retry_in_a_job_goes_back_to_postgres_without_a_message(tmp_path, published):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.observed", T0, [path, "again"], {"countdown": 3600}, max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert isinstance(handled.error, Retry)  # Celery's own retry, for task_retry and the log
    job.refresh_from_db()
    assert (job.status, job.run_at, job.attempts) == (Status.SCHEDULED, T0 + timedelta(hours=1), 1)
    assert job.dispatch_token is None
    [attempt] = job.history.all()
    assert attempt.outcome == JobAttempt.Outcome.RETRIED
    assert "Retry in 3600s" in attempt.error
    assert published == []  # no Celery message: the retry waits in PostgreSQL

    # The second attempt sees itself as Celery's retry number 1, and succeeds.
    with freeze_time(job.run_at):
        handled = dispatch_and_deliver(job, now=job.run_at)
    assert (handled.outcome, handled.result) == (Outcome.SUCCEEDED, "again")
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == (Status.SUCCEEDED, 2, "again")
    assert [label.split(":")[:2] for label, _ in read_runs(path)] == [
        ["again", "0"],
        ["again", "1"],
    ]


@freeze_time(T0)
def test_self_retry_without_attempts_left_fails_the_job_as_celery_would():
    job = schedule_at("testapp.observed", T0, ["/dev/null", "last"], max_attempts=1)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.FAILED
    assert isinstance(handled.error, MaxRetriesExceededError)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.FAILED, 1)
    assert "MaxRetriesExceededError" in job.last_error


@freeze_time(T0)
def test_autoretry_for_becomes_a_retry_through_postgres(tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.autoretry", T0, [path, "auto"], max_attempts=2)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    job.refresh_from_db()
    assert (job.status, job.run_at) == (Status.SCHEDULED, T0 + timedelta(seconds=30))
    assert "ValueError" in job.history.get().error


@freeze_time(T0)
def test_an_error_is_recorded_then_handed_to_celery(tmp_path):
    job = schedule_at("testapp.fail", T0, [str(tmp_path / "runs"), "boom"], max_attempts=2)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert isinstance(handled.error, RuntimeError)
    assert str(handled.error) == "task boom failed on purpose"
    job.refresh_from_db()
    assert job.status == Status.SCHEDULED
    assert "RuntimeError: task boom failed on purpose" in job.last_error


@freeze_time(T0)
def test_the_return_value_is_stored_as_json():
    job = schedule_at("testapp.echo", T0, [{"captured": True, "amount": "9.99"}])

    handled = dispatch_and_deliver(job)

    assert handled.result == {"captured": True, "amount": "9.99"}
    job.refresh_from_db()
    assert (job.status, job.result) == (Status.SUCCEEDED, {"captured": True, "amount": "9.99"})


@freeze_time(T0)
def test_a_return_value_json_cannot_store_is_dropped_with_a_warning(caplog):
    job = schedule_at("testapp.returns_a_set", T0)

    with caplog.at_level(logging.WARNING):
        handled = dispatch_and_deliver(job)

    assert (handled.outcome, handled.result, handled.result_kept) == (
        Outcome.SUCCEEDED,
        {1, 2},
        False,
    )
    job.refresh_from_db()
    assert (job.status, job.result) == (Status.SUCCEEDED, None)
    assert f"job result not stored job_id={job.pk}" in caplog.text


@pytest.mark.django_db(transaction=True)  # Celery's tracer checks the connections
@pytest.mark.parametrize(
    ("task", "told"),
    [
        # Handed to Celery as it was, a JSON result backend could not encode it: Celery
        # stored FAILURE for the call and sent task_failure, for a job that had
        # succeeded and would not run again.
        ("testapp.returns_a_set", None),
        # kombu's JSON encodes what the job's cannot: Celery keeps it as it was.
        ("testapp.returns_decimal", {"amount": Decimal("1.50"), "id": uuid.UUID(int=1)}),
    ],
)
@freeze_time(T0)
def test_a_return_value_json_cannot_store_is_a_success_of_the_call(monkeypatch, task, told):
    runner = get_task(task)
    monkeypatch.setattr(runner, "_backend", CacheBackend(app=runner.app, url="memory://"))
    monkeypatch.setattr(runner, "ignore_result", False)
    job = schedule_at(runner, T0)
    token = dispatch_one(job, now=T0)
    request = {"id": str(uuid.uuid4()), "hostname": "w", **JobRef(job.pk, token).headers()}

    traced = trace_task(runner, request["id"], [], {}, request=request, app=runner.app)

    assert (traced.info, runner.backend.get_state(request["id"])) == (None, states.SUCCESS)
    assert runner.backend.get_result(request["id"]) == told


UNSTORABLE_TEXTS = pytest.mark.parametrize(
    "code_points",
    [[97, 0, 98], [97, 0xD800, 98]],  # a NUL, a lone surrogate: PostgreSQL stores neither
    ids=["nul", "lone-surrogate"],
)


@UNSTORABLE_TEXTS
@freeze_time(T0)
def test_a_return_value_with_text_postgresql_cannot_store_is_dropped_not_run_again(
    code_points, caplog
):
    # Left unrecorded, the job would stay running and its lease would run it again.
    job = schedule_at("testapp.returns_text", T0, [code_points])

    with caplog.at_level(logging.WARNING):
        handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.SUCCEEDED
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == (Status.SUCCEEDED, None, 1)
    assert f"job result not stored job_id={job.pk}" in caplog.text


@UNSTORABLE_TEXTS
@freeze_time(T0)
def test_an_error_with_text_postgresql_cannot_store_is_recorded_with_it_replaced(code_points):
    job = schedule_at("testapp.fails_with_text", T0, [code_points], max_attempts=1)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.FAILED
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert "RuntimeError: a\ufffdb" in job.last_error
    assert "RuntimeError: a\ufffdb" in job.history.get().error


@freeze_time(T0)
def test_retry_with_new_arguments_stores_them(tmp_path):
    job = schedule_at("testapp.observed", T0, [str(tmp_path / "runs"), "a"], max_attempts=2)
    token = dispatch_one(job, now=T0)
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    assert isinstance(claimed, running.Claim)
    assert running.record_retry(
        job=claimed.job,
        attempt=claimed.attempt,
        run_at=T0 + timedelta(minutes=5),
        reason="Retry in 300s",
        args=[str(tmp_path / "runs"), "b"],
        kwargs={},
    )
    job.refresh_from_db()
    assert (job.args[1], job.status, job.run_at) == (
        "b",
        Status.SCHEDULED,
        T0 + timedelta(minutes=5),
    )


@freeze_time(T0)
def test_a_retry_with_arguments_json_cannot_store_is_refused():
    job = schedule_at("testapp.noop", T0)
    token = dispatch_one(job, now=T0)
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    with pytest.raises(InvalidArgumentsError):
        running.record_retry(
            job=claimed.job,
            attempt=claimed.attempt,
            run_at=T0,
            reason="Retry",
            args=[datetime.now(UTC)],
            kwargs={},
        )
    job.refresh_from_db()
    assert job.status == Status.RUNNING


def test_the_claim_is_a_fixed_small_number_of_queries(django_assert_num_queries):
    jobs = [schedule_at("testapp.noop", T0) for _ in range(3)]
    for job in jobs:
        token = dispatch_one(job, now=T0)
        # One statement: the claim's UPDATE and the attempt's INSERT, in one round trip
        # between the eta and the body.
        with django_assert_num_queries(1):
            claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
        assert isinstance(claimed, running.Claim)
        assert (claimed.job.status, claimed.job.attempts) == (Status.RUNNING, 1)
        assert claimed.attempt.pk == JobAttempt.objects.get(job=job).pk
    # A refused message of a job that ran: that statement, then the job's status.
    with django_assert_num_queries(2):
        refused = running.claim(
            job_id=jobs[0].pk, token=uuid.uuid4(), task_name="testapp.noop", worker="w"
        )
    assert refused == running.Refusal.NOT_CURRENT
    # Of a job that waits: then the row lock (SAVEPOINT, SELECT, RELEASE) to tell why.
    waiting = schedule_at("testapp.noop", T0)
    dispatch_one(waiting, now=T0)
    with django_assert_num_queries(5):
        refused = running.claim(
            job_id=waiting.pk, token=uuid.uuid4(), task_name="testapp.noop", worker="w"
        )
    assert refused == running.Refusal.NOT_CURRENT


@pytest.mark.django_db(transaction=True)
def test_a_claim_alone_commits_without_waiting_for_the_disk_and_one_in_a_transaction_waits():
    jobs = [schedule_at("testapp.noop", T0) for _ in range(2)]
    tokens = [dispatch_one(job, now=T0) for job in jobs]

    def claim(job, token):
        with CaptureQueriesContext(connection) as captured:
            claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
        assert isinstance(claimed, running.Claim)
        (statement,) = [query["sql"] for query in captured.captured_queries]
        return statement

    # A worker's claim is its own transaction: a crash may undo it, and the re-send runs
    # the job again (an atomic body cannot have committed without making it durable).
    assert "set_config('synchronous_commit', 'off', true)" in claim(jobs[0], tokens[0])
    # Inside the caller's transaction, it must not make the caller's commit lazy.
    with transaction.atomic():
        assert "synchronous_commit" not in claim(jobs[1], tokens[1])
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone() == ("on",)
    assert set(ScheduledJob.objects.values_list("status", flat=True)) == {Status.RUNNING}


@pytest.mark.django_db(transaction=True)  # as in a worker: no transaction around it
def test_an_outcome_is_one_statement_that_also_closes_the_attempt(django_assert_num_queries):
    job = schedule_at("testapp.noop", T0)
    token = dispatch_one(job, now=T0)
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    assert isinstance(claimed, running.Claim)
    with django_assert_num_queries(1):
        assert running.record_success(job=claimed.job, attempt=claimed.attempt, result={"n": 7})
    job.refresh_from_db()
    assert (job.status, job.result, job.last_error) == (Status.SUCCEEDED, {"n": 7}, "")
    attempt = JobAttempt.objects.get(pk=claimed.attempt.pk)
    assert attempt.outcome == JobAttempt.Outcome.SUCCEEDED
    assert attempt.finished_at == job.finished_at == job.updated_at
    # A second outcome for the same delivery moves nothing and leaves the attempt closed.
    with django_assert_num_queries(1):
        assert running.record_error(job=claimed.job, attempt=claimed.attempt, error="x") is None
    assert JobAttempt.objects.get(pk=attempt.pk).outcome == JobAttempt.Outcome.SUCCEEDED


@pytest.mark.parametrize(
    ("task", "queue", "expected"),
    [
        ("testapp.on_own_queue", None, "own-queue"),  # the task's queue option
        ("testapp.routed", None, "routed-queue"),  # CELERY_TASK_ROUTES
        ("testapp.routed", "explicit", "explicit"),  # an explicit queue wins
        ("testapp.noop", None, "default-jobs"),  # no route: SCHEDULER_QUEUE_NAME
    ],
)
def test_a_job_goes_to_its_tasks_routed_queue(settings, task, queue, expected):
    settings.SCHEDULER_QUEUE_NAME = "default-jobs"
    assert schedule_at(task, T0, queue=queue).queue == expected


def _effects() -> list[str]:
    return sorted(Effect.objects.values_list("label", flat=True))


@freeze_time(T0)
def test_ignore_ends_the_job_succeeded_without_a_result(published):
    # Celery's Ignore ends a task without an error: recorded as one, the job ran again
    # after each back-off and failed.
    job = schedule_at("testapp.ignores", T0, ["ignored"], max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert (handled.outcome, handled.result) == (Outcome.SUCCEEDED, None)
    assert isinstance(handled.error, Ignore)  # handed back: Celery stores no result for it
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result, job.last_error) == (
        Status.SUCCEEDED,
        1,
        None,
        "",
    )
    assert job.finished_at == T0
    [attempt] = job.history.all()
    assert (attempt.outcome, attempt.error) == (JobAttempt.Outcome.SUCCEEDED, "")
    assert _effects() == ["ignored"]
    assert published == []


@freeze_time(T0)
@pytest.mark.django_db(transaction=True)
def test_replace_hands_the_job_over_to_its_replacement_once(replacements_sent):
    # self.replace() sends the replacement, then raises Ignore: recorded as an error, the
    # job sent its replacement again on every attempt, then failed. (A real worker runs
    # the replacement: tests/e2e/test_control_exceptions.py.)
    job = schedule_at("testapp.replaces", T0, ["swap"], max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.SUCCEEDED
    assert isinstance(handled.error, Ignore)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == (Status.SUCCEEDED, 1, None)
    assert [a.outcome for a in job.history.all()] == [JobAttempt.Outcome.SUCCEEDED]
    assert replacements_sent == [(("swap:replacement",), ["swap:body"])]


def _committed_effects() -> list[str]:
    """The effects another connection sees: those committed."""
    seen: list[str] = []

    def read() -> None:
        try:
            seen.extend(_effects())
        finally:
            connections.close_all()

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    return seen


@pytest.fixture
def replacements_sent(monkeypatch) -> list[tuple[tuple[object, ...], list[str]]]:
    """Each replacement's arguments as it is sent, with the effects committed by then."""
    sent: list[tuple[tuple[object, ...], list[str]]] = []
    monkeypatch.setattr(
        Signature,
        "delay",
        lambda sig, *args, **kwargs: sent.append((sig.args, _committed_effects())),
    )
    return sent


@freeze_time(T0)
@pytest.mark.django_db(transaction=True)
def test_an_atomic_tasks_replacement_is_sent_once_its_work_has_committed(replacements_sent):
    # Sent from the body, before the commit, the replacement could run before the work it
    # carries on was there to read.
    job = schedule_at("testapp.atomic_replaces", T0, ["swap"], max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.SUCCEEDED
    assert replacements_sent == [(("swap:replacement",), ["swap:body"])]


@freeze_time(T0)
@pytest.mark.django_db(transaction=True)
def test_an_atomic_task_whose_commit_fails_sends_no_replacement(replacements_sent):
    # The attempt is retried, and replaces itself again: sent before, the replacement ran
    # once for each attempt.
    job = schedule_at("testapp.atomic_replaces", T0, ["swap", True], max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert replacements_sent == []
    assert _committed_effects() == []


@pytest.mark.django_db(transaction=True)  # Celery's tracer checks the connections
@pytest.mark.parametrize(
    ("task", "committed", "sent"),
    [
        ("testapp.atomic_replaces", ["swap:body"], [(("swap:replacement",), ["swap:body"])]),
        ("testapp.atomic_ignores", ["swap"], []),
    ],
    ids=["replace", "ignore"],
)
def test_an_atomic_task_called_as_an_ordinary_message_keeps_its_work_when_it_ends_so(
    replacements_sent, task, committed, sent
):
    # Ignore (which self.replace() raises once the replacement is on its way) left the
    # task's transaction as an error: the body's work rolled back, the replacement (sent
    # on commit) never went, and Celery, the message acknowledged, ran nothing again.
    request = {"id": str(uuid.uuid4()), "hostname": "w"}
    runner = get_task(task)
    traced = trace_task(runner, request["id"], ["swap"], {}, request=request, app=runner.app)
    assert traced.info.state == states.IGNORED
    assert _committed_effects() == committed
    assert replacements_sent == sent


@pytest.mark.django_db(transaction=True)
def test_ignore_in_an_atomic_task_commits_the_bodys_work_with_its_success():
    job = schedule_at("testapp.atomic_ignores", T0, ["kept"], max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.SUCCEEDED
    assert isinstance(handled.error, Ignore)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 1)
    assert list(Effect.objects.values_list("label", "atomic")) == [("kept", True)]


@freeze_time(T0)
def test_reject_without_requeue_fails_the_job_at_once():
    # Celery's Reject(requeue=False) means "never run this again": recorded as an
    # error, the job was retried until it had no attempt left.
    job = schedule_at("testapp.rejects", T0, ["poison", False], max_attempts=3)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.FAILED
    assert isinstance(handled.error, Reject)
    assert handled.error.requeue is False
    job.refresh_from_db()
    assert (job.status, job.attempts, job.finished_at) == (Status.FAILED, 1, T0)
    assert "celery.exceptions.Reject: ('poison rejected', False)" in job.last_error
    [attempt] = job.history.all()
    assert attempt.outcome == JobAttempt.Outcome.ERROR
    assert attempt.error.startswith("Traceback (most recent call last)")
    assert "in rejects" in attempt.error
    assert _effects() == ["poison:0"]


def test_reject_with_requeue_is_a_retry_through_postgresql(settings, published):
    # Requeued by the worker, the message would be a stale copy: the job runs again from
    # PostgreSQL, after the back-off of a retry, as self.retry() does.
    settings.SCHEDULER_RETRY_BACKOFF_SECONDS = 600
    with freeze_time(T0):
        job = schedule_at("testapp.rejects", T0, ["again", True], max_attempts=3)
        handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    # What the worker sees is a retry, which it acknowledges, not a Reject it requeues.
    assert isinstance(handled.error, Retry)
    assert isinstance(handled.error.exc, Reject)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.dispatch_token) == (Status.SCHEDULED, 1, None)
    assert T0 + timedelta(seconds=300) <= job.run_at <= T0 + timedelta(seconds=600)
    [attempt] = job.history.all()
    assert attempt.outcome == JobAttempt.Outcome.RETRIED
    assert "celery.exceptions.Reject: ('again rejected', True)" in attempt.error
    assert published == []

    with freeze_time(job.run_at):
        handled = dispatch_and_deliver(job, now=job.run_at)
    assert (handled.outcome, handled.result, handled.error) == (Outcome.SUCCEEDED, "again", None)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 2)
    assert _effects() == ["again:0", "again:1"]


@freeze_time(T0)
def test_reject_with_requeue_and_no_attempt_left_fails_the_job():
    job = schedule_at("testapp.rejects", T0, ["last", True], max_attempts=1)

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.FAILED
    # The job failed: its message must not be requeued either.
    assert isinstance(handled.error, Reject)
    assert handled.error.requeue is False
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.FAILED, 1)
    assert job.history.get().outcome == JobAttempt.Outcome.ERROR
    assert "Reject: ('last rejected', True)" in job.last_error


@pytest.mark.django_db(transaction=True)  # Celery's tracer checks the connections
@pytest.mark.parametrize(
    ("task", "args", "state", "status"),
    [
        ("testapp.ignores", ["ignored"], states.IGNORED, Status.SUCCEEDED),
        ("testapp.rejects", ["poison", False], states.REJECTED, Status.FAILED),
        ("testapp.rejects", ["again", True], states.RETRY, Status.SCHEDULED),
    ],
    ids=["ignore", "reject", "reject-requeue"],
)
def test_celerys_tracer_sees_the_jobs_outcome(task, args, state, status):
    # A worker acknowledges an ignored or retried message and deletes a rejected one
    # (Celery also records a failure for it); it requeues only a Reject(requeue=True).
    job = schedule_at(task, T0, args, max_attempts=3)
    token = dispatch_one(job, now=T0)
    request = {"id": str(uuid.uuid4()), "hostname": "w", **JobRef(job.pk, token).headers()}

    runner = get_task(task)
    traced = trace_task(runner, request["id"], [], {}, request=request, app=runner.app)

    assert traced.info.state == state
    if state == states.REJECTED:
        assert traced.info.retval.requeue is False
    job.refresh_from_db()
    assert (job.status, job.attempts) == (status, 1)
