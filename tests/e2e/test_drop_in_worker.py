"""End to end: existing Celery calls with long countdowns, on a real worker."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import reschedule
from scheduler.models import ScheduledJob
from tests.processes import wait_until
from tests.testapp.tasks import observed, read_runs, record

pytestmark = pytest.mark.timeout(120)

TWO_WEEKS = 14 * 24 * 3600


def _delayed_in_sqs(sqs_queue):
    return int(
        sqs_queue.client.get_queue_attributes(
            QueueUrl=sqs_queue.url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    )


def test_a_two_week_countdown_runs_once(worker, dispatch_command, tmp_path):
    path = str(tmp_path / "runs")
    result = record.apply_async((path, "fortnight"), countdown=TWO_WEEKS)
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert job.run_at - timezone.now() > timedelta(days=13, hours=23)

    # Travel two weeks: the job is due in two seconds.
    reschedule(job, timezone.now() + timedelta(seconds=2))

    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=30), worker.output()[-4000:]
    wait_until(lambda: len(read_runs(path)) > 1, timeout=3)
    assert [label for label, _ in read_runs(path)] == ["fortnight"]
    assert wait_until(lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=5)
    assert ScheduledJob.objects.get(pk=job.pk).attempts == 1


def test_a_short_countdown_waits_in_sqs_not_in_a_worker(worker, broker, sqs_queue, tmp_path):
    path = str(tmp_path / "runs")
    # Within SCHEDULER_MAX_DELAY_SECONDS (4 s here): a message, held back by SQS until
    # SCHEDULER_DELIVERY_LEAD_SECONDS (2 s) before its eta.
    sent_at = time.time()
    record.apply_async((path, "soon"), countdown=4, queue=sqs_queue.name, connection=broker)

    assert _delayed_in_sqs(sqs_queue) == 1
    time.sleep(max(0.0, sent_at + 1.0 - time.time()))
    assert _delayed_in_sqs(sqs_queue) == 1  # a second later SQS still holds it back
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=15), worker.output()[-4000:]
    [(_, ran_at)] = read_runs(path)
    assert 4.0 <= ran_at - sent_at < 5.5  # the worker's eta decides the start
    assert ScheduledJob.objects.count() == 0


def test_self_retry_of_a_plain_message_beyond_the_max_delay_becomes_a_job(
    worker, dispatch_command, broker, sqs_queue, tmp_path
):
    path = str(tmp_path / "runs")
    result = observed.apply_async((path, "far", TWO_WEEKS), queue=sqs_queue.name, connection=broker)

    assert wait_until(
        lambda: ScheduledJob.objects.filter(celery_task_id=result.id).exists(), timeout=30
    ), worker.output()[-4000:]
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert job.run_at - timezone.now() > timedelta(days=13, hours=23)
    assert (job.task_name, job.args) == ("testapp.observed", [path, "far", TWO_WEEKS])
    assert wait_until(
        lambda: f"Task testapp.observed[{result.id}] retry" in worker.output(), timeout=5
    )

    reschedule(job, timezone.now() + timedelta(seconds=1))
    assert wait_until(
        lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=30
    ), worker.output()[-4000:]
    # The job continued Celery's count: the plain run was retry 0, the job's run retry 1.
    assert [label.split(":")[:2] for label, _ in read_runs(path)] == [["far", "0"], ["far", "1"]]
    assert read_runs(path)[0][0].split(":")[2] == result.id
