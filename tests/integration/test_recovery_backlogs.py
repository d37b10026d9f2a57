"""Recovery on the worst day: more lost, missed or finished jobs than one batch holds."""

import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections, transaction
from django.db.models import ProtectedError
from django.db.models.query import QuerySet
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from scheduler.conf import scheduler_settings
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.exceptions import JobNotFoundError, SchedulerError
from scheduler.models import ScheduledJob
from scheduler.services import dispatching, retry
from scheduler.testing import InMemoryPublisher
from tests.conftest import held_elsewhere, query_plan
from tests.factories import insert_many, make_jobs

pytestmark = pytest.mark.usefixtures("emptied_afterwards")

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


def _dispatcher() -> Dispatcher:
    return Dispatcher(publisher=InMemoryPublisher(), judge_leases_at_once=True)


@pytest.mark.django_db
def test_one_recovery_retries_every_job_whose_worker_died_not_one_batch(settings):
    # A deploy killed workers running 250 jobs: all are retried a lease after their last
    # heartbeat, not a batch per recovery interval (the last ones a minute later).
    settings.SCHEDULER_BATCH_SIZE = 100
    beat = T0 - timedelta(seconds=scheduler_settings.LEASE_SECONDS + 1)
    lost = make_jobs(
        [T0 - timedelta(minutes=5)] * 250,
        status=Status.RUNNING,
        dispatch_token=uuid.uuid4(),
        attempts=1,
        started_at=beat,
        heartbeat_at=beat,
    )
    with freeze_time(T0):
        assert _dispatcher().run_once().leases_expired == 250
    assert not ScheduledJob.objects.filter(status=Status.RUNNING).exists()
    assert ScheduledJob.objects.filter(pk__in=[job.pk for job in lost]).count() == 250


@pytest.mark.django_db
def test_one_recovery_expires_every_job_past_its_deadline_not_one_batch(settings):
    settings.SCHEDULER_BATCH_SIZE = 100
    make_jobs([T0 - timedelta(hours=1)] * 250, deadline=T0 - timedelta(minutes=1))
    with freeze_time(T0):
        assert _dispatcher().run_once().expired == 250
    assert set(ScheduledJob.objects.values_list("status", flat=True)) == {Status.EXPIRED}


@pytest.mark.django_db
def test_a_backlog_of_finished_jobs_is_purged_at_every_recovery_until_it_is_gone(settings):
    # More jobs finish every hour than one purge deletes: the history must not grow
    # without bound. A recovery purges batch after batch (one batch a recovery kept up
    # with 200 jobs an interval of 5 s); out of time with batches still full, the next
    # recovery goes on.
    settings.SCHEDULER_RETENTION_DAYS = 30
    finished = T0 - timedelta(days=31)
    make_jobs([T0 - timedelta(days=40)] * 2500, status=Status.SUCCEEDED, finished_at=finished)
    kept = make_jobs([T0 - timedelta(days=1)], status=Status.SUCCEEDED, finished_at=T0)
    dispatcher = _dispatcher()
    purged = []
    with freeze_time(T0) as clock:
        for _ in range(5):
            purged.append(dispatcher.run_once().purged)
            clock.tick(scheduler_settings.RECOVERY_INTERVAL_SECONDS)
    assert purged == [2500, 0, 0, 0, 0]
    assert list(ScheduledJob.objects.values_list("pk", flat=True)) == [kept[0].pk]


@pytest.mark.django_db
def test_a_purge_out_of_time_with_full_batches_goes_on_at_the_next_recovery(settings, monkeypatch):
    settings.SCHEDULER_RETENTION_DAYS = 30
    make_jobs(
        [T0 - timedelta(days=40)] * 2500,
        status=Status.SUCCEEDED,
        finished_at=T0 - timedelta(days=31),
    )
    purge = dispatching.purge_finished
    ticking: list[Callable[[], None]] = []

    def slow(*, now: datetime) -> int:
        ticking[0]()  # each batch takes the whole dispatch interval
        return purge(now=now)

    monkeypatch.setattr(dispatching, "purge_finished", slow)
    dispatcher = _dispatcher()
    purged = []
    with freeze_time(T0) as clock:
        ticking.append(lambda: clock.tick(scheduler_settings.DISPATCH_INTERVAL_SECONDS))
        for _ in range(4):
            purged.append(dispatcher.run_once().purged)
            clock.tick(scheduler_settings.RECOVERY_INTERVAL_SECONDS)
    assert purged == [1000, 1000, 500, 0]


