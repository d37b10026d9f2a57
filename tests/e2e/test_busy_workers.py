"""A worker whose every process runs a long job leaves due jobs to a worker that is free;
one whose processes run a burst's short jobs keeps receiving.

Celery acknowledges a message as its task starts, which frees the message's prefetch
slot: a worker busy with a long capture took one more message, and that job waited for
the capture to end while another worker sat idle (38 s late behind a 45 s task).
"""

import re
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone
from kombu import Connection

from scheduler import schedule_at, schedule_many
from scheduler.conf import scheduler_settings
from scheduler.models import JobAttempt, ScheduledJob
from tests.conftest import SqsQueue
from tests.e2e.conftest import celery_worker
from tests.processes import WORKER_STOP_SIGNAL, Process, celery_worker_args, running, wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import effect, read_runs

pytestmark = pytest.mark.timeout(120)

LONG_JOB_SECONDS = 20


def _status(job: ScheduledJob) -> str:
    job.refresh_from_db()
    return job.status


def _messages(queue: SqsQueue) -> dict[str, int]:
    attributes = queue.client.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "waiting": int(attributes["ApproximateNumberOfMessages"]),
        "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    }


def test_a_due_job_waits_in_sqs_for_a_free_process_not_behind_a_long_job(
    e2e_env: dict[str, str], beat: Process, sqs_queue: SqsQueue
) -> None:
    with celery_worker(e2e_env, "busy", concurrency=1) as busy:
        # Celery's own warning that it ignores the setting on SQS would be untrue.
        assert "receiving only what the pool can start driver=sqs" in busy.output()
        assert "only supported for Redis" not in busy.output()
        long = schedule_at(
            "testapp.effect", timezone.now(), ["long"], {"seconds": LONG_JOB_SECONDS}
        )
        assert wait_until(lambda: _status(long) == "running", timeout=30), busy.output()[-3000:]
        due = schedule_at("testapp.effect", timezone.now() + timedelta(seconds=3), ["due"])
        # Its message is visible DELIVERY_LEAD before run_at; a second past run_at the
        # busy worker has not taken it: it waits in SQS, for any worker's free process.
        assert wait_until(lambda: timezone.now() > due.run_at + timedelta(seconds=1), timeout=10)
        assert scheduler_settings.DELIVERY_LEAD_SECONDS < 3
        assert _status(due) == "enqueued"
        assert _messages(sqs_queue) == {"waiting": 1, "in_flight": 0}, busy.output()[-3000:]

        with celery_worker(e2e_env, "free", concurrency=1) as free:
            assert wait_until(lambda: _status(due) == "succeeded", timeout=30), (
                f"{free.output()[-3000:]}\n{busy.output()[-3000:]}"
            )
            attempt = JobAttempt.objects.get(job=due)
            assert attempt.worker.startswith("free@")
            # The long job was still running: the due job did not wait for it.
            assert _status(long) == "running"
            assert attempt.started_at is not None
            assert long.started_at is not None
            assert attempt.started_at < long.started_at + timedelta(seconds=LONG_JOB_SECONDS)
        # The busy worker fetches again once its process is free: the next job runs there.
        assert wait_until(lambda: _status(long) == "succeeded", timeout=LONG_JOB_SECONDS + 10)
        after = schedule_at("testapp.effect", timezone.now(), ["after"])
        started = time.monotonic()
        assert wait_until(lambda: _status(after) == "succeeded", timeout=15), busy.output()[-3000:]
        assert time.monotonic() - started < 5
        assert JobAttempt.objects.get(job=after).worker.startswith("busy@")


def test_a_job_due_while_its_worker_runs_a_long_task_goes_back_to_sqs(
    e2e_env: dict[str, str], broker: Connection, sqs_queue: SqsQueue, settings: Any
) -> None:
    # Sent by this process with a long lead, the job's message reaches the worker while
    # its one process is free; the worker holds it until its eta.
    settings.SCHEDULER_LOOKAHEAD_SECONDS = 4
    settings.SCHEDULER_DELIVERY_LEAD_SECONDS = 3.5
    with celery_worker(e2e_env, "busy", concurrency=1) as busy:
        due = schedule_at("testapp.effect", timezone.now() + timedelta(seconds=4), ["due"])
        call_command("scheduler_dispatch", "--once", stdout=StringIO())
        assert wait_until(lambda: busy.output().count("] received") == 1, timeout=5)
        # Then a long plain task takes the process, well before the job is due.
        options: dict[str, Any] = {"queue": sqs_queue.name, "connection": broker}
        effect.apply_async(("long", LONG_JOB_SECONDS), **options)
        assert wait_until(lambda: Effect.objects.filter(label="long").exists(), timeout=5)
        assert timezone.now() < due.run_at - timedelta(seconds=1.5)

        # Due behind it, the job's message goes back to SQS; no worker holds it.
        assert wait_until(lambda: timezone.now() > due.run_at + timedelta(seconds=1), timeout=10)
        assert f"job message handed back job_id={due.pk} " in busy.output()
        assert _status(due) == "enqueued"
        assert _messages(sqs_queue) == {"waiting": 1, "in_flight": 0}, busy.output()[-3000:]

        with celery_worker(e2e_env, "free", concurrency=1) as free:
            assert wait_until(lambda: _status(due) == "succeeded", timeout=30), (
                f"{free.output()[-3000:]}\n{busy.output()[-3000:]}"
            )
            assert JobAttempt.objects.get(job=due).worker.startswith("free@")
            assert Effect.objects.filter(label="due").count() == 1


