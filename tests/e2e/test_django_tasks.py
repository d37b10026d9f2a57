"""django.tasks end to end: deferred tasks run on a real Celery worker, results read back.

The test process enqueues through django.tasks (Django 6.0's, or the backport on 5.2);
a real beat dispatches, the moto SQS server delays, a real worker runs each function
under its own name; get_result()/refresh() then read status, return value and errors.
"""

from datetime import timedelta
from typing import TYPE_CHECKING

import django
import pytest
from django.utils import timezone

from tests.processes import wait_until
from tests.tasksapp import tasks
from tests.testapp.tasks import read_runs

if TYPE_CHECKING or django.VERSION < (6, 0):
    from django_tasks import TaskResultStatus
else:
    from django.tasks import TaskResultStatus

pytestmark = pytest.mark.timeout(120)


def test_deferred_tasks_run_on_a_worker_and_their_results_are_read_back(
    worker, beat, tmp_path, settings
):
    # One attempt, so that the failing task fails now rather than after its retries.
    settings.TASKS = {
        "default": {
            "BACKEND": "scheduler.backends.SchedulerBackend",
            "OPTIONS": {"MAX_ATTEMPTS": 1},
        }
    }
    path = str(tmp_path / "runs")
    soon = timezone.now() + timedelta(seconds=3)
    recorded = tasks.record.using(run_after=soon).enqueue(path, "deferred")
    context = tasks.whoami.using(run_after=soon).enqueue("ctx")
    exploded = tasks.explode.using(run_after=soon).enqueue("boom")
    awaited = tasks.add_later.using(run_after=soon).enqueue(2, 3)
    results = [recorded, context, exploded, awaited]
    assert {result.status for result in results} == {TaskResultStatus.READY}

    def finished() -> bool:
        for result in results:
            result.refresh()
        return all(result.is_finished for result in results)

    assert wait_until(finished, timeout=60, interval=0.5), worker.output()[-5000:]

    assert recorded.status == TaskResultStatus.SUCCESSFUL
    assert recorded.return_value == {"label": "deferred", "values": [1, 2]}
    [(label, ran_at)] = read_runs(path)
    assert label == "deferred"
    assert ran_at >= soon.timestamp()  # never early
    assert recorded.started_at >= soon
    assert recorded.attempts == 1

    assert context.status == TaskResultStatus.SUCCESSFUL
    assert context.return_value == {"id": context.id, "attempt": 1, "label": "ctx"}

    assert awaited.status == TaskResultStatus.SUCCESSFUL
    assert awaited.return_value == 5

    assert exploded.status == TaskResultStatus.FAILED
    [error] = exploded.errors
    assert error.exception_class is ValueError
    assert "boom" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = exploded.return_value

    # The worker ran each function under its own name.
    log = worker.output()
    for result in results:
        assert result.task.module_path in log
