"""`/metrics` on a real web process tells what two workers and two dispatchers did.

Jobs succeed, fail, wait far ahead and get cancelled across two `celery worker` and two
`scheduler_dispatch` processes; the web process's /metrics (behind a bearer token) must
then equal what the database holds, whichever process did the work.
"""

import contextlib
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from django.db.models import DurationField, ExpressionWrapper, F
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from scheduler import cancel, schedule_in
from scheduler.integrations.metrics import LATENESS_BUCKETS
from scheduler.models import DispatcherHeartbeat, JobAttempt, ScheduledJob
from tests.conftest import SqsQueue
from tests.processes import BIN, WORKER_STOP_SIGNAL, Process, free_port, running, wait_until

pytestmark = pytest.mark.timeout(180)

TOKEN = "e2e-metrics-token"


@contextlib.contextmanager
def processes(env: dict[str, str], web_port: int) -> Iterator[dict[str, Process]]:
    """Two workers, two dispatchers and a web server, all stopped on the way out."""
    celery = [str(BIN / "celery"), "-A", "project", "worker", "--loglevel=INFO"]
    celery += ["--concurrency=1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    celery += ["-Q", env["SCHEDULER_QUEUE_NAME"]]
    manage = [str(BIN / "python"), "manage.py"]
    commands = {
        "worker-a": [*celery, "-n", "metrics-a@%h"],
        "worker-b": [*celery, "-n", "metrics-b@%h"],
        "dispatcher-a": [*manage, "scheduler_dispatch"],
        "dispatcher-b": [*manage, "scheduler_dispatch"],
        "web": [*manage, "runserver", f"127.0.0.1:{web_port}", "--noreload"],
    }
    with contextlib.ExitStack() as stack:
        started = {
            name: stack.enter_context(
                running(
                    name,
                    command,
                    {**env, "SCHEDULER_METRICS_TOKEN": TOKEN},
                    stop_signal=WORKER_STOP_SIGNAL if name.startswith("worker") else signal.SIGTERM,
                )
            )
            for name, command in commands.items()
        }
        for name, process in started.items():
            ready = {"worker": "ready.", "dispatcher": "dispatch tick", "web": "Starting"}
            process.wait_for_output(ready[name.split("-")[0]], timeout=60)
        yield started


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_match_the_database_with_two_workers_and_two_dispatchers(
    e2e_env: dict[str, str], sqs_queue: SqsQueue, tmp_path
):
    dlq = sqs_queue.client.create_queue(QueueName=f"{sqs_queue.name}-dlq")["QueueUrl"]
    for n in range(2):
        sqs_queue.client.send_message(QueueUrl=dlq, MessageBody=f"poison {n}")
    runs = str(tmp_path / "runs")
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}/metrics"
    with processes(e2e_env, web_port) as started:
        due = [schedule_in("testapp.record", 1 + n % 3, [runs, f"ok{n}"]) for n in range(16)] + [
            schedule_in("testapp.fail", 2, [runs, f"ko{n}"], max_attempts=1) for n in range(4)
        ]
        for days in (1, 2, 3):
            schedule_in("testapp.noop", timedelta(days=days))
        cancel(schedule_in("testapp.noop", timedelta(days=1)))
        ids = [job.pk for job in due]

        def all_done() -> bool:
            finished = ScheduledJob.objects.filter(pk__in=ids, status__in=["succeeded", "failed"])
            return finished.count() == len(ids)

        assert wait_until(all_done, timeout=60, interval=0.5)
        assert requests.get(url, timeout=10).status_code == 401
        # Both dispatchers ticked, and both workers ran jobs.
        workers = set(JobAttempt.objects.values_list("worker", flat=True))
        assert {name.split("@")[0] for name in workers} == {"metrics-a", "metrics-b"}
        # Stop the dispatchers so that the figures hold still while they are compared.
        for name in ("dispatcher-a", "dispatcher-b"):
            started[name].stop()
        samples = scrape(url)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    statuses = Counter(ScheduledJob.objects.values_list("status", flat=True))
    assert statuses == {"succeeded": 16, "failed": 4, "scheduled": 3, "cancelled": 1}
    for status in ScheduledJob.Status:
        assert value("scheduler_jobs", status=status) == statuses.get(status, 0)
    assert value("scheduler_jobs_overdue") == 0
    assert value("scheduler_jobs_due_next_minute") == 0
    assert value("scheduler_dlq_messages", queue=f"{sqs_queue.name}-dlq") == 2

    heartbeats = list(DispatcherHeartbeat.objects.all())
    assert len(heartbeats) == 2
    for row in heartbeats:
        labels = {"dispatcher": row.dispatcher}
        assert value("scheduler_dispatched_total", **labels) == row.sent_total
        assert value("scheduler_dispatch_errors_total", **labels) == row.errors_total == 0
        assert (
            value("scheduler_dispatcher_last_tick_timestamp_seconds", **labels)
            == row.last_tick_at.timestamp()
        )
    # Every job was sent once, whichever dispatcher sent it: one attempt per message.
    assert sum(row.sent_total for row in heartbeats) == JobAttempt.objects.count() == 20

    late = ExpressionWrapper(F("started_at") - F("scheduled_for"), output_field=DurationField())
    attempts = JobAttempt.objects.annotate(late=late).values_list("job__task_name", "late")
    by_task: dict[str, list[float]] = {}
    for task_name, lateness in attempts:
        by_task.setdefault(task_name, []).append(lateness.total_seconds())
    assert set(by_task) == {"testapp.record", "testapp.fail"}
    for task_name, seconds in by_task.items():
        task = {"task": task_name}
        for bound in LATENESS_BUCKETS:
            expected = sum(1 for s in seconds if s <= bound)
            assert value("scheduler_job_lateness_seconds_bucket", le=str(bound), **task) == expected
        assert value("scheduler_job_lateness_seconds_gcount", **task) == len(seconds)
        assert value("scheduler_job_lateness_seconds_gsum", **task) == pytest.approx(sum(seconds))
    outcomes = Counter(JobAttempt.objects.values_list("job__task_name", "outcome"))
    assert outcomes == {("testapp.record", "succeeded"): 16, ("testapp.fail", "error"): 4}
    for (task_name, outcome), count in outcomes.items():
        assert value("scheduler_job_attempts", task=task_name, outcome=outcome) == count
    assert timezone.now() - max(row.last_tick_at for row in heartbeats) < timedelta(minutes=1)
