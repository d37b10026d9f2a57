"""Worker-side execution against real PostgreSQL: claim, run, record, retry."""

import contextlib
import functools
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from billiard.pool import soft_timeout_sighandler
from celery.app.task import Context
from django.db import OperationalError, connection, transaction
from django.dispatch import Signal
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from scheduler import cancel, reschedule, schedule_at, signals
from scheduler.admin.display import error_line
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.exceptions import InvalidTransitionError
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.protocol import JobRef
from scheduler.registry import get_task
from scheduler.services import running
from scheduler.testing import InMemoryPublisher
from scheduler.worker import execution
from scheduler.worker.execution import Outcome
from tests.conftest import connection_to_a_reader, held_elsewhere, postgresql_out_of_reach
from tests.factories import deliver, deliver_ahead, dispatch_one, mark_enqueued
from tests.processes import wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


def _connection_dropped() -> OperationalError:
    return OperationalError("server closed the connection unexpectedly")


@contextlib.contextmanager
def statement_answer_lost(statement: str) -> Iterator[list[str]]:
    """PostgreSQL runs the first statement holding ``statement``, then the connection
    drops before its answer comes back (a failover). Yields the statements lost."""
    lost: list[str] = []

    def lose_the_first_answer(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if statement in sql and not lost:
            lost.append(sql)
            raise _connection_dropped()
        return result

    with connection.execute_wrapper(lose_the_first_answer):
        yield lost


@contextlib.contextmanager
def statement_still_running(statement: str, *, commits_after: float) -> Iterator[list[str]]:
    """The connection drops while PostgreSQL still runs the first statement holding
    ``statement`` (waiting for a row's lock, or committing slowly), which commits
    ``commits_after`` seconds later. Yields the statements lost."""
    lost: list[str] = []

    with contextlib.ExitStack() as elsewhere:

        def drop_while_it_runs(execute, sql, params, many, context):
            if statement in sql and not lost:
                lost.append(sql)

                def run() -> None:
                    with connection.cursor() as cursor:  # the other thread's connection
                        cursor.execute(sql, params)

                elsewhere.enter_context(held_elsewhere(run, commit_after=commits_after))
                raise _connection_dropped()
            return execute(sql, params, many, context)

        with connection.execute_wrapper(drop_while_it_runs):
            yield lost


@contextlib.contextmanager
def commit_answer_lost(*, reached: bool) -> Iterator[list[str]]:
    """The connection drops at the next commit before its answer comes back: after
    PostgreSQL committed if ``reached``, else before (the transaction rolls back).
    Yields the commits lost."""
    lost: list[str] = []
    commit = connection._commit  # type: ignore[attr-defined]  # not in django-stubs

    def lose_the_first_answer() -> None:
        if not lost:
            lost.append("COMMIT")
            if reached:
                commit()
            raise _connection_dropped()
        commit()

    with mock.patch.object(connection, "_commit", lose_the_first_answer):
        yield lost


@contextlib.contextmanager
def commit_still_running(*, commits_after: float) -> Iterator[list[str]]:
    """The connection drops at the next commit while PostgreSQL still commits (slowly):
    it does ``commits_after`` seconds later. Yields the commits lost."""
    lost: list[str] = []
    threads: list[threading.Thread] = []
    commit = connection._commit  # type: ignore[attr-defined]  # not in django-stubs

    def commit_later(raw) -> None:
        time.sleep(commits_after)
        raw.commit()
        raw.close()

    def lose_the_first_answer() -> None:
        if lost:
            commit()
            return
        lost.append("COMMIT")
        # Out of Django's hands, as a dropped connection is: its rollback cannot undo it.
        raw, connection.connection = connection.connection, None
        threads.append(threading.Thread(target=commit_later, args=(raw,)))
        threads[-1].start()
        raise _connection_dropped()

    try:
        with mock.patch.object(connection, "_commit", lose_the_first_answer):
            yield lost
    finally:
        for thread in threads:
            thread.join(30)


@pytest.fixture
def outcome_signals() -> Iterator[list[Signal]]:
    """The job_succeeded and job_failed signals sent during the test, in order."""
    sent: list[Signal] = []

    def receive(sender, **kwargs):
        sent.append(kwargs["signal"])

    watched = (signals.job_succeeded, signals.job_failed)
    for watched_signal in watched:
        watched_signal.connect(receive)
    yield sent
    for watched_signal in watched:
        watched_signal.disconnect(receive)


@freeze_time(T0)
def test_a_job_runs_with_its_stored_arguments_and_succeeds(tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", T0, [path], {"label": "hello"})
    token = dispatch_one(job, now=T0)
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w1").outcome
        == Outcome.SUCCEEDED
    )
    assert [label for label, _ in read_runs(path)] == ["hello"]
    job.refresh_from_db()
    assert (job.status, job.attempts, job.started_at, job.finished_at) == (
        Status.SUCCEEDED,
        1,
        T0,
        T0,
    )
    [attempt] = job.history.all()
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, "succeeded", "w1")
    assert (attempt.scheduled_for, attempt.started_at, attempt.error) == (T0, T0, "")


