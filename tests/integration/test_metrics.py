"""`/metrics`: Prometheus figures read from PostgreSQL at scrape time, and who may read them.

A known data set at a frozen instant; each figure is compared with what the rows say.
"""

import json
import logging
import re
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families

from scheduler.admin import monitoring
from scheduler.admin.monitoring import Tally
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.publisher import PublishResult
from scheduler.integrations import metrics
from scheduler.models import WATCHED_QUEUES, DispatcherHeartbeat, JobAttempt, ScheduledJob
from scheduler.registry import schedulable_task_names
from scheduler.sqs import DeadLetterPeeks, get_client
from scheduler.testing import InMemoryPublisher
from tests.conftest import SqsQueue, postgresql_out_of_reach
from tests.factories import make_jobs, mark_enqueued
from tests.integration.admin_helpers import T0, Status, job
from tests.integration.test_admin_monitoring import attempt
from tests.readme_alerts import alerts, selectors

pytestmark = pytest.mark.django_db

SECOND, MINUTE, HOUR = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
TOKEN = "s3cret-metrics-token-for-tests"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Client | None = None, **headers: str) -> Samples:
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture(autouse=True)
def frozen(database_clock_frozen):
    with freeze_time(T0) as frozen_time:
        yield frozen_time


@pytest.fixture(autouse=True)
def no_sqs(settings):
    # Nothing answers there: the DLQ depth is left out, and quickly.
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9"


@pytest.fixture
def known_data():
    # Pending: due in 20 s and 50 s (the next minute), 2 minutes, a day.
    job(Status.SCHEDULED, run_at=T0 + 20 * SECOND)
    job(Status.ENQUEUED, run_at=T0 + 50 * SECOND)
    job(Status.SCHEDULED, run_at=T0 + 2 * MINUTE)
    job(Status.SCHEDULED, run_at=T0 + 24 * HOUR)
    # Overdue (more than a minute past run_at): 7 and 2 minutes; 30 s late is not yet.
    job(Status.SCHEDULED, run_at=T0 - 7 * MINUTE)
    job(Status.ENQUEUED, run_at=T0 - 2 * MINUTE)
    job(Status.SCHEDULED, run_at=T0 - 30 * SECOND)
    job(Status.RUNNING, run_at=T0 - MINUTE)
    job(Status.CANCELLED, run_at=T0 - HOUR)
    job(Status.EXPIRED, run_at=T0 - HOUR)
    done = [job(Status.SUCCEEDED, run_at=T0 - HOUR) for _ in range(3)]
    failing = job(Status.FAILED, task_name="testapp.fail", run_at=T0 - HOUR)
    # Attempts started in the last five minutes: noop late by 0.2, 0.7, 3 and 40 s; fail
    # late by 2 s (an error) and 1200 s (a lease expired); older attempts do not count.
    # (job, seconds late, started seconds ago, finished seconds ago, outcome)
    ok, error, lost = (
        JobAttempt.Outcome.SUCCEEDED,
        JobAttempt.Outcome.ERROR,
        JobAttempt.Outcome.LEASE_EXPIRED,
    )
    attempts = [(done[0], late, 60, 50, ok) for late in (0.2, 0.7, 3, 40)] + [
        (failing, 2, 120, 120, error),
        (failing, 1200, 240, 180, lost),
        (done[1], 5, 600, 600, ok),
        (done[2], 5, 3 * 3600, 3 * 3600, ok),
        # A long job whose worker was killed: started 40 minutes ago, abandoned 1 ago.
        (failing, 1, 2400, 60, lost),
    ]
    JobAttempt.objects.bulk_create(
        JobAttempt(
            job=of,
            task_name=of.task_name,
            number=1,
            dispatch_token=uuid.uuid4(),
            scheduled_for=T0 - (ago + late) * SECOND,
            started_at=T0 - ago * SECOND,
            finished_at=T0 - finished_ago * SECOND,
            outcome=outcome,
        )
        for of, late, ago, finished_ago, outcome in attempts
    )
    DispatcherHeartbeat.objects.create(
        dispatcher="host-a:1",
        last_tick_at=T0 - 2 * SECOND,
        jobs_sent=3,
        sent_total=120,
        errors_total=2,
    )
    DispatcherHeartbeat.objects.create(
        dispatcher="host-b:7", last_tick_at=T0 - 4 * SECOND, sent_total=80
    )


