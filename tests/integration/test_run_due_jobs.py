"""scheduler.testing.run_due_jobs: "run every job due by T" for users' own tests."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from freezegun import freeze_time

from payments.services import authorize_payment
from scheduler import cancel, schedule_at, schedule_in, signals
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.services import running
from scheduler.testing import run_due_jobs
from tests.factories import dispatch_one
from tests.testapp.models import Effect
from tests.testapp.tasks import observed, read_runs

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


@pytest.fixture
def succeeded():
    """The ids of jobs whose job_succeeded signal was sent."""
    ids: list[int] = []

    def receive(sender, job_id, **kwargs):
        ids.append(job_id)

    signals.job_succeeded.connect(receive)
    yield ids
    signals.job_succeeded.disconnect(receive)


def test_it_runs_what_is_due_through_the_workers_claim_and_records_outcomes(
    tmp_path, succeeded, django_capture_on_commit_callbacks
):
    path = str(tmp_path / "runs")
    with freeze_time(T0) as clock:
        past = schedule_at("testapp.record", T0 - timedelta(hours=1), [path, "past"])
        now = schedule_at("testapp.echo", T0, ["now"])
        later = schedule_in("testapp.record", timedelta(days=14), [path, "later"])

        with django_capture_on_commit_callbacks(execute=True):
            ran = run_due_jobs()

        assert [(job.pk, job.status) for job in ran] == [
            (past.pk, Status.SUCCEEDED),
            (now.pk, Status.SUCCEEDED),
        ]
        assert ran[1].result == "now"
        assert [label for label, _ in read_runs(path)] == ["past"]
        assert sorted(succeeded) == sorted([past.pk, now.pk])
        later.refresh_from_db()
        assert later.status == Status.SCHEDULED
        assert now.history.get().worker.startswith("scheduler.testing:")

        assert run_due_jobs() == []  # nothing runs twice
        clock.move_to(T0 + timedelta(days=14))
        assert [job.pk for job in run_due_jobs()] == [later.pk]
    assert [label for label, _ in read_runs(path)] == ["past", "later"]


def test_signals_are_sent_inside_a_tests_transaction_as_a_workers_commit_sends_them(
    succeeded,
):
    # pytest-django's `db` test never commits: the scheduler's signals (sent on commit)
    # never came, and a test that a receiver did nothing passed whatever it did.
    with freeze_time(T0 - timedelta(hours=1)):
        expired = schedule_at("testapp.noop", T0 - timedelta(hours=1), deadline=T0)
    with freeze_time(T0):
        job = schedule_at("testapp.noop", T0)
        expiries: list[int] = []

        def receive(sender, job_id, **kwargs):
            expiries.append(job_id)

        signals.job_expired.connect(receive)
        try:
            assert [ran.pk for ran in run_due_jobs()] == [job.pk]
        finally:
            signals.job_expired.disconnect(receive)
    assert succeeded == [job.pk]
    assert expiries == [expired.pk]


@freeze_time(T0)
def test_a_body_callback_that_fails_after_the_commit_leaves_the_success_signalled(succeeded):
    # Raised at once, it took the callbacks after it, the success's signal among them; a
    # worker records the success, sends its signal, and raises the callback's error.
    job = schedule_at("testapp.atomic_fails_on_commit", T0, ["committed"])
    with pytest.raises(RuntimeError, match="committed: on-commit callback failed"):
        run_due_jobs()
    assert ScheduledJob.objects.get(pk=job.pk).status == "succeeded"
    assert succeeded == [job.pk]


@freeze_time(T0)
@pytest.mark.parametrize("through", ["raw", "orm"])
def test_a_receiver_whose_query_fails_leaves_the_other_jobs_running(succeeded, through):
    # Logged, as after a worker's commit; but in the test's transaction it broke the
    # transaction, and every later job failed "current transaction is aborted".
    def failing(sender, **kwargs):
        if through == "orm":  # which also marks Django's transaction for rollback
            first = Effect.objects.create(label="receiver", atomic=False, at=T0, pid=0)
            Effect.objects.create(pk=first.pk, label="again", atomic=False, at=T0, pid=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")

    jobs = [schedule_at("testapp.noop", T0) for _ in range(2)]
    signals.job_succeeded.connect(failing)
    try:
        assert [ran.pk for ran in run_due_jobs()] == [job.pk for job in jobs]
    finally:
        signals.job_succeeded.disconnect(failing)
    assert succeeded == [job.pk for job in jobs]


@freeze_time(T0)
def test_until_runs_jobs_due_by_then_and_their_retries_due_by_then(tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.observed", T0 + timedelta(hours=1), [path, "x", 600])

    assert run_due_jobs() == []
    first, second = run_due_jobs(until=T0 + timedelta(hours=1))
    # The first run retried itself ten minutes after now: still due by `until`.
    assert (first.pk, first.status, first.run_at) == (
        job.pk,
        Status.SCHEDULED,
        T0 + timedelta(seconds=600),
    )
    assert (second.pk, second.status, second.attempts) == (job.pk, Status.SUCCEEDED, 2)


def test_a_job_whose_worker_died_is_retried_once_its_lease_expired():
    with freeze_time(T0) as clock:
        job = schedule_at("testapp.echo", T0, ["again"])
        token = dispatch_one(job, now=T0)
        claimed = running.claim(job_id=job.pk, task_name=job.task_name, token=token, worker="w")
        assert isinstance(claimed, running.Claim)
        clock.move_to(T0 + timedelta(minutes=2))  # no heartbeat since T0: past the lease

        [ran] = run_due_jobs()  # due again at once: the lease was its wait
    assert (ran.pk, ran.status, ran.attempts, ran.result) == (job.pk, Status.SUCCEEDED, 2, "again")
    [dead, again] = ran.history.order_by("number")
    assert (dead.outcome, dead.error[:13]) == (JobAttempt.Outcome.LEASE_EXPIRED, "lease expired")
    assert again.started_at == T0 + timedelta(minutes=2)


@freeze_time(T0)
def test_an_error_is_recorded_not_raised(tmp_path):
    schedule_at("testapp.fail", T0, [str(tmp_path / "runs"), "boom"], max_attempts=1)
    [job] = run_due_jobs()
    assert job.status == Status.FAILED
    assert "RuntimeError: task boom failed on purpose" in job.last_error


@freeze_time(T0)
def test_a_calls_task_id_is_the_request_id_of_every_attempt_as_on_a_worker(tmp_path):
    # A job apply_async made: its message carries the call's task id (the AsyncResult's),
    # which a task may use as an idempotency key.
    path = str(tmp_path / "runs")
    with freeze_time(T0):
        result = observed.apply_async((path, "far", 60.0), countdown=14 * 86400)
        run_due_jobs(until=T0 + timedelta(days=15))
    assert [run for run, _ in read_runs(path)] == [f"far:0:{result.id}", f"far:1:{result.id}"]


def test_it_sends_nothing_to_a_broker(published):
    schedule_at("testapp.noop", T0)
    assert [job.status for job in run_due_jobs()] == [Status.SUCCEEDED]
    assert published == []


def test_the_readme_example(db):
    with freeze_time("2026-01-01 12:00") as clock:
        payment = authorize_payment(amount="10.00", currency="EUR")
        assert run_due_jobs() == []
        clock.tick(timedelta(days=14))
        [job] = run_due_jobs()
    assert job.status == "succeeded"
    payment.refresh_from_db()
    assert payment.status == "captured"


@freeze_time(T0)
def test_a_job_due_before_its_deadline_runs_however_far_until_reaches(settings):
    # Captured on day 14, well before the authorization's expiry on day 30: run_due_jobs
    # up to day 60 must capture it, as production would, not judge its deadline at
    # `until`; and no job it ran is purged as if 60 days had passed since.
    settings.SCHEDULER_RETENTION_DAYS = 30
    payment = authorize_payment(amount="12.00", currency="EUR")
    later = schedule_at("testapp.echo", T0 + timedelta(days=45), ["later"])

    ran = run_due_jobs(until=T0 + timedelta(days=60))

    assert [(job.pk, job.status) for job in ran] == [
        (payment.capture_job_id, Status.SUCCEEDED),
        (later.pk, Status.SUCCEEDED),
    ]
    payment.refresh_from_db()
    assert payment.status == "captured"
    assert ScheduledJob.objects.filter(pk__in=[job.pk for job in ran]).count() == 2


@freeze_time(T0)
def test_a_job_not_due_by_until_is_left_scheduled_not_sent():
    # The dispatcher sends what is due within its lookahead (five minutes): such a job
    # was left enqueued, with a token and a send, which a test then saw as its status.
    soon = schedule_in("testapp.noop", timedelta(minutes=2))
    assert run_due_jobs() == []
    earlier = schedule_at("testapp.noop", T0 - timedelta(minutes=58))
    assert run_due_jobs(until=T0 - timedelta(hours=1)) == []
    for job in (soon, earlier):
        job.refresh_from_db()
        assert (job.status, job.sends, job.dispatch_token) == (Status.SCHEDULED, 0, None)


def test_a_retry_due_after_its_deadline_expires_as_in_production(tmp_path):
    # Every tick judges deadlines at its own time: the first tick only did, as the
    # dispatcher's recovery waits for its interval on a clock that freezegun stopped.
    with freeze_time(T0):
        job = schedule_at(
            "testapp.observed",
            T0,
            [str(tmp_path / "runs"), "x", 600],
            deadline=T0 + timedelta(minutes=5),
        )
        [first] = run_due_jobs(until=T0 + timedelta(hours=1))
    assert (first.pk, first.status, first.run_at) == (
        job.pk,
        Status.SCHEDULED,
        T0 + timedelta(seconds=600),
    )
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.EXPIRED, 1)


def test_a_job_a_ticks_receiver_schedules_due_at_once_runs_in_the_same_call():
    # Workers down past the authorization's expiry: the tick expires the capture, and
    # the job_expired receiver schedules the missed capture's record, due at once. In a
    # test's transaction the receiver ran after the tick's sends: nothing was due, the
    # call returned, and the payment stayed authorized until a second call.
    with freeze_time(T0) as clock:
        payment = authorize_payment(amount="10.00", currency="EUR")
        clock.move_to(T0 + timedelta(days=31))
        ran = run_due_jobs()
    assert [(job.task_name, job.status) for job in ran] == [
        ("payments.record_missed_capture", Status.SUCCEEDED)
    ]
    payment.refresh_from_db()
    assert payment.status == "capture_missed"


@freeze_time(T0)
def test_a_job_whose_message_ran_nothing_is_not_listed_as_run():
    # Cancelled by a receiver of the job before it, its message was dropped, as a
    # worker drops it; it was listed among the jobs run all the same.
    first = schedule_at("testapp.noop", T0 - timedelta(minutes=1))
    second = schedule_at("testapp.noop", T0)

    def cancel_the_second(sender, job_id, **kwargs):
        if job_id == first.pk:
            cancel(second.pk)

    signals.job_succeeded.connect(cancel_the_second)
    try:
        ran = run_due_jobs()
    finally:
        signals.job_succeeded.disconnect(cancel_the_second)
    assert [(job.pk, job.status) for job in ran] == [(first.pk, Status.SUCCEEDED)]
    second.refresh_from_db()
    assert second.status == Status.CANCELLED


@freeze_time(T0)
@pytest.mark.parametrize(
    ("task", "args", "error"),
    [
        ("testapp.bad_query", [], "division by zero"),
        # Through the ORM, which also marks the transaction for rollback in Django.
        ("testapp.duplicate_effect", ["twice"], "duplicate key"),
    ],
    ids=["raw", "orm"],
)
def test_a_job_whose_query_fails_is_recorded_and_the_next_job_runs(task, args, error):
    # The refused query broke the test's transaction: recording the error raised out of
    # the call, as "current transaction is aborted", and no later job ran.
    bad = schedule_at(task, T0 - timedelta(minutes=1), args, max_attempts=1)
    good = schedule_at("testapp.echo", T0, ["after"])
    ran = run_due_jobs()
    assert [(job.pk, job.status) for job in ran] == [
        (bad.pk, Status.FAILED),
        (good.pk, Status.SUCCEEDED),
    ]
    assert error in ran[0].last_error
    assert not Effect.objects.exists()  # its writes went with the refusal


def test_a_receiver_that_keeps_scheduling_what_the_next_tick_expires_is_stopped(tmp_path):
    # Each tick at the retry's time expires the follow-up that the job_expired receiver
    # scheduled (its deadline counts from the frozen now), and the receiver schedules
    # another: the ticks at that time went on forever, max_runs never reached.
    expiries: list[int] = []

    def follow_up(sender, job_id, **kwargs):
        expiries.append(job_id)
        if len(expiries) < 50:  # the test's own bound, should the call not stop
            schedule_in("testapp.noop", timedelta(minutes=1), deadline=T0 + timedelta(minutes=2))

    with freeze_time(T0):
        schedule_at(
            "testapp.observed",
            T0,
            [str(tmp_path / "runs"), "x", 600],
            deadline=T0 + timedelta(minutes=5),
        )
        signals.job_expired.connect(follow_up)
        try:
            with pytest.raises(RuntimeError, match="ran no job"):
                run_due_jobs(until=T0 + timedelta(hours=1), max_runs=5)
        finally:
            signals.job_expired.disconnect(follow_up)
    assert len(expiries) < 10