def test_the_same_message_delivered_twice_runs_the_job_once(tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", T0, [path, "once"])
    token = dispatch_one(job, now=T0)
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w1").outcome
        == Outcome.SUCCEEDED
    )
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w2").outcome
        == Outcome.DROPPED
    )
    assert len(read_runs(path)) == 1
    assert JobAttempt.objects.count() == 1


def test_cancelled_and_rescheduled_jobs_drop_their_old_message(tmp_path):
    path = str(tmp_path / "runs")
    cancelled = schedule_at("testapp.record", T0, [path, "cancelled"])
    moved = schedule_at("testapp.record", T0, [path, "moved"])
    cancelled_token, moved_token = dispatch_one(cancelled, now=T0), dispatch_one(moved, now=T0)
    cancel(cancelled)
    reschedule(moved, T0 + timedelta(days=1))
    assert (
        deliver(
            job_id=cancelled.pk, task_name=cancelled.task_name, token=cancelled_token, worker="w"
        ).outcome
        == Outcome.DROPPED
    )
    assert (
        deliver(job_id=moved.pk, task_name=moved.task_name, token=moved_token, worker="w").outcome
        == Outcome.DROPPED
    )
    assert read_runs(path) == []
    # The moved job runs only with the token of its new dispatch.
    new_token = dispatch_one(moved, now=T0 + timedelta(days=1))
    assert (
        deliver(job_id=moved.pk, task_name=moved.task_name, token=new_token, worker="w").outcome
        == Outcome.SUCCEEDED
    )
    assert [label for label, _ in read_runs(path)] == ["moved"]


def test_forged_or_unknown_messages_do_nothing(tmp_path):
    job = schedule_at("testapp.record", T0, [str(tmp_path / "runs"), "x"])
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=uuid.uuid4(), worker="w").outcome
        == Outcome.DROPPED
    )
    assert (
        deliver(job_id=999999, task_name="testapp.noop", token=uuid.uuid4(), worker="w").outcome
        == Outcome.DROPPED
    )
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SCHEDULED, 0)


@freeze_time(T0)
def test_a_message_of_an_earlier_dispatch_does_not_claim_the_re_dispatched_job():
    # Only the current dispatch's message may start the job: an older copy that claimed
    # it would run it beside the copy of its new dispatch.
    job = schedule_at("testapp.noop", T0)
    old_token = dispatch_one(job, now=T0)
    reschedule(job, T0)
    new_token = dispatch_one(job, now=T0)
    refused = running.claim(job_id=job.pk, task_name=job.task_name, token=old_token, worker="w")
    assert refused is running.Refusal.NOT_CURRENT
    job.refresh_from_db()
    assert (job.status, job.dispatch_token, job.attempts) == (Status.ENQUEUED, new_token, 0)
    assert not JobAttempt.objects.exists()


@freeze_time(T0)
def test_a_message_for_another_task_with_the_jobs_id_and_token_does_not_claim_it():
    # The message names the task that runs the body: another task's must not run this
    # job's (and with its stored arguments).
    job = schedule_at("testapp.noop", T0)
    token = dispatch_one(job, now=T0)
    refused = running.claim(job_id=job.pk, task_name="testapp.record", token=token, worker="w")
    assert refused is running.Refusal.NOT_CURRENT
    job.refresh_from_db()
    assert (job.status, job.dispatch_token, job.attempts) == (Status.ENQUEUED, token, 0)
    assert not JobAttempt.objects.exists()


def test_a_failing_job_is_retried_through_postgres_with_backoff_then_fails(tmp_path, settings):
    settings.SCHEDULER_RETRY_BACKOFF_SECONDS = 2 * 3600  # hours-long back-off
    settings.SCHEDULER_RETRY_BACKOFF_MAX_SECONDS = 24 * 3600
    path = str(tmp_path / "runs")
    with freeze_time(T0) as clock:
        job = schedule_at("testapp.fail", T0, [path, "flaky"], max_attempts=3)
        run_ats = [T0]
        for attempt in (1, 2, 3):
            clock.move_to(run_ats[-1])
            token = dispatch_one(job, now=run_ats[-1])
            outcome = deliver(
                job_id=job.pk, task_name=job.task_name, token=token, worker="w"
            ).outcome
            job.refresh_from_db()
            if attempt < 3:
                assert outcome == Outcome.RETRYING
                assert job.status == Status.SCHEDULED
                nominal = 2 * 3600 * 2 ** (attempt - 1)
                waited = (job.run_at - run_ats[-1]).total_seconds()
                assert nominal / 2 <= waited <= nominal  # exponential, with jitter
                run_ats.append(job.run_at)
            else:
                assert outcome == Outcome.FAILED
    assert job.status == Status.FAILED
    assert (job.attempts, job.finished_at) == (3, run_ats[-1])
    assert "RuntimeError: task flaky failed on purpose" in job.last_error
    attempts = list(job.history.order_by("number"))
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["error"] * 3
    assert [a.scheduled_for for a in attempts] == run_ats
    for attempt in attempts:
        assert attempt.error.startswith("Traceback (most recent call last)")
        assert "in fail" in attempt.error
        assert "RuntimeError: task flaky failed on purpose" in attempt.error
    assert len(read_runs(path)) == 3


