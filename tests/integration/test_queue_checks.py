"""As a worker starts consuming and a dispatcher starts, it reads its queues' attributes
once and says, one warning a line, where they fall short of what jobs need, by the
thresholds `scheduler_create_queue` applies; a queue it cannot read is one line, and the
process goes on. Against the SQS server (moto, over HTTP)."""

import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from celery import current_app
from celery.signals import worker_ready
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu import Queue

from scheduler.dispatch.beat import (
    DISPATCH_PERIODIC_TASK_NAME,
    DispatchingScheduler,
    ensure_dispatch_schedule,
)
from scheduler.dispatch.dispatcher import Dispatcher, check_at_start
from scheduler.dispatch.queues import ensure_queue
from scheduler.models import DispatcherHeartbeat, watched_queues
from scheduler.sqs import MISSING_QUEUE_CODES, PEEK_DEADLINE_SECONDS
from tests.conftest import SqsQueue, postgresql_out_of_reach, query_plan
from tests.factories import make_jobs

pytestmark = pytest.mark.django_db(transaction=True)  # a worker's start closes connections


class Consumer:
    """What a worker's consumer shows of itself: the queues its task consumer reads."""

    def __init__(self, queues: list[str]) -> None:
        self.task_consumer = SimpleNamespace(queues=[Queue(name) for name in queues])


def consuming(*queues: str) -> None:
    """Tell this process's receivers that a worker consuming ``queues`` is ready."""
    worker_ready.send(sender=Consumer(list(queues)))


def set_attributes(queue: SqsQueue, **attributes: str) -> None:
    queue.client.set_queue_attributes(QueueUrl=queue.url, Attributes=attributes)


def redrive_policy(queue: SqsQueue, dead_letters: str, receives: int) -> str:
    """A RedrivePolicy sending ``queue``'s dead letters to ``dead_letters``, created."""
    url = queue.client.create_queue(QueueName=dead_letters)["QueueUrl"]
    arn = queue.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(receives)})


def said(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(start)]


