"""End to end: existing Celery calls with long countdowns, on a real worker."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import reschedule
from scheduler.models import ScheduledJob
from tests.processes import wait_until
from tests.testapp.tasks import echo, fail, observed, read_runs, record

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


def test_long_callbacks_of_a_task_become_jobs_and_the_task_succeeds(
    worker, broker, sqs_queue, tmp_path
):
    # Celery sends a task's several callbacks, and an error callback that takes the task
    # id, as a group: a long member was refused in the worker, which reported the task
    # that had succeeded failed and lost its callbacks.
    links, errors = str(tmp_path / "links"), str(tmp_path / "errors")
    later = record.si(links, "in two weeks").set(countdown=TWO_WEEKS)
    parent = record.apply_async(
        (links, "parent"),
        link=[later, record.si(links, "now")],
        queue=sqs_queue.name,
        connection=broker,
    )
    failing = fail.apply_async(
        (errors, "failing"),
        link_error=echo.s().set(countdown=TWO_WEEKS),
        queue=sqs_queue.name,
        connection=broker,
    )

    def done() -> bool:
        return len(read_runs(links)) == 2 and ScheduledJob.objects.count() == 2

    assert wait_until(done, timeout=30), worker.output()[-4000:]
    assert sorted(label for label, _ in read_runs(links)) == ["now", "parent"]
    callbacks = ScheduledJob.objects.order_by("task_name")
    assert [(job.task_name, job.args) for job in callbacks] == [
        ("testapp.echo", [failing.id]),
        ("testapp.record", [links, "in two weeks"]),
    ]
    output = worker.output()
    assert f"Task testapp.record[{parent.id}] succeeded" in output
    assert "InvalidArgumentsError" not in output
