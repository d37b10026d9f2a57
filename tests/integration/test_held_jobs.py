"""A long pause costs the ticks nothing: its due jobs are held, out of the due index.

While a queue is paused (a payment gateway down), its due jobs stayed scheduled with the
oldest run_at, at the head of the due index, and every tick's probe and every claim
stepped over each of them: 1.4 s an empty tick with a million, 151 s to send a burst of
10,000 other jobs. Recovery now marks them held (out of the due index) and releases
them on resume.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from freezegun import freeze_time

from scheduler import schedule_at
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import Pause, ScheduledJob
from scheduler.services import cancel, dispatching, pause, pausing, reschedule, resume, retry
from scheduler.services import run_now as run_now_service
from scheduler.testing import InMemoryPublisher, run_due_jobs
from scheduler.worker.execution import Outcome
from tests.factories import deliver, dispatch_one
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.usefixtures("emptied_afterwards")

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status
PAUSED_QUEUE = "payments"


def _insert_due(count: int, *, queue: str, now: datetime) -> None:
    """``count`` scheduled jobs on ``queue``, due over the last hour, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error)
            SELECT 'testapp.noop', '[]', '{}', %(queue)s,
                   %(now)s - interval '1 hour' + interval '1 millisecond' * i,
                   'scheduled', 0, 3, 0, '', %(now)s, %(now)s, true
            FROM generate_series(1, %(count)s) AS i
            """,
            {"queue": queue, "now": now, "count": count},
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")


#: The plans _rows_read saw, for assertion messages.
PLANS: list[str] = []


def _insert_history(count: int, *, now: datetime) -> None:
    """``count`` jobs that succeeded over the last days: most of a real table's rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error, finished_at)
            SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs',
                   ended, 'succeeded', 1, 3, 1, '', %(now)s, %(now)s, true, ended
            FROM generate_series(1, %(count)s) AS i,
                 LATERAL (SELECT %(now)s - interval '3 days' + interval '1 second' * i) AS e(ended)
            """,
            {"now": now, "count": count},
        )


def _rows_read(sql: str, params: list[Any]) -> tuple[int, int]:
    """(rows the job table's scans returned, rows their filters removed) when ``sql``
    runs (EXPLAIN ANALYZE, rolled back)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        (plan,) = cursor.fetchone()
        transaction.set_rollback(True)
    PLANS.append(json.dumps(plan, indent=1))
    if isinstance(plan, str):
        plan = json.loads(plan)
    read = removed = 0
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        if node.get("Relation Name") == "scheduler_scheduledjob":
            read += node["Actual Rows"] * node.get("Actual Loops", 1)
            removed += node.get("Rows Removed by Filter", 0) * node.get("Actual Loops", 1)
    return read, removed


@pytest.mark.django_db(transaction=True)
def test_after_one_recovery_the_probe_and_the_claim_read_no_held_job(settings):
    settings.SCHEDULER_BATCH_SIZE = 1000
    with freeze_time(T0) as clock:
        _insert_history(100_000, now=T0)
        _insert_due(20_000, queue=PAUSED_QUEUE, now=T0)
        Pause.objects.create(queue=PAUSED_QUEUE, reason="gateway outage")
        publisher = InMemoryPublisher()
        dispatcher = Dispatcher(publisher=publisher, judge_leases_at_once=True)
        first = dispatcher.run_once()  # recovers first: holds them
        assert (first.sent, first.held) == (0, 20_000)
        other = schedule_at("testapp.noop", T0 - timedelta(seconds=1))
        probe = dispatching._due_query(now=T0, limit=1, lock=False, skip_queues=())
        claim = dispatching._due_query(now=T0, limit=1000, lock=True, skip_queues=())
        # Each reads the one due job it may send, and no held one.
        assert _rows_read(*probe) == (1, 0), PLANS[-1]
        assert _rows_read(*claim) == (1, 0), PLANS[-1]
        clock.tick(1)  # a tick without recovery
        result = dispatcher.run_once()
    assert result.sent == 1
    assert [message.job_id for message in publisher.published] == [other.pk]
    assert ScheduledJob.objects.filter(held=True, queue=PAUSED_QUEUE).count() == 20_000
    assert ScheduledJob.objects.filter(status=Status.SCHEDULED, held=False).count() == 0


@pytest.mark.django_db(transaction=True)
def test_recovery_releases_a_resumed_kind_without_reading_the_jobs_still_paused(settings):
    settings.SCHEDULER_BATCH_SIZE = 1000
    with freeze_time(T0):
        _insert_due(20_000, queue=PAUSED_QUEUE, now=T0)
        _insert_due(50, queue="mail", now=T0)
        pause(queue=PAUSED_QUEUE)
        pause(queue="mail")
        dispatcher = Dispatcher(publisher=InMemoryPublisher(), judge_leases_at_once=True)
        assert dispatcher.run_once().held == 20_050
        # As if resumed, but releasing nothing. The statistics are as of before the
        # jobs were held (no held job): by id, the release reads no other held job.
        Pause.objects.filter(queue="mail").delete()
        with CaptureSql() as captured:
            assert dispatching.release_unpaused(now=T0) == 50
    [release] = captured.statements
    read, removed = _rows_read(release, [1000, 1000])
    assert removed == 0
    assert read < 100, read  # a probe per kind held, and nothing of the one still paused
    assert ScheduledJob.objects.filter(held=True).count() == 20_000


class CaptureSql:
    """The SQL of the statements run on the default connection meanwhile."""

    def __enter__(self) -> "CaptureSql":
        self.statements: list[str] = []

        def record(execute, sql, params, many, context):
            self.statements.append(sql)
            return execute(sql, params, many, context)

        self._wrapper = connection.execute_wrapper(record)
        self._wrapper.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wrapper.__exit__(*exc)


@pytest.mark.django_db
@freeze_time(T0)
def test_on_resume_each_held_job_is_sent_and_runs_once(tmp_path, monkeypatch):
    monkeypatch.setattr(pausing, "RELEASED_ON_RESUME", 2)
    path = str(tmp_path / "runs")
    jobs = [
        schedule_at("testapp.record", T0 - timedelta(seconds=10 - i), [path, f"job{i}"])
        for i in range(5)
    ]
    pause(queue="scheduler-jobs", reason="gateway outage")
    assert run_due_jobs() == []
    assert ScheduledJob.objects.filter(held=True).count() == 5
    resume(queue="scheduler-jobs")
    # The resume released the oldest two itself; the next recovery releases the rest.
    assert list(
        ScheduledJob.objects.filter(held=True).order_by("pk").values_list("pk", flat=True)
    ) == [job.pk for job in jobs[2:]]
    ran = run_due_jobs()
    assert sorted(job.pk for job in ran) == sorted(job.pk for job in jobs)
    assert [label for label, _ in read_runs(path)] == [f"job{i}" for i in range(5)]
    assert not ScheduledJob.objects.filter(held=True).exists()
    assert set(ScheduledJob.objects.values_list("status", flat=True)) == {Status.SUCCEEDED}


def _held(task: str = "testapp.noop", **fields) -> ScheduledJob:
    """A due job of a paused queue, held by a recovery."""
    job = schedule_at(task, T0 - timedelta(seconds=1), queue=PAUSED_QUEUE, **fields)
    if not Pause.objects.filter(queue=PAUSED_QUEUE).exists():
        Pause.objects.create(queue=PAUSED_QUEUE)
    dispatching.hold_paused(now=T0)
    job.refresh_from_db()
    assert (job.status, job.held) == (Status.SCHEDULED, True)
    return job


def _is_held(job: ScheduledJob) -> bool:
    return ScheduledJob.objects.values_list("held", flat=True).get(pk=job.pk)


@pytest.mark.django_db
@freeze_time(T0)
def test_a_held_job_cancelled_rescheduled_or_run_now_is_held_no_more():
    cancelled, rescheduled, run_now = _held(), _held(), _held()
    cancel(cancelled)
    reschedule(rescheduled, T0 + timedelta(days=1))
    run_now_service(run_now)
    assert [_is_held(job) for job in (cancelled, rescheduled, run_now)] == [False] * 3
    # Still paused: the one due again is held again by the next recovery, not the others.
    assert dispatching.hold_paused(now=T0) == 1
    assert [_is_held(job) for job in (cancelled, rescheduled, run_now)] == [False, False, True]


@pytest.mark.django_db
@freeze_time(T0)
def test_a_job_left_held_by_older_code_is_cleared_by_its_retry():
    # 0.1.0's cancel, still running during an upgrade, does not know the column.
    job = _held()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE scheduler_scheduledjob SET status = 'cancelled', finished_at = %s "
            "WHERE id = %s",
            [T0, job.pk],
        )
    retry(job)
    assert not _is_held(job)


