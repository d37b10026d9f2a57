"""Deadlines and pauses, enforced at the dispatcher and at the worker's claim; signals."""

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from django.db import connection, transaction
from django.utils import timezone
from freezegun import freeze_time

from scheduler import schedule_at, schedule_in, signals
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import Pause, ScheduledJob
from scheduler.services import cancel, pause, reschedule, resume, retry, run_now, running
from scheduler.testing import InMemoryPublisher
from scheduler.worker.execution import Outcome
from tests.conftest import held_elsewhere, job_row_held_elsewhere
from tests.factories import deliver, deliver_ahead, dispatch_one, mark_enqueued
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


@pytest.fixture
def received():
    """Every scheduler signal sent during the test, as (name, kwargs)."""
    caught: list[tuple[str, dict]] = []

    def receiver_for(name):
        def receive(sender, **kwargs):
            kwargs.pop("signal")
            caught.append((name, kwargs))

        return receive

    receivers = {
        name: receiver_for(name)
        for name in ("job_succeeded", "job_failed", "job_expired", "job_cancelled")
    }
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver)
    yield caught
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


@freeze_time(T0)
def test_a_deadline_is_stored_and_bad_deadlines_write_nothing():
    job = schedule_at("testapp.noop", T0, deadline=T0 + timedelta(hours=1))
    assert job.deadline == T0 + timedelta(hours=1)
    assert schedule_in("testapp.noop", 60, deadline=T0 + timedelta(minutes=2)).deadline == (
        T0 + timedelta(minutes=2)
    )
    before = ScheduledJob.objects.count()
    with pytest.raises(ValueError, match="deadline must be timezone-aware"):
        schedule_at("testapp.noop", T0, deadline=datetime(2026, 12, 1))
    with pytest.raises(InvalidArgumentsError, match="deadline must be after run_at") as error:
        schedule_at("testapp.noop", T0 + timedelta(hours=2), deadline=T0 + timedelta(hours=1))
    assert error.value.field == "deadline"
    with pytest.raises(InvalidArgumentsError, match="deadline"):
        schedule_in("testapp.noop", 60, deadline=T0)
    # After a past run_at, but passed already: accepted, the job could only expire.
    passed = "deadline has passed: .* is not after now"
    with pytest.raises(InvalidArgumentsError, match=passed):
        schedule_at("testapp.noop", T0 - timedelta(hours=2), deadline=T0 - timedelta(hours=1))
    with pytest.raises(InvalidArgumentsError, match=passed):
        reschedule(job, T0 - timedelta(hours=2), deadline=T0)
    assert ScheduledJob.objects.count() == before
    assert ScheduledJob.objects.get(pk=job.pk).run_at == T0


def test_a_move_that_keeps_a_deadline_already_passed_is_refused():
    # Only a new deadline was checked against now: moved to a run_at before its kept
    # deadline, but after that had passed, a job could only expire.
    with freeze_time(T0) as clock:
        pending = schedule_at(
            "testapp.noop", T0 + timedelta(minutes=30), deadline=T0 + timedelta(hours=1)
        )
        ended = schedule_at(
            "testapp.noop", T0 + timedelta(minutes=30), deadline=T0 + timedelta(hours=1)
        )
        cancel(ended)
        clock.move_to(T0 + timedelta(hours=2))
        for move in (
            partial(reschedule, pending, T0),
            partial(retry, ended, T0),
            partial(run_now, pending),
        ):
            with pytest.raises(InvalidArgumentsError, match="give a new deadline"):
                move()
        assert ScheduledJob.objects.get(pk=pending.pk).run_at == T0 + timedelta(minutes=30)
        assert ScheduledJob.objects.get(pk=ended.pk).status == Status.CANCELLED
        # With a new deadline, it moves.
        later = T0 + timedelta(days=2)
        assert reschedule(pending, T0 + timedelta(hours=3), deadline=later).deadline == later


def test_the_dispatcher_never_sends_a_job_past_its_deadline_and_expires_it(
    received, django_capture_on_commit_callbacks, caplog
):
    publisher = InMemoryPublisher()
    with freeze_time(T0) as clock:
        late = schedule_at("testapp.noop", T0, deadline=T0 + timedelta(seconds=30))
        on_time = schedule_at("testapp.noop", T0 + timedelta(seconds=40))
        clock.move_to(T0 + timedelta(seconds=31))
        with django_capture_on_commit_callbacks(execute=True):
            result = Dispatcher(publisher=publisher).run_once()
    assert [message.job_id for message in publisher.published] == [on_time.pk]
    assert result.expired == 1
    late.refresh_from_db()
    assert (late.status, late.finished_at) == (Status.EXPIRED, T0 + timedelta(seconds=31))
    assert received == [
        (
            "job_expired",
            {"job_id": late.pk, "task_name": "testapp.noop", "deadline": late.deadline},
        )
    ]
    assert f"jobs expired count=1 job_ids=[{late.pk}] reason=deadline" in caplog.text


