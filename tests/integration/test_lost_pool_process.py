"""A job whose pool process was lost (killed, out of memory, a hard time limit): Celery's
worker tells the failure of the call only when the job's lease will fail it too."""

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from billiard.einfo import ExceptionInfo
from celery import current_app, signals
from celery.backends.cache import CacheBackend
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.utils.imports import symbol_by_name
from celery.worker import state
from django.db import connection
from django.utils import timezone
from kombu import Message

from scheduler import schedule_at
from scheduler import signals as job_signals
from scheduler.conf import scheduler_settings
from scheduler.dispatch.publisher import OutgoingMessage, encode_message
from scheduler.models import ScheduledJob
from scheduler.services import dispatching, running
from scheduler.worker.request import Request
from tests.conftest import held_elsewhere, job_row_held_elsewhere
from tests.factories import dispatch_one
from tests.testapp.tasks import noop

# The worker's main process closes its connection after it asks about the job.
pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def failures(monkeypatch) -> Iterator[list[str]]:
    """The task ids task_failure is sent for; the task's results kept, in memory."""
    monkeypatch.setattr(noop, "_backend", CacheBackend(app=current_app, url="memory://"))
    monkeypatch.setattr(noop, "ignore_result", False)
    sent: list[str] = []

    def receive(sender=None, task_id=None, **kwargs):
        sent.append(task_id)

    signals.task_failure.connect(receive)
    yield sent
    signals.task_failure.disconnect(receive)


def _running_job(max_attempts: int, *, pid: int | None = None) -> tuple[running.Claim, Request]:
    """A job's claim by a worker's pool process ``pid`` (this one by default, which the
    worker never kills), and the worker's request for the job's message, run by it."""
    pid = pid or os.getpid()
    job = schedule_at(noop, T0, max_attempts=max_attempts)
    token = dispatch_one(job, now=T0)
    request = _request(job.pk, token, pid=pid)
    # As the process names its deliveries: host, pid and a random part of its own.
    worker = f"{request.hostname}:{pid}:0a1b"
    claimed = running.claim(job_id=job.pk, token=token, task_name=noop.name, worker=worker)
    assert isinstance(claimed, running.Claim)
    return claimed, request


def _request(job_id: int, token: uuid.UUID, *, pid: int) -> Request:
    """The worker's request for a message of the job with ``token``, handed to the pool
    process ``pid``."""
    outgoing = OutgoingMessage(job_id, str(token), noop.name, "jobs", T0, 0)
    envelope = json.loads(base64.b64decode(encode_message(outgoing)))
    message = Message(
        body=base64.b64decode(envelope["body"]),
        headers=envelope["headers"],
        content_type=envelope["content-type"],
        content_encoding=envelope["content-encoding"],
    )
    request = symbol_by_name(noop.Request)(message, app=current_app, task=noop)
    assert isinstance(request, Request)
    request.worker_pid = pid  # type: ignore[assignment]  # an int, as the pool tells it
    return request


def _failed_with(error: Exception) -> ExceptionInfo:
    try:
        raise error
    except type(error):
        return ExceptionInfo()


