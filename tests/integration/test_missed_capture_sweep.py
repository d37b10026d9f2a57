"""The payments demo's sweep: the missed captures whose receivers were lost are found."""

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from celery import current_app
from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from freezegun import freeze_time

from payments.apps import after_migrate
from payments.models import Payment
from payments.periodic import SWEEP_PERIODIC_TASK_NAME, ensure_missed_capture_sweep
from payments.services import (
    MISSED_CAPTURE_SWEEP_GRACE,
    MISSED_CAPTURE_SWEEP_LOOKBACK,
    MISSED_CAPTURE_TASK_NAME,
    SWEEP_TASK_NAME,
    authorize_payment,
    cancel_payment,
    check_missed_capture,
    record_missed_captures,
)
from scheduler import cancel
from scheduler.models import ScheduledJob
from scheduler.services import dispatching
from scheduler.testing import run_due_jobs
from tests.conftest import query_plan
from tests.factories import insert_many

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
#: When the sweep looks: its grace after the ends at T0 has passed.
SWEPT = T0 + MISSED_CAPTURE_SWEEP_GRACE + timedelta(seconds=1)


def _fail(payment: Payment) -> None:
    """Its capture job failed for good (its workers died mid-capture, attempt after
    attempt), and the signal was lost."""
    ScheduledJob.objects.filter(payment=payment).update(
        status=ScheduledJob.Status.FAILED,
        attempts=F("max_attempts"),
        finished_at=timezone.now(),
        dispatch_token=None,
    )


def _record_jobs() -> list[ScheduledJob]:
    return list(ScheduledJob.objects.filter(task_name=MISSED_CAPTURE_TASK_NAME).order_by("pk"))


@freeze_time(T0)
def test_capture_jobs_that_ended_badly_without_their_receivers_are_recorded_missed_by_the_sweep():
    # An admin bulk cancel of 10,000 capture jobs ran their receivers in the request,
    # which the web server's timeout killed after the cancel had committed: 4,871
    # payments stayed authorized, their missed capture never recorded, and nothing
    # looked for them later.
    cancelled, failed = (authorize_payment(amount="5.00", currency="EUR") for _ in range(2))
    expired = authorize_payment(
        amount="6.00", currency="EUR", capture_in=timedelta(days=1), valid_for=timedelta(days=2)
    )
    waiting = authorize_payment(amount="7.00", currency="EUR")
    ended = T0 + timedelta(days=3)
    # Their receivers never run: the on-commit callbacks of the test's transaction are
    # left uncalled, as the killed request left them.
    with freeze_time(ended):
        assert cancel(cancelled.capture_job_id, reason="bulk cancel", actor="ops") is True
        _fail(failed)
        assert dispatching.expire_missed(now=ended) == 1
    assert _record_jobs() == []
    with freeze_time(ended + MISSED_CAPTURE_SWEEP_GRACE + timedelta(seconds=1)):
        assert record_missed_captures() == 3
        run_due_jobs()
    for payment in (cancelled, failed, expired):
        payment.refresh_from_db()
        assert payment.status == Payment.Status.CAPTURE_MISSED
    waiting.refresh_from_db()
    assert waiting.status == Payment.Status.AUTHORIZED
    assert {job.kwargs["capture_job_id"] for job in _record_jobs()} == {
        cancelled.capture_job_id,
        failed.capture_job_id,
        expired.capture_job_id,
    }


