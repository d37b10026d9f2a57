"""End to end: a job runs as its own Celery task in a real worker — its name in the log
and in Celery's signals, its retry, its soft time limit, its rate limit — and messages
that are malformed, forged, replayed or stale are dropped with one log line each."""

import uuid
from datetime import timedelta

import pytest
from celery import current_app
from django.utils import timezone

from scheduler import reschedule, schedule_at
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.protocol import DISPATCH_TOKEN_HEADER, JOB_ID_HEADER, PROTOCOL_HEADER
from scheduler.testing import InMemoryPublisher
from tests.processes import wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)


def _status(job):
    job.refresh_from_db()
    return job.status


def _signals(task_name):
    """The Celery signals a worker sent for ``task_name`` (tests/testapp/signals.py)."""
    labels = Effect.objects.filter(label__endswith=f" {task_name}").values_list("label", flat=True)
    return sorted(label.split()[0] for label in labels)


def test_logs_and_signals_show_the_jobs_own_task_name_and_its_retry(worker, beat, tmp_path):
    path = str(tmp_path / "runs")
    soon = timezone.now() + timedelta(seconds=1)
    retried = schedule_at("testapp.observed", soon, [path, "obs", 1], max_attempts=3)
    failed = schedule_at("testapp.fail_observed", soon, [path, "bad"], max_attempts=1)

    assert wait_until(
        lambda: (_status(retried), _status(failed)) == ("succeeded", "failed"), timeout=45
    ), worker.output()[-4000:]

    log = worker.output()
    assert "Task testapp.observed[" in log
    assert "retry: Retry in 1s" in log
    assert "Task testapp.fail_observed[" in log
    assert "raised unexpected: RuntimeError('task bad failed on purpose')" in log
    assert wait_until(lambda: len(_signals("testapp.observed")) == 6, timeout=5)
    assert _signals("testapp.observed") == [
        "task_postrun",
        "task_postrun",
        "task_prerun",
        "task_prerun",
        "task_retry",
        "task_success",
    ]
    assert wait_until(lambda: len(_signals("testapp.fail_observed")) == 3, timeout=5)
    assert _signals("testapp.fail_observed") == ["task_failure", "task_postrun", "task_prerun"]
    # The retry waited in PostgreSQL: the same job, a second attempt, no new message.
    assert retried.attempts == 2
    assert [a.outcome for a in retried.history.order_by("number")] == ["retried", "succeeded"]
    assert [label.split(":")[1] for label, _ in read_runs(path) if label.startswith("obs")] == [
        "0",
        "1",
    ]


def test_a_soft_time_limit_fails_the_job_after_its_retries(worker, beat, tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at(
        "testapp.soft_limited",
        timezone.now() + timedelta(seconds=1),
        [path, "slow"],
        max_attempts=2,
    )

    assert wait_until(lambda: _status(job) == "failed", timeout=45), worker.output()[-4000:]

    assert job.attempts == 2
    assert [a.outcome for a in job.history.all()] == ["error", "error"]
    assert "SoftTimeLimitExceeded" in job.last_error
    assert "Soft time limit (1s) exceeded for testapp.soft_limited" in worker.output()
    assert wait_until(
        lambda: _signals("testapp.soft_limited").count("task_failure") == 2, timeout=5
    )
    assert len(read_runs(path)) == 2


def test_a_rate_limit_spaces_the_jobs_of_its_task(worker, beat, tmp_path):
    path = str(tmp_path / "runs")
    soon = timezone.now() + timedelta(seconds=1)
    for label in ("a", "b", "c"):
        schedule_at("testapp.rate_limited", soon, [path, label])

    assert wait_until(lambda: len(read_runs(path)) == 3, timeout=30), worker.output()[-4000:]

    starts = sorted(at for _, at in read_runs(path))
    # "30/m": one every two seconds.
    assert starts[1] - starts[0] >= 1.5
    assert starts[2] - starts[1] >= 1.5


def test_malformed_forged_replayed_and_stale_messages_are_dropped(
    worker, broker, sqs_queue, tmp_path
):
    path = str(tmp_path / "runs")
    dispatcher = Dispatcher(publisher=InMemoryPublisher())
    job = schedule_at("testapp.record", timezone.now(), [path, "real"])
    assert dispatcher.run_once().sent == 1
    job.refresh_from_db()
    old_token = job.dispatch_token
    reschedule(job, timezone.now())
    assert dispatcher.run_once().sent == 1
    job.refresh_from_db()
    token = job.dispatch_token

    def headers(job_id, token):
        return {JOB_ID_HEADER: str(job_id), DISPATCH_TOKEN_HEADER: str(token)}

    def send(task_name, headers, args=()):
        current_app.send_task(
            task_name,
            args=args,
            headers=headers,
            queue=sqs_queue.name,
            connection=broker,
        )

    send("testapp.record", headers(job.pk, token), args=[path, "forged-args"])
    send("testapp.record", {JOB_ID_HEADER: "abc", DISPATCH_TOKEN_HEADER: "not-a-uuid"})
    send("testapp.record", headers(999_999_999, uuid.uuid4()))  # no such job
    send("testapp.record", headers(job.pk, uuid.uuid4()))  # forged token
    send("testapp.record", headers(job.pk, old_token))  # an old dispatch's message
    send("testapp.noop", headers(job.pk, token))  # another task than the job's
    # A later release's message, which this one cannot know the meaning of.
    send("testapp.record", {**headers(job.pk, token), PROTOCOL_HEADER: "2"})

    assert wait_until(lambda: worker.output().count("message dropped") == 7, timeout=30), (
        worker.output()[-4000:]
    )
    assert read_runs(path) == []
    assert _status(job) == "enqueued"

    # The worker keeps going: the current message runs the job, once.
    send("testapp.record", headers(job.pk, token))
    assert wait_until(lambda: _status(job) == "succeeded", timeout=30), worker.output()[-4000:]
    assert [label for label, _ in read_runs(path)] == ["real"]
    log = worker.output()
    assert log.count("message dropped") == 7
    assert log.count("] ignored") == 7  # Celery's own line: neither success nor failure
    for reason in ("unexpected-arguments", "malformed", "not-current", "unknown-protocol"):
        assert f"reason={reason}" in log
    assert "Traceback" not in log