@freeze_time(T0)
def test_an_errors_megabytes_of_text_are_kept_as_its_start_and_end(
    tmp_path, caplog, django_capture_on_commit_callbacks
):
    # An exception may quote a whole reply (a gateway's HTML page, a dump): each attempt
    # would keep it all, and past PostgreSQL's 1 GB its outcome could not be recorded.
    label = "reply " + "x" * 3_000_000 + " ends here"
    job = schedule_at("testapp.fail", T0, [str(tmp_path / "runs"), label], max_attempts=1)
    token = dispatch_one(job, now=T0)
    failed: list[str] = []

    def receive(sender, error, **kwargs):
        failed.append(error)

    signals.job_failed.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    finally:
        signals.job_failed.disconnect(receive)
    assert handled.outcome == Outcome.FAILED
    job.refresh_from_db()
    error = job.history.get().error
    assert 60_000 < len(error) <= 65_536
    assert error.startswith("Traceback (most recent call last)")
    assert "in fail" in error  # the call stack, from the start
    assert re.search(r"x\n\[2,9\d\d,\d\d\d characters left out\]\nx", error)
    assert error.endswith("x ends here failed on purpose\n")  # the exception's own end
    # The job keeps the end, from its last frame: the list's column names the exception.
    assert len(job.last_error) <= 2000
    assert job.last_error.endswith("x ends here failed on purpose\n")
    assert error_line(job.last_error).startswith("RuntimeError: task reply xxx")
    assert failed == [error]
    [logged] = [r.getMessage() for r in caplog.records if "job error" in r.getMessage()]
    assert len(logged) < 1000
    assert "error=RuntimeError: task reply xxx" in logged  # the exception's line, cut
    assert logged.endswith("x…")


def test_a_result_nested_too_deeply_for_json_is_dropped_and_the_success_recorded(tmp_path, caplog):
    # Python's JSON encoder (or the text check after it) ran out of stack: the error went
    # out of the worker, the job stayed running, and its body ran again once its lease
    # had expired, at every attempt.
    path = str(tmp_path / "runs")
    # Deeper than Python's encoder goes, on every Python this runs on.
    job = schedule_at("testapp.returns_nested", timezone.now(), [path, 5000])
    token = dispatch_one(job, now=timezone.now())
    handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert handled.outcome is Outcome.SUCCEEDED
    job.refresh_from_db()
    assert (job.status, job.result) == (Status.SUCCEEDED, None)
    assert f"job result not stored job_id={job.pk} reason=nested too deeply" in caplog.text
    assert len(read_runs(path)) == 1


def test_an_hours_long_backoff_waits_in_postgres_not_in_sqs(settings, tmp_path):
    settings.SCHEDULER_RETRY_BACKOFF_SECONDS = 3 * 3600
    with freeze_time(T0) as clock:
        job = schedule_at("testapp.fail", T0, [str(tmp_path / "runs"), "x"], max_attempts=2)
        publisher = InMemoryPublisher()
        dispatcher = Dispatcher(publisher=publisher)
        assert dispatcher.run_once().sent == 1
        job.refresh_from_db()
        assert (
            deliver(
                job_id=job.pk, task_name=job.task_name, token=job.dispatch_token, worker="w"
            ).outcome
            == "retrying"
        )
        job.refresh_from_db()
        assert job.run_at >= T0 + timedelta(hours=1, minutes=30)
        clock.move_to(job.run_at - timedelta(minutes=10))
        assert dispatcher.run_once().sent == 0
        clock.move_to(job.run_at - timedelta(seconds=30))
        assert dispatcher.run_once().sent == 1
    assert publisher.published[-1].delay_seconds == 30 - 2  # released 2 s (the lead) early


@pytest.fixture
def ten_minute_lease(settings):
    settings.SCHEDULER_LEASE_SECONDS = 600
    settings.SCHEDULER_RECOVERY_INTERVAL_SECONDS = 1