@freeze_time(T0)
def test_the_sweep_leaves_alone_payments_recorded_or_about_to_be():
    recorded, pending, recent, old, voided = (
        authorize_payment(amount="5.00", currency="EUR") for _ in range(5)
    )
    for payment in (recorded, pending):
        cancel(payment.capture_job_id, reason="bulk cancel")
    # One whose receiver's job ran, one whose receiver's job waits (the gateway out of
    # reach: retried for hours), one cancelled within the grace (its receiver's job is
    # on its way), one that ended before the look-back, and a cancelled order.
    check_missed_capture(capture_job_id=recorded.capture_job_id)
    run_due_jobs()
    check_missed_capture(capture_job_id=pending.capture_job_id)
    with freeze_time(T0 - MISSED_CAPTURE_SWEEP_LOOKBACK - timedelta(seconds=1)):
        _fail(old)
    cancel_payment(payment_id=voided.pk, reason="order cancelled")
    with freeze_time(SWEPT):
        cancel(recent.capture_job_id, reason="bulk cancel")
        before = _record_jobs()
        assert record_missed_captures() == 0
        assert record_missed_captures() == 0
    assert _record_jobs() == before
    recorded.refresh_from_db()
    assert recorded.status == Payment.Status.CAPTURE_MISSED
    # A wider look by hand, after the sweep was stopped longer, finds the old one; a
    # second sweep, nothing more.
    with freeze_time(SWEPT):
        assert record_missed_captures(lookback=timedelta(days=30)) == 1
        assert record_missed_captures(lookback=timedelta(days=30)) == 0
    assert [job.kwargs for job in _record_jobs()[len(before) :]] == [
        {"capture_job_id": old.capture_job_id}
    ]


@freeze_time(T0)
def test_the_sweep_schedules_a_bounded_batch_at_a_time():
    payments = [authorize_payment(amount="5.00", currency="EUR") for _ in range(3)]
    for payment in payments:
        cancel(payment.capture_job_id, reason="bulk cancel")
    with freeze_time(SWEPT):
        assert record_missed_captures(limit=2) == 2
        assert record_missed_captures(limit=2) == 1
        assert record_missed_captures(limit=2) == 0


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_schedule_each_payment_once():
    # Two workers each took a sweep (beat sent one while the other still ran).
    with freeze_time(T0):
        _fail(authorize_payment(amount="5.00", currency="EUR"))
    outcome: list[int] = []
    with freeze_time(SWEPT), transaction.atomic():
        assert record_missed_captures() == 1

        def sweep() -> None:
            try:
                outcome.append(record_missed_captures())
            finally:
                connection.close()

        other = threading.Thread(target=sweep)
        other.start()
        other.join(1)  # it waits for this sweep's key
        assert outcome == []
    other.join(10)
    assert outcome == [0]
    assert len(_record_jobs()) == 1


