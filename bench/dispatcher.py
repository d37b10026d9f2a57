"""The dispatcher's own figures, each beside a baseline measured in the same run.

``python -m bench.dispatcher --size tiny|small|full``:

1. **Throughput**: rows moved ``scheduled → enqueued`` per second with the in-memory
   publisher (the database alone), beside a hand-written SQL claim loop
   (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``) at the same
   batch size, with 10k, 1M and 5M pending rows.
2. **Client CPU per 1,000 jobs**: the dispatcher's process CPU (claim, encode, send,
   mark) sending to a local SQS stand-in, beside plain boto3 sending the same messages,
   already encoded.
3. **Messages per second** to an SQS stand-in with a 10 ms round trip, beside boto3
   with 8 threads sending the same messages, and the CPU per 1,000 jobs of both there.
4. **An empty tick** (nothing due, nothing to recover): its time and statements, beside
   the due query alone, from 10k to 5M rows.

The SQS stand-in (:mod:`bench.sqs_standin`) runs in its own process and costs the same
whatever was sent before; moto's costs grow with its queue, so SQS-bound figures on
moto would overstate the server's share.
"""

import functools
import logging
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

from bench.harness import Row, parser, print_table, setup_django, stopwatch
from tests.conftest import sqs_client

if TYPE_CHECKING:
    from scheduler.testing import InMemoryPublisher

_plain_client = functools.cache(sqs_client)


@dataclass(frozen=True)
class Size:
    """How much work each section does."""

    #: Pending rows in the table, for the throughput and empty-tick sections.
    pending: tuple[int, ...]
    #: The pending counts at which throughput is measured (the others: empty tick only).
    throughput_at: tuple[int, ...]
    #: Due rows moved per throughput measurement (at most half the pending rows).
    claimed: int
    batch_sizes: tuple[int, ...]
    rounds: int
    #: Jobs sent to the SQS stand-in per measurement.
    sent: int
    empty_ticks: int


SIZES = {
    "tiny": Size((2_000,), (2_000,), 500, (100,), 1, 300, 20),
    "small": Size((10_000, 100_000), (10_000, 100_000), 5_000, (100, 1000), 3, 2_000, 200),
    "full": Size(
        (10_000, 100_000, 1_000_000, 5_000_000),
        (10_000, 1_000_000, 5_000_000),
        20_000,
        (100, 1000),
        5,
        5_000,
        300,
    ),
}

#: The round trip of the stand-in for the messages-per-second section.
ROUND_TRIP_MS = 10.0
BASELINE_THREADS = 8


def main() -> None:
    """Run every section and print its tables."""
    arguments = parser(__doc__ or "")
    arguments.add_argument(
        "--only",
        default="throughput,empty,cpu,rate",
        help="comma-separated sections to run (default: all): throughput, empty, cpu, rate",
    )
    args = arguments.parse_args()
    only = set(args.only.split(","))
    size = SIZES[args.size]
    setup_django(args.database, keep=args.keep)
    from django.conf import settings

    settings.DEBUG = False  # as in production: no query log kept for every statement
    logging.getLogger("scheduler").setLevel(logging.WARNING)
    print(f"# bench.dispatcher --size {args.size}")
    empty_rows: list[Row] = []
    for pending in size.pending if only & {"throughput", "empty"} else ():
        claimed = min(size.claimed, pending // 2)
        fill(pending, due=claimed)
        if "throughput" in only and pending in size.throughput_at:
            print_table(f"Throughput, {pending:,} pending rows", throughput(size, claimed))
        if "empty" in only:
            empty_rows.extend(empty_tick(size, pending))
    if empty_rows:
        print_table("Empty tick (nothing due, nothing to recover)", empty_rows)
    truncate()
    if "cpu" in only:
        with standin(delay_ms=0) as endpoint:
            print_table("Client CPU per 1,000 jobs (SQS stand-in)", client_cpu(size, endpoint))
    if "rate" in only:
        with standin(delay_ms=ROUND_TRIP_MS) as endpoint:
            print_table(
                f"Messages per second to an SQS stand-in with a {ROUND_TRIP_MS:g} ms round trip",
                send_rate(size, endpoint),
            )


# --- The table --------------------------------------------------------------------------


def fill(count: int, *, due: int) -> None:
    """Empty the job table, then insert ``count`` scheduled jobs, the first ``due`` past due.

    The others are spread over the next 30 days, beyond any lookahead.
    """
    from django.db import connection

    from scheduler.conf import scheduler_settings

    truncate()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO scheduler_scheduledjob
                (task_name, args, kwargs, queue, run_at, status, attempts, max_attempts,
                 sends, last_error, created_at, updated_at, retry_on_error)
            SELECT 'testapp.noop', '[]', '{}', %(queue)s,
                   CASE WHEN i <= %(due)s
                        THEN now() - interval '1 hour' + i * interval '1 millisecond'
                        ELSE now() + interval '1 hour'
                             + (i::float / %(count)s * 30) * interval '1 day' END,
                   'scheduled', 0, 5, 0, '', now(), now(), true
            FROM generate_series(1, %(count)s) AS i
            """,
            {"queue": scheduler_settings.QUEUE_NAME, "due": due, "count": count},
        )
    vacuum()


def truncate() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE scheduler_jobattempt, scheduler_scheduledjob CASCADE")


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE scheduler_scheduledjob")


def put_back() -> None:
    """Return every enqueued job to scheduled, as before it was dispatched (between runs)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE scheduler_scheduledjob SET status = 'scheduled', dispatch_token = NULL, "
            "enqueued_at = NULL, sends = 0, resend_at = NULL WHERE status = 'enqueued'"
        )
    vacuum()