def test_job_figures_match_the_database(known_data):
    samples = scrape()
    assert {status: value(samples, "scheduler_jobs", status=status) for status in Status} == {
        Status.SCHEDULED: 5,
        Status.ENQUEUED: 2,
        Status.RUNNING: 1,
        Status.SUCCEEDED: 3,
        Status.FAILED: 1,
        Status.CANCELLED: 1,
        Status.EXPIRED: 1,
    }
    assert value(samples, "scheduler_jobs_overdue") == 2
    assert value(samples, "scheduler_jobs_oldest_overdue_seconds") == 7 * 60
    assert value(samples, "scheduler_jobs_due_next_minute") == 2


def test_lateness_histogram_by_task_over_the_window(known_data):
    samples = scrape()
    noop = {"task": "testapp.noop"}
    bucket = "scheduler_job_lateness_seconds_bucket"
    assert value(samples, bucket, le="0.25", **noop) == 1
    assert value(samples, bucket, le="1.0", **noop) == 2
    assert value(samples, bucket, le="5.0", **noop) == 3
    assert value(samples, bucket, le="60.0", **noop) == 4
    assert value(samples, bucket, le="+Inf", **noop) == 4
    assert value(samples, "scheduler_job_lateness_seconds_gcount", **noop) == 4
    assert value(samples, "scheduler_job_lateness_seconds_gsum", **noop) == pytest.approx(43.9)
    fail = {"task": "testapp.fail"}
    assert value(samples, bucket, le="1.0", **fail) == 0
    assert value(samples, bucket, le="5.0", **fail) == 1
    assert value(samples, bucket, le="900.0", **fail) == 1
    assert value(samples, bucket, le="3600.0", **fail) == 2
    # The same attempts, by outcome.
    assert value(samples, "scheduler_job_attempts", outcome="succeeded", **noop) == 4
    assert value(samples, "scheduler_job_attempts", outcome="error", **fail) == 1
    assert value(samples, "scheduler_job_attempts", outcome="lease_expired", **fail) == 1


def test_attempts_that_ended_badly_in_the_window_however_long_ago_they_started(known_data):
    # Counted by when they started, a killed long job's attempt left the window before
    # its lease expired: the alert on lost workers never saw a deploy that killed one.
    failed = {
        (dict(labels)["task"], dict(labels)["outcome"]): count
        for (name, labels), count in scrape().items()
        if name == "scheduler_job_attempts_failed"
    }
    assert failed == {("testapp.fail", "error"): 1, ("testapp.fail", "lease_expired"): 2}


def test_dispatcher_counters_per_dispatcher(known_data):
    samples = scrape()
    a, b = {"dispatcher": "host-a:1"}, {"dispatcher": "host-b:7"}
    assert value(samples, "scheduler_dispatched_total", **a) == 120
    assert value(samples, "scheduler_dispatched_total", **b) == 80
    assert value(samples, "scheduler_dispatch_errors_total", **a) == 2
    assert value(samples, "scheduler_dispatch_errors_total", **b) == 0
    last_tick = "scheduler_dispatcher_last_tick_timestamp_seconds"
    assert value(samples, last_tick, **a) == (T0 - 2 * SECOND).timestamp()
    assert value(samples, last_tick, **b) == (T0 - 4 * SECOND).timestamp()


def test_dispatchers_silent_for_a_day_are_forgotten_with_none_left_to_purge_them(known_data):
    # Their rows are deleted by a live dispatcher's hourly purge: with every dispatcher
    # down, they stayed, and the alert on absent() never fired.
    DispatcherHeartbeat.objects.create(dispatcher="old:1", last_tick_at=T0 - timedelta(days=3))
    samples = scrape()
    assert value(samples, "scheduler_dispatched_total", dispatcher="host-a:1") == 120
    assert not [labels for _, labels in samples if ("dispatcher", "old:1") in labels]