@freeze_time(T0)
def test_a_message_that_arrives_after_the_deadline_expires_its_job_at_the_worker(
    received, django_capture_on_commit_callbacks, tmp_path
):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", T0, [path, "late"], deadline=T0 + timedelta(seconds=5))
    token = dispatch_one(job, now=T0)
    with freeze_time(T0 + timedelta(seconds=5)), django_capture_on_commit_callbacks(execute=True):
        assert (
            running.claim(job_id=job.pk, task_name=job.task_name, token=token, worker="w")
            == running.Refusal.EXPIRED
        )
        assert (
            deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w").outcome
            == Outcome.DROPPED
        )
    job.refresh_from_db()
    assert (job.status, job.dispatch_token, job.attempts) == (Status.EXPIRED, None, 0)
    assert read_runs(path) == []
    assert [name for name, _ in received] == ["job_expired"]


@freeze_time(T0)
def test_a_published_messages_token_text_claims_as_its_uuid_would():
    # InMemoryPublisher keeps each token as the text a message carries: a claim given it
    # told an expired job apart from a stale message only when given a UUID.
    job = schedule_at("testapp.noop", T0, deadline=T0 + timedelta(seconds=5))
    publisher = InMemoryPublisher()
    Dispatcher(publisher=publisher).run_once()
    [message] = publisher.published
    with freeze_time(T0 + timedelta(seconds=5)):
        claimed = running.claim(
            job_id=job.pk, task_name=job.task_name, token=message.dispatch_token, worker="w"
        )
    assert claimed == running.Refusal.EXPIRED


def test_an_expired_job_is_revived_only_with_a_new_deadline():
    with freeze_time(T0):
        job = schedule_at("testapp.noop", T0, deadline=T0 + timedelta(seconds=5))
    ScheduledJob.objects.filter(pk=job.pk).update(status=Status.EXPIRED, finished_at=T0)
    later = T0 + timedelta(minutes=10)
    with freeze_time(later), pytest.raises(InvalidArgumentsError, match="give a new deadline"):
        retry(job)
    with freeze_time(later), pytest.raises(InvalidArgumentsError, match="give a new deadline"):
        run_now(job)
    assert ScheduledJob.objects.get(pk=job.pk).status == Status.EXPIRED
    with freeze_time(later):
        revived = run_now(job, deadline=later + timedelta(hours=1))
    assert (revived.status, revived.run_at, revived.deadline) == (
        Status.SCHEDULED,
        later,
        later + timedelta(hours=1),
    )


@freeze_time(T0)
def test_rescheduling_past_the_deadline_needs_a_new_deadline():
    job = schedule_at("testapp.noop", T0 + timedelta(hours=1), deadline=T0 + timedelta(hours=2))
    with pytest.raises(InvalidArgumentsError, match="deadline"):
        reschedule(job, T0 + timedelta(hours=3))
    assert ScheduledJob.objects.get(pk=job.pk).run_at == T0 + timedelta(hours=1)
    moved = reschedule(job, T0 + timedelta(hours=3), deadline=T0 + timedelta(hours=4))
    assert (moved.run_at, moved.deadline) == (T0 + timedelta(hours=3), T0 + timedelta(hours=4))


