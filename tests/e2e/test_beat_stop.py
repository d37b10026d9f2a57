"""Celery beat, the dispatcher, stopped for a deploy (SIGTERM) or with Ctrl-C (SIGINT)."""

import contextlib
import re
import signal
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduler.dispatch.beat import DISPATCH_TASK_NAME
from scheduler.models import ScheduledJob
from scheduler.protocol import DISPATCH_TOKEN_HEADER, JOB_ID_HEADER
from tests.conftest import SqsQueue
from tests.e2e.conftest import a_burst_due_now, celery_beat, ctrl_c_twice_in_a_stuck_tick
from tests.processes import wait_until

pytestmark = pytest.mark.timeout(120)

#: Overdue jobs: more than a tick sends in its first batches, so the stop lands while it
#: sends more.
JOBS = 2000


def test_beat_stopped_during_a_tick_commits_what_it_sent_then_exits(
    e2e_env: dict[str, str], sqs_queue: SqsQueue, tmp_path: Any
) -> None:
    # Celery's handler saved the schedule and raised SystemExit wherever beat was: in a
    # batch's transaction, the save closed its connection ("beat schedule save failed …
    # connection already closed") and the batch rolled back, its messages sent for
    # nothing and the tick's log line lost.
    overdue = timezone.now() - timedelta(minutes=1)
    ScheduledJob.objects.bulk_create(
        ScheduledJob(task_name="testapp.noop", queue=sqs_queue.name, run_at=overdue, max_attempts=1)
        for _ in range(JOBS)
    )
    with celery_beat(e2e_env, pidfile=tmp_path / "beat.pid") as beat:
        # The first batch committed: the tick is sending the next ones.
        assert wait_until(
            lambda: ScheduledJob.objects.filter(status="enqueued").exists(), timeout=60
        ), beat.output()
        before = ScheduledJob.objects.filter(status="enqueued").count()
        beat.popen.send_signal(signal.SIGTERM)
        assert beat.popen.wait(30) == 0, beat.output()
        output = beat.output()
    enqueued = dict(
        ScheduledJob.objects.filter(status="enqueued").values_list("pk", "dispatch_token")
    )
    in_sqs = {
        int(message["headers"][JOB_ID_HEADER]): message["headers"][DISPATCH_TOKEN_HEADER]
        for message in _every_message(sqs_queue)
    }
    assert in_sqs == {pk: str(token) for pk, token in enqueued.items()}
    assert "save failed" not in output, output
    ticks = [int(sent) for sent in re.findall(r"dispatch tick dispatcher=\S+ sent=(\d+)", output)]
    assert sum(ticks) == len(enqueued), output
    assert "beat stopping signal=15 after the current tick" in output
    assert len(enqueued) > before, "the tick did not go on after the stop"


def test_beat_stopped_between_ticks_exits_at_once(e2e_env: dict[str, str], tmp_path: Any) -> None:
    with celery_beat(e2e_env, pidfile=tmp_path / "beat.pid") as beat:
        beat.wait_for_output("dispatch tick", timeout=60)
        stopped = time.monotonic()
        beat.popen.send_signal(signal.SIGINT)  # Ctrl-C
        assert beat.popen.wait(30) == 0, beat.output()
        # Not after the sleep until the next tick: beat sleeps up to 5 s between ticks.
        assert time.monotonic() - stopped < 3, beat.output()
        output = beat.output()
    assert "beat stopping signal=2 after the current tick" in output
    assert "Traceback" not in output, output


def test_ctrl_c_pressed_again_and_again_as_beat_exits_changes_nothing(
    e2e_env: dict[str, str], tmp_path: Any
) -> None:
    # Python puts the default handlers back as it finalizes: a Ctrl-C then killed beat as
    # it exited (status -2, not its own).
    with celery_beat(e2e_env, pidfile=tmp_path / "beat.pid") as beat:
        beat.wait_for_output("dispatch tick", timeout=60)
        deadline = time.monotonic() + 10
        while beat.popen.poll() is None and time.monotonic() < deadline:
            beat.popen.send_signal(signal.SIGINT)
            time.sleep(0.002)
        assert beat.popen.wait(30) == 0, beat.output()
        output = beat.output()
    assert "Traceback" not in output, output


def test_ctrl_c_again_stops_beat_at_once_its_tick_rolled_back(
    sqs_sends_stuck: dict[str, str], tmp_path: Any
) -> None:
    jobs = a_burst_due_now(sqs_sends_stuck["SCHEDULER_QUEUE_NAME"])
    with celery_beat(sqs_sends_stuck, pidfile=tmp_path / "beat.pid") as beat:
        output = ctrl_c_twice_in_a_stuck_tick(beat, jobs)
    assert "beat stopping now signal=2 tick=cut short" in output
    assert not (tmp_path / "beat.pid").exists()


@pytest.mark.parametrize(
    "signals",
    [[signal.SIGTERM], [signal.SIGINT], [signal.SIGINT, signal.SIGINT]],
    ids=["sigterm", "ctrl-c", "ctrl-c-twice"],
)
def test_beat_stopped_while_it_starts_sets_up_its_schedule_then_exits(
    e2e_env: dict[str, str], tmp_path: Any, signals: list[signal.Signals]
) -> None:
    # Celery's handler was beat's until beat_init: a stop as beat set up its schedule
    # built a second scheduler in the handler, which wrote the schedule on the connection
    # the first was writing with, closed it ("connection already closed") and beat exited
    # 1 with a traceback; Ctrl-C again ran the handler again within the first.
    with contextlib.ExitStack() as writing:
        # Another writer of the dispatch entry (a replica's migrate): beat's set-up waits.
        writing.enter_context(transaction.atomic())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [DISPATCH_TASK_NAME])
        with celery_beat(e2e_env, pidfile=tmp_path / "beat.pid") as beat:
            assert wait_until(_a_writer_waits, timeout=30), beat.output()
            first, *again = signals
            beat.popen.send_signal(first)
            writing.close()
            for signum in again:
                time.sleep(0.01)  # as the first is handled
                beat.popen.send_signal(signum)
            assert beat.popen.wait(30) == 0, beat.output()
            output = beat.output()
    assert "Traceback" not in output, output
    assert "dispatch schedule updated" in output
    assert f"beat stopping signal={first} as it starts" in output
    assert "dispatch tick" not in output, output
    assert not (tmp_path / "beat.pid").exists()


def _a_writer_waits() -> bool:
    """Whether a session waits for an advisory lock in this database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        )
        waits: bool = cursor.fetchone()[0]
        return waits


def _every_message(queue: SqsQueue) -> list[dict[str, Any]]:
    """Every message in ``queue``, each kept hidden once received (no delete: fewer calls)."""
    messages = []
    while batch := queue.receive(keep=True):
        messages.extend(batch)
    return messages