@pytest.mark.django_db
@freeze_time(T0)
def test_a_put_back_job_is_not_held_and_is_held_again_while_its_kind_is_paused(tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", T0, [path, "once"], queue=PAUSED_QUEUE)
    token = dispatch_one(job, now=T0)
    Pause.objects.create(queue=PAUSED_QUEUE)
    assert deliver(job_id=job.pk, task_name=job.task_name, token=token).outcome == Outcome.DROPPED
    job.refresh_from_db()
    assert (job.status, job.held) == (Status.SCHEDULED, False)
    assert dispatching.hold_paused(now=T0) == 1
    assert _is_held(job)
    # Resumed, released, sent and run once; paused again, a new job of it is held again.
    resume(queue=PAUSED_QUEUE)
    assert not _is_held(job)
    assert [ran.pk for ran in run_due_jobs()] == [job.pk]
    assert [label for label, _ in read_runs(path)] == ["once"]
    pause(queue=PAUSED_QUEUE)
    again = schedule_at("testapp.noop", T0, queue=PAUSED_QUEUE)
    assert run_due_jobs() == []
    assert _is_held(again)


@pytest.mark.django_db
@freeze_time(T0)
def test_a_job_not_due_yet_or_of_another_kind_is_never_held():
    Pause.objects.create(task_name="testapp.record", queue=PAUSED_QUEUE)
    later = schedule_at(
        "testapp.record", T0 + timedelta(hours=1), ["/dev/null", "x"], queue=PAUSED_QUEUE
    )
    other_task = schedule_at("testapp.noop", T0, queue=PAUSED_QUEUE)
    other_queue = schedule_at("testapp.record", T0, ["/dev/null", "x"])
    assert dispatching.hold_paused(now=T0) == 0
    assert not any(_is_held(job) for job in (later, other_task, other_queue))
    assert dispatching.release_unpaused(now=T0) == 0


@pytest.mark.django_db(transaction=True)
def test_a_batch_size_above_a_hold_statement_holds_and_releases_the_backlog_in_one_recovery(
    settings,
):
    # With batches of 10,000, each statement's 5,000 looked like a short batch: a
    # recovery held (and, after the resume, released) 5,000 jobs, one recovery apart.
    settings.SCHEDULER_BATCH_SIZE = 10_000
    backlog = dispatching.HOLD_BATCH_SIZE * 2 + 500
    with freeze_time(T0):
        _insert_due(backlog, queue=PAUSED_QUEUE, now=T0)
        pause(queue=PAUSED_QUEUE)
        dispatcher = Dispatcher(publisher=InMemoryPublisher(), judge_leases_at_once=True)
        assert dispatcher.run_once().held == backlog
        resume(queue=PAUSED_QUEUE)
        dispatcher._next_recovery = 0
        result = dispatcher.run_once()
    assert result.released == backlog - pausing.RELEASED_ON_RESUME
    assert result.sent == backlog
    assert not ScheduledJob.objects.filter(held=True).exists()


@pytest.mark.django_db
@freeze_time(T0)
def test_a_resume_releases_the_oldest_held_jobs_whatever_their_task(monkeypatch):
    # A queue's pause held two kinds; the release took the first kind by name whole, and
    # left the other's older jobs held for another recovery.
    monkeypatch.setattr(pausing, "RELEASED_ON_RESUME", 3)
    oldest = [
        schedule_at(
            "testapp.record",
            T0 - timedelta(hours=2, seconds=-i),
            ["/dev/null", "x"],
            queue=PAUSED_QUEUE,
        )
        for i in range(2)
    ]
    newer = [
        schedule_at("testapp.noop", T0 - timedelta(minutes=10 - i), queue=PAUSED_QUEUE)
        for i in range(3)
    ]
    pause(queue=PAUSED_QUEUE)
    assert dispatching.hold_paused(now=T0) == 5
    resume(queue=PAUSED_QUEUE)
    assert [_is_held(job) for job in [*oldest, *newer]] == [False, False, False, True, True]