def _lose(request: Request, how: str) -> None:
    """Lose ``request``'s process ``how``, as billiard's pool tells the worker."""
    if how == "killed":
        request.on_failure(
            _failed_with(WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")),
        )
    else:  # the error first, then the timeout
        request.on_failure(_failed_with(TimeLimitExceeded(60)))
        request.on_timeout(soft=False, timeout=60)


@pytest.mark.parametrize("how", ["killed", "hard time limit"])
def test_a_lost_process_of_a_job_its_lease_retries_is_no_failure_of_the_call(failures, how):
    # Celery stored FAILURE for the call's id and sent task_failure (a payment marked
    # failed, an alert), then the lease ran the job again, which succeeded.
    claimed, request = _running_job(max_attempts=3)
    _lose(request, how)
    assert failures == []
    assert noop.backend.get_state(request.id) == "PENDING"
    job = ScheduledJob.objects.get(pk=claimed.job.pk)
    # Retried after the error back-off: it waited out its lease, a minute by default.
    assert job.status == ScheduledJob.Status.SCHEDULED
    back_off = timedelta(seconds=scheduler_settings.RETRY_BACKOFF_SECONDS)
    assert timezone.now() + back_off / 2 - timedelta(seconds=5) <= job.run_at
    assert job.run_at <= timezone.now() + back_off
    [attempt] = job.history.all()
    assert attempt.outcome == "lease_expired"
    assert (
        attempt.error
        == {
            "killed": "worker process lost: Worker exited prematurely: signal 9 (SIGKILL).",
            "hard time limit": "worker process lost: hard time limit (60s) exceeded",
        }[how]
    )


@pytest.mark.parametrize("how", ["killed", "hard time limit"])
def test_a_lost_process_of_a_jobs_last_attempt_is_the_calls_failure(failures, how):
    # The job fails at once: Celery's own word stands.
    claimed, request = _running_job(max_attempts=1)
    failed: list[int] = []

    def receive(sender, job_id, **kwargs):
        failed.append(job_id)

    job_signals.job_failed.connect(receive)
    try:
        _lose(request, how)
    finally:
        job_signals.job_failed.disconnect(receive)
    assert set(failures) == {request.id}
    assert noop.backend.get_state(request.id) == "FAILURE"
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.FAILED
    assert failed == [claimed.job.pk]


def test_a_hard_time_limit_told_alone_settles_a_late_acknowledged_message(failures, monkeypatch):
    # gevent's pool tells on_timeout only, with no failure first: the message of an
    # acks_late task was left unsettled (SQS delivered it again after its visibility
    # timeout), and nothing said so.
    monkeypatch.setattr(noop, "acks_late", True)
    _, request = _running_job(max_attempts=3)
    acknowledged = []
    monkeypatch.setattr(request, "_on_ack", lambda *args: acknowledged.append(request.id))
    request.on_timeout(soft=False, timeout=60)
    assert (failures, acknowledged) == ([], [request.id])


def test_a_lost_process_of_a_job_that_had_succeeded_tells_its_success(failures, caplog):
    claimed, request = _running_job(max_attempts=3)
    assert running.record_success(job=claimed.job, attempt=claimed.attempt)
    _lose(request, "killed")
    assert failures == []
    assert "no failure of the call, the job succeeded" in caplog.text


def test_a_lost_process_of_a_job_its_lease_already_failed_is_the_calls_failure(failures):
    # Its body held the GIL past a lease: the lease failed its last attempt (storing no
    # result), then the hard time limit killed it. Told as going on, the call stayed
    # PENDING for ever.
    _, request = _running_job(max_attempts=1)
    assert dispatching.expire_leases(now=timezone.now() + timedelta(hours=1)) == 1
    _lose(request, "hard time limit")
    assert set(failures) == {request.id}
    assert noop.backend.get_state(request.id) == "FAILURE"


def test_a_process_past_its_hard_time_limit_is_killed_before_its_job_is_retried(failures):
    # billiard kills it after telling the worker: meanwhile the body ran on, and could
    # record its outcome over the retry's.
    body = subprocess.Popen(["sleep", "60"])
    try:
        claimed, request = _running_job(max_attempts=3, pid=body.pid)
        _lose(request, "hard time limit")
        assert body.wait(5) == -signal.SIGKILL
        assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.SCHEDULED
    finally:
        body.kill()
        body.wait()


def test_a_success_its_process_was_committing_when_lost_stands(failures, caplog):
    # Killed as its success's commit reached PostgreSQL: the row's lock is waited for,
    # and the success read, not retried over.
    claimed, request = _running_job(max_attempts=3)
    succeed = partial(running.record_success, job=claimed.job, attempt=claimed.attempt)
    with held_elsewhere(succeed, commit_after=0.5):
        _lose(request, "killed")
    assert failures == []
    assert "no failure of the call, the job succeeded" in caplog.text
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.SUCCEEDED


def test_a_lost_jobs_row_held_elsewhere_is_left_to_its_lease(failures, caplog):
    # The worker's main process waited for the row's lock as long as another session
    # held it: its event loop stood still, no message received, acknowledged or started.
    claimed, request = _running_job(max_attempts=3)
    with job_row_held_elsewhere(claimed.job.pk, commit_after=4):
        started = time.monotonic()
        _lose(request, "killed")
        waited = time.monotonic() - started
    assert waited < 2
    assert failures == []
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.RUNNING
    assert f"job lost delivery left to its lease job_id={claimed.job.pk}" in caplog.text
    # Not "retried": nothing was.
    assert "no failure of the call, the job left to its lease" in caplog.text


def test_a_last_attempt_whose_success_commits_past_the_wait_is_no_failure(failures):
    # The row read as committed, still running, its last attempt's loss was the call's
    # failure (FAILURE, task_failure), and then its success committed.
    claimed, request = _running_job(max_attempts=1)
    succeed = partial(running.record_success, job=claimed.job, attempt=claimed.attempt)
    with held_elsewhere(succeed, commit_after=2):
        _lose(request, "killed")
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.SUCCEEDED
    assert failures == []
    assert noop.backend.get_state(request.id) == "PENDING"


@pytest.mark.parametrize("max_attempts", [3, 1], ids=["attempts left", "last attempt"])
def test_the_lost_process_of_a_copy_of_a_jobs_message_is_no_loss_of_the_job(failures, max_attempts):
    # A re-send of a job's message carries its token, and SQS may deliver a message
    # twice: the process that received the copy was lost (killed as it dropped it),
    # and the attempt of the delivery running the job was ended, and the job retried
    # (or failed), while its body ran on: run twice.
    claimed, request = _running_job(max_attempts=max_attempts)
    copy = _request(claimed.job.pk, claimed.job.dispatch_token, pid=os.getpid() + 1)
    _lose(copy, "killed")
    assert failures == []
    job = ScheduledJob.objects.get(pk=claimed.job.pk)
    assert job.status == ScheduledJob.Status.RUNNING
    [attempt] = job.history.all()
    assert attempt.outcome == "running"
    assert running.heartbeat(job_id=job.pk, token=job.dispatch_token)
    _lose(request, "killed")  # the loss of the delivery's own process ends it
    assert ScheduledJob.objects.get(pk=job.pk).status == {3: "scheduled", 1: "failed"}[max_attempts]


def test_the_lost_process_of_a_copy_of_a_message_whose_job_is_held_is_no_failure(failures):
    # Told when the job's row was held past the wait, the loss of the copy of a last
    # attempt's message was the call's failure (FAILURE for the call's task id, which the
    # copy shares, and task_failure), though its job ran on, to succeed.
    claimed, _ = _running_job(max_attempts=1)
    copy = _request(claimed.job.pk, claimed.job.dispatch_token, pid=os.getpid() + 1)
    with job_row_held_elsewhere(claimed.job.pk):
        _lose(copy, "killed")
    assert failures == []
    assert noop.backend.get_state(copy.id) == "PENDING"


@pytest.mark.parametrize(
    "failure", [TimeLimitExceeded(60), WorkerLostError("lost"), SystemExit(1)], ids=repr
)
def test_what_the_body_raised_is_no_lost_process(failures, failure, caplog):
    # The body's own exception (a subtask's, re-raised) comes with return_ok: it is no
    # word of the pool's that the process is gone, and Celery's handling stands.
    _, request = _running_job(max_attempts=3)
    request.on_failure(_failed_with(failure), return_ok=True)
    assert "job process lost" not in caplog.text


def test_a_child_that_exited_under_a_job_its_lease_retries_is_no_failure(failures):
    # billiard reports a pool process that exited on its own as SystemExit.
    _, request = _running_job(max_attempts=3)
    request.on_failure(_failed_with(SystemExit(1)))
    assert failures == []


@pytest.mark.parametrize(
    ("failure", "stored"),
    [
        (SystemExit("exit: \x00 in the output"), "exit: \ufffd in the output"),
        (KeyboardInterrupt("cannot open /data/\udcff.csv"), "cannot open /data/\ufffd.csv"),
    ],
    ids=["nul", "surrogate"],
)
def test_a_body_that_exits_with_text_postgresql_cannot_store_is_retried(failures, failure, stored):
    # The text became the attempt's error as it was: PostgreSQL's refusal (a ValueError,
    # a UnicodeEncodeError: no error of Django's) raised out of the handler before
    # Celery's, which never ran: the worker counted the process busy for ever, and the
    # job stayed running until its lease.
    claimed, request = _running_job(max_attempts=3)
    state.task_accepted(request)
    try:
        request.on_failure(_failed_with(failure))
        assert request not in state.active_requests
    finally:
        state.task_ready(request)
    assert failures == []
    job = ScheduledJob.objects.get(pk=claimed.job.pk)
    assert job.status == ScheduledJob.Status.SCHEDULED
    assert job.last_error == f"worker process lost: {stored}"
    [attempt] = job.history.all()
    assert (attempt.outcome, attempt.error) == ("lease_expired", job.last_error)


def test_a_lost_process_whose_job_could_not_be_judged_is_left_to_its_lease(
    failures, monkeypatch, caplog
):
    # Whatever went wrong asking PostgreSQL, Celery's handling runs: the process is
    # free again, and the call is no failure while the job may still succeed.
    claimed, request = _running_job(max_attempts=3)

    def broken(**kwargs):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(running, "end_lost_delivery", broken)
    state.task_accepted(request)
    try:
        _lose(request, "killed")
        assert request not in state.active_requests
    finally:
        state.task_ready(request)
    assert failures == []
    assert noop.backend.get_state(request.id) == "PENDING"
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.RUNNING
    assert f"job lost delivery not judged job_id={claimed.job.pk} error=RuntimeError" in caplog.text
    assert "no failure of the call, the job left to its lease" in caplog.text


def test_without_postgresql_a_lost_process_is_left_to_its_lease(failures, caplog):
    # The worker's main process kept the connection it opened: once the server dropped
    # it, every later loss raised out of the handler, which left the request reserved
    # (a pool slot lost for good) and the message unsettled. Told as the call's failure
    # then, it was one of a job its lease could retry, and that could succeed.
    claimed, request = _running_job(max_attempts=3)
    connection.ensure_connection()
    connection.connection.close()  # as the server's end does: the next query fails
    _lose(request, "killed")
    assert failures == []
    assert noop.backend.get_state(request.id) == "PENDING"
    assert ScheduledJob.objects.get(pk=claimed.job.pk).status == ScheduledJob.Status.RUNNING
    assert f"job lost delivery not judged job_id={claimed.job.pk} error=" in caplog.text
    again, request = _running_job(max_attempts=3)  # and the next is judged again
    _lose(request, "killed")
    assert ScheduledJob.objects.get(pk=again.job.pk).status == ScheduledJob.Status.SCHEDULED


def test_a_lost_process_of_an_ordinary_message_is_its_failure(failures):
    plain = current_app.amqp.as_task_v2(str(uuid.uuid4()), noop.name)
    message = Message(
        body=json.dumps(plain.body).encode(),
        headers=plain.headers,
        content_type="application/json",
        content_encoding="utf-8",
    )
    request = symbol_by_name(noop.Request)(message, app=current_app, task=noop)
    _lose(request, "killed")
    assert failures == [request.id]