@pytest.mark.django_db(transaction=True)
def test_a_lock_on_a_table_referencing_jobs_holds_the_purge_not_the_tick(settings):
    # A migration of the payments table, or a long transaction holding a payment whose
    # capture job is past the retention: the purge waited for it, inside the tick, and
    # nothing was sent for as long.
    from payments.models import Payment

    settings.SCHEDULER_RETENTION_DAYS = 30
    [old] = make_jobs(
        [T0 - timedelta(days=40)], status=Status.SUCCEEDED, finished_at=T0 - timedelta(days=31)
    )
    Payment.objects.create(
        amount=1,
        currency="EUR",
        authorization_id="auth_locked",
        authorized_at=T0 - timedelta(days=41),
        authorization_expires_at=T0 - timedelta(days=11),
        capture_job=old,
    )
    due = make_jobs([T0 - timedelta(seconds=1)])
    with held_elsewhere(lambda: list(Payment.objects.select_for_update())):
        ticking = threading.Thread(target=lambda: ticks.append(_tick()))
        ticks: list[object] = []

        def _tick() -> object:
            try:
                with freeze_time(T0, tick=True):
                    return _dispatcher().run_once()
            finally:
                connections.close_all()

        ticking.start()
        ticking.join(10)
        assert not ticking.is_alive(), "the tick waited for the payment's lock"
    [result] = ticks
    assert (result.sent, result.purged) == (1, 0)
    [error] = result.errors
    assert "lock timeout" in error
    assert ScheduledJob.objects.filter(pk=old.pk).exists()
    assert ScheduledJob.objects.get(pk=due[0].pk).status == Status.ENQUEUED


@pytest.mark.django_db
def test_the_purge_reads_no_jobs_arguments_or_results(settings):
    # Django read every column of the batch to delete it (its attempts cascade): a
    # thousand jobs with a megabyte's result each took 6 s and 2 GB of the dispatcher,
    # which purges first when it starts, and a killed one did so again and again.
    settings.SCHEDULER_RETENTION_DAYS = 30
    make_jobs(
        [T0 - timedelta(days=40)] * 3,
        status=Status.SUCCEEDED,
        finished_at=T0 - timedelta(days=31),
        args=["big argument"],
        result={"report": "big result"},
    )
    with CaptureQueriesContext(connection) as captured:
        assert dispatching.purge_finished(now=T0) == 3
    read = [query["sql"] for query in captured.captured_queries if "SELECT" in query["sql"]]
    assert read
    assert not [sql for sql in read if '"result"' in sql or '"args"' in sql], read
    assert not ScheduledJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_retried_while_the_purge_runs_is_never_deleted_silently(settings, monkeypatch):
    # The purge chose the failed job; an operator retries it before the purge deletes it.
    # The purge holds the row: the retry waits for it, then fails loudly. It never
    # answers "retried" for a job the purge then deletes.
    settings.SCHEDULER_RETENTION_DAYS = 30
    job = make_jobs(
        [T0 - timedelta(days=40)], status=Status.FAILED, finished_at=T0 - timedelta(days=31)
    )[0]
    outcome: list[object] = []
    operators: list[threading.Thread] = []
    delete = QuerySet.delete

    def operator_retries() -> None:
        try:
            outcome.append(retry(job.pk, reason="customer called", actor="ops"))
        except SchedulerError as error:
            outcome.append(error)
        finally:
            connections.close_all()

    def delete_after_a_retry(queryset: QuerySet, *args: object, **kwargs: object) -> object:
        if queryset.model is ScheduledJob and not operators:
            operators.append(threading.Thread(target=operator_retries))
            operators[0].start()
            operators[0].join(1)  # it cannot end while the purge holds the row
        return delete(queryset, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "delete", delete_after_a_retry)
    assert dispatching.purge_finished(now=T0) == 1
    operators[0].join(10)
    assert [type(error) for error in outcome] == [JobNotFoundError]
    assert not ScheduledJob.objects.filter(pk=job.pk).exists()