@freeze_time(T0)
def test_rescheduling_to_the_deadline_itself_is_refused():
    # A job starts only before its deadline: moved onto it, it could never run.
    job = schedule_at("testapp.noop", T0 + timedelta(hours=1), deadline=T0 + timedelta(hours=2))
    with pytest.raises(InvalidArgumentsError, match="deadline"):
        reschedule(job, job.deadline)
    assert ScheduledJob.objects.get(pk=job.pk).run_at == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("pause", "held"),
    [
        ({"task_name": "testapp.noop"}, {"noop-default", "noop-other"}),
        ({"queue": "other"}, {"noop-other", "record-other"}),
        ({"task_name": "testapp.noop", "queue": "other"}, {"noop-other"}),
    ],
    ids=["task", "queue", "task-on-queue"],
)
@freeze_time(T0)
def test_the_dispatcher_holds_back_paused_kinds_and_sends_them_oldest_first_on_resume(pause, held):
    jobs = {
        "noop-default": schedule_at("testapp.noop", T0 - timedelta(seconds=1)),
        "noop-other": schedule_at("testapp.noop", T0 - timedelta(seconds=3), queue="other"),
        "record-other": schedule_at(
            "testapp.record", T0 - timedelta(seconds=2), ["/dev/null", "x"], queue="other"
        ),
    }
    by_id = {job.pk: name for name, job in jobs.items()}
    Pause.objects.create(**pause)
    publisher = InMemoryPublisher()
    dispatcher = Dispatcher(publisher=publisher)
    dispatcher.run_once()
    assert {by_id[m.job_id] for m in publisher.published} == set(jobs) - held
    assert set(ScheduledJob.objects.filter(held=True).values_list("pk", flat=True)) == {
        jobs[name].pk for name in held
    }
    # The resume releases them itself: the very next tick sends them.
    resume(pause.get("task_name"), pause.get("queue"))
    publisher.published.clear()
    dispatcher.run_once()
    resumed = [by_id[m.job_id] for m in publisher.published]
    assert set(resumed) == held
    assert resumed == sorted(resumed, key=lambda name: jobs[name].run_at)


@freeze_time(T0)
def test_a_message_of_a_paused_kind_is_put_back_not_run(tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", T0, [path, "held"])
    token = dispatch_one(job, now=T0)
    Pause.objects.create(task_name="testapp.record", reason="incident")
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w").outcome
        == Outcome.DROPPED
    )
    job.refresh_from_db()
    assert (job.status, job.dispatch_token, job.run_at, job.attempts) == (
        Status.SCHEDULED,
        None,
        T0,
        0,
    )
    assert read_runs(path) == []
    # The old message stays dropped after the resume; the new dispatch runs it once.
    Pause.objects.all().delete()
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=token, worker="w").outcome
        == Outcome.DROPPED
    )
    new_token = dispatch_one(job, now=T0)
    assert (
        deliver(job_id=job.pk, task_name=job.task_name, token=new_token, worker="w").outcome
        == Outcome.SUCCEEDED
    )
    assert [label for label, _ in read_runs(path)] == ["held"]


def _lock_the_job_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE scheduler_scheduledjob IN ACCESS EXCLUSIVE MODE")


@pytest.mark.django_db(transaction=True)  # the lock is another connection's
@pytest.mark.parametrize("lock", ["row", "table"])
def test_a_deadline_that_passes_while_the_claim_waits_for_a_lock_expires_the_job(tmp_path, lock):
    # The claim judged the deadline by the time it read before it waited (behind an
    # operator's bulk action, a migration's ALTER TABLE): the job started past it, its
    # start stamped before it.
    path = str(tmp_path / "runs")
    now = timezone.now()
    job = schedule_at("testapp.record", now, [path, "late"], deadline=now + timedelta(seconds=1))
    token = dispatch_one(job, now=now)
    change = _lock_the_job_table if lock == "table" else None
    with job_row_held_elsewhere(job.pk, change=change, commit_after=1.5):
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    job.refresh_from_db()
    assert (handled.outcome, job.status, job.attempts) == (Outcome.DROPPED, Status.EXPIRED, 0)
    assert read_runs(path) == []


@pytest.mark.django_db(transaction=True)  # the pause and the lock are other connections'
@pytest.mark.parametrize("holder", ["an operator", "the dispatcher"])
def test_a_pause_made_while_the_claim_waits_for_the_row_puts_the_job_back(tmp_path, holder):
    # The claim read the pauses as they were when it began to wait: a pause committed
    # meanwhile (an incident, while a dispatcher's sends were slow) did not stop the job.
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now(), [path, "paused"])
    if holder == "an operator":
        token = dispatch_one(job, now=timezone.now())
        held = job_row_held_elsewhere(job.pk, commit_after=1.0)
    else:
        token = uuid.uuid4()
        held = job_row_held_elsewhere(
            job.pk,
            change=partial(mark_enqueued, job, token=token, now=timezone.now()),
            commit_after=1.0,
        )

    def pause_meanwhile() -> None:
        try:
            pause("testapp.record", reason="incident")
        finally:
            connection.close()  # this thread's

    pausing = threading.Timer(0.5, pause_meanwhile)
    with held:
        pausing.start()
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token)
    pausing.join()
    assert Pause.objects.exists()
    job.refresh_from_db()
    assert (handled.outcome, job.status, job.attempts) == (Outcome.DROPPED, Status.SCHEDULED, 0)
    assert read_runs(path) == []