# --- 1. Throughput ----------------------------------------------------------------------

#: The hand-written claim loop's statement: what a dispatcher must at least do per batch.
#: In (run_at, id) order and with the due index's predicate (not held, the row
#: condition), as the dispatcher claims: without them PostgreSQL may read the plain
#: run_at index, stepping over every row already marked, a handicap the dispatcher does
#: not have (the loop had it until 2026-12-05, and again, without ``NOT held``, from
#: migration 0015 to 2026-12-06). ``due_index_plan`` checks it each run. The token comes
#: back as text, as the dispatcher's does since 2026-12-07.
SQL_CLAIM = """
UPDATE scheduler_scheduledjob
SET status = 'enqueued', dispatch_token = gen_random_uuid(), enqueued_at = now(),
    updated_at = now(), sends = 1, resend_at = now() + interval '300 seconds'
WHERE id IN (
    SELECT id FROM scheduler_scheduledjob
    WHERE status = 'scheduled' AND NOT held AND run_at <= %(cutoff)s
      AND (run_at, id) <= (%(cutoff)s, 9223372036854775807)
    ORDER BY run_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
RETURNING id, task_name, queue, run_at, dispatch_token::text
"""


#: The least any tick must ask: is a job due? Hand-written, on the dispatcher's index.
SQL_PROBE = """
SELECT 1 FROM scheduler_scheduledjob
WHERE status = 'scheduled' AND NOT held AND run_at <= %(cutoff)s
  AND (run_at, id) <= (%(cutoff)s, 9223372036854775807)
ORDER BY run_at, id LIMIT 1
"""


def _cutoff() -> datetime:
    """The latest run_at a tick sends now, as the dispatcher computes it."""
    from django.utils import timezone

    from scheduler.conf import scheduler_settings

    return timezone.now() + timedelta(seconds=scheduler_settings.LOOKAHEAD_SECONDS)


