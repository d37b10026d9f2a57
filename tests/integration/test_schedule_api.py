"""The public API: schedule_at, schedule_in, cancel, reschedule (and retry, run_now)."""

import math
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import timezone as timezone_of
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.utils import timezone
from freezegun import freeze_time

from scheduler import JobSpec, cancel, reschedule, schedule_at, schedule_in, schedule_many
from scheduler.exceptions import (
    DuplicateJobError,
    InvalidArgumentsError,
    InvalidTransitionError,
    JobNotFoundError,
    UnknownTaskError,
)
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.registry import schedulable_task_names
from scheduler.services import pause, retry, run_now
from tests.testapp.tasks import noop

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


def test_schedule_at_stores_the_job_with_defaults(settings):
    settings.SCHEDULER_QUEUE_NAME = "jobs-default"
    job = schedule_at(noop, T0 + timedelta(days=14), [1, "two"], {"three": [3.0, None]})
    job = ScheduledJob.objects.get(pk=job.pk)
    assert job.task_name == "testapp.noop"
    assert job.args == [1, "two"]
    assert job.kwargs == {"three": [3.0, None]}
    assert job.run_at == T0 + timedelta(days=14)
    assert job.status == Status.SCHEDULED
    assert (job.attempts, job.max_attempts) == (0, 5)
    assert job.queue == "jobs-default"
    assert job.unique_key is None
    assert job.dispatch_token is None


def test_schedule_at_accepts_a_task_name_options_and_other_time_zones():
    tokyo = datetime(2026, 12, 8, 21, 0, tzinfo=timezone.get_fixed_timezone(9 * 60))
    job = schedule_at(
        "testapp.noop", tokyo, (1, 2), queue="payments", max_attempts=1, unique_key="k1"
    )
    job.refresh_from_db()
    assert job.run_at == datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    assert job.args == [1, 2]
    assert (job.queue, job.max_attempts, job.unique_key) == ("payments", 1, "k1")


def test_an_offset_with_a_fraction_of_a_second_keeps_the_instant():
    # Python's time zones may have one; PostgreSQL reads offsets to the second only.
    odd = timezone_of(timedelta(seconds=1, microseconds=500))
    instant = datetime(2030, 1, 1, 12, 0, tzinfo=odd)
    jobs = [
        schedule_at(noop, instant),
        *schedule_many([JobSpec(noop, instant, deadline=instant + timedelta(hours=1))]),
        reschedule(schedule_at(noop, T0), instant),
    ]
    stored = ScheduledJob.objects.filter(pk__in=[job.pk for job in jobs]).order_by("pk")
    assert [job.run_at for job in stored] == [instant] * 3
    assert [job.deadline for job in stored] == [None, instant + timedelta(hours=1), None]


@freeze_time(T0)
def test_schedule_in_takes_a_timedelta_or_seconds():
    assert schedule_in(noop, timedelta(days=14)).run_at == T0 + timedelta(days=14)
    assert schedule_in(noop, 90).run_at == T0 + timedelta(seconds=90)
    assert schedule_in(noop, 1.5).run_at == T0 + timedelta(seconds=1.5)
    # In the past means "as soon as possible".
    assert schedule_in(noop, -60).run_at == T0 - timedelta(seconds=60)