def test_dispatcher_ticks_add_up_in_its_heartbeat(frozen):
    make_jobs([T0 + s * SECOND for s in range(3)])
    dispatcher = Dispatcher(publisher=InMemoryPublisher(), name="counting")
    dispatcher.run_once()
    make_jobs([T0, T0])
    dispatcher.run_once()
    dispatcher.run_once()
    row = DispatcherHeartbeat.objects.get(dispatcher="counting")
    assert (row.jobs_sent, row.sent_total, row.errors_total) == (0, 5, 0)

    class Failing:
        def publish(self, messages):
            return PublishResult(failed={m.job_id: "rejected" for m in messages}, error="boom")

    make_jobs([T0])
    Dispatcher(publisher=Failing(), name="counting").run_once()
    row.refresh_from_db()
    assert (row.sent_total, row.errors_total) == (5, 1)


@pytest.mark.django_db(transaction=True)  # the dispatcher closes the connection it lost
def test_errors_of_ticks_that_could_not_record_them_are_counted_once_postgresql_is_back():
    # The alert on scheduler_dispatch_errors_total must fire for a database outage, the
    # errors of which no heartbeat could be written during.
    make_jobs([T0 + HOUR])
    dispatcher = Dispatcher(publisher=InMemoryPublisher(), name="outage")
    dispatcher.run_once()
    with postgresql_out_of_reach():
        lost = [dispatcher.run_once() for _ in range(3)]
    assert all(tick.errors and tick.outage for tick in lost)
    row = DispatcherHeartbeat.objects.get(dispatcher="outage")
    assert row.errors_total == 0
    dispatcher.run_once()
    row.refresh_from_db()
    assert row.errors_total == sum(len(tick.errors) for tick in lost)
    # Counted once: the next ticks add nothing.
    dispatcher.run_once()
    row.refresh_from_db()
    assert row.errors_total == sum(len(tick.errors) for tick in lost)


def test_empty_database_reads_zero():
    samples = scrape()
    assert all(value(samples, "scheduler_jobs", status=status) == 0 for status in Status)
    assert value(samples, "scheduler_jobs_overdue") == 0
    assert value(samples, "scheduler_jobs_oldest_overdue_seconds") == 0
    assert not [name for name, _ in samples if name.startswith("scheduler_job_lateness")]


@pytest.mark.django_db(transaction=True)  # VACUUM runs outside a transaction
def test_history_counts_beyond_the_exact_limit_are_estimates(monkeypatch):
    monkeypatch.setattr(metrics, "EXACT_COUNT_LIMIT", 10)
    make_jobs([T0 - HOUR] * 40, status=Status.CANCELLED, finished_at=T0 - HOUR)
    make_jobs([T0 + HOUR] * 4)
    with connection.cursor() as cursor:
        # Without the VACUUM, the pages of the rows earlier tests rolled back stay in
        # the table, and ANALYZE's estimate after the admin's tests came out at 45.
        cursor.execute("VACUUM ANALYZE scheduler_scheduledjob")
    samples = scrape()
    # Planner statistics, from ANALYZE: close to the truth, not a count.
    assert value(samples, "scheduler_jobs", status="cancelled") == pytest.approx(40, abs=4)
    assert value(samples, "scheduler_jobs", status="scheduled") == 4


@pytest.mark.django_db(transaction=True)  # ANALYZE sees what other connections see
def test_scheduled_jobs_a_pause_holds_in_part_are_counted_exactly(monkeypatch):
    # Scheduled jobs are counted in two parts, held or not, each up to the limit: a sum
    # past it was taken for a capped count, and the planner's estimate shown instead,
    # stale while a pause holds jobs (a few thousand rows start no ANALYZE).
    monkeypatch.setattr(metrics, "EXACT_COUNT_LIMIT", 10)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_scheduledjob")  # before: none scheduled
    make_jobs([T0 + HOUR] * 8)
    make_jobs([T0 - HOUR] * 8, held=True)
    assert value(scrape(), "scheduler_jobs", status="scheduled") == 16