@contextmanager
def _on_the_due_index(sql: str, params: dict[str, Any]) -> Iterator[None]:
    """Run a baseline's statements planned on the due index, as the dispatcher's are.

    With the table's statistics fresh from a bulk load, PostgreSQL may still prefer the
    plain run_at index (and sort each batch by id), stepping over every row already
    marked: sorting is switched off meanwhile, and the run stops if the plan is not on
    the due index, since a baseline on another index is a handicapped one.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET enable_sort = off")
        cursor.execute("SET enable_incremental_sort = off")
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(line for (line,) in cursor.fetchall())
            if "scheduler_job_due_idx" not in plan:
                raise SystemExit(f"the baseline does not read the due index:\n{plan}")
            yield
        finally:
            cursor.execute("RESET enable_sort")
            cursor.execute("RESET enable_incremental_sort")


def sql_claim_loop(batch_size: int) -> int:
    """Claim every due row with the hand-written statement, one transaction per batch."""
    from django.db import connection

    moved = 0
    params: dict[str, Any] = {"limit": batch_size, "cutoff": _cutoff()}
    with _on_the_due_index(SQL_CLAIM, params), connection.cursor() as cursor:
        while True:
            cursor.execute(SQL_CLAIM, params)
            rows = cursor.fetchall()
            moved += len(rows)
            if len(rows) < batch_size:
                return moved


def _keeping_none() -> "InMemoryPublisher":
    """The in-memory publisher, forgetting each batch once it has taken it, as an SQS
    publisher does.

    Kept, the 20,000 messages of a run set off Python's collector, whose full passes
    (40 ms each, over every object of the process) cost the dispatcher 0.2 ms a batch
    of 100 that it does not pay in production, and the loop, which keeps nothing, not
    at all.
    """
    from scheduler.dispatch.publisher import OutgoingMessage, PublishResult
    from scheduler.testing import InMemoryPublisher

    class KeepingNone(InMemoryPublisher):
        def publish(self, messages: Sequence[OutgoingMessage]) -> PublishResult:
            published = super().publish(messages)
            self.published.clear()
            return published

    return KeepingNone()


def throughput(size: Size, claimed: int) -> list[Row]:
    """Rows per second of both, alternating which goes first, median of the rounds.

    The dispatcher's ticks here only dispatch: its recovery (every few seconds) and its
    purge (hourly) run in an untimed first tick, which also pays, for both sides, the
    first pass over freshly inserted rows (setting their hint bits).
    """
    from django.test.utils import override_settings

    from scheduler.dispatch.dispatcher import Dispatcher

    dispatcher = Dispatcher(publisher=_keeping_none())

    def dispatch_all(batch_size: int) -> int:
        with override_settings(SCHEDULER_BATCH_SIZE=batch_size):
            return dispatcher.run_once().sent

    rows = []
    with override_settings(SCHEDULER_RECOVERY_INTERVAL_SECONDS=24 * 3600):
        dispatcher.run_once()
        put_back()
        for batch_size in size.batch_sizes:
            ours: list[float] = []
            baseline: list[float] = []
            for round_number in range(size.rounds):
                pair = [(ours, dispatch_all), (baseline, sql_claim_loop)]
                for figures, run in pair if round_number % 2 == 0 else pair[::-1]:
                    with stopwatch() as elapsed:
                        moved = run(batch_size)
                    assert moved == claimed, (run.__name__, moved, claimed)
                    figures.append(moved / elapsed())
                    put_back()
            rows.append(
                Row(
                    f"rows/s scheduled → enqueued, batch {batch_size}",
                    statistics.median(ours),
                    statistics.median(baseline),
                    "rows/s",
                    "SQL claim loop",
                )
            )
    return rows


# --- 4. The empty tick ------------------------------------------------------------------


def empty_tick(size: Size, pending: int) -> list[Row]:
    """Consume what is due, then time ticks that find nothing, and the due query alone."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from scheduler.dispatch.dispatcher import Dispatcher
    from scheduler.testing import InMemoryPublisher

    sql_claim_loop(1000)
    vacuum()
    dispatcher = Dispatcher(publisher=InMemoryPublisher())
    dispatcher.run_once()  # the first tick also recovers and purges
    ticks: list[float] = []
    queries: list[int] = []
    for _ in range(size.empty_ticks):
        reset_queries()  # the query log keeps 9,000 entries; the throughput runs filled it
        with CaptureQueriesContext(connection) as captured, stopwatch() as elapsed:
            result = dispatcher.run_once()
        assert result.sent == 0, result
        ticks.append(elapsed() * 1000)
        queries.append(len(captured.captured_queries))

    def due_query() -> float:
        with stopwatch() as elapsed, connection.cursor() as cursor:
            cursor.execute(SQL_PROBE, {"cutoff": _cutoff()})
            cursor.fetchall()
        return elapsed() * 1000

    with _on_the_due_index(SQL_PROBE, {"cutoff": _cutoff()}):
        alone = statistics.median(due_query() for _ in range(size.empty_ticks))
    return [
        Row(f"{pending:,} rows: empty tick", statistics.median(ticks), alone, "ms", "SQL probe"),
        Row(f"{pending:,} rows: statements per empty tick", statistics.median(queries)),
        Row(f"{pending:,} rows: slowest empty tick", max(ticks), None, "ms"),
    ]


# --- 2 and 3. Sending to SQS ------------------------------------------------------------