BAD_INPUTS = [
    # Arguments the task cannot take: as Celery's apply_async refuses them, or the job
    # fails only at its time, weeks later, on every attempt.
    pytest.param(
        lambda: schedule_at("testapp.record", T0, ["/tmp/runs"]),
        InvalidArgumentsError,
        "do not fit testapp.record: .*missing 1 required positional argument: 'label'",
        id="missing-argument",
    ),
    pytest.param(
        lambda: schedule_at("testapp.record", T0, [], {"path": "/tmp/runs", "labl": "x"}),
        InvalidArgumentsError,
        "kwargs do not fit testapp.record: .*unexpected keyword argument 'labl'",
        id="unexpected-keyword",
    ),
    pytest.param(
        lambda: schedule_many(
            [
                JobSpec("testapp.record", T0, ["/tmp/runs", "fine"]),
                JobSpec("testapp.record", T0, ["/tmp/runs", "fine", "extra"]),
            ]
        ),
        InvalidArgumentsError,
        r"jobs\[1\]: args do not fit testapp.record: .*takes 2 positional arguments but 3",
        id="schedule-many-item",
    ),
    pytest.param(
        lambda: schedule_at(noop, datetime(2026, 12, 1, 12, 0)),
        ValueError,
        "timezone-aware",
        id="naive-datetime",
    ),
    pytest.param(lambda: schedule_at(noop, date(2026, 12, 1)), TypeError, "datetime", id="date"),
    pytest.param(
        # Its arguments and options would be dropped: the job would run without them.
        lambda: schedule_at(noop.s(1, 2).set(queue="payments"), T0),
        TypeError,
        "a signature of 'testapp.noop': pass the task, and its arguments",
        id="signature",
    ),
    pytest.param(
        lambda: schedule_at("testapp.nope", T0), UnknownTaskError, "testapp.nope", id="unknown"
    ),
    pytest.param(
        lambda: schedule_at("scheduler.dispatch", T0),
        UnknownTaskError,
        "scheduler.dispatch",
        id="internal-task",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [datetime(2026, 1, 1, tzinfo=UTC)]),
        InvalidArgumentsError,
        "JSON",
        id="datetime-arg",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [Decimal("1.10")]),
        InvalidArgumentsError,
        "JSON",
        id="decimal-arg",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [{1, 2}]), InvalidArgumentsError, "JSON", id="set-arg"
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [math.nan]), InvalidArgumentsError, "JSON", id="nan-arg"
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [(1, 2)]),
        InvalidArgumentsError,
        "round trip",
        id="nested-tuple",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [], {"n": {1: "one"}}),
        InvalidArgumentsError,
        "round trip",
        id="int-key",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [], {3: "x"}),
        InvalidArgumentsError,
        "keys must be strings",
        id="kwargs-key",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, "abc"), InvalidArgumentsError, "list or tuple", id="str-args"
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, [], ["x"]),
        InvalidArgumentsError,
        "mapping",
        id="list-kwargs",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, max_attempts=0),
        InvalidArgumentsError,
        "max_attempts",
        id="zero-attempts",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, max_attempts=-3),
        InvalidArgumentsError,
        "max_attempts",
        id="negative-attempts",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, max_attempts=True),
        InvalidArgumentsError,
        "max_attempts",
        id="bool-attempts",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, queue="bad queue!"),
        InvalidArgumentsError,
        "queue",
        id="queue-name",
    ),
    pytest.param(
        lambda: schedule_at(noop, T0, unique_key="  "),
        InvalidArgumentsError,
        "unique_key",
        id="blank-key",
    ),
    pytest.param(lambda: schedule_in(noop, "10"), TypeError, "timedelta", id="string-delay"),
    pytest.param(
        lambda: schedule_in(noop, math.inf), InvalidArgumentsError, "finite", id="inf-delay"
    ),
    # An integer too large for a float: OverflowError from the finiteness check.
    pytest.param(
        lambda: schedule_in(noop, 10**400), InvalidArgumentsError, "out of range", id="huge-delay"
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_INPUTS)
def test_bad_input_raises_and_writes_nothing(call, error, message):
    existing = schedule_at(noop, T0, unique_key="taken")
    before = list(ScheduledJob.objects.values())
    with pytest.raises(error, match=message):
        call()
    assert list(ScheduledJob.objects.values()) == before
    assert existing.pk == before[0]["id"]


def test_a_task_whose_name_a_job_cannot_hold_is_refused_and_nothing_is_written(long_named_task):
    with pytest.raises(InvalidArgumentsError, match="at most 255 characters") as raised:
        schedule_at(long_named_task, T0)
    assert raised.value.field == "task"
    with pytest.raises(InvalidArgumentsError, match=r"^jobs\[1\]: task") as raised:
        schedule_many([JobSpec(noop, T0), JobSpec(long_named_task.name, T0)])
    assert raised.value.index == 1
    assert not ScheduledJob.objects.exists()


IMPORTED = "tests.imported_jobs"


@pytest.fixture
def celery_imports(monkeypatch):
    """Sets one of Celery's settings that name task modules to the test's module, which
    no process imported yet; forgotten after the test."""
    from celery import current_app

    from scheduler import registry

    def setting(name: str) -> None:
        assert IMPORTED not in sys.modules
        monkeypatch.setitem(current_app.conf, name, [IMPORTED])
        registry._import_task_modules.cache_clear()

    yield setting
    registry._import_task_modules.cache_clear()
    sys.modules.pop(IMPORTED, None)
    current_app.tasks.pop("imported.tally", None)


