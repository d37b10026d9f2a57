"""Operator actions on many jobs at once: the single-job services' effect, set-based."""

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from freezegun import freeze_time

from scheduler import services, signals
from scheduler.exceptions import InvalidArgumentsError, InvalidTransitionError, KeyContentionError
from scheduler.models import AuditEntry, ScheduledJob
from scheduler.services import bulk
from scheduler.services.bulk import Skip
from tests.integration.admin_helpers import CHANGELIST, T0, Status, confirmation, job, messages_of

ALICE = {"actor": "alice", "reason": "gateway back"}
LATER = T0 + timedelta(hours=2)

# Each bulk action and the single-job service it does for every job.
SAME_AS = {
    "cancel": (bulk.cancel_many, {}, lambda j: services.cancel(j, **ALICE)),
    "run_now": (bulk.run_many_now, {}, lambda j: services.run_now(j, **ALICE)),
    "retry": (bulk.retry_many, {}, lambda j: services.retry(j, **ALICE)),
    "retry with a new deadline": (
        bulk.retry_many,
        {"deadline": LATER},
        lambda j: services.retry(j, deadline=LATER, **ALICE),
    ),
    "reschedule": (
        bulk.reschedule_many,
        {"to": LATER},
        lambda j: services.reschedule(j, LATER, **ALICE),
    ),
    "shift": (
        bulk.shift_many,
        {"offset": timedelta(minutes=-30)},
        lambda j: services.reschedule(j, j.run_at - timedelta(minutes=30), **ALICE),
    ),
}


def everything_about(job_id):
    kept = ScheduledJob.objects.filter(pk=job_id).values().get()
    # Each job's own: compared as whether it has one.
    kept.update({name: kept[name] is not None for name in ("id", "unique_key", "dispatch_token")})
    entries = AuditEntry.objects.filter(job_id=job_id).values_list(
        "action", "actor", "reason", "details", "at"
    )
    return kept, list(entries)


@pytest.mark.django_db
@pytest.mark.parametrize("action", SAME_AS)
@pytest.mark.parametrize(
    "status", [Status.SCHEDULED, Status.ENQUEUED, Status.FAILED, Status.EXPIRED]
)
def test_each_job_ends_as_the_single_job_service_leaves_it(action, status):
    many, arguments, one = SAME_AS[action]
    with freeze_time(T0):
        pair = [job(status, run_at=T0 + timedelta(hours=1), unique_key=f"k{n}") for n in (1, 2)]
    with freeze_time(T0 + timedelta(minutes=1)):
        result = many(ScheduledJob.objects.filter(pk=pair[0].pk), **arguments, **ALICE)
        try:
            one(pair[1])
        except InvalidTransitionError:  # not a legal move: the bulk action skips the job
            assert result == bulk.BulkResult(changed=0, skipped={Skip.STATE: 1})
        else:
            assert result == bulk.BulkResult(changed=1, skipped={})
    assert everything_about(pair[0].pk) == everything_about(pair[1].pk)


@pytest.mark.django_db
def test_jobs_that_expired_at_their_deadline_are_retried_with_a_new_one():
    # Workers down past the jobs' deadlines: each needed a new one on its own page.
    with freeze_time(T0):
        expired = [job(Status.EXPIRED, deadline=T0 - timedelta(minutes=5)) for _ in range(3)]
        held = job(Status.EXPIRED, unique_key="capture-8", deadline=T0 - timedelta(minutes=5))
        job(Status.SCHEDULED, unique_key="capture-8")
        result = bulk.retry_many(
            ScheduledJob.objects.filter(status=Status.EXPIRED), deadline=LATER, **ALICE
        )
        with pytest.raises(InvalidArgumentsError) as refused:
            bulk.retry_many(ScheduledJob.objects.all(), deadline=T0)
    assert result == bulk.BulkResult(changed=3, skipped=Counter({Skip.UNIQUE_KEY: 1}))
    assert {
        (j.status, j.run_at, j.deadline)
        for j in ScheduledJob.objects.filter(pk__in=[e.pk for e in expired])
    } == {(Status.SCHEDULED, T0, LATER)}
    assert ScheduledJob.objects.get(pk=held.pk).status == Status.EXPIRED
    assert refused.value.field == "deadline"