@pytest.mark.django_db(transaction=True)  # the claim and the pause are two connections
def test_a_pause_made_while_a_claim_holds_its_job_until_its_time_waits_for_that_time(
    tmp_path,
):
    # A worker claims a job a moment before its time, and its claim commits at that
    # time: a pause committed in between did not stop the job, which started after it.
    # The pause now waits for the instant, and the job counts as started before it.
    path = str(tmp_path / "runs")
    run_at = timezone.now() + timedelta(seconds=1)  # ahead, however slow the set-up
    job = schedule_at("testapp.record", run_at, [path, "ahead"])
    token = dispatch_one(job, now=timezone.now())
    delivery = deliver_ahead(job, token=token, not_before=run_at)
    assert time.time() < run_at.timestamp()
    pause("testapp.record", reason="incident")
    assert time.time() >= run_at.timestamp()
    delivery.thread.join(10)
    assert delivery.outcomes == [Outcome.SUCCEEDED]
    assert [label for label, _ in read_runs(path)] == ["ahead"]


@pytest.mark.django_db(transaction=True)  # the claim and the pause are two connections
def test_a_claim_that_waited_for_a_pause_of_another_kind_judges_the_deadline_as_it_ends(
    tmp_path,
):
    # A pause made in a caller's longer transaction holds off every claim until it
    # commits. The claim then judged the job's deadline, and stamped its start, as of
    # the eta it had waited past: a job whose deadline had gone by ran, its start
    # recorded seconds before the body's.
    path = str(tmp_path / "runs")
    # The claim must start ahead of the eta, however slow the set-up on a busy machine:
    # made after it, a claim takes no pause's lock and waits for none.
    run_at = timezone.now() + timedelta(seconds=1.5)
    deadline = run_at + timedelta(milliseconds=300)
    job = schedule_at("testapp.record", run_at, [path, "late"], deadline=deadline)
    token = dispatch_one(job, now=timezone.now())
    commit_after = (deadline - timezone.now()).total_seconds() + 0.5
    with held_elsewhere(lambda: pause("testapp.noop", reason="breaker"), commit_after=commit_after):
        assert time.time() < run_at.timestamp()
        handled = deliver(job_id=job.pk, task_name=job.task_name, token=token, not_before=run_at)
    job.refresh_from_db()
    assert (handled.outcome, job.status) == (Outcome.DROPPED, Status.EXPIRED)
    assert read_runs(path) == []


@pytest.mark.django_db(transaction=True)  # the claims, the pause and the row's holder
def test_a_claim_waiting_for_its_jobs_row_holds_no_pause_and_so_no_other_claim_back(tmp_path):
    # The claim took the pauses' shared lock, then waited for its job's row (held by a
    # dispatcher's send, a user's transaction): a pause meanwhile queued behind it, and
    # every later claim, of any job of any kind, queued behind the pause.
    path = str(tmp_path / "runs")
    now = timezone.now()
    held = schedule_at("testapp.record", now + timedelta(seconds=0.6), [path, "held"])
    free = schedule_at("testapp.record", now + timedelta(seconds=1.5), [path, "free"])
    held_token, free_token = (dispatch_one(job, now=timezone.now()) for job in (held, free))
    with job_row_held_elsewhere(held.pk, commit_after=3):
        waiting = threading.Thread(
            target=partial(deliver_in_thread, job=held, token=held_token, not_before=held.run_at)
        )
        waiting.start()
        time.sleep(0.2)  # its claim waits for the row
        pausing = threading.Thread(target=partial(pause_in_thread, "testapp.noop"))
        pausing.start()
        time.sleep(0.2)  # the pause waits for what the claim holds, if anything
        handled = deliver(
            job_id=free.pk, task_name=free.task_name, token=free_token, not_before=free.run_at
        )
        started = time.time()
    pausing.join(10)
    waiting.join(10)
    assert handled.outcome == Outcome.SUCCEEDED
    assert started - free.run_at.timestamp() < 1  # not once the row was let go, 3 s on
    assert sorted(label for label, _ in read_runs(path)) == ["free", "held"]


