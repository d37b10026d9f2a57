"""What a tick costs: statements per batch, an empty tick, recovery at its own cadence."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from scheduler.conf import scheduler_settings
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.publisher import SQSPublisher
from scheduler.models import DispatcherHeartbeat, ScheduledJob
from scheduler.testing import InMemoryPublisher
from tests.conftest import query_plan, sqs_client
from tests.factories import make_jobs

# Transactions as in production: a test transaction would add a savepoint per atomic().
pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def _statements(dispatcher):
    with CaptureQueriesContext(connection) as captured:
        result = dispatcher.run_once()
    return result, [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize("pending", [20, 2000])
def test_an_empty_tick_is_one_statement_whatever_the_table_holds(pending):
    with freeze_time(T0) as clock:
        make_jobs([T0 + timedelta(days=1, seconds=i) for i in range(pending)])
        dispatcher = Dispatcher(publisher=InMemoryPublisher())
        dispatcher.run_once()  # the first tick also recovers
        clock.tick(1)
        result, statements = _statements(dispatcher)
    assert result.sent == 0
    # The probe, which also records the (empty) tick on the heartbeat.
    assert len(statements) == 1, statements
    beat = DispatcherHeartbeat.objects.get()
    assert (beat.last_tick_at, beat.jobs_sent, beat.errors) == (T0 + timedelta(seconds=1), 0, 0)


def test_recovery_runs_at_its_own_interval_not_every_tick(settings):
    settings.SCHEDULER_RECOVERY_INTERVAL_SECONDS = 5
    with freeze_time(T0) as clock:
        dispatcher = Dispatcher(publisher=InMemoryPublisher())
        clock.tick(scheduler_settings.LEASE_SECONDS)  # in its first lease, it judges none
        _, first = _statements(dispatcher)
        seen = []
        for _ in range(10):
            clock.tick(1)
            _, statements = _statements(dispatcher)
            seen.append(len(statements))
    # Recovery (re-sends, leases, deadlines) on the first tick, then every 5 s.
    assert len(first) > 3
    assert [count > 3 for count in seen] == [False] * 4 + [True] + [False] * 4 + [True]


def test_each_batch_is_one_statement_with_no_per_row_expression(settings):
    settings.SCHEDULER_BATCH_SIZE = 100
    with freeze_time(T0) as clock:
        dispatcher = Dispatcher(publisher=InMemoryPublisher())
        dispatcher.run_once()
        make_jobs([T0 + timedelta(seconds=i % 60) for i in range(250)])
        clock.tick(1)
        result, statements = _statements(dispatcher)
    assert result.sent == 250
    batches = [sql for sql in statements if "FOR UPDATE SKIP LOCKED" in sql]
    assert len(batches) == 3  # of 100, 100 and 50
    # Each claims its jobs and marks them enqueued: the same statement.
    assert all("UPDATE" in sql and "gen_random_uuid()" in sql for sql in batches)
    # And a probe and the heartbeat, besides each batch's BEGIN and COMMIT.
    assert len([sql for sql in statements if sql not in ("BEGIN", "COMMIT")]) == 3 + 2
    assert not [sql for sql in statements if "CASE" in sql]
    tokens = ScheduledJob.objects.values_list("dispatch_token", flat=True)
    assert None not in tokens
    assert len(set(tokens)) == 250


class _SlowPublisher(InMemoryPublisher):
    """An SQS that takes a second per batch, on the frozen clock."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def publish(self, messages):
        self.clock.tick(1)
        return super().publish(messages)


def test_a_tick_with_a_backlog_sends_for_one_interval_and_the_next_goes_on(settings):
    settings.SCHEDULER_BATCH_SIZE = 10
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 5
    with freeze_time(T0) as clock:
        dispatcher = Dispatcher(publisher=_SlowPublisher(clock))
        dispatcher.run_once()
        make_jobs([T0 + timedelta(seconds=i % 60) for i in range(200)])
        # Batches of 10 at a second each: a tick stops once its 5 s are spent.
        sent = []
        for _ in range(4):
            sent.append(dispatcher.run_once().sent)
            # Each tick records its heartbeat: the dispatcher never looks dead while it works.
            assert DispatcherHeartbeat.objects.get().last_tick_at == timezone.now()
    assert sent == [50, 50, 50, 50]
    assert ScheduledJob.objects.filter(status=ScheduledJob.Status.ENQUEUED).count() == 200


def _bulk_load(rows: int, *, due: int) -> None:
    """``rows`` scheduled jobs, the first ``due`` of them past due, and statistics that
    say every row is scheduled, as right after a bulk load."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error)
            SELECT 'testapp.noop', '[]', '{}', 'scheduler-jobs',
                   now() + CASE WHEN i <= %s THEN -interval '1 hour' ELSE interval '1 day' END
                         + i * interval '1 millisecond',
                   'scheduled', 0, 5, 0, '', now(), now(), true
            FROM generate_series(1, %s) AS i
            """,
            [due, rows],
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")


@pytest.mark.parametrize(("rows", "batch_size"), [(20000, 1000), (10000, 100)])
def test_a_batch_reads_the_due_index_and_updates_each_job_by_its_key(settings, rows, batch_size):
    # The plain run_at index would make each batch step again over every job sent before
    # it; reading the whole table to find a batch's jobs would cost more than the lookups.
    settings.SCHEDULER_BATCH_SIZE = batch_size
    _bulk_load(rows, due=5000)
    result, statements = _statements(Dispatcher(publisher=InMemoryPublisher()))
    assert result.sent == 5000
    batches = [sql for sql in statements if "gen_random_uuid()" in sql]
    assert len(batches) == 5000 // batch_size + 1  # the last one finds none left
    plan = query_plan(batches[-2])
    assert "scheduler_job_due_idx" in plan, plan
    # Only the batch's own rows are sorted, to return them in the claim's order.
    assert [line for line in plan.splitlines() if "Sort Key" in line] == [
        "  Sort Key: moved.run_at, moved.id"
    ], plan
    assert "Seq Scan on scheduler_scheduledjob" not in plan, plan
    assert "scheduler_scheduledjob_pkey" in plan, plan


class SlowClient:
    """The test SQS server behind a 200 ms round trip, recording calls that overlap."""

    def __init__(self, endpoint):
        self.client = sqs_client(endpoint)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0

    def get_queue_url(self, **kwargs):
        return self.client.get_queue_url(**kwargs)

    def send_message_batch(self, **kwargs):
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.2)
            return self.client.send_message_batch(**kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_send_message_batch_calls_go_out_concurrently(sqs_queue, settings):
    settings.SCHEDULER_BATCH_SIZE = 100
    client = SlowClient(settings.SCHEDULER_SQS_ENDPOINT_URL)
    make_jobs([datetime.now(UTC)] * 80)
    started = time.monotonic()
    result = Dispatcher(publisher=SQSPublisher(client=client)).run_once()
    elapsed = time.monotonic() - started
    assert result.sent == 80
    assert client.calls == 8
    assert client.most_in_flight >= 4
    # One after the other, the calls' sleeps alone take 1.6 s. Not a tighter bound: on a
    # loaded machine the tick took 1.3 s, four calls at a time (most_in_flight above).
    assert elapsed < 8 * 0.2, f"{elapsed:.2f}s: the calls went one after the other"
    received = []
    while batch := sqs_queue.receive():
        received.extend(batch)
    assert len(received) == 80