def _claimed_by_a_worker_gone_silent(
    *, max_attempts: int
) -> tuple[ScheduledJob, uuid.UUID, running.Claim, Dispatcher]:
    """A job due at T0 that a worker claimed and then went silent, its dispatch token,
    that worker's claim, and a dispatcher to judge the lease (a lease after its start)."""
    job = schedule_at("testapp.noop", T0, max_attempts=max_attempts)
    token = dispatch_one(job, now=T0)
    zombie = running.claim(job_id=job.pk, task_name=job.task_name, token=token, worker="dead")
    assert isinstance(zombie, running.Claim)
    return job, token, zombie, Dispatcher(publisher=InMemoryPublisher())


@pytest.mark.usefixtures("ten_minute_lease")
def test_an_expired_lease_is_retried_and_the_late_outcome_is_ignored():
    with freeze_time(T0) as clock:
        job, token, zombie, dispatcher = _claimed_by_a_worker_gone_silent(max_attempts=2)
        clock.move_to(T0 + timedelta(seconds=599))
        assert dispatcher.run_once().leases_expired == 0
        clock.move_to(T0 + timedelta(seconds=601))
        assert dispatcher.run_once().leases_expired == 1
        job.refresh_from_db()
        # Due at once, not after the error back-off (the lease already waited, and the
        # README says it runs again within about the lease and a tick): sent again.
        assert job.status == Status.ENQUEUED
        assert job.run_at == T0 + timedelta(seconds=601)
        assert job.dispatch_token != token
        assert "lease expired" in job.last_error
        [attempt] = job.history.all()
        assert attempt.outcome == JobAttempt.Outcome.LEASE_EXPIRED
        # The presumed-dead worker finishes after all: its outcome changes nothing.
        assert running.record_success(job=zombie.job, attempt=zombie.attempt) is False
        # Nor when it tries again after a lost answer: its attempt was closed by recovery.
        assert (
            running.record_success(job=zombie.job, attempt=zombie.attempt, retrying=True) is False
        )
        job.refresh_from_db()
        assert job.status == Status.ENQUEUED

        # Out of attempts, an expired lease fails the job.
        clock.move_to(job.run_at)
        claimed = running.claim(
            job_id=job.pk, task_name=job.task_name, token=job.dispatch_token, worker="dead-again"
        )
        assert isinstance(claimed, running.Claim)
        clock.tick(601)
        assert dispatcher.run_once().leases_expired == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.FAILED, 2)
    assert [a.outcome for a in job.history.order_by("number")] == ["lease_expired"] * 2


@pytest.mark.usefixtures("ten_minute_lease")
def test_a_zombie_workers_late_outcome_leaves_the_live_workers_run_alone():
    # Once its lease expired and another worker runs the job, the presumed-dead worker's
    # outcome must neither finish nor retry the job under the live one.
    with freeze_time(T0) as clock:
        job, _, zombie, dispatcher = _claimed_by_a_worker_gone_silent(max_attempts=3)
        clock.move_to(T0 + timedelta(seconds=601))
        assert dispatcher.run_once().leases_expired == 1
        job.refresh_from_db()  # enqueued again, under a new token
        clock.move_to(job.run_at)
        live = running.claim(
            job_id=job.pk, task_name=job.task_name, token=job.dispatch_token, worker="live"
        )
        assert isinstance(live, running.Claim)
        assert running.record_success(job=zombie.job, attempt=zombie.attempt) is False
        assert running.record_error(job=zombie.job, attempt=zombie.attempt, error="late") is None
    job.refresh_from_db()
    assert (job.status, job.dispatch_token) == (Status.RUNNING, live.attempt.dispatch_token)
    live.attempt.refresh_from_db()
    assert (live.attempt.outcome, live.attempt.worker) == (JobAttempt.Outcome.RUNNING, "live")


def deliveries_during_a_slow_dispatch(
    jobs: list[tuple[ScheduledJob, uuid.UUID]], *, now: datetime
) -> tuple[list[Outcome], float]:
    """Mark ``jobs`` enqueued with their tokens in one transaction that keeps their rows
    a second longer (a dispatcher whose sends to SQS are slow: the messages are already
    there), and deliver each in turn meanwhile, from another thread. Returns the
    deliveries' outcomes and when (``time.time()``) the transaction began to commit."""
    locked = threading.Event()
    outcomes: list[Outcome] = []
    committing: list[float] = []

    def dispatcher_transaction():
        try:
            with transaction.atomic():
                for job, token in jobs:
                    mark_enqueued(job, token=token, now=now)
                locked.set()
                time.sleep(1.0)
                committing.append(time.time())
        finally:
            connection.close()

    def worker():
        try:
            locked.wait(10)
            for job, token in jobs:
                outcomes.append(
                    deliver(job_id=job.pk, task_name=job.task_name, token=token).outcome
                )
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher_transaction), threading.Thread(target=worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes, committing[0]


@pytest.mark.django_db(transaction=True)
def test_a_message_that_arrives_before_the_dispatch_commits_still_runs_once(tmp_path):
    """The claim waits for the dispatcher's row lock, then sees the committed token."""
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", T0, [path, "early"])
    token = uuid.uuid4()

    outcomes, committing = deliveries_during_a_slow_dispatch([(job, token)], now=T0)

    assert outcomes == [Outcome.SUCCEEDED]
    [(_, ran_at)] = read_runs(path)
    assert ran_at >= committing  # the claim waited for the commit
    # A second delivery of the same message, after the commit, is dropped.
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="late").outcome
        == Outcome.DROPPED
    )


