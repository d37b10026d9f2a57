"""End to end: a job's body ending with Celery's own control exceptions, in a real worker.

``self.replace()`` (which raises Ignore) hands the job over to its replacement once and
the job succeeds; ``Reject(requeue=True)`` is a retry through PostgreSQL whose message
the worker acknowledges rather than requeues.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import schedule_at
from tests.conftest import SqsQueue
from tests.processes import Process, wait_until
from tests.testapp.models import Effect

pytestmark = pytest.mark.timeout(120)


def _status(job):
    job.refresh_from_db()
    return job.status


def test_replace_and_a_requeued_reject(worker: Process, beat: Process, sqs_queue: SqsQueue):
    soon = timezone.now() + timedelta(seconds=1)
    replaced = schedule_at("testapp.replaces", soon, ["swap"], max_attempts=3)
    rejected = schedule_at("testapp.rejects", soon, ["again", True], max_attempts=3)

    def ended():
        return {_status(replaced), _status(rejected)} <= {"succeeded", "failed"}

    assert wait_until(ended, timeout=30), worker.output()[-4000:]
    assert (replaced.status, rejected.status) == ("succeeded", "succeeded")

    # The replacement ran once, as an ordinary Celery message; the job once.
    assert wait_until(lambda: Effect.objects.filter(label="swap:replacement").exists(), timeout=10)
    assert [a.outcome for a in replaced.history.all()] == ["succeeded"]
    # The rejected attempt was retried from PostgreSQL, its message acknowledged: no
    # requeued copy came back to be dropped, and nothing is left in the queue.
    assert [a.outcome for a in rejected.history.order_by("number")] == ["retried", "succeeded"]
    assert wait_until(lambda: sqs_queue.count() == 0, timeout=5), sqs_queue.count()
    log = worker.output()
    assert f"message dropped job_id={rejected.pk}" not in log
    assert "retry: Retry at" in log  # Celery's view of it
    assert sorted(Effect.objects.values_list("label", flat=True)) == [
        "again:0",
        "again:1",
        "swap:body",
        "swap:replacement",
    ]
