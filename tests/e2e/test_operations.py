"""End to end, with a real worker: a pause holds back messages already in SQS, and a
capture whose authorization lapsed while its message waited is never run."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from payments.models import Payment
from payments.services import MISSED_CAPTURE_TASK_NAME, authorize_payment
from scheduler import schedule_at, services
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import ScheduledJob
from tests.conftest import RecordingPublisher
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(180)

Status = ScheduledJob.Status


def statuses(jobs):
    return [ScheduledJob.objects.get(pk=job.pk).status for job in jobs]


def test_a_pause_puts_back_messages_already_in_sqs_and_resume_runs_each_once_oldest_first(
    worker, tmp_path, settings
):
    path = str(tmp_path / "runs")
    # Due 5 s on, sent now (this process's lookahead only): the pause must commit before
    # the first is claimed, and a loaded machine left a second due job too little time.
    settings.SCHEDULER_LOOKAHEAD_SECONDS = 10
    now = timezone.now()
    jobs = [
        schedule_at("testapp.record", now + timedelta(seconds=delay), [path, label])
        for delay, label in ((6, "second"), (5, "first"), (7, "third"))
    ]
    assert Dispatcher().run_once().sent == 3
    assert statuses(jobs) == [Status.ENQUEUED] * 3
    # The messages are in SQS, held back by DelaySeconds, when the operator pauses.
    services.pause("testapp.record", actor="ops", reason="gateway incident")
    assert wait_until(lambda: statuses(jobs) == [Status.SCHEDULED] * 3, timeout=30), (
        worker.output()[-3000:]
    )
    time.sleep(1)
    assert read_runs(path) == []
    # While paused, the dispatcher sends nothing of that kind.
    publisher = RecordingPublisher()
    assert Dispatcher(publisher=publisher).run_once().sent == 0

    services.resume("testapp.record", actor="ops", reason="gateway back")
    assert Dispatcher(publisher=publisher).run_once().sent == 3
    # Oldest first: the dispatcher sends by run_at.
    assert [message.job_id for message in publisher.published] == [
        jobs[1].pk,
        jobs[0].pk,
        jobs[2].pk,
    ]
    assert wait_until(lambda: len(read_runs(path)) == 3, timeout=30), worker.output()[-3000:]
    wait_until(lambda: len(read_runs(path)) > 3, timeout=2)
    assert sorted(label for label, _ in read_runs(path)) == ["first", "second", "third"]
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.attempts, job.history.count()) == (Status.SUCCEEDED, 1, 1)


def test_a_capture_whose_authorization_lapsed_in_sqs_expires_at_the_worker(
    e2e_env, request, settings
):
    payment = authorize_payment(
        amount="19.99",
        currency="EUR",
        capture_in=timedelta(seconds=1),
        valid_for=timedelta(seconds=3),
    )
    assert Dispatcher().run_once().sent == 1
    # No worker until the authorization has lapsed: the message waits in SQS.
    assert wait_until(lambda: timezone.now() > payment.authorization_expires_at, timeout=10)
    worker = request.getfixturevalue("worker")
    job = payment.capture_job
    assert wait_until(
        lambda: ScheduledJob.objects.get(pk=job.pk).status == Status.EXPIRED, timeout=30
    ), worker.output()[-3000:]
    # The worker's claim expired it and sent job_expired after its commit; the payments
    # demo's receiver, in the worker process, scheduled the job that marks the payment.
    check = ScheduledJob.objects.filter(task_name=MISSED_CAPTURE_TASK_NAME)
    assert wait_until(check.exists, timeout=10), worker.output()[-3000:]
    assert Dispatcher().run_once().sent == 1
    assert wait_until(
        lambda: Payment.objects.get(pk=payment.pk).status == Payment.Status.CAPTURE_MISSED,
        timeout=30,
    ), worker.output()[-3000:]
    assert "job expired" in worker.output()
    assert not ScheduledJob.objects.get(pk=job.pk).history.exists()
