"""The heartbeat thread of a running job: it beats until stopped, whatever a beat hits."""

import logging
import operator
import os
import threading
import time
import uuid
from datetime import datetime

import pytest
from django.db import InterfaceError, connections
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from scheduler.services import dispatching, running
from scheduler.worker.execution import Handled, Outcome
from scheduler.worker.heartbeat import Heartbeat
from tests.conftest import job_row_held_elsewhere
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


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_short_jobs_starts_no_thread_per_job(monkeypatch):
    # A thread started for each job, waited for as it started and joined as the job
    # ended, cost a prefork child a fifth of its time in a burst of 500 short jobs.
    started: list[str] = []
    start_thread = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        if thread.name.startswith("scheduler-heartbeat"):
            started.append(thread.name)
        start_thread(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    jobs = [schedule_at("testapp.noop", timezone.now()) for _ in range(10)]
    outcomes = [
        deliver(job_id=job.pk, task_name=job.task_name, token=dispatch_one(job, now=timezone.now()))
        for job in jobs
    ]
    assert [handled.outcome for handled in outcomes] == [Outcome.SUCCEEDED] * 10
    assert len(started) <= 1  # the process's one, unless an earlier test started it


@pytest.mark.django_db(transaction=True)
def test_every_running_job_is_beaten_and_a_lost_lease_ends_only_its_own(caplog):
    # A worker running jobs on threads (--pool=threads) runs several at once.
    jobs = [schedule_at("testapp.noop", timezone.now()) for _ in range(2)]
    kept, lost = (dispatch_one(job, now=timezone.now()) for job in jobs)
    for job, token in zip(jobs, (kept, lost), strict=True):
        running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w:1")

    def beats(job: ScheduledJob) -> datetime | None:
        return ScheduledJob.objects.get(pk=job.pk).heartbeat_at

    with (
        caplog.at_level(logging.WARNING),
        Heartbeat(job_id=jobs[0].pk, token=kept, interval=0.05),
        Heartbeat(job_id=jobs[1].pk, token=lost, interval=0.05),
    ):
        first = [beats(job) for job in jobs]
        assert wait_until(lambda: all(map(operator.gt, map(beats, jobs), first)), timeout=5)
        # Another delivery took the second job over: its beats find it no longer theirs.
        ScheduledJob.objects.filter(pk=jobs[1].pk).update(dispatch_token=uuid.uuid4())
        assert wait_until(lambda: f"job lease lost job_id={jobs[1].pk}" in caplog.text, timeout=5)
        since = beats(jobs[0])
        assert wait_until(lambda: beats(jobs[0]) > since, timeout=5)
    assert caplog.text.count("job lease lost") == 1


def test_a_forked_child_beats_from_a_thread_of_its_own(monkeypatch):
    # A worker's pool processes are forked: the parent's thread is not in the child.
    read_end, write_end = os.pipe()

    def beat(**kwargs: object) -> bool:
        os.write(write_end, b"%8d\n" % os.getpid())
        return True

    monkeypatch.setattr(running, "heartbeat", beat)
    with Heartbeat(job_id=1, token=uuid.uuid4(), interval=0.01):
        assert int(os.read(read_end, 9)) == os.getpid()  # the parent's thread beats
        child = os.fork()
        if child == 0:
            with Heartbeat(job_id=2, token=uuid.uuid4(), interval=0.01):
                time.sleep(0.5)
            os._exit(0)
    _, status = os.waitpid(child, 0)
    os.close(write_end)
    with os.fdopen(read_end) as beats:
        assert os.waitstatus_to_exitcode(status) == 0
        assert beats.read().split().count(str(child)) >= 10  # about 50


@pytest.mark.django_db(transaction=True)
def test_a_beat_waiting_for_one_jobs_row_holds_up_no_other_jobs_lease(settings):
    # One thread beating for every job of a process waited, with the beat of a job whose
    # row another transaction held, and the other jobs' leases expired: recovery retried
    # them while they ran.
    settings.SCHEDULER_LEASE_SECONDS = 1
    jobs = [schedule_at("testapp.noop", timezone.now()) for _ in range(2)]
    tokens = [dispatch_one(job, now=timezone.now()) for job in jobs]
    for job, token in zip(jobs, tokens, strict=True):
        running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w:1")
    with (
        Heartbeat(job_id=jobs[0].pk, token=tokens[0], interval=0.2),
        Heartbeat(job_id=jobs[1].pk, token=tokens[1], interval=0.2),
        job_row_held_elsewhere(jobs[0].pk),
    ):
        time.sleep(2)  # two leases
        assert dispatching.expire_leases(now=timezone.now()) == 0
    assert ScheduledJob.objects.get(pk=jobs[1].pk).status == "running"


@pytest.mark.django_db(transaction=True)
def test_a_job_due_before_the_thread_would_wake_is_beaten_on_time():
    # The thread that beat for a job with a long interval sleeps until that job's next
    # beat: the process's next job, with a shorter one, must wake it.
    job = schedule_at("testapp.noop", timezone.now())
    token = dispatch_one(job, now=timezone.now())
    claimed = running.claim(job_id=job.pk, token=token, task_name=job.task_name, worker="w:1")
    assert isinstance(claimed, running.Claim)
    with Heartbeat(job_id=job.pk, token=token, interval=60):
        time.sleep(0.1)  # its thread now sleeps until that beat
    with Heartbeat(job_id=job.pk, token=token, interval=0.05):
        assert wait_until(
            lambda: ScheduledJob.objects.get(pk=job.pk).heartbeat_at > claimed.job.started_at,
            timeout=3,
        )


def test_a_stop_waits_for_no_logging_handler(monkeypatch):
    # The beat that finds the lease lost logs it: under the beater's lock, a slow
    # handler held up a stop(wait=False), which an atomic body's transaction makes.
    in_handler, freed = threading.Event(), threading.Event()

    class SlowHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            in_handler.set()
            freed.wait(5)

    monkeypatch.setattr(running, "heartbeat", lambda **kwargs: False)
    handler = SlowHandler(logging.WARNING)
    logger = logging.getLogger("scheduler.worker.heartbeat")
    logger.addHandler(handler)
    try:
        heartbeat = Heartbeat(job_id=1, token=uuid.uuid4(), interval=0.01)
        with heartbeat:
            assert in_handler.wait(5)
            started = time.monotonic()
            heartbeat.stop(wait=False)
            assert time.monotonic() - started < 0.5
            freed.set()
    finally:
        freed.set()
        logger.removeHandler(handler)