@pytest.mark.django_db(transaction=True)
def test_a_claim_that_waited_for_the_dispatch_commit_starts_the_job_when_it_took_the_row(
    tmp_path,
):
    """The wait for the dispatcher's lock (its sends to a slow SQS) counts: a deadline
    that passed meanwhile expires the job, and a started job's lease counts from when it
    started, not from when its message arrived."""
    path = str(tmp_path / "runs")
    now = timezone.now()
    missed = schedule_at(
        "testapp.record", now, [path, "missed"], deadline=now + timedelta(seconds=0.5)
    )
    started = schedule_at("testapp.record", now, [path, "started"])

    outcomes, committing = deliveries_during_a_slow_dispatch(
        [(missed, uuid.uuid4()), (started, uuid.uuid4())], now=now
    )

    assert outcomes == [Outcome.DROPPED, Outcome.SUCCEEDED]
    assert [label for label, _ in read_runs(path)] == ["started"]
    missed.refresh_from_db()
    assert missed.status == Status.EXPIRED
    attempt = started.history.get()
    # Within the clock's tolerance of the commit the claim waited for.
    committed = datetime.fromtimestamp(committing, UTC)
    assert attempt.started_at >= committed - timedelta(seconds=0.1)


@pytest.mark.django_db(transaction=True)
def test_a_message_whose_dispatch_rolled_back_is_dropped(tmp_path):
    job = schedule_at("testapp.record", T0, [str(tmp_path / "runs"), "x"])
    token = uuid.uuid4()
    with pytest.raises(RuntimeError), transaction.atomic():
        mark_enqueued(job, token=token, now=T0)
        raise RuntimeError("dispatcher crashed before commit")
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w").outcome
        == Outcome.DROPPED
    )
    job.refresh_from_db()
    assert job.status == Status.SCHEDULED


@pytest.mark.django_db(transaction=True)
def test_a_job_claimed_before_its_time_stays_enqueued_until_then_and_starts_at_it(tmp_path):
    """A message handed over a moment early: the claim holds the row and commits at run_at."""
    path = str(tmp_path / "runs")
    run_at = timezone.now() + timedelta(seconds=1)  # ahead, however slow the set-up
    job = schedule_at("testapp.record", run_at, [path, "held"])
    token = dispatch_one(job, now=timezone.now())
    delivery = deliver_ahead(job, token=token, not_before=run_at)
    status_while_held = ScheduledJob.objects.get(pk=job.pk).status
    assert time.time() < run_at.timestamp()
    # A cancel now waits for the instant, and finds the job started (running, or, the
    # body being this quick, already succeeded when the error reads its status).
    with pytest.raises(InvalidTransitionError, match=r"it is (running|succeeded)"):
        cancel(job)
    assert time.time() >= run_at.timestamp()
    delivery.thread.join(10)

    assert status_while_held == Status.ENQUEUED  # as every reader sees it until run_at
    assert delivery.outcomes == [Outcome.SUCCEEDED]
    [(_label, ran_at)] = read_runs(path)
    assert ran_at >= run_at.timestamp()
    [attempt] = JobAttempt.objects.filter(job=job)
    assert attempt.started_at == run_at  # the claim counts the start from the job's time
    job.refresh_from_db()
    assert job.started_at == run_at
    # Its commit does not wait for the disk, as a claim alone does not.
    assert "SET LOCAL synchronous_commit TO off" in delivery.statements


@pytest.mark.django_db(
    transaction=True
)  # the worker's connection is in autocommit, no test transaction
@pytest.mark.parametrize(
    ("fail", "outcome"), [(False, Outcome.SUCCEEDED), (True, Outcome.RETRYING)]
)
def test_the_outcome_is_recorded_though_postgresql_dropped_the_connection_while_the_body_ran(
    fail, outcome
):
    # A failover while a long body runs: recorded on the dropped connection, the outcome
    # would be lost, and a plain job run again once its lease expired.
    job = schedule_at("testapp.lose_connection", timezone.now(), [fail])
    token = dispatch_one(job, now=timezone.now())
    assert deliver(job_id=job.pk, task_name=job.task_name, token=token).outcome is outcome
    job.refresh_from_db()
    assert job.status == (Status.SCHEDULED if fail else Status.SUCCEEDED)


