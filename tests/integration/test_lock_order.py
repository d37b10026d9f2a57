"""Writers that lock several jobs' rows lock them in id order, as the operators' bulk
actions do: two in opposite orders deadlock, and PostgreSQL fails one of them."""

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from scheduler.dispatch.dispatcher import Dispatcher, TickResult
from scheduler.dispatch.publisher import OutgoingMessage, PublishResult
from scheduler.models import ScheduledJob
from scheduler.services import bulk
from tests.conftest import job_row_held_elsewhere
from tests.factories import make_jobs
from tests.processes import wait_until


class StallingPublisher:
    """SQS that takes a while, then refuses every message (throttled)."""

    def __init__(self) -> None:
        self.called, self.go_on = threading.Event(), threading.Event()

    def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
        self.called.set()
        self.go_on.wait(10)
        return PublishResult(sent=[], failed={m.job_id: "Throttling" for m in messages})


def _deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        (count,) = cursor.fetchone()
        return int(count)


def _waiting_for_locks() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return {pid for (pid,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)  # the dispatcher, the operator, another batch
def test_copies_given_back_wait_in_id_order_behind_an_operators_bulk_action() -> None:
    # The copies SQS refused were given back in the order the plan read them (here the
    # table's), the bulk action's rows in id order: each waited for the other, and
    # PostgreSQL failed one: the give-back (each job's next copy a doubled wait late)
    # or the action (tried again).
    now = timezone.now()
    a, held, b = make_jobs([now - timedelta(minutes=10)] * 3)
    ScheduledJob.objects.filter(pk__in=[a.pk, b.pk]).update(
        status="enqueued",
        dispatch_token=uuid.uuid4(),
        sends=1,
        enqueued_at=now,
        resend_at=now - timedelta(seconds=1),
    )
    # b went unclaimed first: its copy goes first.
    ScheduledJob.objects.filter(pk=b.pk).update(resend_at=now - timedelta(seconds=2))
    deadlocks = _deadlocks()
    publisher = StallingPublisher()
    results: dict[str, TickResult] = {}

    def dispatch() -> None:
        try:
            results["tick"] = Dispatcher(publisher, purge=False).run_once(now=timezone.now())
        finally:
            connections.close_all()

    def operate() -> None:
        try:
            bulk.cancel_many(ScheduledJob.objects.filter(pk__in=[a.pk, held.pk, b.pk]), actor="ops")
        finally:
            connections.close_all()

    dispatching = threading.Thread(target=dispatch)
    dispatching.start()
    assert publisher.called.wait(10)  # a's and b's copies are counted, on their way
    ScheduledJob.objects.filter(pk=a.pk).update(updated_at=now)  # a now lies after b
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {ScheduledJob._meta.db_table}")
    with job_row_held_elsewhere(held.pk):  # another dispatcher's batch sending it
        before = _waiting_for_locks()
        operating = threading.Thread(target=operate)
        operating.start()
        # The action holds a and waits for the row between a and b.
        assert wait_until(lambda: len(_waiting_for_locks() - before) == 1, timeout=10)
        publisher.go_on.set()  # SQS refused the copies: they are given back
        assert wait_until(lambda: len(_waiting_for_locks() - before) == 2, timeout=10)
    operating.join(20)
    dispatching.join(20)
    assert results["tick"].errors == ["sqs rejected 2 message(s)"]  # and nothing else
    assert _deadlocks() == deadlocks
    assert set(ScheduledJob.objects.filter(pk__in=[a.pk, b.pk]).values_list("status")) == {
        ("cancelled",)
    }


@pytest.mark.django_db(transaction=True)  # the dispatcher and another batch
def test_copies_given_back_wait_for_no_row_that_moved_on_meanwhile() -> None:
    # Rescheduled by an operator after its copy was taken, the job's row went to another
    # dispatcher's batch, held while its sends went on (SQS slow): the give-back, which
    # had nothing to give back to it, waited for that batch, and its tick with it.
    now = timezone.now()
    [job] = make_jobs([now - timedelta(minutes=10)])
    ScheduledJob.objects.filter(pk=job.pk).update(
        status="enqueued",
        dispatch_token=uuid.uuid4(),
        sends=1,
        enqueued_at=now,
        resend_at=now - timedelta(seconds=1),
    )
    publisher = StallingPublisher()
    ended: dict[str, float] = {}

    def dispatch() -> None:
        try:
            Dispatcher(publisher, purge=False).run_once(now=timezone.now())
            ended["tick"] = time.monotonic()
        finally:
            connections.close_all()

    dispatching = threading.Thread(target=dispatch)
    dispatching.start()
    assert publisher.called.wait(10)  # its copy is counted, on its way
    ScheduledJob.objects.filter(pk=job.pk).update(
        status="scheduled", dispatch_token=None, enqueued_at=None, resend_at=None, sends=0
    )
    with job_row_held_elsewhere(job.pk, commit_after=5):
        refused = time.monotonic()
        publisher.go_on.set()  # SQS refused the copy
        dispatching.join(10)
    assert ended["tick"] - refused < 2
