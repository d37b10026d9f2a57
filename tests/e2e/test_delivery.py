"""End to end: duplicate, cancelled, rescheduled and early messages reach a real worker."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import cancel, reschedule, schedule_at
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import ScheduledJob
from tests.conftest import RecordingPublisher
from tests.processes import logged_at, wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)


class DuplicatingPublisher(RecordingPublisher):
    """Sends every message twice, as SQS's at-least-once delivery may."""

    def publish(self, messages):
        super().publish(messages)
        return super().publish(messages)


class SlowCommitPublisher(RecordingPublisher):
    """Keeps the dispatcher's transaction open for a while after SQS has the message."""

    def publish(self, messages):
        result = super().publish(messages)
        time.sleep(2.0)
        self.returned_at = time.time()
        return result


def _job(path, label, seconds):
    return schedule_at("testapp.record", timezone.now() + timedelta(seconds=seconds), [path, label])


def test_the_same_message_delivered_twice_runs_the_job_once(worker, tmp_path):
    path = str(tmp_path / "runs")
    job = _job(path, "twice", 1)
    assert Dispatcher(publisher=DuplicatingPublisher()).run_once().sent == 1
    worker.wait_for_output("message dropped", timeout=20)
    # The copy that claimed the job may still be running when the other is dropped.
    assert wait_until(lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=10)
    assert [label for label, _ in read_runs(path)] == ["twice"]
    job.refresh_from_db()
    assert (job.status, job.attempts, job.history.count()) == ("succeeded", 1, 1)


def test_a_job_cancelled_after_dispatch_does_not_run(worker, tmp_path):
    path = str(tmp_path / "runs")
    job = _job(path, "cancelled", 2)
    assert Dispatcher().run_once().sent == 1
    job.refresh_from_db()
    assert job.status == ScheduledJob.Status.ENQUEUED
    assert cancel(job)
    worker.wait_for_output("message dropped", timeout=20)
    assert read_runs(path) == []
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("cancelled", 0)


def test_a_job_rescheduled_after_dispatch_runs_only_at_its_new_time(worker, beat, tmp_path):
    path = str(tmp_path / "runs")
    # Due in 5 s, sent 3 s early (lookahead): enqueued for 2 s even if beat's first tick
    # comes late. Due in 2 s, it was once never seen enqueued on a loaded CI machine:
    # most likely sent late, it ran at once.
    job = _job(path, "moved", 5)
    assert wait_until(
        lambda: ScheduledJob.objects.get(pk=job.pk).status == "enqueued", timeout=10
    ), ScheduledJob.objects.get(pk=job.pk).status
    new_run_at = timezone.now() + timedelta(seconds=8)
    reschedule(job, new_run_at)
    worker.wait_for_output("message dropped", timeout=20)
    assert read_runs(path) == []  # the old message arrived and did nothing
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=20)
    wait_until(lambda: len(read_runs(path)) > 1, timeout=2)
    [(label, ran_at)] = read_runs(path)
    assert label == "moved"
    assert 0 <= ran_at - new_run_at.timestamp() < 2.0
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("succeeded", 1)


def test_a_message_reaching_the_worker_before_the_dispatch_commits_runs_once(worker, tmp_path):
    path = str(tmp_path / "runs")
    job = _job(path, "early", -1)  # past due: sent with DelaySeconds 0
    publisher = SlowCommitPublisher()
    assert Dispatcher(publisher=publisher).run_once().sent == 1
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=20), worker.output()[-3000:]
    wait_until(lambda: len(read_runs(path)) > 1, timeout=2)
    [(_, ran_at)] = read_runs(path)
    # The worker had the message during the 2 s the transaction stayed open, and its
    # claim waited for the commit instead of dropping the message.
    received = [at for at, _ in logged_at(worker.output(), r"testapp\.record\[[^]]+\] received")]
    assert received, worker.output()[-3000:]
    assert min(received) < publisher.returned_at, (received, publisher.returned_at)
    assert ran_at >= publisher.returned_at
    job.refresh_from_db()
    assert (job.status, job.attempts, job.history.count()) == ("succeeded", 1, 1)
    assert "message dropped" not in worker.output()


def test_a_job_is_claimed_a_moment_early_and_starts_at_its_run_at(worker, beat, tmp_path):
    """The worker hands a job's message over before its eta; the claim commits at run_at."""
    path = str(tmp_path / "runs")
    jobs = [_job(path, f"job{index}", 3 + index) for index in range(3)]
    assert wait_until(lambda: len(read_runs(path)) >= 3, timeout=30), worker.output()[-4000:]

    started_at_run_at = 0
    for job, (_label, ran_at) in zip(jobs, sorted(read_runs(path)), strict=True):
        job.refresh_from_db()
        [attempt] = job.history.all()
        assert ran_at >= job.run_at.timestamp()  # never early
        assert attempt.started_at >= job.run_at
        started_at_run_at += attempt.started_at == job.run_at
    # A claim made after the instant starts later than run_at, if only by microseconds.
    assert started_at_run_at >= 1, worker.output()[-4000:]
    # Each delivery reads its message's eta without a deprecated call: Celery's worker
    # logs every deprecation warning, at WARNING, three lines per job.
    assert "DeprecationWarning" not in worker.output(), worker.output()[-4000:]