@pytest.mark.django_db(
    transaction=True
)  # the worker's connection is in autocommit, no test transaction
def test_a_delivery_waits_for_postgresql_to_come_back_to_claim_its_job(caplog):
    # A message received during a failover: given up, its job would wait for recovery
    # to send it again once stale, minutes late.
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    settings_dict = connection.settings_dict
    port = settings_dict["PORT"]
    with postgresql_out_of_reach():
        back = threading.Timer(1.0, settings_dict.__setitem__, ["PORT", port])
        back.start()
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert handled.outcome is Outcome.SUCCEEDED
    assert "job claim waits for the database" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("task", "recording", "outcome", "status"),
    [
        ("testapp.record", "record_success", Outcome.SUCCEEDED, Status.SUCCEEDED),
        ("testapp.fail", "record_error", Outcome.RETRYING, Status.SCHEDULED),
    ],
    ids=["returned", "raised"],
)
@pytest.mark.parametrize("failover", ["connection_dropped", "left_on_a_reader"])
def test_an_outcome_waits_for_postgresql_to_come_back_to_be_recorded(
    tmp_path, monkeypatch, caplog, task, recording, outcome, status, failover
):
    # The body ended as a failover began: the outcome not recorded, the job stayed
    # running until its lease expired, and a plain body that had run ran again. Aurora's
    # old primary, a reader now, keeps the connection and refuses its writes (25006).
    path = str(tmp_path / "runs")
    record = getattr(running, recording)
    failures: list[str] = []
    job = schedule_at(task, timezone.now(), [path, "once"])
    token = dispatch_one(job, now=timezone.now())
    with contextlib.ExitStack() as faults:

        def record_after_a_failover(**kwargs):
            if not failures:
                failures.append(recording)
                if failover == "connection_dropped":
                    raise _connection_dropped()
                faults.enter_context(connection_to_a_reader())
            return record(**kwargs)

        monkeypatch.setattr(running, recording, record_after_a_failover)
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert failures == [recording]
    assert handled.outcome is outcome
    assert "job outcome waits for the database job_id=" in caplog.text
    if failover == "left_on_a_reader":
        assert "read-only transaction" in caplog.text
    job.refresh_from_db()
    assert (job.status, job.attempts) == (status, 1)
    assert [label for label, _ in read_runs(path)] == ["once"]


@pytest.mark.django_db(transaction=True)
def test_a_claim_waits_for_a_connection_that_takes_writes_after_a_failover(caplog):
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    with connection_to_a_reader():
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert handled.outcome is Outcome.SUCCEEDED
    assert "job claim waits for the database" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_delivery_gives_up_when_postgresql_stays_out_of_reach(monkeypatch):
    monkeypatch.setattr(execution, "DATABASE_WAIT_SECONDS", 1.0)
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    started = time.monotonic()
    with postgresql_out_of_reach(), pytest.raises(OperationalError):
        deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert time.monotonic() - started < 2
    job.refresh_from_db()
    assert job.status == Status.ENQUEUED  # recovery sends it again once stale


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_commit_reached_postgresql_but_not_its_answer_runs_the_job(tmp_path):
    # PostgreSQL committed the claim and the connection dropped before its answer came
    # back (a failover): tried again, the claim must find its own commit, not another
    # delivery's. Refused, the job ran only after a lease, as a retry; with one attempt
    # it failed without ever running.
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now(), [path, "once"], max_attempts=1)
    token = dispatch_one(job, now=timezone.now())
    with statement_answer_lost("claimed AS (UPDATE") as answers_lost:
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert answers_lost
    assert handled.outcome is Outcome.SUCCEEDED
    assert [label for label, _ in read_runs(path)] == ["once"]
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 1)
    assert [attempt.outcome for attempt in job.history.all()] == ["succeeded"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("task", "args", "outcome", "status", "signal"),
    [
        (
            "testapp.record",
            ["/dev/null", "plain"],
            Outcome.SUCCEEDED,
            Status.SUCCEEDED,
            "job_succeeded",
        ),
        ("testapp.fail", ["/dev/null", "error"], Outcome.FAILED, Status.FAILED, "job_failed"),
        ("testapp.autoretry", ["/dev/null", "retry"], Outcome.RETRYING, Status.SCHEDULED, None),
    ],
    ids=["returned", "raised", "retried"],
)
@pytest.mark.parametrize(
    "answer_lost",
    [
        statement_answer_lost,
        # PostgreSQL finishes a statement whose client is gone (here it waits for the
        # job's row, as behind an operator's transaction). Read back before it ended,
        # the attempt still looked running: written again, the outcome waited for that
        # commit, then found the job moved, and took it for a lost lease.
        functools.partial(statement_still_running, commits_after=1.0),
    ],
    ids=["committed", "still running"],
)
def test_an_outcome_whose_answer_was_lost_is_taken_as_recorded(
    caplog, outcome_signals, answer_lost, task, args, outcome, status, signal
):
    # Tried again, the compare-and-set found the job moved already and took that for a
    # lost lease: the job's own job_succeeded / job_failed signal was never sent.
    job = schedule_at(task, timezone.now(), args, max_attempts=1 if task == "testapp.fail" else 3)
    token = dispatch_one(job, now=timezone.now())
    with answer_lost("WITH moved AS (UPDATE") as answers_lost:
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert answers_lost
    assert handled.outcome is outcome
    assert outcome_signals == ([getattr(signals, signal)] if signal else [])
    assert "job lease lost" not in caplog.text
    assert f"job outcome found committed job_id={job.pk}" in caplog.text
    job.refresh_from_db()
    assert (job.status, job.attempts) == (status, 1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "answer_lost",
    [
        # The body's writes and the success commit together, and a commit is not tried
        # again: the job succeeded, but its job_succeeded signal was never sent.
        functools.partial(commit_answer_lost, reached=True),
        # Read back before that commit ended, the attempt still looked running: the
        # success was taken for a lost lease, and Celery told the job failed.
        functools.partial(commit_still_running, commits_after=1.0),
    ],
    ids=["committed", "still committing"],
)
def test_an_atomic_success_whose_commit_answer_was_lost_is_recorded(
    caplog, outcome_signals, answer_lost
):
    job = schedule_at("testapp.atomic_effect", timezone.now(), ["atomic"])
    token = dispatch_one(job, now=timezone.now())
    with answer_lost() as answers_lost:
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert answers_lost
    assert (handled.outcome, handled.error) == (Outcome.SUCCEEDED, None)
    assert outcome_signals == [signals.job_succeeded]
    assert f"job outcome found committed job_id={job.pk} outcome=succeeded" in caplog.text
    assert Effect.objects.filter(label="atomic").count() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 1)


