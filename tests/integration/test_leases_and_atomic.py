"""Heartbeat leases and atomic tasks, against real PostgreSQL and real threads."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery.exceptions import Ignore
from django.db import IntegrityError, connection, connections
from django.db.models.signals import post_save
from django.db.transaction import TransactionManagementError
from django.utils import timezone
from freezegun import freeze_time

from payments.gateway import gateway
from payments.models import Payment
from payments.services import authorize_payment
from scheduler import schedule_at, signals
from scheduler.conf import scheduler_settings
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.registry import get_task
from scheduler.services import dispatching, running
from scheduler.testing import InMemoryPublisher
from scheduler.worker.checks import check_atomic_isolation
from scheduler.worker.execution import Outcome
from scheduler.worker.task import celery_return
from tests.conftest import job_row_held_elsewhere, postgresql_out_of_reach
from tests.factories import deliver, dispatch_one
from tests.processes import wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status
LEASE = timedelta(seconds=60)


def claim(job, *, now=T0):
    token = dispatch_one(job, now=now)
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    assert isinstance(claimed, running.Claim)
    return claimed


def dispatch_and_deliver(job):
    token = dispatch_one(job, now=timezone.now())
    return deliver(job_id=job.pk, token=token, task_name=job.task_name)


def in_another_thread(function):
    """Run ``function`` on its own thread and database connection, and wait for it."""

    def target():
        try:
            function()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)


@pytest.mark.django_db
def test_a_heartbeat_is_one_update_of_the_running_job_with_its_token(django_assert_num_queries):
    with freeze_time(T0) as clock:
        job = schedule_at("testapp.noop", T0)
        claimed = claim(job)
        clock.tick(30)
        with django_assert_num_queries(1) as captured:
            assert running.heartbeat(job_id=job.pk, token=claimed.job.dispatch_token)
        [query] = captured.captured_queries
        assert query["sql"].startswith('UPDATE "scheduler_scheduledjob" SET "heartbeat_at"')
        job.refresh_from_db()
        # Plus the few microseconds the statement took (it stamps when it writes).
        assert timedelta(0) <= job.heartbeat_at - (T0 + timedelta(seconds=30)) < LEASE / 60
        # Another delivery's token, or a job no longer running, renews nothing.
        assert not running.heartbeat(job_id=job.pk, token=uuid.uuid4())
        assert running.record_success(job=claimed.job, attempt=claimed.attempt)
        assert not running.heartbeat(job_id=job.pk, token=claimed.job.dispatch_token)


@pytest.mark.django_db
def test_the_heartbeat_is_a_hot_update_because_no_index_holds_heartbeat_at():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'scheduler_scheduledjob'"
        )
        indexes = cursor.fetchall()
    assert indexes
    assert [name for name, definition in indexes if "heartbeat_at" in definition] == []

    job = schedule_at("testapp.noop", T0)
    claimed = claim(job)

    def hot_updates():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_stat_get_xact_tuples_hot_updated('scheduler_scheduledjob'::regclass)"
            )
            return cursor.fetchone()[0]

    before = hot_updates()
    assert running.heartbeat(job_id=job.pk, token=claimed.job.dispatch_token)
    assert hot_updates() == before + 1


def _lock_the_job_table():
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE scheduler_scheduledjob IN ACCESS EXCLUSIVE MODE")


@pytest.mark.django_db(transaction=True)  # the lock is another connection's
@pytest.mark.parametrize("lock", ["row", "table"])
def test_a_heartbeat_that_waited_for_a_lock_stamps_when_it_wrote(settings, lock):
    # Stamped when the statement was built, a beat that waited for a lock about a lease
    # long (a migration's ALTER TABLE queued behind a long transaction, a FOR UPDATE)
    # wrote the time it began to wait: recovery, right after, retried the live job.
    settings.SCHEDULER_LEASE_SECONDS = 1
    claimed = claim(schedule_at("testapp.noop", T0), now=timezone.now())
    token = claimed.job.dispatch_token
    change = _lock_the_job_table if lock == "table" else None
    with job_row_held_elsewhere(claimed.job.pk, change=change, commit_after=1.5):
        assert running.heartbeat(job_id=claimed.job.pk, token=token)
    assert dispatching.expire_leases(now=timezone.now()) == 0
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == Status.RUNNING


@pytest.mark.django_db(transaction=True)  # the lock is another connection's
@pytest.mark.parametrize("lock", ["row", "table"])
def test_a_claim_that_waited_for_a_lock_renews_the_lease_it_stamped(settings, lock):
    # The claim stamps the job's start before it waits: a claim held up about a lease
    # left a lease-old heartbeat, and recovery took the job for dead before its first beat.
    settings.SCHEDULER_LEASE_SECONDS = 1.5
    settings.SCHEDULER_HEARTBEAT_INTERVAL_SECONDS = 0.5
    job = schedule_at("testapp.noop", T0)
    token = dispatch_one(job, now=timezone.now())
    change = _lock_the_job_table if lock == "table" else None
    with job_row_held_elsewhere(job.pk, change=change, commit_after=2):
        claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w")
    assert isinstance(claimed, running.Claim)
    assert dispatching.expire_leases(now=timezone.now()) == 0
    assert ScheduledJob.objects.get(pk=job.pk).status == Status.RUNNING


@pytest.mark.django_db
def test_the_lease_counts_from_the_last_heartbeat_not_from_the_start():
    with freeze_time(T0) as clock:
        job = schedule_at("testapp.noop", T0)
        claimed = claim(job)
        clock.tick(50)
        assert running.heartbeat(job_id=job.pk, token=claimed.job.dispatch_token)
        expired = ScheduledJob.objects.lease_expired
        # Started 100 s ago, but its last heartbeat was 50 s ago: alive.
        assert not expired(lease=LEASE, now=T0 + timedelta(seconds=100)).exists()
        assert expired(lease=LEASE, now=T0 + timedelta(seconds=111)).get() == job


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dispatcher_was", ["ticking", "restarting"])
def test_heartbeats_missed_while_postgresql_was_out_of_reach_retry_no_live_job(dispatcher_was):
    # A failover longer than a lease: the workers' heartbeats failed as the dispatcher's
    # ticks did. Back, the dispatcher must not take a live job for a dead one before its
    # worker has had the time to beat again: a full lease. A dispatcher that started as
    # PostgreSQL came back (a supervisor replaced it during the outage) cannot know it
    # was away: it waits as long.
    recovery = scheduler_settings.RECOVERY_INTERVAL_SECONDS
    with freeze_time(T0) as clock:
        live = claim(schedule_at("testapp.noop", T0)).job
        dead = claim(schedule_at("testapp.noop", T0)).job
        clock.tick(90)
        dispatcher = Dispatcher(publisher=InMemoryPublisher())
        if dispatcher_was == "ticking":
            with postgresql_out_of_reach():
                assert dispatcher.run_once().outage
            clock.tick(recovery)
        assert dispatcher.run_once().leases_expired == 0
        clock.tick(recovery)
        assert running.heartbeat(job_id=live.pk, token=live.dispatch_token)
        # A lease after the first tick that reached PostgreSQL, the dead job's lease has
        # expired; the live one beat within it.
        clock.tick(LEASE.total_seconds() - recovery + 1)
        assert dispatcher.run_once().leases_expired == 1
    live.refresh_from_db()
    dead.refresh_from_db()
    assert (live.status, live.last_error) == (Status.RUNNING, "")
    assert dead.status != Status.RUNNING
    assert dead.last_error.startswith("lease expired")


@pytest.mark.django_db(transaction=True)
def test_a_live_job_is_never_retried_however_long_it_runs(settings, tmp_path):
    settings.SCHEDULER_LEASE_SECONDS = 1
    settings.SCHEDULER_HEARTBEAT_INTERVAL_SECONDS = 0.2
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.sleep_first", timezone.now(), [path, "long", 3.0])
    outcomes = []

    def work():
        outcomes.append(dispatch_and_deliver(job).outcome)

    worker = threading.Thread(target=lambda: in_another_thread(work))
    worker.start()
    expired = 0
    while worker.is_alive():  # a dispatcher ticking meanwhile, three leases long
        expired += dispatching.expire_leases(now=timezone.now())
        time.sleep(0.1)
    worker.join()

    assert (expired, outcomes) == (0, [Outcome.SUCCEEDED])
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 1)
    assert job.heartbeat_at - job.started_at >= timedelta(seconds=2.5)
    assert len(read_runs(path)) == 1
    # The heartbeat stopped with the job, and the thread that beat let go of its
    # database connection (it stays, for the process's next job).
    time.sleep(0.5)
    assert ScheduledJob.objects.get(pk=job.pk).heartbeat_at == job.heartbeat_at
    assert wait_until(lambda: other_connections() == 0, timeout=5)


def other_connections() -> int:
    """Connections to the test database but this thread's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_an_atomic_body_that_writes_then_fails_leaves_nothing():
    job = schedule_at("testapp.atomic_write", timezone.now(), ["doomed"], {"fail": True})

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert Effect.objects.count() == 0
    job.refresh_from_db()
    assert job.status == Status.SCHEDULED
    assert "RuntimeError: doomed failed after writing" in job.last_error
    assert job.history.get().outcome == JobAttempt.Outcome.ERROR


