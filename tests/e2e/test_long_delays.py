"""End to end: real worker and beat, limits lowered to seconds (max delay 4 s, lookahead 3 s,
tick 1 s), so every job below waits longer than SQS could hold it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from payments.models import Payment
from payments.services import authorize_payment
from scheduler import schedule_at
from scheduler.models import ScheduledJob
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)


def test_jobs_beyond_the_sqs_delay_run_once_on_time(worker, beat, tmp_path):
    path = str(tmp_path / "runs")
    now = timezone.now()
    jobs = {
        label: schedule_at("testapp.record", now + timedelta(seconds=seconds), [path, label])
        # The last two beyond what SQS holds back here (SCHEDULER_MAX_DELAY_SECONDS, 4).
        for label, seconds in (("plus1", 1), ("plus10", 10), ("plus15", 15))
    }
    assert wait_until(lambda: len(read_runs(path)) >= 3, timeout=30), worker.output()[-4000:]
    # Give a would-be duplicate time to show up.
    wait_until(lambda: len(read_runs(path)) > 3, timeout=3)

    runs = read_runs(path)
    assert sorted(label for label, _ in runs) == ["plus1", "plus10", "plus15"]
    for label, ran_at in runs:
        job = ScheduledJob.objects.get(pk=jobs[label].pk)
        lateness = ran_at - job.run_at.timestamp()
        assert 0 <= lateness < 2.0, f"{label} ran {lateness:.3f}s after run_at"
        assert job.status == ScheduledJob.Status.SUCCEEDED
        [attempt] = job.history.all()
        assert attempt.started_at >= job.run_at


def test_the_payment_capture_runs_and_the_payment_ends_captured(worker, beat):
    payment = authorize_payment(amount="99.00", currency="EUR", capture_in=timedelta(seconds=6))

    def captured() -> bool:
        payment.refresh_from_db()
        return payment.status == Payment.Status.CAPTURED

    assert wait_until(captured, timeout=30, interval=0.2), worker.output()[-4000:]
    job = ScheduledJob.objects.get(pk=payment.capture_job_id)
    assert job.status == ScheduledJob.Status.SUCCEEDED
    assert payment.captured_at >= job.run_at
    assert job.history.count() == 1


def test_a_failing_job_is_retried_then_failed_with_every_traceback(worker, beat, tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at(
        "testapp.fail", timezone.now() + timedelta(seconds=1), [path, "doomed"], max_attempts=3
    )

    def failed() -> bool:
        job.refresh_from_db()
        return job.status == ScheduledJob.Status.FAILED

    assert wait_until(failed, timeout=45, interval=0.2), worker.output()[-4000:]
    assert job.attempts == 3
    attempts = list(job.history.order_by("number"))
    assert [a.outcome for a in attempts] == ["error", "error", "error"]
    for attempt in attempts:
        assert "RuntimeError: task doomed failed on purpose" in attempt.error
        assert attempt.error.startswith("Traceback")
    # Each retry waited its back-off in PostgreSQL: attempts start in order, apart.
    starts = [a.started_at for a in attempts]
    assert starts[0] < starts[1] < starts[2]
    assert (starts[1] - attempts[0].finished_at).total_seconds() >= 0.5
    assert len(read_runs(path)) == 3