@contextmanager
def standin(*, delay_ms: float) -> Iterator[str]:
    """An SQS stand-in process on a free port, answering after ``delay_ms``."""
    from django.test.utils import override_settings

    from tests.processes import free_port

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.sqs_standin",
            "--port",
            str(port),
            "--delay-ms",
            str(delay_ms),
        ]
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.post(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with override_settings(
            SCHEDULER_SQS_ENDPOINT_URL=endpoint, SCHEDULER_SQS_REGION="us-east-1"
        ):
            yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def _schedule_due(count: int) -> None:
    fill(count, due=count)


def _dispatch_to_sqs() -> tuple[int, float, float]:
    """Dispatch every due job with the SQS publisher: (sent, wall seconds, CPU seconds)."""
    from scheduler.dispatch.dispatcher import Dispatcher

    dispatcher = Dispatcher()
    cpu = time.process_time()
    with stopwatch() as elapsed:
        sent = dispatcher.run_once().sent
    return sent, elapsed(), time.process_time() - cpu


def _encoded_messages(count: int) -> list[dict[str, Any]]:
    """``count`` SendMessageBatch entries with the dispatcher's own message bodies."""
    from django.utils import timezone

    from scheduler.dispatch.publisher import OutgoingMessage, encode_message

    now = timezone.now()
    return [
        {
            "Id": str(i),
            "MessageBody": encode_message(
                OutgoingMessage(
                    job_id=i,
                    dispatch_token=str(uuid.uuid4()),
                    task_name="testapp.noop",
                    queue="bench",
                    eta=now,
                    delay_seconds=0,
                )
            ),
            "DelaySeconds": 0,
        }
        for i in range(count)
    ]


def _boto3_send(entries: list[dict[str, Any]], *, threads: int) -> tuple[float, float]:
    """Send ``entries`` ten to a call with plain boto3: (wall seconds, CPU seconds)."""
    from django.conf import settings

    # A client with boto3's defaults, as an application would make one.
    client = _plain_client(settings.SCHEDULER_SQS_ENDPOINT_URL)
    url = client.get_queue_url(QueueName="bench")["QueueUrl"]
    chunks = [entries[i : i + 10] for i in range(0, len(entries), 10)]
    cpu = time.process_time()
    with stopwatch() as elapsed, ThreadPoolExecutor(threads) as pool:
        for response in pool.map(
            lambda chunk: client.send_message_batch(QueueUrl=url, Entries=chunk), chunks
        ):
            assert not response.get("Failed")
    return elapsed(), time.process_time() - cpu


def client_cpu(size: Size, _endpoint: str) -> list[Row]:
    """CPU seconds per 1,000 jobs: the dispatcher's whole process beside boto3's sends."""
    ours, baseline = [], []
    entries = _encoded_messages(size.sent)
    _boto3_send(entries[:20], threads=1)  # warm the client and its connection
    for _ in range(size.rounds):
        _schedule_due(size.sent)
        sent, _, cpu = _dispatch_to_sqs()
        assert sent == size.sent, sent
        ours.append(cpu / sent * 1000)
        _, cpu = _boto3_send(entries, threads=1)
        baseline.append(cpu / len(entries) * 1000)
    return [
        Row(
            "dispatcher CPU per 1,000 jobs (claim, encode, send, mark)",
            statistics.median(ours),
            statistics.median(baseline),
            "s",
            "plain boto3, same messages",
        )
    ]


def send_rate(size: Size, _endpoint: str) -> list[Row]:
    """Messages per second, and CPU per 1,000: one dispatcher process beside boto3 with 8 threads.

    The CPU here is spent against a server with a round trip, as SQS has: the send
    threads mostly wait, where against the stand-in that answers at once (the client CPU
    section) they contend for the GIL.
    """
    ours, baseline, ours_cpu, baseline_cpu = [], [], [], []
    entries = _encoded_messages(size.sent)
    _boto3_send(entries[:80], threads=BASELINE_THREADS)
    for _ in range(size.rounds):
        _schedule_due(size.sent)
        sent, wall, cpu = _dispatch_to_sqs()
        assert sent == size.sent, sent
        ours.append(sent / wall)
        ours_cpu.append(cpu / sent * 1000)
        wall, cpu = _boto3_send(entries, threads=BASELINE_THREADS)
        baseline.append(len(entries) / wall)
        baseline_cpu.append(cpu / len(entries) * 1000)
    return [
        Row(
            "messages/s, one dispatcher process",
            statistics.median(ours),
            statistics.median(baseline),
            "msg/s",
            f"boto3, {BASELINE_THREADS} threads",
        ),
        Row(
            "dispatcher CPU per 1,000 jobs (claim, encode, send, mark)",
            statistics.median(ours_cpu),
            statistics.median(baseline_cpu),
            "s",
            f"boto3, {BASELINE_THREADS} threads, same messages",
        ),
    ]


if __name__ == "__main__":
    main()