@pytest.mark.django_db(transaction=True)  # ANALYZE sees what other connections see
@pytest.mark.parametrize("ready", [11, 12])
def test_a_status_with_a_capped_part_keeps_what_its_other_parts_counted(monkeypatch, ready):
    # Of 11 or 12 scheduled jobs not held and 8 held, the first part reaches its cap of
    # 10 (counted as 11: more than 10), the second is exact: 19 jobs for certain. The
    # estimate replaced both parts, and the planner's, stale (no ANALYZE since the jobs
    # came), fell back to 11: one job more made the figure drop by 7.
    monkeypatch.setattr(metrics, "EXACT_COUNT_LIMIT", 10)
    monkeypatch.setattr(monitoring, "EXACT_COUNT_LIMIT", 10)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_scheduledjob")  # before: none scheduled
    make_jobs([T0 + HOUR] * ready)
    make_jobs([T0 - HOUR] * 8, held=True)
    assert value(scrape(), "scheduler_jobs", status="scheduled") == 19
    # The monitoring page shows the same figure, marked as no exact count.
    page = {row.status: row.count for row in monitoring.snapshot().by_status}
    assert page["scheduled"] == Tally(19, exact=False)


def test_overdue_jobs_are_counted_up_to_the_cap_with_held_ones_among_them(monkeypatch):
    # A backlog (workers away, a long pause) is when the figures are wanted: a count of
    # every overdue row made each scrape read them all, and a big one answered 503.
    monkeypatch.setattr(metrics, "EXACT_COUNT_LIMIT", 10)
    make_jobs([T0 - HOUR] * 15)
    make_jobs([T0 - 3 * HOUR] * 2, held=True)
    make_jobs([T0 + 30 * SECOND] * 12)
    samples = scrape()
    assert value(samples, "scheduler_jobs_overdue") == 11  # more than 10
    assert value(samples, "scheduler_jobs_oldest_overdue_seconds") == 3 * 3600  # a held job
    assert value(samples, "scheduler_jobs_due_next_minute") == 11


@pytest.mark.django_db(transaction=True)  # the dispatcher commits from another connection
def test_a_job_the_dispatcher_moves_during_a_scrape_is_counted_once():
    overdue = job(Status.SCHEDULED, run_at=T0 - HOUR)
    moved = threading.Event()

    def dispatch_once_the_pending_figures_are_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "run_at" in sql and not moved.is_set():
            moved.set()
            # As a dispatcher does, committed between the scrape's statements.
            mover = threading.Thread(target=_dispatch, args=(overdue.pk,))
            mover.start()
            mover.join()
        return result

    with connection.execute_wrapper(dispatch_once_the_pending_figures_are_read):
        samples = scrape()
    assert moved.is_set()
    assert value(samples, "scheduler_jobs_overdue") == 1


def _dispatch(job_id: int) -> None:
    try:
        mark_enqueued(ScheduledJob.objects.get(pk=job_id), token=uuid.uuid4(), now=T0)
    finally:
        connection.close()


def test_a_scrape_costs_a_fixed_number_of_queries(known_data, django_assert_max_num_queries):
    # Eight at most (which queues' dead letters to read among them), and the savepoint
    # of its transaction inside the test's.
    with django_assert_max_num_queries(10):
        scrape()
    make_jobs([T0 + s * SECOND for s in range(200)])
    with django_assert_max_num_queries(10):
        scrape()


def test_dlq_depth_from_the_queue(sqs_queue: SqsQueue, settings: Any):
    dlq_url = sqs_queue.client.create_queue(QueueName=f"{sqs_queue.name}-dlq")["QueueUrl"]
    for n in range(3):
        sqs_queue.client.send_message(QueueUrl=dlq_url, MessageBody=f"poison {n}")
    samples = scrape()
    assert value(samples, "scheduler_dlq_messages", queue=f"{sqs_queue.name}-dlq") == 3


def test_the_watched_dead_letter_queues_are_read_on_connections_kept_open(
    sqs_queue: SqsQueue, caplog: pytest.LogCaptureFixture
):
    # botocore keeps ten connections: the others were dropped after each call ("Connection
    # pool is full"), and opened again (a TLS handshake on AWS) for each scrape and page.
    queues = [f"{sqs_queue.name}-{n}" for n in range(WATCHED_QUEUES)]
    for queue in queues:
        sqs_queue.client.create_queue(QueueName=f"{queue}-dlq")
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        for _ in range(3):
            peeked = DeadLetterPeeks(queues, limit=0).results()
            assert [letters.depth for letters in peeked] == [0] * WATCHED_QUEUES
    assert not [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]


