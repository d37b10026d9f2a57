"""The heartbeat thread of a running job: it beats until stopped, whatever a beat hits."""

import logging
import threading
import time

import pytest
from django.db import InterfaceError, connections
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from scheduler.services import running
from scheduler.worker.execution import Handled, Outcome
from scheduler.worker.heartbeat import Heartbeat
from tests.factories import deliver, dispatch_one
from tests.processes import wait_until


@pytest.mark.django_db(transaction=True)
def test_a_beat_that_fails_is_logged_and_the_next_one_tried(monkeypatch, caplog):
    # InterfaceError ("connection already closed") is no DatabaseError: the thread ended
    # on it, silently, and the body ran on without a lease, to be run again by recovery.
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w:1")
    assert isinstance(claimed, running.Claim)
    beats: list[bool] = []

    def beat_after_a_closed_connection(**kwargs: object) -> bool:
        beats.append(True)
        if len(beats) == 1:
            raise InterfaceError("connection already closed")
        return running_heartbeat(**kwargs)

    running_heartbeat = running.heartbeat
    monkeypatch.setattr(running, "heartbeat", beat_after_a_closed_connection)
    with Heartbeat(job_id=job.pk, token=token, interval=0.05):
        assert wait_until(lambda: len(beats) >= 3, timeout=5)
    assert "job heartbeat failed job_id=" in caplog.text
    assert ScheduledJob.objects.get(pk=job.pk).heartbeat_at > claimed.job.started_at


@pytest.mark.django_db(transaction=True)
def test_an_atomic_body_commits_without_waiting_for_a_beat_stuck_on_a_connection(
    monkeypatch, caplog
):
    # Behind a pooler whose connections the atomic bodies hold, a beat waits for one:
    # the body's transaction waited for that beat (up to a heartbeat interval) before it
    # recorded its outcome and committed, holding its connection and locks. The beat,
    # finding the job ended, then warned "lease lost" for a job that kept its lease.
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w:1")
    in_beat, freed = threading.Event(), threading.Event()

    def beat_waiting_for_a_connection(**kwargs: object) -> bool:
        in_beat.set()
        freed.wait(10)
        return False  # the job's outcome came first

    monkeypatch.setattr(running, "heartbeat", beat_waiting_for_a_connection)
    heartbeat = Heartbeat(job_id=job.pk, token=token, interval=0.05)
    with heartbeat, caplog.at_level(logging.WARNING):
        assert in_beat.wait(5)
        started = time.monotonic()
        heartbeat.stop(wait=False)
        assert time.monotonic() - started < 0.5
        freed.set()
    assert "lease lost" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_an_atomic_jobs_success_commits_while_its_last_beat_still_waits(monkeypatch, settings):
    # The path a worker takes: the body's transaction did not commit until that beat
    # had ended (or a heartbeat interval had passed).
    settings.SCHEDULER_HEARTBEAT_INTERVAL_SECONDS = 0.05
    job = schedule_at("testapp.atomic_effect", timezone.now(), ["beat", 0.2])
    token = dispatch_one(job, now=timezone.now())
    in_beat, freed = threading.Event(), threading.Event()
    committed: list[str] = []

    def beat_waiting_for_a_connection(**kwargs: object) -> bool:
        in_beat.set()
        freed.wait(10)
        # What another connection sees when the beat is let go.
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT status FROM scheduler_scheduledjob WHERE id = %s", [job.pk])
            committed.append(cursor.fetchone()[0])
        return False

    monkeypatch.setattr(running, "heartbeat", beat_waiting_for_a_connection)
    outcome: list[Handled] = []

    def deliver_in_a_worker_thread() -> None:
        try:
            outcome.append(deliver(job_id=job.pk, task_name=job.task_name, token=token))
        finally:
            connections.close_all()  # this thread's

    runner = threading.Thread(target=deliver_in_a_worker_thread)
    runner.start()
    try:
        assert in_beat.wait(5)
        # The body (0.2 s) ends and its success commits while the beat waits: visible
        # from here at once, not a second later (the join's timeout).
        assert wait_until(
            lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=0.9
        )
    finally:
        freed.set()
        runner.join(10)
    assert [handled.outcome for handled in outcome] == [Outcome.SUCCEEDED]
    assert committed == ["succeeded"]