@pytest.mark.django_db
def test_an_atomic_body_commits_with_its_success():
    job = schedule_at("testapp.atomic_write", timezone.now(), ["kept"])

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.SUCCEEDED
    effect = Effect.objects.get()
    job.refresh_from_db()
    assert (job.status, job.result, effect.label) == (Status.SUCCEEDED, effect.pk, "kept")


@pytest.mark.django_db(transaction=True)  # the row lock is another connection's
def test_an_expired_lease_whose_row_another_transaction_holds_is_skipped_not_waited_for():
    # The dispatcher's recovery must not stall behind one row (a worker's claim or
    # record holding it): every other dead worker's job waits for it meanwhile.
    held, free = (claim(schedule_at("testapp.noop", T0)) for _ in range(2))
    with job_row_held_elsewhere(held.job.pk):
        expired = dispatching.expire_leases(now=timezone.now() + timedelta(days=1))
    assert expired == 1
    assert ScheduledJob.objects.get(pk=held.job.pk).status == Status.RUNNING
    assert ScheduledJob.objects.get(pk=free.job.pk).status != Status.RUNNING


def _lose_the_lease_on_the_side():
    """The dispatcher, on its own connection, finds the job's lease expired."""
    in_another_thread(lambda: dispatching.expire_leases(now=timezone.now() + timedelta(days=1)))