def test_a_scrape_makes_one_sqs_call_once_the_queue_was_looked_up(sqs_queue: SqsQueue):
    sqs_queue.client.create_queue(QueueName=f"{sqs_queue.name}-dlq")
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = get_client(quick=True).meta.events
    events.register("before-call.sqs", count)
    try:
        scrape()
        calls.clear()
        scrape()
    finally:
        events.unregister("before-call.sqs", count)
    assert calls == ["GetQueueAttributes"]


def test_dlq_depth_of_each_queue_jobs_were_sent_to(sqs_queue: SqsQueue, caplog: Any):
    payments, plain = f"{sqs_queue.name}-payments", f"{sqs_queue.name}-plain"
    for queue, messages in ((sqs_queue.name, 1), (payments, 2)):
        url = sqs_queue.client.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
        for n in range(messages):
            sqs_queue.client.send_message(QueueUrl=url, MessageBody=f"poison {n}")
    job(queue=payments)
    job(queue=plain)  # a queue without a dead-letter queue: left out, and logged
    samples = scrape()
    assert {
        dict(labels)["queue"]: depth
        for (name, labels), depth in samples.items()
        if name == "scheduler_dlq_messages"
    } == {f"{sqs_queue.name}-dlq": 1, f"{payments}-dlq": 2}
    assert {
        dict(labels)["queue"]: readable
        for (name, labels), readable in samples.items()
        if name == "scheduler_dlq_readable"
    } == {f"{sqs_queue.name}-dlq": 1, f"{payments}-dlq": 1, f"{plain}-dlq": 0}
    assert f"dead-letter queue unavailable queue={plain}-dlq" in caplog.text


def test_dlq_depth_left_out_when_sqs_cannot_be_read(caplog):
    samples = scrape()
    assert not [name for name, _ in samples if name == "scheduler_dlq_messages"]
    assert value(samples, "scheduler_dlq_readable", queue="scheduler-jobs-dlq") == 0
    assert "dead-letter queue unavailable queue=scheduler-jobs-dlq" in caplog.text
    assert value(samples, "scheduler_jobs_overdue") == 0


def test_dlq_depth_left_out_when_boto3_finds_no_region(settings, monkeypatch):
    # The app's default region is boto3's: a web process with none in its environment
    # or config (EC2, ECS without AWS_DEFAULT_REGION) got a 500, every figure lost.
    settings.SCHEDULER_SQS_REGION = None
    settings.SCHEDULER_SQS_ENDPOINT_URL = None
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    samples = scrape()
    assert value(samples, "scheduler_dlq_readable", queue="scheduler-jobs-dlq") == 0
    assert value(samples, "scheduler_jobs_overdue") == 0


def test_the_readme_alerts_read_metrics_labels_and_values_it_exports(known_data, sqs_queue):
    # A metric or label the rules name and /metrics does not export (renamed on either
    # side) leaves its alert silent: promtool's scenarios (tests/readme_alerts_test.yml)
    # are written with the rules' names and cannot see it.
    dlq_url = sqs_queue.client.create_queue(QueueName=f"{sqs_queue.name}-dlq")["QueueUrl"]
    sqs_queue.client.send_message(QueueUrl=dlq_url, MessageBody="poison")
    exported: dict[str, set[str]] = {}
    for name, labels in scrape():
        exported.setdefault(name, set()).update(label for label, _ in labels)
    values = {"outcome": set(JobAttempt.Outcome.values), "task": set(schedulable_task_names())}
    for alert, expr in alerts().items():
        assert selectors(expr) or "scheduler_" not in expr, f"{alert}: its metrics not found"
        for read in selectors(expr):
            assert read.metric in exported, f"{alert} reads {read.metric}: /metrics has not"
            assert read.labels <= exported[read.metric], (
                f"{alert} reads {read.metric} by {sorted(read.labels)}: /metrics labels it "
                f"{sorted(exported[read.metric])}"
            )
            for label, operator, quoted in read.matchers:
                if label not in values:
                    continue  # a deployment's own, as its queues' names
                written = json.loads(f'"{quoted}"')  # PromQL's escapes, as JSON's here
                # Each of a regex's alternatives must match a value the label takes.
                for wanted in written.split("|") if "~" in operator else [re.escape(written)]:
                    assert any(re.fullmatch(wanted, value) for value in values[label]), (
                        f"{alert}: no {label} is {wanted!r} (it takes {sorted(values[label])})"
                    )