@pytest.mark.django_db
def test_of_several_ended_jobs_with_one_key_the_first_takes_it_back():
    with freeze_time(T0):
        first, second = (job(Status.FAILED, unique_key="capture-7") for _ in range(2))
        held = job(Status.CANCELLED, unique_key="capture-8")
        job(Status.SCHEDULED, unique_key="capture-8")
        result = bulk.retry_many(
            ScheduledJob.objects.filter(status=Status.FAILED)
            | ScheduledJob.objects.filter(pk=held.pk)
        )
    assert result == bulk.BulkResult(changed=1, skipped={Skip.UNIQUE_KEY: 2})
    assert [ScheduledJob.objects.get(pk=j.pk).status for j in (first, second, held)] == [
        Status.SCHEDULED,
        Status.FAILED,
        Status.CANCELLED,
    ]


FIRST = datetime(1, 1, 1, 6, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 6, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("offset", "moved"),
    [
        (timedelta(days=-1), [False, True, True]),
        (timedelta(days=1), [True, True, False]),
        (timedelta(days=3_650_000), [True, False, False]),  # year 1 to 9994
        (timedelta(days=-3_650_000), [False, False, True]),  # 9999 to year 6
        (timedelta(days=999_999_999), [False, False, False]),  # Python's largest
        (-timedelta(days=999_999_999), [False, False, False]),
    ],
)
def test_a_shift_past_the_years_1_to_9999_skips_those_jobs_whatever_its_size(offset, moved):
    # PostgreSQL's own timestamps reach 294276 AD but not 4714 BC, and Python's only 9999.
    jobs = [job(run_at=run_at) for run_at in (FIRST, T0, LAST)]
    result = bulk.shift_many(ScheduledJob.objects.all(), offset=offset)
    skipped = Counter({Skip.OUT_OF_RANGE: moved.count(False)})
    assert result == bulk.BulkResult(changed=sum(moved), skipped=skipped)
    assert [ScheduledJob.objects.get(pk=j.pk).run_at for j in jobs] == [
        j.run_at + offset if shifted else j.run_at for j, shifted in zip(jobs, moved, strict=True)
    ]


@pytest.mark.django_db
def test_cancelled_jobs_are_announced_after_the_commit_one_by_one(
    django_capture_on_commit_callbacks,
):
    jobs = [job(), job(Status.ENQUEUED), job(Status.RUNNING)]
    heard = []

    def receiver(sender, job_id, task_name, **_):
        heard.append((job_id, task_name))

    signals.job_cancelled.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            bulk.cancel_many(ScheduledJob.objects.all(), **ALICE)
            assert heard == []
    finally:
        signals.job_cancelled.disconnect(receiver)
    assert sorted(heard) == [(jobs[0].pk, "testapp.noop"), (jobs[1].pk, "testapp.noop")]


@contextmanager
def meanwhile(
    change: Callable[[], object],
    *,
    for_seconds: float = 0.5,
    then: Callable[[], object] = lambda: None,
) -> Iterator[None]:
    """``change`` made in another request's transaction, which makes the change ``then``
    and commits ``for_seconds`` into the block."""
    made, failed = threading.Event(), []

    def other_request() -> None:
        try:
            with transaction.atomic():
                change()
                made.set()
                time.sleep(for_seconds)
                then()
        except Exception as error:  # reported to the test, which fails
            failed.append(error)
            made.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_request)
    thread.start()
    made.wait()
    try:
        yield
    finally:
        thread.join()
    assert failed == []


def left_and_moved(left, moved):
    """The statuses of a job left as it was and of one moved, and who has audit entries."""
    status = ScheduledJob.objects.values_list("status", flat=True)
    audited = list(AuditEntry.objects.values_list("job_id", flat=True))
    return status.get(pk=left.pk), status.get(pk=moved.pk), audited