def test_the_sweep_reads_the_jobs_that_ended_badly_in_its_look_back_and_no_more():
    # Millions of jobs and payments: the sweep must read the index of the jobs that
    # ended badly, from its look-back on, and a payment and a key for each, never a
    # table. 100,000 capture jobs: half pending (their payments authorized, their keys
    # held), one in twenty cancelled over 70 days (recorded missed), the rest succeeded.
    insert_many(
        100_000,
        now=T0,
        run_at="%(now)s + interval '1 minute' * CASE WHEN i <= 50000 THEN i ELSE -i END",
        status="CASE WHEN i %% 20 = 0 THEN 'cancelled' WHEN i <= 50000 THEN 'scheduled' "
        "ELSE 'succeeded' END",
        finished_at="CASE WHEN i %% 20 = 0 OR i > 50000 THEN %(now)s - interval '1 minute' * i END",
        unique_key="'payments:capture:' || i",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE scheduler_scheduledjob SET task_name = 'payments.capture_payment';
            INSERT INTO payments_payment (amount, currency, status, authorization_id,
                capture_id, capture_job_id, authorized_at, authorization_expires_at,
                captured_at)
            SELECT 5, 'EUR', CASE status WHEN 'scheduled' THEN 'authorized'
                    WHEN 'succeeded' THEN 'captured' ELSE 'capture_missed' END,
                   'auth_' || id, CASE WHEN status = 'succeeded' THEN 'cap_' || id ELSE '' END,
                   id, %(now)s - interval '80 days', %(now)s + interval '30 days',
                   CASE WHEN status = 'succeeded' THEN finished_at END
            FROM scheduler_scheduledjob;
            ANALYZE scheduler_scheduledjob;
            ANALYZE payments_payment;
            """,
            {"now": T0},
        )
    with freeze_time(T0), CaptureQueriesContext(connection) as queries:
        assert record_missed_captures() == 0
    [sweep] = queries.captured_queries
    plan = query_plan(sweep["sql"])
    assert "scheduler_job_ended_badly_idx" in plan, plan
    assert "Seq Scan" not in plan, plan
    # The key of a missed-capture job pending, looked up, not the held keys read.
    assert re.search(r"scheduler_job_unique_active_key.*\n\s+Index Cond: \(unique_key =", plan), (
        plan
    )


def test_migrate_writes_the_beat_entry_that_runs_the_sweep_every_five_minutes():
    entry = PeriodicTask.objects.get(name=SWEEP_PERIODIC_TASK_NAME)
    assert entry.task == SWEEP_TASK_NAME
    assert SWEEP_TASK_NAME in current_app.tasks
    assert entry.enabled
    assert (entry.interval.every, entry.interval.period) == (300, "seconds")
    # A sweep not started within its interval is dropped: the next one does its work.
    assert entry.expire_seconds == 300


def test_the_beat_entry_is_written_once_and_kept_as_an_operator_left_it():
    PeriodicTask.objects.filter(name=SWEEP_PERIODIC_TASK_NAME).update(enabled=False)
    ensure_missed_capture_sweep()
    after_migrate(app_config=apps.get_app_config("payments"), using=DEFAULT_DB_ALIAS)
    [entry] = PeriodicTask.objects.filter(task=SWEEP_TASK_NAME)
    assert not entry.enabled
    PeriodicTask.objects.filter(name=SWEEP_PERIODIC_TASK_NAME).delete()
    after_migrate(app_config=apps.get_app_config("payments"), using="analytics")
    assert not PeriodicTask.objects.filter(task=SWEEP_TASK_NAME).exists()
    after_migrate(app_config=apps.get_app_config("payments"), using=DEFAULT_DB_ALIAS)
    assert PeriodicTask.objects.get(task=SWEEP_TASK_NAME).enabled


def test_migrating_back_writes_no_beat_entry():
    # Rolling back to 0.1.0 (migrate payments 0001): the entry came back, and 0.1.0's
    # beat sent its workers a task they do not have every 5 minutes.
    PeriodicTask.objects.filter(name=SWEEP_PERIODIC_TASK_NAME).delete()
    backwards = [(MigrationLoader(None).get_migration("payments", "0001_initial"), True)]
    after_migrate(
        app_config=apps.get_app_config("payments"), using=DEFAULT_DB_ALIAS, plan=backwards
    )
    assert not PeriodicTask.objects.filter(task=SWEEP_TASK_NAME).exists()


@freeze_time(T0)
def test_the_sweep_task_beat_sends_runs_the_sweep():
    payment = authorize_payment(amount="5.00", currency="EUR")
    cancel(payment.capture_job_id, reason="bulk cancel")
    with freeze_time(SWEPT):
        assert current_app.tasks[SWEEP_TASK_NAME].apply().get() == 1
    assert [job.kwargs for job in _record_jobs()] == [{"capture_job_id": payment.capture_job_id}]


@pytest.mark.django_db(transaction=True)
def test_the_receivers_job_is_written_without_waiting_for_the_disk_on_its_own_only():
    # Run per job in a bulk cancel's request, each receiver waited for its commit to
    # reach the disk: most of its time. A job lost in a crash is the sweep's to find.
    payment = authorize_payment(amount="5.00", currency="EUR")
    with CaptureQueriesContext(connection) as queries:
        cancel(payment.capture_job_id, reason="bulk cancel")
    assert any("synchronous_commit" in query["sql"] for query in queries.captured_queries)
    assert len(_record_jobs()) == 1
    other = authorize_payment(amount="5.00", currency="EUR")
    with transaction.atomic():
        cancel(other.capture_job_id, reason="bulk cancel")
        with CaptureQueriesContext(connection) as queries:
            check_missed_capture(capture_job_id=other.capture_job_id)
        # A caller's transaction keeps the durability it asked for.
        assert not any("synchronous_commit" in query["sql"] for query in queries.captured_queries)
