"""A worker stopped for a deploy (SIGTERM: Celery's warm shutdown) while jobs come due.

It holds messages it received ahead of their eta; another worker must run their jobs on
time, not once SQS's visibility timeout (300 s) or the re-send of stale jobs (60 s
here) gives them back.
"""

import re
import signal
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.core.management import call_command
from django.utils import timezone
from kombu import Connection

from scheduler import schedule_at, schedule_many
from scheduler.models import JobAttempt, ScheduledJob
from tests.chaos.harness import SqsServer
from tests.conftest import SqsQueue, sqs_client
from tests.e2e.conftest import celery_worker
from tests.processes import Process, wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(180)

#: Jobs due one every SPACING seconds, from a few seconds after the workers are ready.
COUNT, SPACING = 40, timedelta(seconds=0.25)


#: The leaving worker's long job: it outlasts the test.
LONG_JOB_SECONDS = 60


def _ran_on(worker: str) -> int:
    return JobAttempt.objects.filter(worker__startswith=f"{worker}@").count()


def test_a_worker_stopped_for_a_deploy_hands_its_jobs_on(e2e_env, beat: Process):
    with celery_worker(e2e_env, "stays") as stays, celery_worker(e2e_env, "leaves") as leaves:
        start = timezone.now() + timedelta(seconds=3)
        jobs = [
            schedule_at("testapp.effect", start + i * SPACING, [f"deploy-{i}"])
            for i in range(COUNT)
        ]
        # Stopped once it has run some and holds others, ahead of their eta.
        assert wait_until(lambda: _ran_on("leaves") >= 1, timeout=30), leaves.output()[-3000:]
        # As ECS, Kubernetes or systemd's main-process stop does: SIGTERM to the worker.
        leaves.popen.send_signal(signal.SIGTERM)
        assert leaves.popen.wait(30) == 0, leaves.output()[-3000:]
        # The jobs' messages it handed back, held until their eta, and kombu's lines for
        # those it received as the consumer stopped.
        output = leaves.output()
        released = re.findall(r"(?:Restoring|releasing) (\d+) ", output)
        handed_back = output.count("reason=worker-stopping") + sum(map(int, released))
        assert handed_back > 0, output[-3000:]

        ids = [job.pk for job in jobs]
        assert wait_until(
            lambda: ScheduledJob.objects.filter(pk__in=ids, status="succeeded").count() == COUNT,
            timeout=40,
        ), f"{stays.output()[-3000:]}\n{leaves.output()[-3000:]}"
    rows = ScheduledJob.objects.filter(pk__in=ids).values_list("pk", "run_at", "started_at")
    late = {pk: (started - run_at).total_seconds() for pk, run_at, started in rows if started}
    assert len(late) == COUNT
    assert max(late.values()) < 5, sorted(late.items(), key=lambda item: -item[1])[:5]
    assert min(late.values()) >= 0
    assert Effect.objects.filter(label__startswith="deploy-").count() == COUNT
    assert _ran_on("stays") > 0


def test_a_worker_stopped_while_it_runs_a_long_job_hands_back_the_jobs_it_holds_at_once(
    e2e_env: dict[str, str], sqs_queue: SqsQueue, settings: Any, tmp_path: Path
) -> None:
    # Celery hands back what a stopping worker holds only once its pool has ended its
    # running jobs: jobs it held until their eta ran as late as its long job had left to
    # run, or, the worker killed at its stop timeout, after the visibility timeout.
    sqs_queue.client.set_queue_attributes(
        QueueUrl=sqs_queue.url,
        Attributes={"VisibilityTimeout": "300"},  # as the project's
    )
    # Sent by this process with a long lead, their messages reach the leaving worker at
    # once: it holds them until their eta.
    settings.SCHEDULER_LOOKAHEAD_SECONDS = 40
    settings.SCHEDULER_DELIVERY_LEAD_SECONDS = 35
    runs = str(tmp_path / "runs")
    with celery_worker(e2e_env, "leaves") as leaves:
        # Due a few seconds after the stop, while the worker's long poll in flight (its
        # other process is free) may still wait; or well after it.
        soon = timezone.now() + timedelta(seconds=14)
        later = soon + timedelta(seconds=18)
        jobs = schedule_many(
            {"task": "testapp.record", "run_at": run_at + i * SPACING, "args": [runs, label]}
            for run_at, label in ((soon, "soon"), (later, "later"))
            for i in range(2)
        )
        schedule_at("testapp.sleep_first", timezone.now(), [runs, "long", LONG_JOB_SECONDS])
        call_command("scheduler_dispatch", "--once", stdout=StringIO())
        assert wait_until(
            lambda: leaves.output().count("testapp.record[") == 4 and len(read_runs(runs)) == 1,
            timeout=10,
        ), leaves.output()[-3000:]
        # Started now, the other worker finds none of them in SQS.
        with celery_worker(e2e_env, "stays") as stays:
            stop_at = soon - timedelta(seconds=3)
            assert timezone.now() < stop_at, "the workers started too slowly"
            time.sleep((stop_at - timezone.now()).total_seconds())
            leaves.popen.send_signal(signal.SIGTERM)
            ids = [job.pk for job in jobs]
            ran = wait_until(
                lambda: ScheduledJob.objects.filter(pk__in=ids, status="succeeded").count() == 4,
                timeout=(later - timezone.now()).total_seconds() + 15,
            )
            statuses = list(
                ScheduledJob.objects.filter(pk__in=ids).values_list("status", flat=True)
            )
            assert ran, f"{statuses}\n{leaves.output()[-3000:]}\n{stays.output()[-3000:]}"
            # The long job still runs: the stop timeout need not cover it for their sake.
            assert leaves.popen.poll() is None
            output = leaves.output()
    rows = ScheduledJob.objects.filter(pk__in=ids).values_list("pk", "run_at", "started_at")
    late = {pk: (started - run_at).total_seconds() for pk, run_at, started in rows if started}
    assert len(late) == 4
    assert min(late.values()) >= 0, late
    assert max(late.values()) < 3, late
    labels = sorted(label for label, _ in read_runs(runs))
    assert labels == ["later", "later", "long:0", "soon", "soon"]
    assert JobAttempt.objects.filter(job_id__in=ids).count() == _ran_on("stays") == 4
    for pk in ids:
        assert f"job message handed back job_id={pk} reason=worker-stopping" in output, output
    assert "sqs hand back failed" not in output, output