@pytest.mark.django_db(transaction=True)  # the claim and the operator's transaction
@pytest.mark.parametrize("gap", [0.3, 1.6])
@pytest.mark.parametrize("pause_first", [True, False], ids=["pause-cancel", "cancel-pause"])
@pytest.mark.parametrize("nested", [False, True], ids=["worker", "in-a-transaction"])
def test_a_pause_and_a_cancel_in_one_transaction_never_deadlock_with_a_held_claim(
    tmp_path, gap, pause_first, nested
):
    # The claim held its job's row while it waited for the pauses' lock, which the
    # operator's transaction held and then asked for the row (an incident's script:
    # pause the task, cancel its job); before that, the claim held the pauses' lock while
    # it waited for the row, and cancel-then-pause closed the cycle. PostgreSQL broke
    # the deadlock by failing one side, the operator's after a second's wait, and the
    # job the operator cancelled ran. A claim in a caller's transaction (a test's
    # run_job, an eager call) still waited for the pauses' lock holding the row.
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now() + timedelta(seconds=3), [path, "x"])
    token = dispatch_one(job, now=timezone.now())
    paused, errors = threading.Event(), []
    steps: list[Callable[[], object]] = [
        partial(pause, "testapp.record", reason="incident"),
        partial(cancel, job.pk, reason="stop it"),
    ]
    first, then = steps if pause_first else steps[::-1]

    def meanwhile() -> None:
        paused.set()
        time.sleep(gap)  # the claim arrives meanwhile

    operating = threading.Thread(target=partial(operate, first, meanwhile, then, errors=errors))
    operating.start()
    assert paused.wait(5)
    time.sleep(0.1)
    with transaction.atomic() if nested else contextlib.nullcontext():
        handled = deliver(
            job_id=job.pk, task_name=job.task_name, token=token, not_before=job.run_at
        )
    operating.join(20)
    assert errors == []
    assert (handled.outcome, ScheduledJob.objects.get(pk=job.pk).status) == (
        Outcome.DROPPED,
        Status.CANCELLED,
    )
    assert read_runs(path) == []


@pytest.mark.django_db(transaction=True)  # the caller's transaction and another pause
def test_a_claim_in_a_transaction_that_paused_waits_for_no_other_pause(tmp_path):
    # Tried, the pauses' lock failed for good behind another pause waiting for it (the
    # caller's transaction held it alone): the claim looped without end, and the other
    # pause, and every claim behind it, waited for ever.
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now() + timedelta(seconds=1.5), [path, "x"])
    token = dispatch_one(job, now=timezone.now())
    outcomes: list[Outcome] = []

    def pause_then_deliver() -> None:
        try:
            with transaction.atomic():
                pause("testapp.noop", reason="first")
                time.sleep(0.5)  # the other pause waits for this one meanwhile
                outcomes.append(
                    deliver(
                        job_id=job.pk, task_name=job.task_name, token=token, not_before=job.run_at
                    ).outcome
                )
        finally:
            connection.close()

    caller = threading.Thread(target=pause_then_deliver)
    caller.start()
    time.sleep(0.2)
    other = threading.Thread(target=partial(pause_in_thread, "testapp.fail"))
    other.start()
    caller.join(10)
    other.join(10)
    assert not caller.is_alive()
    assert outcomes == [Outcome.SUCCEEDED]
    assert Pause.objects.count() == 2


@pytest.mark.django_db(transaction=True)  # the caller's, a pause's and an operator's
def test_a_claim_in_a_transaction_lets_go_of_the_pauses_lock_it_waited_for(tmp_path):
    # Kept by the caller's transaction once the pause it waited for committed, the
    # pauses' lock was held while the claim waited for its job's row, which an
    # operator's transaction (cancel the job, then pause) held: a deadlock.
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now() + timedelta(seconds=3), [path, "x"])
    token = dispatch_one(job, now=timezone.now())
    errors: list[Exception] = []
    # Starts while the claim waits for the pause.
    operating = threading.Timer(
        0.3,
        partial(
            operate,
            partial(cancel, job.pk, reason="stop it"),
            partial(pause, "testapp.fail", reason="incident"),
            errors=errors,
        ),
    )
    with held_elsewhere(lambda: pause("testapp.noop", reason="breaker"), commit_after=1):
        operating.start()
        with transaction.atomic():
            handled = deliver(
                job_id=job.pk, task_name=job.task_name, token=token, not_before=job.run_at
            )
    operating.join(10)
    job.refresh_from_db()
    assert (errors, handled.outcome, job.status) == ([], Outcome.DROPPED, Status.CANCELLED)
    assert (Pause.objects.count(), read_runs(path)) == (2, [])


