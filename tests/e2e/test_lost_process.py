"""End to end with the default lease of 60 s: a job whose pool process is lost (killed,
out of memory, past its hard time limit) under a live worker is retried after the error
back-off (a second here), not a lease later; the worker saw the process go."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from tests.e2e.conftest import celery_worker
from tests.processes import wait_until
from tests.testapp.models import Effect
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)

#: Well within the lease (60 s): the dispatcher's tick and SQS's hand-over.
AT_ONCE = 15


def _job(pk):
    return ScheduledJob.objects.get(pk=pk)


def _pool_processes(main_pid: int) -> list[int]:
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_killed_pool_process_s_job_is_retried_at_once(worker, dispatch_command, tmp_path):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.sleep_first", timezone.now(), [path, "killed", 60])
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=20), worker.output()[-4000:]

    for pid in _pool_processes(worker.popen.pid):  # as an out-of-memory killer would
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_until(lambda: _job(job.pk).status == "succeeded", timeout=AT_ONCE), worker.output()[
        -4000:
    ]
    assert time.monotonic() - killed_at < AT_ONCE
    job = _job(job.pk)
    assert job.attempts == 2
    first, second = job.history.order_by("number")
    assert (first.outcome, second.outcome) == ("lease_expired", "succeeded")
    assert first.error.startswith("worker process lost: Worker exited prematurely: signal 9")
    assert [label for label, _ in read_runs(path)] == ["killed:0", "killed:1"]


def test_a_hard_time_limit_kills_the_attempt_and_the_job_is_retried_at_once(
    worker, dispatch_command, tmp_path
):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.time_limited", timezone.now(), [path, "limited"])
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=20), worker.output()[-4000:]
    started_at = time.monotonic()
    assert wait_until(lambda: _job(job.pk).status == "succeeded", timeout=AT_ONCE), worker.output()[
        -4000:
    ]
    assert time.monotonic() - started_at < AT_ONCE
    [lost] = [line for line in worker.output().splitlines() if "job process lost" in line]
    assert lost.endswith(
        f"job process lost job_id={job.pk} task=testapp.time_limited reason=hard time limit "
        "(1s) exceeded: no failure of the call, the job retried"
    )
    # No failure of the call: Celery sent task_failure (a payment marked failed, an
    # alert), and the job then ran again and succeeded.
    assert not Effect.objects.filter(label="task_failure testapp.time_limited").exists()
    assert Effect.objects.filter(label="task_success testapp.time_limited").exists()
    first, second = _job(job.pk).history.order_by("number")
    assert (first.outcome, second.outcome) == ("lease_expired", "succeeded")
    assert first.error == "worker process lost: hard time limit (1s) exceeded"
    assert [label for label, _ in read_runs(path)] == ["limited:0", "limited:1"]


@pytest.mark.parametrize(
    "text", ["exit: \x00 in the output", "cannot open /data/\udcff.csv"], ids=["nul", "surrogate"]
)
def test_a_body_that_exits_with_text_postgresql_cannot_store_frees_its_process(
    e2e_env, dispatch_command, tmp_path, text
):
    # sys.exit() with a message PostgreSQL cannot take (a file name's undecodable byte):
    # storing it as the attempt's error raised out of the worker's failure handler before
    # Celery's own, so the worker counted the process busy for ever: with one process it
    # took no job again, and the job stayed running until its lease.
    path = str(tmp_path / "runs")
    with celery_worker(e2e_env, concurrency=1) as worker:
        exiting = schedule_at(
            "testapp.exits_with_text", timezone.now(), [path, "exits", [ord(c) for c in text]]
        )
        assert wait_until(lambda: _job(exiting.pk).status == "succeeded", timeout=AT_ONCE), (
            worker.output()[-4000:]
        )
        later = schedule_at("testapp.record", timezone.now(), [path, "later"])
        assert wait_until(lambda: _job(later.pk).status == "succeeded", timeout=AT_ONCE), (
            worker.output()[-4000:]
        )
    first, second = _job(exiting.pk).history.order_by("number")
    assert (first.outcome, second.outcome) == ("lease_expired", "succeeded")
    stored = text.replace("\x00", "\ufffd").replace("\udcff", "\ufffd")
    assert first.error == f"worker process lost: {stored}"
    assert [label for label, _ in read_runs(path)] == ["exits:0", "exits:1", "later"]