def test_openmetrics_on_request(known_data):
    response = Client().get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")
    assert response["Cache-Control"] == "no-store"


def test_open_without_a_token():
    assert Client().get("/metrics").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
    ],
)
def test_token_required_once_set(settings, authorization):
    settings.SCHEDULER_METRICS_TOKEN = TOKEN
    headers = {} if authorization is None else {"Authorization": authorization}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"scheduler_jobs" not in response.content


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer "])
def test_an_empty_token_lets_no_one_in(settings, authorization):
    # The system checks refuse it, but a web server does not run them: an empty token
    # matched an empty credential, and the metrics were open to whoever sent "Bearer".
    settings.SCHEDULER_METRICS_TOKEN = ""
    headers = {} if authorization is None else {"Authorization": authorization}
    assert Client().get("/metrics", headers=headers).status_code == 401


@pytest.mark.django_db(transaction=True)  # the lock is held from another connection
def test_a_scrape_stuck_behind_a_lock_answers_503_within_its_timeout(monkeypatch):
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT", timedelta(milliseconds=300))
    locked, release, let_go = threading.Event(), threading.Event(), threading.Event()

    def hold_the_attempts_table() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE scheduler_jobattempt IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(10)
        finally:
            let_go.set()
            connection.close()

    holder = threading.Thread(target=hold_the_attempts_table)
    holder.start()
    try:
        assert locked.wait(10)
        response = Client().get("/metrics")
        # Answered while the lock was still held, not once it was let go.
        assert not let_go.is_set()
    finally:
        release.set()
        holder.join()
    assert response.status_code == 503


def test_token_accepted(settings):
    settings.SCHEDULER_METRICS_TOKEN = TOKEN
    samples = scrape(Authorization=f"Bearer {TOKEN}")
    assert value(samples, "scheduler_jobs", status="scheduled") == 0
    samples = scrape(Authorization=f"bearer  {TOKEN} ")
    assert value(samples, "scheduler_jobs", status="scheduled") == 0


def test_only_reads():
    assert Client().post("/metrics").status_code == 405


def test_attempts_are_grouped_by_their_own_task_name_without_a_join(known_data):
    # A day of attempts joined back to the jobs table, row by row, to read a name each
    # attempt already carries.
    with CaptureQueriesContext(connection) as queries:
        scrape()
    attempts = [q["sql"] for q in queries.captured_queries if "scheduler_jobattempt" in q["sql"]]
    # The window's sample of ids, its figures, its failed attempts.
    assert len(attempts) == 3
    assert not [sql for sql in attempts if "JOIN" in sql], attempts