@pytest.mark.django_db(transaction=True)
def test_a_job_a_worker_claims_while_the_action_waits_for_it_is_skipped():
    claimed, other = job(), job()
    running = {
        "status": Status.RUNNING,
        "started_at": T0,
        "dispatch_token": uuid.uuid4(),
        "attempts": 1,
    }
    start = time.monotonic()
    with meanwhile(lambda: ScheduledJob.objects.filter(pk=claimed.pk).update(**running)):
        result = bulk.cancel_many(ScheduledJob.objects.all(), **ALICE)
    assert time.monotonic() - start >= 0.5  # it waited for the claim's commit
    assert result == bulk.BulkResult(changed=1, skipped=Counter({Skip.STATE: 1}))
    assert left_and_moved(claimed, other) == (Status.RUNNING, Status.CANCELLED, [other.pk])


@pytest.mark.django_db(transaction=True)
def test_two_shifts_at_once_of_jobs_listed_before_either_move_them_once():
    # The second waited for the first's row locks, then judged "acted on since" with a
    # snapshot taken before the first committed: it moved the jobs again.
    listed_at = timezone.now()
    shifted, other = job(run_at=T0 + timedelta(days=1)), job(run_at=T0 + timedelta(days=2))
    half_an_hour = timedelta(minutes=-30)
    with meanwhile(
        lambda: bulk.shift_many(
            ScheduledJob.objects.filter(pk=shifted.pk),
            offset=half_an_hour,
            unchanged_since=listed_at,
            **ALICE,
        )
    ):
        result = bulk.shift_many(
            ScheduledJob.objects.all(), offset=half_an_hour, unchanged_since=listed_at, **ALICE
        )
    assert result == bulk.BulkResult(changed=1, skipped=Counter({Skip.CHANGED: 1}))
    run_at = dict(ScheduledJob.objects.values_list("pk", "run_at"))
    assert run_at == {
        shifted.pk: T0 + timedelta(days=1, minutes=-30),
        other.pk: T0 + timedelta(days=2, minutes=-30),
    }


@pytest.mark.django_db(transaction=True)
def test_each_moved_jobs_entry_keeps_the_run_at_it_had_also_one_moved_meanwhile():
    # The entries of a run now or retry kept the new run_at alone: where each job had
    # been due was lost.
    pending, ended = job(run_at=T0 + timedelta(days=1)), job(Status.FAILED, run_at=T0)
    moved_meanwhile = T0 + timedelta(days=3)
    with (
        freeze_time(LATER),
        # Another operator moves the pending job while the action waits for its row.
        meanwhile(
            lambda: ScheduledJob.objects.filter(pk=pending.pk).update(run_at=moved_meanwhile)
        ),
    ):
        result = bulk.run_many_now(ScheduledJob.objects.all(), **ALICE)
    assert result.changed == 2
    details = dict(AuditEntry.objects.values_list("job_id", "details"))
    assert details == {
        pending.pk: {"run_at": LATER.isoformat(), "previous_run_at": moved_meanwhile.isoformat()},
        ended.pk: {"run_at": LATER.isoformat(), "previous_run_at": T0.isoformat()},
    }


@pytest.mark.django_db(transaction=True)
def test_a_resend_since_the_list_was_loaded_does_not_stop_a_shift():
    # It sends the job's message again, and leaves its time as it was.
    listed_at = timezone.now()
    sent = job(Status.ENQUEUED, run_at=T0 + timedelta(minutes=3))
    AuditEntry.objects.create(
        action=AuditEntry.Action.RESEND, actor="bob", job=sent, at=listed_at + timedelta(seconds=1)
    )
    result = bulk.shift_many(
        ScheduledJob.objects.all(), offset=timedelta(hours=1), unchanged_since=listed_at, **ALICE
    )
    assert result.changed == 1


@pytest.mark.django_db(transaction=True)
def test_a_key_another_request_takes_while_the_action_runs_skips_that_job():
    # Not yet committed when the action looks for holders: its UPDATE then meets the
    # other's row, and PostgreSQL refuses it once that commits.
    failed, other = job(Status.FAILED, unique_key="capture-7"), job(Status.FAILED)
    with meanwhile(lambda: job(unique_key="capture-7")):
        result = bulk.retry_many(ScheduledJob.objects.filter(status=Status.FAILED), **ALICE)
    assert result == bulk.BulkResult(changed=1, skipped=Counter({Skip.UNIQUE_KEY: 1}))
    assert left_and_moved(failed, other) == (Status.FAILED, Status.SCHEDULED, [other.pk])