@pytest.mark.parametrize("setting", ["imports", "include"])
def test_a_task_of_a_module_celery_is_told_to_import_can_be_scheduled_and_paused(
    celery_imports, setting
):
    # Only installed apps' tasks.py were imported outside a worker: a task the workers
    # ran was unknown to schedule_at, pause and the admin's list of tasks.
    celery_imports(setting)
    assert "imported.tally" in schedulable_task_names()
    assert schedule_at("imported.tally", T0, [3]).task_name == "imported.tally"
    assert pause("imported.tally").task_name == "imported.tally"


def test_unique_key_held_by_an_active_job_raises_and_writes_nothing():
    first = schedule_at(noop, T0, unique_key="payment:1")
    with transaction.atomic():
        with pytest.raises(DuplicateJobError, match="payment:1"):
            schedule_at(noop, T0 + timedelta(hours=1), unique_key="payment:1")
        # The caller's transaction is still usable: the failed insert had its savepoint.
        assert ScheduledJob.objects.count() == 1
    assert list(ScheduledJob.objects.values_list("pk", flat=True)) == [first.pk]
    # Once the holder is no longer active, the key is free again.
    assert cancel(first)
    second = schedule_at(noop, T0, unique_key="payment:1")
    assert second.pk != first.pk


def test_a_rolled_back_transaction_leaves_no_job():
    with pytest.raises(RuntimeError), transaction.atomic():
        schedule_at(noop, T0)
        raise RuntimeError("the business transaction failed")
    assert not ScheduledJob.objects.exists()


def _job(status, **fields):
    defaults = {
        "task_name": "testapp.noop",
        "queue": "q",
        "run_at": T0,
        "max_attempts": 3,
        "status": status,
    }
    if status in (Status.ENQUEUED, Status.RUNNING):
        fields.setdefault("dispatch_token", "6f1e1b4e-1d1c-4c56-8f8f-111111111111")
    if status == Status.ENQUEUED:
        fields.setdefault("resend_at", T0 + timedelta(minutes=5))
    if status == Status.RUNNING:
        fields.setdefault("started_at", T0)
        fields.setdefault("attempts", 1)
    if status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED):
        fields.setdefault("finished_at", T0)
    return ScheduledJob.objects.create(**{**defaults, **fields})


@freeze_time(T0)
@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.ENQUEUED])
def test_cancel_a_scheduled_or_enqueued_job(status):
    job = _job(status)
    assert cancel(job.pk) is True
    job.refresh_from_db()
    assert (job.status, job.finished_at, job.dispatch_token) == (Status.CANCELLED, T0, None)
    assert cancel(job) is False  # already cancelled


@pytest.mark.parametrize("status", [Status.RUNNING, Status.SUCCEEDED, Status.FAILED])
def test_cancel_is_refused_once_running_or_finished(status):
    job = _job(status)
    with pytest.raises(InvalidTransitionError, match=f"it is {status}"):
        cancel(job)
    job.refresh_from_db()
    assert job.status == status


def test_unknown_ids_raise():
    with pytest.raises(JobNotFoundError):
        cancel(123456)
    with pytest.raises(JobNotFoundError):
        reschedule(123456, T0)
    with pytest.raises(TypeError):
        cancel("12")
    for operation in (cancel, retry, run_now, lambda job: reschedule(job, T0)):
        with pytest.raises(ValueError, match="has not been saved"):
            operation(ScheduledJob(task_name="testapp.noop", run_at=T0))


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.ENQUEUED])
def test_reschedule_moves_the_job_and_forgets_its_message(status):
    job = _job(status)
    new_time = T0 + timedelta(days=3)
    job = reschedule(job, new_time)
    assert (job.status, job.run_at, job.dispatch_token) == (Status.SCHEDULED, new_time, None)


def test_reschedule_rejects_naive_times_and_finished_jobs():
    job = _job(Status.SCHEDULED)
    with pytest.raises(ValueError, match="timezone-aware"):
        reschedule(job, datetime(2027, 1, 1))
    done = _job(Status.SUCCEEDED)
    with pytest.raises(InvalidTransitionError, match="cannot reschedule"):
        reschedule(done, T0 + timedelta(days=1))
    job.refresh_from_db()
    done.refresh_from_db()
    assert (job.run_at, done.run_at, done.status) == (T0, T0, Status.SUCCEEDED)


@freeze_time(T0)
@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED])
def test_retry_gives_a_finished_job_a_fresh_set_of_attempts(status):
    job = _job(status, attempts=3, finished_at=T0 - timedelta(hours=1), last_error="boom")
    job = retry(job)
    assert (job.status, job.run_at, job.attempts, job.finished_at) == (
        Status.SCHEDULED,
        T0,
        0,
        None,
    )
    with pytest.raises(InvalidTransitionError):
        retry(job)