def shortfalls(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings of queue attributes short of what jobs need."""
    records = said(caplog, "sqs queue falls short ")
    assert all(r.levelno == logging.WARNING for r in records)
    return [r.getMessage() for r in records]


def test_a_queue_with_sqs_defaults_is_told_as_the_worker_starts(sqs_queue, caplog):
    # A queue nobody ran scheduler_create_queue on (the test's, made with SQS's
    # defaults): no dead-letter queue, a 30 s visibility timeout. Workers ran on it
    # silently.
    caplog.set_level(logging.INFO)
    consuming(sqs_queue.name)
    redrive, visibility = sorted(shortfalls(caplog))
    assert redrive == (
        f"sqs queue falls short process=worker queue={sqs_queue.name} attribute=RedrivePolicy "
        f"value=unset needs={sqs_queue.name}-dlq effect='a message that keeps failing is "
        "received again without end, and the dead-letter metric and alert never see it' "
        "hint='run scheduler_create_queue'"
    )
    assert visibility.startswith(
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        "attribute=VisibilityTimeout value=30 needs=>=300 effect="
    )
    assert visibility.endswith(" hint='run scheduler_create_queue'")


def test_a_max_receive_count_lowered_by_hand_is_told(sqs_queue, caplog):
    ensure_queue()
    policy = redrive_policy(sqs_queue, f"{sqs_queue.name}-dlq", 2)
    set_attributes(sqs_queue, RedrivePolicy=policy)
    consuming(sqs_queue.name)
    [told] = shortfalls(caplog)
    assert told.startswith(
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        "attribute=RedrivePolicy.maxReceiveCount value=2 needs=>=3 effect="
    )
    assert "handed back" in told
    # scheduler_create_queue keeps a queue's own RedrivePolicy: it would not mend this.
    assert "set-queue-attributes" in told


def test_a_short_retention_and_a_removed_redrive_policy_are_told(sqs_queue, caplog):
    ensure_queue()
    set_attributes(sqs_queue, MessageRetentionPeriod="3600", RedrivePolicy="")
    consuming(sqs_queue.name)
    told = sorted(shortfalls(caplog))
    assert [line.split(" effect=")[0] for line in told] == [
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        "attribute=MessageRetentionPeriod value=3600 needs=>=86400",
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        f"attribute=RedrivePolicy value=unset needs={sqs_queue.name}-dlq",
    ]


def test_dead_letters_sent_to_another_queue_are_told(sqs_queue, caplog):
    ensure_queue()
    set_attributes(sqs_queue, RedrivePolicy=redrive_policy(sqs_queue, f"{sqs_queue.name}-x", 5))
    consuming(sqs_queue.name)
    [told] = shortfalls(caplog)
    assert told.startswith(
        f"sqs queue falls short process=worker queue={sqs_queue.name} "
        f"attribute=RedrivePolicy.deadLetterTargetArn value={sqs_queue.name}-x "
        f"needs={sqs_queue.name}-dlq effect="
    )


def test_a_queue_made_by_scheduler_create_queue_is_only_noted(sqs_queue, caplog):
    caplog.set_level(logging.INFO)
    ensure_queue()
    # A Celery queue's name is its SQS queue's with a dot for a dash; a FIFO queue
    # cannot carry jobs (no per-message delay) and is not checked.
    ensure_queue(f"{sqs_queue.name}.slow")
    consuming(sqs_queue.name, f"{sqs_queue.name}.slow", "other.fifo")
    assert not shortfalls(caplog)
    assert not said(caplog, "sqs queue not checked")
    assert [r.getMessage() for r in said(caplog, "sqs queue checked")] == [
        f"sqs queue checked process=worker queue={sqs_queue.name}",
        f"sqs queue checked process=worker queue={sqs_queue.name}-slow",
    ]


def test_a_missing_queue_is_one_line_and_the_others_are_still_checked(sqs_queue, caplog):
    consuming(f"{sqs_queue.name}-gone", sqs_queue.name)
    [skipped] = said(caplog, "sqs queue not checked")
    assert skipped.levelno == logging.WARNING
    line, reason = skipped.getMessage().split(" reason=")
    assert line == f"sqs queue not checked process=worker queue={sqs_queue.name}-gone"
    assert reason in MISSING_QUEUE_CODES
    assert shortfalls(caplog)  # the test queue's, made with SQS's defaults


def test_a_denied_read_is_one_line_per_queue_and_the_worker_goes_on(sqs_queue, caplog, monkeypatch):
    # A worker whose IAM policy does not grant sqs:GetQueueAttributes on its queue.
    call = BaseClient._make_api_call

    def denied(self: Any, operation: str, params: Any) -> Any:
        if operation == "GetQueueAttributes":
            error = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
            raise ClientError(error, operation)
        return call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", denied)
    consuming(sqs_queue.name)
    assert [r.getMessage() for r in said(caplog, "sqs queue not checked")] == [
        f"sqs queue not checked process=worker queue={sqs_queue.name} reason=AccessDenied"
    ]
    assert not shortfalls(caplog)


def test_sqs_out_of_reach_is_one_line_for_every_queue(caplog):
    # The autouse offline_sqs fixture: nothing answers at the endpoint.
    consuming("first", "second")
    [skipped] = said(caplog, "sqs queue not checked")
    assert skipped.getMessage() == (
        "sqs queue not checked process=worker queue=first,second reason=EndpointConnectionError "
        """error='Could not connect to the endpoint URL: "http://127.0.0.1:9/"'"""
    )


def test_the_dispatcher_checks_the_queues_jobs_are_sent_to_as_it_starts(sqs_queue, caplog):
    # Each a queue it sends to: the default, and those jobs in the table name.
    make_jobs([timezone.now() + timedelta(days=1)], queue=f"{sqs_queue.name}-other")
    call_command("scheduler_dispatch", "--once", stdout=io.StringIO())
    told = shortfalls(caplog)
    assert any(f"process=dispatcher queue={sqs_queue.name} " in line for line in told)
    assert said(caplog, f"sqs queue not checked process=dispatcher queue={sqs_queue.name}-other")


def test_a_dispatcher_started_while_postgresql_is_out_of_reach_checks_its_default_queue(
    sqs_queue, caplog
):
    with postgresql_out_of_reach():
        check_at_start(process="dispatcher")
    told = shortfalls(caplog)
    assert told
    assert all(f"process=dispatcher queue={sqs_queue.name} " in line for line in told)


def test_beat_checks_its_queues_at_its_first_tick_only(sqs_queue, caplog):
    ensure_dispatch_schedule()
    scheduler = DispatchingScheduler(app=current_app)
    try:
        entry = scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME]
        scheduler.apply_entry(entry, producer=None)
        scheduler.apply_entry(entry, producer=None)
    finally:
        scheduler._finalize.cancel()
    told = shortfalls(caplog)
    assert told
    assert len(told) == len({*told})  # once, not at every tick
    assert all(f"process=beat queue={sqs_queue.name} " in line for line in told)


#: What botocore raises when credentials it just refreshed are still expired: no
#: ClientError nor BotoCoreError (RELIABILITY.md: a send raising it is an outage).
EXPIRED = "Credentials were refreshed, but the refreshed credentials are still expired."


def _start_scheduler_dispatch() -> None:
    Dispatcher(name="started").run(max_ticks=1)


def _run_scheduler_dispatch_once() -> None:
    with pytest.raises(SystemExit) as exited:  # the tick's error, as with any outage
        call_command("scheduler_dispatch", "--once", stdout=io.StringIO())
    assert exited.value.code == 1


def _start_beat() -> None:
    ensure_dispatch_schedule()
    scheduler = DispatchingScheduler(app=current_app)
    try:
        scheduler.apply_entry(scheduler.schedule[DISPATCH_PERIODIC_TASK_NAME], producer=None)
    finally:
        scheduler._finalize.cancel()


@pytest.mark.parametrize(
    ("start", "process"),
    [
        (_start_scheduler_dispatch, "dispatcher"),
        (_run_scheduler_dispatch_once, "dispatcher"),
        (_start_beat, "beat"),
    ],
)
def test_an_error_that_is_no_answer_of_sqs_is_one_line_and_the_first_tick_runs(
    sqs_queue, settings, monkeypatch, caplog, start: Callable[[], None], process: str
):
    # It went through the check: scheduler_dispatch exited before its first tick (a
    # crash loop, no heartbeat), beat at its first tick (every periodic task stopped).
    # The tick is where this outage shows: in the dispatcher's heartbeat.
    settings.SCHEDULER_DISPATCH_INTERVAL_SECONDS = 0.1
    make_jobs([timezone.now()])

    def expired(self: Any, operation: str, params: Any) -> Any:
        raise RuntimeError(EXPIRED)

    monkeypatch.setattr(BaseClient, "_make_api_call", expired)
    start()
    [skipped] = said(caplog, "sqs queue not checked")
    assert skipped.levelno == logging.WARNING
    assert skipped.getMessage() == (
        f"sqs queue not checked process={process} queue={sqs_queue.name} "
        f"reason=RuntimeError error={EXPIRED!r}"
    )
    assert skipped.exc_info is None  # one line, no traceback
    [heartbeat] = DispatcherHeartbeat.objects.all()
    assert heartbeat.errors == 1
    assert "RuntimeError" in heartbeat.last_error


def test_an_error_that_is_no_answer_of_sqs_is_one_line_as_the_worker_starts(
    sqs_queue, monkeypatch, caplog
):
    # Celery logs a receiver's exception with its traceback, and the worker goes on.
    def expired(self: Any, operation: str, params: Any) -> Any:
        raise RuntimeError(EXPIRED)

    monkeypatch.setattr(BaseClient, "_make_api_call", expired)
    consuming(sqs_queue.name, f"{sqs_queue.name}-other")
    assert [r.getMessage() for r in said(caplog, "sqs queue ")] == [
        f"sqs queue not checked process=worker queue={sqs_queue.name},{sqs_queue.name}-other "
        f"reason=RuntimeError error={EXPIRED!r}"
    ]
    assert not [r for r in caplog.records if r.exc_info]


def slow_sqs(monkeypatch: pytest.MonkeyPatch, seconds: Callable[[dict[str, Any]], float]) -> None:
    """Each call the app makes to SQS answers ``seconds(its parameters)`` late."""
    call = BaseClient._make_api_call  # type: ignore[attr-defined]  # not in the stubs

    def slow(self: Any, operation: str, params: Any) -> Any:
        time.sleep(seconds(params))
        return call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", slow)


def told_of(caplog: pytest.LogCaptureFixture) -> dict[str, list[str]]:
    """Each queue a check told of, with how: checked, falls short, not checked's reason."""
    told: dict[str, list[str]] = {}
    lines = ("sqs queue checked ", "sqs queue falls short ", "sqs queue not checked ")
    for record in [r for r in caplog.records if r.getMessage().startswith(lines)]:
        fields = dict(
            field.split("=", 1) for field in record.getMessage().split(" ") if "=" in field
        )
        how = fields.get("reason") or record.getMessage().split(" process=")[0]
        for queue in fields["queue"].split(","):
            told.setdefault(queue, []).append(how)
    return told


def test_a_slow_sqs_holds_a_dispatcher_up_for_its_slowest_queue_not_their_sum(
    sqs_queue, monkeypatch, caplog
):
    # 25 queues jobs are on, each answered within the quick client's timeouts: read one
    # after the other, their check held the first tick up 75 s (in beat, the beat loop).
    caplog.set_level(logging.INFO)
    queues = [sqs_queue.name, *(f"{sqs_queue.name}-{n:02}" for n in range(24))]
    for queue in queues[1:]:
        sqs_queue.client.create_queue(QueueName=queue)
        make_jobs([timezone.now() + timedelta(days=1)], queue=queue)
    slow_sqs(monkeypatch, lambda _: 0.5)
    started = time.monotonic()
    check_at_start(process="dispatcher")
    assert time.monotonic() - started < PEEK_DEADLINE_SECONDS + 1
    told = told_of(caplog)
    assert sorted(told) == sorted(queues)
    assert all(len(hows) >= 1 and "deadline" not in hows for hows in told.values()), told


def test_a_queue_sqs_answers_for_too_slowly_is_not_checked_past_the_deadline(
    sqs_queue, monkeypatch, caplog
):
    # Every call within the quick client's timeouts (1 s to connect, 2 s to read), but
    # the queue's two together past the deadline. A worker receives nothing meanwhile.
    caplog.set_level(logging.INFO)
    slow = f"{sqs_queue.name}-slow"
    sqs_queue.client.create_queue(QueueName=slow)
    ensure_queue()
    slow_sqs(
        monkeypatch,
        lambda params: (
            2.5
            if slow in (params.get("QueueName"), params.get("QueueUrl", "").split("/")[-1])
            else 0
        ),
    )
    started = time.monotonic()
    consuming(slow, sqs_queue.name)
    assert time.monotonic() - started < PEEK_DEADLINE_SECONDS + 1
    assert told_of(caplog) == {sqs_queue.name: ["sqs queue checked"], slow: ["deadline"]}
    [late] = said(caplog, "sqs queue not checked")
    assert late.levelno == logging.WARNING
    assert late.getMessage() == (
        f"sqs queue not checked process=worker queue={slow} reason=deadline "
        f"error='SQS did not answer within {PEEK_DEADLINE_SECONDS:g} s'"
    )


def _jobs_on(queue: str, status: str, **fields: Any) -> None:
    now = timezone.now()
    in_flight = {"dispatch_token": uuid.uuid4(), "attempts": 1}
    by_status: dict[str, dict[str, Any]] = {
        "scheduled": {},
        "enqueued": {**in_flight, "resend_at": now},
        "running": {**in_flight, "started_at": now},
    }
    make_jobs(
        [now - timedelta(hours=1)],
        queue=queue,
        status=status,
        **by_status.get(status, {"finished_at": now}),
        **fields,
    )


def test_a_dispatcher_checks_the_queues_of_jobs_not_yet_ended_only(sqs_queue, caplog):
    # A queue retired after its last job ended (deleted from SQS): its jobs are kept
    # SCHEDULER_RETENTION_DAYS, and every dispatcher's start warned of it meanwhile;
    # among 25, such queues could leave out one that jobs are sent to.
    caplog.set_level(logging.INFO)
    for status in ("succeeded", "failed", "cancelled", "expired"):
        _jobs_on("retired", status)
    live = []
    for status, fields in [
        ("scheduled", {}),
        ("scheduled", {"held": True}),
        ("enqueued", {}),
        ("running", {}),
    ]:
        name = f"{sqs_queue.name}-{status}{'-held' if fields else ''}"
        live.append(name)
        _jobs_on(name, status, **fields)
        _jobs_on(name, "succeeded")  # ended jobs beside them change nothing
    check_at_start(process="dispatcher")
    assert sorted(told_of(caplog)) == sorted([sqs_queue.name, *live])
    assert watched_queues(default="reports", live=True) == ["reports", *sorted(live)]
    # Monitoring still watches the dead letters of every queue jobs were sent to.
    assert "retired" in watched_queues(default="reports")


def test_the_queues_of_jobs_not_yet_ended_are_read_from_the_queue_index():
    # Each dispatcher's start asks. A DISTINCT over the pending jobs would read them all;
    # a retired queue's ended jobs (kept 30 days, older than any other) are read a
    # bounded few, backwards along the queue index, not reached through the newer jobs
    # of every other queue along the run_at index.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error, finished_at)
            SELECT 'testapp.noop', '[]', '{}',
                   CASE WHEN i % 4 = 0 THEN 'scheduler-jobs'
                        WHEN i % 4 = 1 THEN 'retired' ELSE 'queue-' || i % 2 END,
                   now() - interval '1 second' * i
                         - CASE WHEN i % 4 = 1 THEN interval '30 days' ELSE interval '0' END,
                   CASE WHEN i % 4 = 1 OR i > 1000 THEN 'succeeded' ELSE 'scheduled' END,
                   0, 5, 0, '', now(), now(), true,
                   CASE WHEN i % 4 = 1 OR i > 1000 THEN now() END
            FROM generate_series(1, 200000) AS i
            """
        )
        cursor.execute("ANALYZE scheduler_scheduledjob")
    with CaptureQueriesContext(connection) as queries:
        queues = watched_queues(default="scheduler-jobs", live=True)
    assert queues == ["scheduler-jobs", "queue-0", "queue-1"]
    [query] = [q["sql"] for q in queries.captured_queries]
    plan = query_plan(query)
    assert "Index Scan Backward using scheduler_job_queue_idx" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "scheduler_job_run_at_idx" not in plan, plan
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}")
        [[[explained]]] = cursor.fetchall()
        cursor.execute("SELECT pg_relation_size('scheduler_scheduledjob') / 8192")
        [[pages]] = cursor.fetchall()
    touched = explained["Plan"]["Shared Hit Blocks"] + explained["Plan"]["Shared Read Blocks"]
    assert touched < pages / 20, (touched, pages)