def _plan_of_the_lock(recover: Callable[[], int], *, batch: int) -> str:
    """The plan of the query with which ``recover`` locks its ``batch`` jobs, on the rows
    just inserted (analyzed first, as autovacuum would)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_scheduledjob")
    with CaptureQueriesContext(connection) as captured:
        assert recover() == batch
    [choice] = [q["sql"] for q in captured.captured_queries if "FOR UPDATE" in q["sql"]]
    return query_plan(choice)


@pytest.mark.django_db
def test_the_purge_reads_the_finished_index_not_every_pending_row(settings):
    # 50,000 jobs pending, 30,000 finished yesterday, 20,000 to purge, the oldest by
    # run_at too: walked from the newest run_at (the job list's order), as PostgreSQL
    # chose to, the purge stepped over every pending and recent job to reach them.
    settings.SCHEDULER_RETENTION_DAYS = 30
    insert_many(
        100_000,
        now=T0,
        run_at="%(now)s + CASE WHEN i <= 50000 THEN interval '1 day' * (i %% 30) "
        "WHEN i <= 80000 THEN -interval '1 day' ELSE -interval '60 days' END",
        status="CASE WHEN i <= 50000 THEN 'scheduled' ELSE 'succeeded' END",
        finished_at="CASE WHEN i <= 50000 THEN NULL WHEN i <= 80000 THEN "
        "%(now)s - interval '1 day' ELSE %(now)s - interval '40 days' END",
    )
    plan = _plan_of_the_lock(
        lambda: dispatching.purge_finished(now=T0), batch=dispatching.PURGE_BATCH_SIZE
    )
    assert "scheduler_job_succeeded_idx" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.django_db
def test_each_batch_of_the_purge_reads_one_batch_of_each_finished_index(settings):
    # Succeeded jobs have an index on finished_at of their own (they are counted from
    # it), the jobs that ended badly another. Oldest first over all four statuses, which
    # neither index holds in that order, each batch read and sorted every job past the
    # retention: the whole backlog per batch (0.56 s at a million).
    settings.SCHEDULER_RETENTION_DAYS = 30
    insert_many(
        60_000,
        now=T0,
        run_at="%(now)s - interval '1 minute' * i",
        status="CASE WHEN i %% 200 = 0 THEN 'succeeded' "
        "ELSE (ARRAY['failed', 'cancelled', 'expired'])[i %% 3 + 1] END",
        finished_at="%(now)s - interval '31 days' - interval '1 minute' * i",
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_scheduledjob")
    with CaptureQueriesContext(connection) as captured:
        assert dispatching.purge_finished(now=T0) == dispatching.PURGE_BATCH_SIZE
    chosen = [q["sql"] for q in captured.captured_queries if "FOR UPDATE" in q["sql"]]
    # The 300 succeeded jobs, then the 700 that ended badly and finished first, whatever
    # their status: each part a batch of its own index, in its order, nothing sorted.
    assert len(chosen) == 2, chosen
    for sql, index in zip(
        chosen, ["scheduler_job_succeeded_idx", "scheduler_job_ended_badly_idx"], strict=True
    ):
        plan = query_plan(sql)
        nodes = re.findall(
            r"^\s*(?:->\s+)?([A-Z][A-Za-z ]+?)(?: using (\w+))?(?: on |  \(|$)", plan, re.M
        )
        assert nodes[:3] == [("Limit", ""), ("LockRows", ""), ("Index Scan", index)], plan
        assert "Sort" not in plan, plan
    assert not ScheduledJob.objects.filter(status=Status.SUCCEEDED).exists()
    badly = [i for i in range(60_000, 0, -1) if i % 200]
    deleted, kept = badly[:700], badly[700]
    assert {("failed", "cancelled", "expired")[i % 3] for i in deleted} == {
        "failed",
        "cancelled",
        "expired",
    }
    left = ScheduledJob.objects.order_by("finished_at").values_list("finished_at", flat=True)
    assert (left.count(), left[0]) == (59_000, T0 - timedelta(days=31, minutes=kept))


@pytest.mark.django_db
def test_each_batch_of_expiries_reads_one_batch_of_the_deadline_index(settings):
    # Workers down for half an hour leave thousands of jobs past their deadline, among
    # many more still to come. Locked in the job list's order (newest run_at first), each
    # batch read and sorted all of them: the whole backlog per batch, its square over
    # the recovery.
    settings.SCHEDULER_BATCH_SIZE = 100
    insert_many(
        100_000,
        now=T0,
        run_at="%(now)s + interval '1 second' * (i - 20000)",
        status="'scheduled'",
        deadline="CASE WHEN i <= 20000 THEN %(now)s - interval '1 second' * (i %% 1000) END",
    )
    plan = _plan_of_the_lock(lambda: dispatching.expire_missed(now=T0), batch=100)
    assert "scheduler_job_deadline_idx" in plan, plan
    assert "Sort" not in plan, plan


@pytest.mark.django_db
def test_a_recovery_that_fails_whatever_the_reason_holds_back_no_due_job(monkeypatch):
    def broken(**_: object) -> int:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(dispatching, "purge_finished", broken)
    make_jobs([T0 - timedelta(seconds=1)] * 3)
    with freeze_time(T0):
        result = _dispatcher().run_once()
    assert result.sent == 3
    assert result.errors == ["recovery: OverflowError: date value out of range"]
    assert not result.outage  # not PostgreSQL: the loop has no reason to back off


def _protected() -> None:
    raise ProtectedError("Cannot delete some instances of model 'ScheduledJob'", set())


def _timed_out() -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(1)")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fail", "said"),
    [
        (_protected, "ProtectedError: "),
        (_timed_out, "OperationalError: canceling statement due to statement timeout"),
    ],
    ids=["protected", "statement_timeout"],
)
def test_a_purge_that_keeps_failing_stops_no_lease_expiry_and_waits_an_hour(
    monkeypatch, fail, said
):
    # A model of the user's protects the jobs it references (on_delete=PROTECT): every
    # purge raises ProtectedError, a DatabaseError; or the purge outlasts the role's
    # statement_timeout, an OperationalError. Taken for PostgreSQL out of reach, it held
    # lease judging back at every recovery (so a dead worker's job stayed running for
    # ever) and slowed the ticks down, the purge being tried again every recovery.
    purges: list[datetime] = []

    def failing(*, now: datetime) -> int:
        purges.append(now)
        fail()
        return 0

    monkeypatch.setattr(dispatching, "purge_finished", failing)
    recovery = scheduler_settings.RECOVERY_INTERVAL_SECONDS
    # Its worker's last heartbeat: a lease ago at the second recovery, not at the first.
    beat = T0 - timedelta(seconds=scheduler_settings.LEASE_SECONDS - recovery / 2)
    make_jobs(
        [T0 - timedelta(minutes=5)],
        status=Status.RUNNING,
        dispatch_token=uuid.uuid4(),
        attempts=1,
        started_at=beat,
        heartbeat_at=beat,
    )
    dispatcher = _dispatcher()
    results = []
    with freeze_time(T0) as clock:
        for _ in range(3):
            results.append(dispatcher.run_once())
            clock.tick(recovery)
    assert [result.leases_expired for result in results] == [0, 1, 0]
    assert not any(result.outage for result in results)  # no reason to back off
    [error] = results[0].errors
    assert error.startswith(f"recovery: {said}")
    assert purges == [T0]  # tried again an hour later, not at every recovery


@pytest.mark.django_db
def test_a_purge_that_fails_after_a_full_batch_counts_that_batch(monkeypatch):
    # The tick's figure came from the batches' total, which the failure dropped:
    # "purged=0" for a thousand jobs deleted.
    calls: list[int] = []

    def full_then_timed_out(*, now: datetime) -> int:
        calls.append(1)
        if len(calls) == 1:
            return dispatching.PURGE_BATCH_SIZE
        _timed_out()
        return 0

    monkeypatch.setattr(dispatching, "purge_finished", full_then_timed_out)
    with freeze_time(T0):
        result = _dispatcher().run_once()
    assert result.purged == dispatching.PURGE_BATCH_SIZE
    [error] = result.errors
    assert "statement timeout" in error