def attempts_in_window(count: int) -> None:
    """``count`` attempts started over 250 s of the window, 1 s late; one in four an
    error, every other a success."""
    of = job(Status.SUCCEEDED, run_at=T0 - HOUR)
    error, ok = JobAttempt.Outcome.ERROR, JobAttempt.Outcome.SUCCEEDED
    JobAttempt.objects.bulk_create(
        attempt(
            of,
            late=SECOND,
            started=T0 - 280 * SECOND + index * 250 * SECOND / count,
            outcome=error if index % 4 == 0 else ok,
        )
        for index in range(count)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scheduler_jobattempt")


def attempt_rows_read(sql: str) -> int:
    """Rows of the attempts table the statement reads (filtered out ones included)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        [[plan]] = cursor.fetchone()

    def read(node: dict[str, Any]) -> float:
        own = 0.0
        if node.get("Relation Name") == "scheduler_jobattempt":
            rows = sum(node.get(key, 0) for key in ("Actual Rows", "Rows Removed by Filter"))
            own = rows * node["Actual Loops"]
        return own + sum(read(child) for child in node.get("Plans", []))

    return round(read(plan["Plan"]))


def test_a_busy_window_is_read_from_a_sample_of_bounded_size(monkeypatch):
    """Millions of attempts in the window made a scrape read each of them (seconds, then
    the statement timeout's 503): above SAMPLE_SIZE, the figures are estimated from a
    sample and failed attempts counted up to it, which bounds the rows read."""
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", 200)
    attempts_in_window(6_000)
    with CaptureQueriesContext(connection) as queries:
        samples = scrape()
    read = {
        q["sql"]: attempt_rows_read(q["sql"])
        for q in queries.captured_queries
        if "scheduler_jobattempt" in q["sql"]
    }
    # The sample, its failed attempts and the window's count up to 201, and the first
    # 1,000 of the window to find its lowest id (as the monitoring page does).
    assert sum(read.values()) <= 3 * 200 + 1_000 + 10, read
    noop = {"task": "testapp.noop"}
    assert value(samples, "scheduler_job_attempts", **noop, outcome="succeeded") == (
        pytest.approx(4_500, rel=0.1)
    )
    assert value(samples, "scheduler_job_attempts", **noop, outcome="error") == (
        pytest.approx(1_500, rel=0.1)
    )
    # 1,500: more than the cap, which is a lower bound.
    assert value(samples, "scheduler_job_attempts_failed", **noop, outcome="error") == 200
    assert value(samples, "scheduler_job_lateness_seconds_gcount", **noop) == (
        pytest.approx(6_000, rel=0.1)
    )
    assert value(samples, "scheduler_job_lateness_seconds_gsum", **noop) == (
        pytest.approx(6_000, rel=0.1)
    )
    assert value(samples, "scheduler_job_lateness_seconds_bucket", **noop, le="0.5") == 0


def test_a_quiet_window_is_read_whole(monkeypatch):
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", 200)
    attempts_in_window(200)
    samples = scrape()
    noop = {"task": "testapp.noop"}
    assert value(samples, "scheduler_job_attempts", **noop, outcome="succeeded") == 150
    assert value(samples, "scheduler_job_attempts", **noop, outcome="error") == 50
    assert value(samples, "scheduler_job_attempts_failed", **noop, outcome="error") == 50


def failed_attempts(outcome: str, finished: list[datetime]) -> None:
    """Attempts of ``outcome`` that started 200 s ago and ended at each of ``finished``."""
    of = job(Status.SUCCEEDED, run_at=T0 - HOUR)
    JobAttempt.objects.bulk_create(
        attempt(of, late=SECOND, started=T0 - 200 * SECOND, finished=end, outcome=outcome)
        for end in finished
    )


def test_failed_attempts_ended_at_one_instant_are_not_multiplied(monkeypatch):
    """A recovery tick ends the attempts of every lost job with one finished_at: read
    as a rate, the latest ones stood for the window 300,000 times over (59,898,000)."""
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", 200)
    failed_attempts(JobAttempt.Outcome.LEASE_EXPIRED, [T0 - 2 * SECOND] * 300)
    failed = value(
        scrape(), "scheduler_job_attempts_failed", task="testapp.noop", outcome="lease_expired"
    )
    # More than the cap: the cap, a lower bound.
    assert failed == 200


def test_failed_attempts_ended_in_a_burst_are_counted_up_to_the_cap(monkeypatch):
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", 200)
    failed_attempts(
        JobAttempt.Outcome.ERROR, [T0 - 12 * SECOND + i * 10 * SECOND / 300 for i in range(300)]
    )
    error = {"task": "testapp.noop", "outcome": "error"}
    assert value(scrape(), "scheduler_job_attempts_failed", **error) == 200
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", 300)
    assert value(scrape(), "scheduler_job_attempts_failed", **error) == 300


def test_a_window_below_the_sample_size_is_read_whole_after_a_busy_minute(monkeypatch):
    """Attempts of the minute before the window (where its lowest id is looked for) made
    a window of fewer than SAMPLE_SIZE attempts sampled: 142 of 150 reported."""
    monkeypatch.setattr(metrics, "SAMPLE_SIZE", 200)
    of = job(Status.SUCCEEDED, run_at=T0 - HOUR)
    before = [T0 - 355 * SECOND + i * 50 * SECOND / 100 for i in range(100)]
    inside = [T0 - 290 * SECOND + i * 280 * SECOND / 150 for i in range(150)]
    JobAttempt.objects.bulk_create(
        attempt(of, late=SECOND, started=started) for started in before + inside
    )
    samples = scrape()
    assert value(samples, "scheduler_job_attempts", task="testapp.noop", outcome="succeeded") == 150
    assert value(samples, "scheduler_job_lateness_seconds_gcount", task="testapp.noop") == 150