@pytest.mark.django_db(transaction=True)
def test_an_atomic_success_whose_commit_did_not_reach_postgresql_is_recorded_as_an_error(
    caplog, outcome_signals
):
    # The body's writes were rolled back with the success: the job is not succeeded.
    # It stayed running, its heartbeat stopped, for recovery to retry it once its lease
    # expired, as "lease expired": its error is recorded now, on a new connection.
    job = schedule_at("testapp.atomic_effect", timezone.now(), ["atomic"])
    token = dispatch_one(job, now=timezone.now())
    with commit_answer_lost(reached=False) as answers_lost:
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    assert answers_lost
    assert handled.outcome is Outcome.RETRYING
    assert isinstance(handled.error, OperationalError)
    assert outcome_signals == []
    assert "job outcome found committed" not in caplog.text
    assert f"job succeeded job_id={job.pk}" not in caplog.text
    assert not Effect.objects.exists()
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SCHEDULED, 1)
    assert "server closed the connection unexpectedly" in job.last_error
    assert [attempt.outcome for attempt in job.history.all()] == ["error"]


@freeze_time(T0)
@pytest.mark.parametrize("finished", [True, False])
def test_a_copy_of_a_job_that_ran_is_dropped_without_its_rows_lock_or_contents(finished):
    # Workers back after a while receive a job's later copies once it has run (or
    # while it runs): each took the row's lock and read it whole, its arguments and
    # result (up to 256 MB each) included, in three more statements.
    job = schedule_at("testapp.noop", T0, ["a" * 1000])
    token = dispatch_one(job, now=T0)
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    assert isinstance(claimed, running.Claim)
    if finished:
        assert running.record_success(job=claimed.job, attempt=claimed.attempt, result="r")
    with CaptureQueriesContext(connection) as captured:
        refused = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    assert refused is running.Refusal.NOT_CURRENT
    _, second = (query["sql"] for query in captured.captured_queries)
    assert "FOR UPDATE" not in second
    assert '"args"' not in second
    assert '"result"' not in second
    job.refresh_from_db()
    assert (job.status, job.attempts) == (
        Status.SUCCEEDED if finished else Status.RUNNING,
        1,
    )


def test_a_claim_tried_again_takes_only_its_own_workers_running_claim():
    job = schedule_at("testapp.noop", T0)
    token = dispatch_one(job, now=T0)

    def claim(worker, **kwargs):
        return running.claim(
            job_id=job.pk, token=token, task_name=job.task_name, worker=worker, **kwargs
        )

    first = claim("host-a:1")
    assert isinstance(first, running.Claim)
    assert claim("host-b:2", retrying=True) is running.Refusal.NOT_CURRENT
    assert claim("host-a:1") is running.Refusal.NOT_CURRENT  # a duplicate message
    again = claim("host-a:1", retrying=True)
    assert isinstance(again, running.Claim)
    assert again.attempt.pk == first.attempt.pk
    assert running.record_success(job=again.job, attempt=again.attempt)
    assert claim("host-a:1", retrying=True) is running.Refusal.NOT_CURRENT  # it ended