def test_a_job_due_with_a_long_one_on_a_busy_worker_goes_back_once_that_one_is_long(
    e2e_env: dict[str, str], sqs_queue: SqsQueue, settings: Any
) -> None:
    # Two jobs due at the same instant, both held by a worker of one process: the one
    # that does not get the process waits for it, and the worker cannot yet tell that
    # the other is long. It waited behind it; it goes back once that one has run a while.
    settings.SCHEDULER_LOOKAHEAD_SECONDS = 4
    settings.SCHEDULER_DELIVERY_LEAD_SECONDS = 3.5
    with celery_worker(e2e_env, "busy", concurrency=1) as busy:
        run_at = timezone.now() + timedelta(seconds=4)
        jobs = schedule_many(
            {
                "task": "testapp.effect",
                "run_at": run_at,
                "args": [label],
                "kwargs": {"seconds": LONG_JOB_SECONDS},
            }
            for label in ("a", "b")
        )
        call_command("scheduler_dispatch", "--once", stdout=StringIO())
        assert wait_until(lambda: busy.output().count("] received") == 2, timeout=5)
        assert timezone.now() < run_at - timedelta(seconds=1)

        assert wait_until(lambda: "job message handed back" in busy.output(), timeout=10), (
            busy.output()[-3000:]
        )
        assert timezone.now() < run_at + timedelta(seconds=LONG_JOB_SECONDS / 2)
        assert sorted(_status(job) for job in jobs) == ["enqueued", "running"]
        assert wait_until(
            lambda: _messages(sqs_queue) == {"waiting": 1, "in_flight": 0}, timeout=2
        ), busy.output()[-3000:]
        (first,) = [job for job in jobs if _status(job) == "running"]
        (second,) = [job for job in jobs if job != first]

        with celery_worker(e2e_env, "free", concurrency=1) as free:
            assert wait_until(lambda: _status(second) == "running", timeout=30), (
                f"{free.output()[-3000:]}\n{busy.output()[-3000:]}"
            )
            assert JobAttempt.objects.get(job=second).worker.startswith("free@")
            assert JobAttempt.objects.get(job=first).worker.startswith("busy@")
            assert _status(first) == "running"


def test_a_burst_of_short_jobs_drains_while_its_worker_keeps_receiving(
    e2e_env: dict[str, str], beat: Process, broker: Connection, sqs_queue: SqsQueue, tmp_path: Any
) -> None:
    # More than reach the worker during the delivery lead: the rest are received while
    # both processes run the first ones. Received only for free processes, one receive
    # per finished job, 300 took 9 s, nine times plain Celery's drain of the same on
    # the same worker (here about twice); measured against it, as load varies.
    count = 300
    runs = tmp_path / "runs"
    with celery_worker(e2e_env, "burst", concurrency=2) as worker:
        instant = timezone.now() + timedelta(seconds=5)
        jobs = schedule_many(
            {"task": "testapp.record", "run_at": instant, "args": [str(runs), "job"]}
            for _ in range(count)
        )
        ids = [job.pk for job in jobs]
        assert wait_until(
            lambda: ScheduledJob.objects.filter(pk__in=ids, status="succeeded").count() == count,
            timeout=40,
        ), worker.output()[-3000:]
        # Plain Celery: messages with an eta, which the worker receives at once and holds.
        # Sent one by one: 300 took more than 7 s on a loaded machine.
        celery_instant = timezone.now() + timedelta(seconds=15)
        for _ in range(count):
            current_app.send_task(
                "testapp.record",
                (str(runs), "celery"),
                eta=celery_instant,
                queue=sqs_queue.name,
                connection=broker,
            )
        assert timezone.now() < celery_instant - timedelta(seconds=1)
        assert wait_until(
            lambda: sum(label == "celery" for label, _ in read_runs(runs)) == count, timeout=40
        ), worker.output()[-3000:]
    starts = {
        label: [at for run_label, at in read_runs(runs) if run_label == label]
        for label in ("job", "celery")
    }
    assert len(starts["job"]) == len(starts["celery"]) == count
    assert min(starts["job"]) >= instant.timestamp()
    job_drain = max(starts["job"]) - instant.timestamp()
    celery_drain = max(starts["celery"]) - celery_instant.timestamp()
    assert job_drain < 4 * celery_drain + 0.5, (job_drain, celery_drain)


def test_a_pool_without_the_event_loop_keeps_celerys_prefetch_and_says_so(
    e2e_env: dict[str, str],
) -> None:
    # The threads pool ends tasks in other threads, unseen by the event loop: bounded,
    # the worker would stop receiving for good or hand jobs back to itself.
    args = [
        *celery_worker_args(queue=e2e_env["SCHEDULER_QUEUE_NAME"], name="threads"),
        "-P",
        "threads",
    ]
    with running("worker-threads", args, e2e_env, stop_signal=WORKER_STOP_SIGNAL) as worker:
        worker.wait_for_output("ready.", timeout=60)
        assert "worker_disable_prefetch ignored driver=sqs hint=--pool=prefork" in worker.output()
        assert "receiving only what the pool can start" not in worker.output()
        job = schedule_at("testapp.effect", timezone.now(), ["threads"])
        call_command("scheduler_dispatch", "--once", stdout=StringIO())
        assert wait_until(lambda: _status(job) == "succeeded", timeout=15), worker.output()[-3000:]
    # Several deliveries share the process: its attempt names the thread too.
    [attempt] = JobAttempt.objects.filter(job_id=job.pk)
    assert re.fullmatch(r"threads@\S+:\d+:[0-9a-f]{4}/\d+", attempt.worker), attempt.worker
