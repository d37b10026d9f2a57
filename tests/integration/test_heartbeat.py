"""The heartbeat thread of a running job: it beats until stopped, whatever a beat hits."""

import logging
import threading
import time

import pytest
from django.db import InterfaceError
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from scheduler.services import running
from scheduler.worker.heartbeat import Heartbeat
from tests.factories import dispatch_one
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