@pytest.mark.django_db(transaction=True)
def test_a_claim_tried_again_in_a_pool_of_threads_takes_back_only_its_deliverys_attempt():
    # Two copies of one job (a re-send) in one process's threads (a threads, gevent or
    # eventlet pool): the second's claim, tried again after its statement failed, took
    # the first's running attempt for its own lost claim, and ran the body a second time.
    job = schedule_at("testapp.effect", timezone.now(), ["copy", 1.5])
    ref = JobRef(job_id=job.pk, dispatch_token=dispatch_one(job, now=timezone.now()))
    task = get_task("testapp.effect")
    request = Context(hostname="worker-host")
    handled: dict[str, execution.Handled] = {}

    def deliver_copy(name: str, *, lose_first_claim: bool = False) -> None:
        lost: list[str] = []

        def fail_first_claim(execute, sql, params, many, context):
            if lose_first_claim and "FOR UPDATE OF" in sql and not lost:
                lost.append(sql)
                raise _connection_dropped()
            return execute(sql, params, many, context)

        try:
            with connection.execute_wrapper(fail_first_claim):
                handled[name] = task.handle_job_message(ref, request=request)
        finally:
            connection.close()

    first = threading.Thread(target=deliver_copy, args=["first"])
    first.start()
    assert wait_until(lambda: Effect.objects.filter(label="copy").exists(), timeout=10)
    second = threading.Thread(
        target=deliver_copy, args=["second"], kwargs={"lose_first_claim": True}
    )
    second.start()
    second.join(30)
    first.join(30)
    assert handled["second"].outcome is Outcome.DROPPED
    assert handled["first"].outcome is Outcome.SUCCEEDED
    assert Effect.objects.filter(label="copy").count() == 1
    [attempt] = job.history.all()
    assert attempt.worker.startswith(f"worker-host:{os.getpid()}:")
    assert "/" in attempt.worker  # the thread


def test_a_claim_taken_back_after_a_long_wait_renews_its_lease(settings):
    # The claim committed but its answer was lost; the connection came back almost a
    # lease later. The body starts now, its first heartbeat an interval later: the lease
    # must count from now, or recovery takes the live job for a dead one meanwhile.
    settings.SCHEDULER_LEASE_SECONDS = 60
    with freeze_time(T0) as clock:
        job = schedule_at("testapp.noop", T0)
        token = dispatch_one(job, now=T0)
        first = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="a:1")
        assert isinstance(first, running.Claim)
        clock.tick(55)
        again = running.claim(
            job_id=job.pk, token=token, task_name=job.task_name, worker="a:1", retrying=True
        )
        assert isinstance(again, running.Claim)
        assert again.attempt.pk == first.attempt.pk
        job.refresh_from_db()
        assert (
            timedelta(0) <= job.heartbeat_at - (T0 + timedelta(seconds=55)) < timedelta(seconds=1)
        )
        lease = timedelta(seconds=60)
        assert not ScheduledJob.objects.lease_expired(lease=lease, now=T0 + timedelta(seconds=70))


@pytest.fixture
def celery_soft_time_limit():
    """This process's SIGUSR1 handler as a prefork pool process has it: Celery's soft
    time limit; restored afterwards."""
    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize(
    ("task", "args", "recording", "status"),
    [
        ("testapp.record", ["/dev/null", "plain"], "record_success", Status.SUCCEEDED),
        ("testapp.atomic_effect", ["atomic"], "record_success", Status.SUCCEEDED),
        ("testapp.fail", ["/dev/null", "error"], "record_error", Status.SCHEDULED),
    ],
)
def test_a_soft_time_limit_reached_while_the_outcome_is_recorded_waits_for_it(
    celery_soft_time_limit, monkeypatch, caplog, task, args, recording, status
):
    # The body has returned (or raised): Celery's soft time limit firing now would leave
    # the job running, for its lease to run a body that completed again.
    record = getattr(running, recording)

    def record_as_the_limit_fires(**kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return record(**kwargs)

    monkeypatch.setattr(running, recording, record_as_the_limit_fires)
    job = schedule_at(task, timezone.now(), args)
    token = dispatch_one(job, now=timezone.now())

    deliver(job_id=job.pk, task_name=job.task_name, token=token)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (status, 1)
    [line] = [r.getMessage() for r in caplog.records if "soft time limit" in r.getMessage()]
    assert f"job_id={job.pk}" in line