@pytest.mark.django_db(transaction=True)
def test_an_atomic_body_is_rolled_back_when_its_success_cannot_be_recorded():
    job = schedule_at("testapp.atomic_write", timezone.now(), ["orphan"], max_attempts=2)

    def expire_on_write(sender, **kwargs):
        _lose_the_lease_on_the_side()

    post_save.connect(expire_on_write, sender=Effect, weak=False)
    try:
        handled = dispatch_and_deliver(job)
    finally:
        post_save.disconnect(expire_on_write, sender=Effect)

    assert handled.outcome == Outcome.LEASE_LOST
    assert Effect.objects.count() == 0  # another attempt will write it: not twice
    job.refresh_from_db()
    assert job.status == Status.SCHEDULED
    assert job.history.get().outcome == JobAttempt.Outcome.LEASE_EXPIRED
    # Celery is told nothing ran: its success (on_success, task_success, the result
    # backend) was told for writes rolled back, and again when the job ran again.
    with pytest.raises(Ignore):
        celery_return(handled, get_task(job.task_name))

    job.refresh_from_db()
    assert dispatch_and_deliver(job).outcome == Outcome.SUCCEEDED
    assert Effect.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_payment_capture_is_atomic_with_its_success(monkeypatch):
    payment = authorize_payment(amount="12.00", currency="EUR", capture_in=timedelta(0))
    job = payment.capture_job
    real_capture = gateway.capture

    def capture_while_the_lease_is_lost(**kwargs):
        _lose_the_lease_on_the_side()
        return real_capture(**kwargs)

    monkeypatch.setattr(gateway, "capture", capture_while_the_lease_is_lost)
    assert dispatch_and_deliver(job).outcome == Outcome.LEASE_LOST
    payment.refresh_from_db()
    assert payment.status == Payment.Status.AUTHORIZED  # rolled back with the outcome

    monkeypatch.setattr(gateway, "capture", real_capture)
    job.refresh_from_db()
    assert dispatch_and_deliver(job).outcome == Outcome.SUCCEEDED
    payment.refresh_from_db()
    assert payment.status == Payment.Status.CAPTURED
    assert len([c for c in gateway.captures if c.authorization_id == payment.authorization_id]) == 1


