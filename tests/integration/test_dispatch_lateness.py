"""SQS releases a job's message ``SCHEDULER_DELIVERY_LEAD_SECONDS`` before its run_at, never
later, whatever time passed between the moment its delay was computed and its send: the
claim statement waiting on PostgreSQL, a queue URL looked up first."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from freezegun import freeze_time

from scheduler.conf import scheduler_settings
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.publisher import SQSPublisher
from scheduler.models import ScheduledJob
from tests.factories import make_jobs

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


class RecordingClient:
    """An SQS client that takes every message, recording each entry's DelaySeconds and
    when (``datetime.now()``, the frozen clock in the test's thread) its call was made;
    its GetQueueUrl takes ``lookup`` seconds (``wait``)."""

    def __init__(self, *, lookup: float = 0.0, wait=time.sleep) -> None:
        self.lookup = lookup
        self.wait = wait
        self.lock = threading.Lock()
        self.sent: list[tuple[float, int]] = []

    def get_queue_url(self, *, QueueName):  # noqa: N803 - boto3's argument names
        self.wait(self.lookup)
        return {"QueueUrl": f"https://sqs.example/{QueueName}"}

    def send_message_batch(self, *, QueueUrl, Entries):  # noqa: N803 - boto3's argument names
        with self.lock:
            self.sent.extend((time.time(), entry["DelaySeconds"]) for entry in Entries)
        return {"Successful": [{"Id": entry["Id"]} for entry in Entries]}


@pytest.mark.django_db
@pytest.mark.parametrize("jobs", [1, 25], ids=["one-call", "calls-on-send-threads"])
def test_the_time_a_queue_url_lookup_took_is_taken_off_the_delay(jobs):
    # The lookup (10 s read timeout) comes before the sends at each dispatcher start,
    # for each new queue, and 5 s after a queue was refused. Its 6 s were not counted:
    # a job due at now + 30 s was released at run_at + 3 s, where the design says
    # run_at - lead.
    with freeze_time(T0) as clock:
        client = RecordingClient(lookup=6, wait=clock.tick)
        run_at = T0 + timedelta(seconds=30.5)
        make_jobs([run_at] * jobs)
        assert Dispatcher(publisher=SQSPublisher(client=client)).run_once().sent == jobs
    # Computed at T0: 28.5 s until its release (run_at - the 2 s lead), so 28. Sent 6 s
    # later (on send threads, a few milliseconds more): 22.5 s left, so 22.
    assert [delay for _, delay in client.sent] == [22] * jobs


@pytest.mark.django_db(transaction=True)  # the lock is held from another connection
def test_the_time_the_claim_waited_for_postgresql_is_taken_off_the_delay():
    lead = scheduler_settings.DELIVERY_LEAD_SECONDS
    client = RecordingClient()
    publisher = SQSPublisher(client=client)
    dispatcher = Dispatcher(publisher=publisher, purge=False)
    [job] = make_jobs([datetime.now(UTC) + timedelta(seconds=30)])
    locked = threading.Event()

    def hold_the_table(seconds: float) -> None:
        # Reads (the probe) go on; the claim's UPDATE waits, after the tick read its now.
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE scheduler_scheduledjob IN EXCLUSIVE MODE")
                locked.set()
                time.sleep(seconds)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_table, args=(2.0,))
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        assert dispatcher.run_once().sent == 1
        assert time.monotonic() - started >= 1.9, "the claim did not wait for the lock"
    finally:
        holder.join(10)
    [(sent_at, delay)] = client.sent
    released = sent_at + delay
    designed = job.run_at.timestamp() - lead
    # Never later than designed (before: the 2 s of the wait later), less than a second
    # earlier (the delay is whole seconds, rounded down).
    assert designed - 1.05 < released <= designed + 0.02, (released - designed, delay)
    assert ScheduledJob.objects.get().status == ScheduledJob.Status.ENQUEUED