def test_a_worker_stopped_while_it_waits_for_messages_hands_back_what_the_wait_brings(
    e2e_env: dict[str, str], sqs_queue: SqsQueue, broker: Connection
) -> None:
    # SQS answers a long poll whose client has gone: what it brings stays hidden for the
    # queue's visibility timeout (30 s for this test's queue, 300 s as the project
    # creates it). The worker's receive, in flight at the stop, must be answered first.
    with celery_worker(e2e_env, "leaves", concurrency=1) as leaves:
        time.sleep(0.5)  # its first long poll is in flight
        leaves.popen.send_signal(signal.SIGTERM)
        leaves.wait_for_output("Warm shutdown", timeout=10)
        time.sleep(1.5)  # its consumer is cancelled by then; its long poll (10 s) is not over
        sent = time.monotonic()
        # Held until its eta, had the worker received it before its consumer stopped.
        current_app.send_task(
            "testapp.noop",
            eta=timezone.now() + timedelta(hours=1),
            queue=sqs_queue.name,
            connection=broker,
        )
        assert leaves.popen.wait(30) == 0, leaves.output()[-3000:]
        handed_back = re.findall(r"(?:Restoring|releasing) (\d+) ", leaves.output())
        assert handed_back == ["1"], leaves.output()[-3000:]
    messages = sqs_queue.receive(wait=5)
    assert [message["headers"]["task"] for message in messages] == ["testapp.noop"]
    assert time.monotonic() - sent < 10


def test_a_worker_stopped_while_sqs_stalls_exits_within_a_stop_timeout(
    e2e_env: dict[str, str], sqs_queue: SqsQueue
) -> None:
    # On the project's SQS client (2 tries of 15 s), each message the worker held was
    # handed back in 30 s: four took two minutes, past ECS's stop timeout (30 s), whose
    # SIGKILL would then have cut the rest of the shutdown short.
    server = SqsServer()  # of this test's own, to stop (SIGSTOP)
    server.start()
    try:
        sqs_client(server.endpoint).create_queue(QueueName=sqs_queue.name)
        env = {**e2e_env, "SQS_ENDPOINT_URL": server.endpoint}
        host = server.endpoint.removeprefix("http://")
        with (
            celery_worker(env, "leaves", concurrency=1) as leaves,
            Connection(
                f"sqs://local:local@{host}",
                transport_options={"region": "us-east-1", "is_secure": False},
            ) as broker,
        ):
            for _ in range(4):  # held until their eta by the worker
                current_app.send_task(
                    "testapp.noop",
                    eta=timezone.now() + timedelta(hours=1),
                    queue=sqs_queue.name,
                    connection=broker,
                )
            assert wait_until(lambda: leaves.output().count("] received") == 4, timeout=20), (
                leaves.output()[-3000:]
            )
            server.pause()
            stopped = time.monotonic()
            leaves.popen.send_signal(signal.SIGTERM)
            # Its long poll in flight, awaited (10 s and a margin of 2), then the restore.
            assert leaves.popen.wait(30) == 0, leaves.output()[-3000:]
            elapsed = time.monotonic() - stopped
            output = leaves.output()
    finally:
        server.stop()
    assert elapsed < 20, output[-3000:]
    assert "Restoring 4 unacknowledged message(s)" in output, output[-3000:]
    assert output.count("sqs hand back") == 1, output[-3000:]
    assert f"sqs hand backs given up queue={sqs_queue.name} messages=4 " in output, output[-3000:]