@pytest.fixture
def succeeded_signals():
    """The job ids of the job_succeeded signals sent during the test."""
    sent: list[int] = []

    def receive(sender, job_id, **kwargs):
        sent.append(job_id)

    signals.job_succeeded.connect(receive)
    yield sent
    signals.job_succeeded.disconnect(receive)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("max_attempts", "outcome", "status"),
    [(2, Outcome.RETRYING, Status.SCHEDULED), (1, Outcome.FAILED, Status.FAILED)],
    ids=["attempts-left", "last-attempt"],
)
def test_an_atomic_success_postgresql_refuses_at_commit_is_recorded_as_an_error(
    caplog, succeeded_signals, max_attempts, outcome, status
):
    # A foreign key checked at COMMIT (Django's are deferred) refused the body's work and
    # its success with it: the error escaped the delivery, and the job stayed running,
    # its heartbeat stopped, until its lease expired, its traceback nowhere.
    job = schedule_at(
        "testapp.atomic_dangling_reference", timezone.now(), ["fk"], max_attempts=max_attempts
    )

    handled = dispatch_and_deliver(job)

    assert handled.outcome == outcome
    assert isinstance(handled.error, IntegrityError)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (status, 1)
    assert "violates foreign key constraint" in job.last_error
    [attempt] = job.history.all()
    assert attempt.outcome == JobAttempt.Outcome.ERROR
    assert attempt.error.startswith("Traceback (most recent call last)")
    assert "IntegrityError" in attempt.error
    assert not Effect.objects.exists()  # rolled back with the success
    assert JobAttempt.objects.count() == 1  # so is the dangling row
    assert succeeded_signals == []
    assert f"job succeeded job_id={job.pk}" not in caplog.text  # it did not
    if status == Status.SCHEDULED:
        # The next attempt starts clean and succeeds.
        job.refresh_from_db()
        assert dispatch_and_deliver(job).outcome == Outcome.SUCCEEDED
        assert list(Effect.objects.values_list("label", flat=True)) == ["fk:1"]
        assert f"job succeeded job_id={job.pk}" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_an_atomic_body_that_broke_its_transaction_is_recorded_as_an_error():
    # The body caught a database error without a savepoint: the success could not be
    # recorded in its transaction (TransactionManagementError), and the job stayed
    # running until its lease expired.
    job = schedule_at("testapp.atomic_swallows_an_error", timezone.now(), ["broken"])

    handled = dispatch_and_deliver(job)

    assert handled.outcome == Outcome.RETRYING
    assert isinstance(handled.error, TransactionManagementError)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SCHEDULED, 1)
    assert "TransactionManagementError" in job.last_error
    assert job.history.get().outcome == JobAttempt.Outcome.ERROR
    assert not Effect.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_on_commit_callback_failing_after_an_atomic_success_leaves_it_succeeded(
    succeeded_signals,
):
    # The commit went through; a callback the body registered failed after it (and
    # Django dropped the callbacks after it, job_succeeded's among them).
    job = schedule_at("testapp.atomic_fails_on_commit", timezone.now(), ["committed"])

    handled = dispatch_and_deliver(job)

    assert (handled.outcome, handled.result) == (Outcome.SUCCEEDED, "committed")
    assert isinstance(handled.error, RuntimeError)  # handed to Celery, as Django would
    job.refresh_from_db()
    assert (job.status, job.attempts, job.last_error) == (Status.SUCCEEDED, 1, "")
    assert job.history.get().outcome == JobAttempt.Outcome.SUCCEEDED
    assert list(Effect.objects.values_list("label", flat=True)) == ["committed"]
    assert succeeded_signals == [job.pk]


@pytest.mark.django_db(transaction=True)  # a session's default level, outside a transaction
@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_atomic_tasks_on_a_server_whose_default_level_is_above_read_committed(level):
    # The level set on the server (for the database or role, or by the connection's
    # `options`) escaped the check, which read only OPTIONS["isolation_level"]: every
    # atomic job outliving a heartbeat failed at each attempt, as with that option.
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('default_transaction_isolation', %s, false)", [level])
    try:
        [error] = check_atomic_isolation(databases=["default"])  # as `migrate` runs it
        assert check_atomic_isolation() == []  # not asked: `check` alone asks no database
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET default_transaction_isolation")
    assert error.id == "scheduler.E024"
    assert level.upper().replace(" ", "_") in error.msg
    assert "default_transaction_isolation" in (error.hint or "")
    assert check_atomic_isolation(databases=["default"]) == []  # READ COMMITTED again


@pytest.mark.django_db(transaction=True)
def test_the_isolation_check_on_a_database_out_of_reach_reports_nothing():
    with postgresql_out_of_reach():
        assert check_atomic_isolation(databases=["default"]) == []