@pytest.mark.django_db(transaction=True)
def test_keys_taken_meanwhile_on_every_try_leave_every_job_as_it_was_and_say_so(monkeypatch):
    # Another request takes a key the action gives back on each of its tries: one try
    # stands for all of them.
    monkeypatch.setattr(bulk, "KEY_RACE_ATTEMPTS", 1)
    failed, other = job(Status.FAILED, unique_key="capture-7"), job(Status.FAILED)
    with (
        meanwhile(lambda: job(unique_key="capture-7")),
        pytest.raises(KeyContentionError, match="other requests took the unique keys") as raised,
    ):
        bulk.retry_many(ScheduledJob.objects.filter(status=Status.FAILED), **ALICE)
    assert raised.value.tries == 1
    assert left_and_moved(failed, other) == (Status.FAILED, Status.FAILED, [])


@pytest.mark.django_db(transaction=True)
def test_the_admin_says_no_job_was_changed_when_keys_were_taken_on_every_try(
    admin_client, monkeypatch
):
    monkeypatch.setattr(bulk, "KEY_RACE_ATTEMPTS", 1)
    failed, other = job(Status.FAILED, unique_key="capture-7"), job(Status.FAILED)
    answer = confirmation(admin_client, "retry_selected", [failed, other])
    with meanwhile(lambda: job(unique_key="capture-7")):
        response = admin_client.post(CHANGELIST, answer, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [
        "No job was changed: other requests took the unique keys of selected jobs while "
        "the action ran, on each of its 1 tries. Try again."
    ]
    assert left_and_moved(failed, other) == (Status.FAILED, Status.FAILED, [])


@pytest.mark.django_db(transaction=True)
def test_keys_another_request_takes_in_the_opposite_order_meanwhile_skip_those_jobs():
    # The action gives back capture-1 then capture-2; another request schedules jobs
    # with capture-2 then capture-1. Each waits for the other: PostgreSQL breaks the
    # deadlock by failing the one that waited first, the action, which was a 500.
    ended = [job(Status.FAILED, unique_key=key) for key in ("capture-1", "capture-2")]
    # The action waits for capture-2 by the time the other asks for capture-1.
    other = meanwhile(
        lambda: job(unique_key="capture-2"),
        for_seconds=0.3,
        then=lambda: job(unique_key="capture-1"),
    )
    with other:
        result = bulk.retry_many(ScheduledJob.objects.filter(status=Status.FAILED), **ALICE)
    assert result == bulk.BulkResult(changed=0, skipped=Counter({Skip.UNIQUE_KEY: 2}))
    assert {ScheduledJob.objects.get(pk=j.pk).status for j in ended} == {Status.FAILED}
    assert ScheduledJob.objects.filter(status=Status.SCHEDULED).count() == 2
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_shift_moves_each_job_by_elapsed_time_whatever_the_sessions_time_zone():
    # An interval of days is added as calendar days of the session's time zone: a
    # connection left in Europe/Paris (a pooler shares sessions) moved a job 23 hours
    # for "1 day" across the spring change.
    eve = datetime(2026, 3, 28, 12, tzinfo=UTC)
    moved = job(run_at=eve, deadline=eve + timedelta(days=1, minutes=30))
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Europe/Paris'")
    result = bulk.shift_many(ScheduledJob.objects.all(), offset=timedelta(days=1))
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")  # as Django reads its times
    assert result == bulk.BulkResult(changed=1, skipped=Counter())
    assert ScheduledJob.objects.get(pk=moved.pk).run_at == eve + timedelta(days=1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "offset", [Decimal("sNaN"), "1 day", 3600], ids=["snan", "text", "seconds"]
)
def test_an_offset_that_is_no_timedelta_is_refused_clearly(offset):
    # Fuzzing found it: a signalling NaN raised decimal.InvalidOperation from abs().
    scheduled = job()
    with pytest.raises(TypeError, match="offset must be a timedelta"):
        bulk.shift_many(ScheduledJob.objects.all(), offset=offset)
    assert ScheduledJob.objects.get(pk=scheduled.pk).run_at == scheduled.run_at
