"""Real `celery worker` and `celery beat` processes against the test database and SQS."""

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduler.dispatch.beat import ensure_dispatch_schedule
from scheduler.models import ScheduledJob
from tests import settings as base_settings
from tests import settings_fast
from tests.conftest import SqsQueue
from tests.processes import (
    BIN,
    WORKER_STOP_SIGNAL,
    Process,
    celery_beat_args,
    celery_worker_args,
    running,
    wait_until,
)

# The scheduler settings that settings_fast lowers, for this process to agree with the
# child processes.
FAST_SETTINGS = {
    name: getattr(settings_fast, name)
    for name in dir(settings_fast)
    if name.startswith("SCHEDULER_")
    and getattr(settings_fast, name) != getattr(base_settings, name, None)
}


@pytest.fixture
def e2e_env(transactional_db: None, sqs_queue: SqsQueue, settings: Any) -> dict[str, str]:
    """Environment for child processes: this test's database, SQS server and queue."""
    for name, value in FAST_SETTINGS.items():
        setattr(settings, name, value)
    db = connection.settings_dict
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings_fast",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "SQS_ENDPOINT_URL": settings.SCHEDULER_SQS_ENDPOINT_URL,
        "SCHEDULER_QUEUE_NAME": sqs_queue.name,
    }


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str], node: str = "e2e", *, concurrency: int = 2
) -> Iterator[Process]:
    """A `celery worker` consuming the test's queue, started and ready, stopped on exit."""
    args = celery_worker_args(queue=env["SCHEDULER_QUEUE_NAME"], name=node, concurrency=concurrency)
    with running(f"worker-{node}", args, env, stop_signal=WORKER_STOP_SIGNAL) as process:
        process.wait_for_output("ready.", timeout=60)
        yield process


@pytest.fixture
def worker(e2e_env: dict[str, str]) -> Iterator[Process]:
    with celery_worker(e2e_env) as process:
        yield process


@contextlib.contextmanager
def celery_beat(env: dict[str, str], *, pidfile: Any) -> Iterator[Process]:
    """`celery beat` (the dispatcher), started, stopped on exit."""
    ensure_dispatch_schedule()
    with running("beat", celery_beat_args(pidfile=pidfile), env) as process:
        process.wait_for_output("beat: Starting", timeout=60)
        yield process


@pytest.fixture
def beat(e2e_env: dict[str, str], tmp_path: Any) -> Iterator[Process]:
    with celery_beat(e2e_env, pidfile=tmp_path / "beat.pid") as process:
        yield process


@pytest.fixture
def dispatch_command(e2e_env: dict[str, str]) -> Iterator[Process]:
    """`python manage.py scheduler_dispatch`, the dispatcher loop without beat."""
    args = [str(BIN / "python"), "manage.py", "scheduler_dispatch"]
    with running("scheduler_dispatch", args, e2e_env) as process:
        process.wait_for_output("dispatch tick", timeout=60)
        yield process


@pytest.fixture
def sqs_sends_stuck(e2e_env: dict[str, str]) -> dict[str, str]:
    """``e2e_env`` with a dispatcher's sends to SQS never answered
    (tests.settings_sqs_sends_stuck)."""
    return {**e2e_env, "DJANGO_SETTINGS_MODULE": "tests.settings_sqs_sends_stuck"}


def a_burst_due_now(queue: str) -> list[ScheduledJob]:
    """More due jobs than one SendMessageBatch takes: the dispatcher's send threads go."""
    return ScheduledJob.objects.bulk_create(
        ScheduledJob(task_name="testapp.noop", queue=queue, run_at=timezone.now(), max_attempts=1)
        for _ in range(30)
    )


def a_batch_stuck_sending() -> bool:
    """Whether another connection's transaction has been open and idle for a second: a
    dispatcher's batch, its rows claimed, waiting on its sends. Read without locking a
    row: a probe that locked one made the batch's claim skip it (SKIP LOCKED)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'idle in transaction' "
            "AND state_change < now() - interval '1 second')"
        )
        (stuck,) = cursor.fetchone()
        return bool(stuck)


def held_by_a_tick(job: ScheduledJob) -> bool:
    """Whether a dispatcher's open transaction holds ``job``'s row."""
    with transaction.atomic():
        free = ScheduledJob.objects.select_for_update(skip_locked=True).filter(pk=job.pk)
        return not free.exists()


def ctrl_c_twice_in_a_stuck_tick(process: Process, jobs: list[ScheduledJob]) -> str:
    """Ctrl-C, then Ctrl-C again, while ``process``'s tick holds ``jobs`` (its sends
    stuck on SQS); its output, once it has exited as a cut-short tick must."""
    assert wait_until(a_batch_stuck_sending, timeout=30), process.output()
    assert all(held_by_a_tick(job) for job in jobs), process.output()
    process.popen.send_signal(signal.SIGINT)
    time.sleep(1)
    assert process.popen.poll() is None, "the first Ctrl-C waits for the tick"
    stopped = time.monotonic()
    process.popen.send_signal(signal.SIGINT)
    assert process.popen.wait(30) == 130, process.output()
    assert time.monotonic() - stopped < 3, process.output()
    output = process.output()
    assert "Traceback" not in output, output
    # Rolled back: the jobs stay as they were.
    assert {(job.status, job.dispatch_token) for job in ScheduledJob.objects.all()} == {
        ("scheduled", None)
    }
    return output