def operate(*steps: Callable[[], object], errors: list[Exception]) -> None:
    """An operator's script, ``steps`` in one transaction, in a thread of its own: what
    fails is put in ``errors``, as the operator would see it."""
    try:
        with transaction.atomic():
            for step in steps:
                step()
    except Exception as error:
        errors.append(error)
    finally:
        connection.close()


def deliver_in_thread(*, job: ScheduledJob, token: uuid.UUID, not_before: datetime) -> None:
    try:
        deliver(job_id=job.pk, task_name=job.task_name, token=token, not_before=not_before)
    finally:
        connection.close()


def pause_in_thread(task_name: str) -> None:
    try:
        pause(task_name, reason="incident")
    finally:
        connection.close()


@freeze_time(T0)
def test_outcome_signals_are_sent_after_commit_and_never_on_rollback(
    received, django_capture_on_commit_callbacks, tmp_path
):
    path = str(tmp_path / "runs")
    ok = schedule_at("testapp.record", T0, [path, "ok"])
    bad = schedule_at("testapp.fail", T0, [path, "bad"], max_attempts=1)
    gone = schedule_at("testapp.noop", T0 + timedelta(days=1))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert (
            deliver(
                job_id=ok.pk, task_name=ok.task_name, token=dispatch_one(ok, now=T0), worker="w"
            ).outcome
            == Outcome.SUCCEEDED
        )
        assert (
            deliver(
                job_id=bad.pk, task_name=bad.task_name, token=dispatch_one(bad, now=T0), worker="w"
            ).outcome
            == Outcome.FAILED
        )
        assert cancel(gone)
    # Nothing is sent before the transaction commits…
    assert received == []
    for callback in callbacks:
        callback()
    assert [(name, kwargs["job_id"], kwargs["task_name"]) for name, kwargs in received] == [
        ("job_succeeded", ok.pk, "testapp.record"),
        ("job_failed", bad.pk, "testapp.fail"),
        ("job_cancelled", gone.pk, "testapp.noop"),
    ]
    assert "RuntimeError: task bad failed on purpose" in received[1][1]["error"]

    # …and nothing at all when it rolls back.
    received.clear()
    other = schedule_at("testapp.noop", T0 + timedelta(days=1))
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        cancel(other)
        raise RuntimeError("the caller's transaction fails")
    assert callbacks == []
    assert received == []


@pytest.mark.django_db(transaction=True)
def test_a_reschedule_sees_the_deadline_another_operator_set_meanwhile():
    # The deadline was read before the move, unlocked: a deadline another operator moved
    # earlier in between was kept, and the job, moved past it, never ran (it expired).
    now = timezone.now()
    job = schedule_at("testapp.noop", now + timedelta(hours=1), deadline=now + timedelta(days=30))
    earlier = partial(
        reschedule, job.pk, now + timedelta(hours=1), deadline=now + timedelta(hours=2)
    )
    # Committed while this reschedule waits for the row, whichever read it made first.
    with (
        job_row_held_elsewhere(job.pk, change=earlier, commit_after=0.5),
        pytest.raises(InvalidArgumentsError, match="deadline"),
    ):
        reschedule(job.pk, now + timedelta(days=1))
    job.refresh_from_db()
    assert (job.run_at, job.deadline) == (now + timedelta(hours=1), now + timedelta(hours=2))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ended", [False, True], ids=["ended-meanwhile", "retried-meanwhile"])
def test_run_now_runs_a_job_another_operator_ended_or_retried_meanwhile(ended):
    # run_now chose between a move and a retry on a status read unlocked: a job that
    # ended (or was retried) before the move locked its row was refused as "it is
    # cancelled" (or "cannot retry … it is scheduled"), a state run_now accepts.
    now = timezone.now()
    job = schedule_at("testapp.noop", now + timedelta(hours=1))
    if ended:
        meanwhile = partial(cancel, job.pk)
    else:
        cancel(job.pk)
        meanwhile = partial(retry, job.pk, now + timedelta(days=1))
    with job_row_held_elsewhere(job.pk, change=meanwhile, commit_after=0.5):
        moved = run_now(job.pk, reason="now")
    assert moved.status == Status.SCHEDULED
    assert now <= moved.run_at <= timezone.now()