@freeze_time(T0)
@pytest.mark.parametrize("status", [Status.RUNNING, Status.SUCCEEDED])
@pytest.mark.parametrize(
    "operation",
    [run_now, retry, lambda job: reschedule(job, T0 + timedelta(days=1))],
    ids=["run_now", "retry", "reschedule"],
)
def test_a_job_no_operation_can_take_is_refused_as_such_whatever_its_deadline(status, operation):
    # Past its deadline, it was asked for a new deadline (InvalidArgumentsError), then
    # refused with one: a caller catching InvalidTransitionError for "it already ran"
    # got a ValueError instead.
    job = _job(status, attempts=1, deadline=T0 - timedelta(minutes=1), finished_at=T0)
    with pytest.raises(InvalidTransitionError, match=f"it is {status}"):
        operation(job)


def test_retry_refuses_when_the_unique_key_was_taken_meanwhile():
    old = _job(Status.FAILED, unique_key="k", finished_at=T0)
    schedule_at(noop, T0, unique_key="k")
    with pytest.raises(DuplicateJobError):
        retry(old)
    old.refresh_from_db()
    assert old.status == Status.FAILED


@freeze_time(T0)
def test_run_now_reschedules_or_retries():
    waiting = _job(Status.SCHEDULED, run_at=T0 + timedelta(days=9))
    failed = _job(Status.FAILED, attempts=3, finished_at=T0)
    assert run_now(waiting).run_at == T0
    assert run_now(failed).status == Status.SCHEDULED
    with pytest.raises(InvalidTransitionError):
        run_now(_job(Status.RUNNING))
    # It said "cannot reschedule …; only a job that is scheduled or enqueued can be".
    expected = "cannot run now job .*: it is succeeded; only a job that is scheduled or "
    expected += "enqueued or failed or cancelled or expired can be"
    with pytest.raises(InvalidTransitionError, match=expected):
        run_now(_job(Status.SUCCEEDED, finished_at=T0))
    assert not JobAttempt.objects.exists()


def test_the_database_enforces_the_invariants():
    from django.db import IntegrityError

    for fields in (
        {"status": "bogus"},
        {"max_attempts": 0},
        {"attempts": 4, "max_attempts": 3},
        {"status": Status.ENQUEUED, "dispatch_token": None, "resend_at": T0},
        # An enqueued job whose message is lost must be sent again some day.
        {"status": Status.ENQUEUED, "dispatch_token": uuid.uuid4(), "resend_at": None},
        {"task_name": ""},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            ScheduledJob.objects.create(
                **{"task_name": "t", "queue": "q", "run_at": T0, "max_attempts": 3, **fields}
            )


NEW_YORK = ZoneInfo("America/New_York")
#: 2030-11-03 01:30 happens twice in New York: at 05:30 UTC (EDT), then at 06:30 (EST).
SECOND_ONE_THIRTY = datetime(2030, 11, 3, 6, 30, tzinfo=UTC).astimezone(NEW_YORK)


@pytest.mark.parametrize(
    ("run_at", "deadline"),
    [
        # 02:30 does not exist (the clocks skip to 03:00): read as 07:30 UTC, after 03:15
        # EDT, 07:15 UTC.
        (
            datetime(2030, 3, 10, 2, 30, tzinfo=NEW_YORK),
            datetime(2030, 3, 10, 3, 15, tzinfo=NEW_YORK),
        ),
        # Fifteen minutes "later" on the wall is the first 01:45, 45 minutes earlier.
        (SECOND_ONE_THIRTY, SECOND_ONE_THIRTY + timedelta(minutes=15)),
    ],
    ids=["spring_gap", "autumn_fold"],
)
@freeze_time(datetime(2030, 1, 1, tzinfo=UTC))
def test_a_deadline_before_run_at_across_a_clock_change_is_refused(run_at, deadline):
    # Compared as wall-clock times (Python's rule for one time zone), it was after run_at:
    # the job was accepted, and could only expire.
    assert deadline.astimezone(UTC) < run_at.astimezone(UTC)
    with pytest.raises(InvalidArgumentsError, match="deadline"):
        schedule_at(noop, run_at, deadline=deadline)
    with pytest.raises(InvalidArgumentsError, match="expires"):
        noop.apply_async(eta=run_at, expires=deadline)
    assert not ScheduledJob.objects.exists()
