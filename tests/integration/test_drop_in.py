"""Drop-in for existing Celery code: apply_async(countdown/eta) of any task, decided with
time frozen. Within SCHEDULER_MAX_DELAY_SECONDS a message goes to SQS with its own
DelaySeconds; beyond it the call becomes a job in the caller's transaction."""

import asyncio
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from celery import chain, group
from celery.exceptions import Retry
from django.db import transaction
from freezegun import freeze_time

from scheduler import schedule_at
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.exceptions import InvalidArgumentsError
from scheduler.models import ScheduledJob
from scheduler.testing import run_due_jobs
from scheduler.worker.execution import Outcome
from tests.factories import deliver, dispatch_one
from tests.testapp.models import Effect
from tests.testapp.tasks import (
    atomic_retry_later,
    autoretry_always,
    echo,
    fail,
    observed,
    read_runs,
    record,
    retry_later_in_a_transaction,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TWO_WEEKS = 14 * 24 * 3600
Status = ScheduledJob.Status


@freeze_time(T0)
def test_a_countdown_beyond_the_max_delay_becomes_a_job_that_records_the_task_id(
    tmp_path, published
):
    path = str(tmp_path / "runs")

    result = record.apply_async((path, "later"), countdown=TWO_WEEKS)

    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert (job.task_name, job.args, job.kwargs) == ("testapp.record", [path, "later"], {})
    assert (job.run_at, job.status) == (T0 + timedelta(days=14), Status.SCHEDULED)
    # Celery's rules: the task's max_retries bound its retries, an error is not retried.
    assert (job.max_attempts, job.retry_on_error) == (record.max_retries + 1, False)
    assert published == []  # nothing went to the broker


@freeze_time(T0)
@pytest.mark.parametrize(
    ("max_retries", "max_attempts"),
    [(sys.maxsize, 2**31 - 1), (2**31, 2**31 - 1), (float("nan"), 2**31 - 1), (3.0, 4)],
)
def test_a_task_retrying_for_ever_or_counting_in_floats_is_delayed_as_a_job(
    monkeypatch, max_retries, max_attempts
):
    # Celery takes either; the job's attempts were refused, so the call raised, and in a
    # worker a long self.retry() was lost.
    monkeypatch.setattr(record, "max_retries", max_retries)
    result = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS, retries=2)
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert (job.max_attempts, job.attempts) == (max_attempts, 2)


@freeze_time(T0)
def test_an_eta_beyond_the_max_delay_becomes_a_job_at_that_exact_time(settings):
    settings.SCHEDULER_MAX_DELAY_SECONDS = 600
    eta = T0 + timedelta(seconds=600, microseconds=1)
    result = record.apply_async(("/dev/null", "x"), eta=eta, task_id="my-own-id")
    assert result.id == "my-own-id"
    assert ScheduledJob.objects.get(celery_task_id="my-own-id").run_at == eta


@freeze_time(T0)
def test_a_task_id_given_as_a_uuid_is_kept_as_its_text():
    task_id = uuid.UUID(int=7)
    result = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS, task_id=task_id)
    assert result.id == str(task_id)
    assert ScheduledJob.objects.filter(celery_task_id=str(task_id)).exists()


@freeze_time(T0)
def test_the_job_is_written_in_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS)
        assert ScheduledJob.objects.count() == 1
        raise RuntimeError("the business transaction rolls back")
    assert ScheduledJob.objects.count() == 0


@freeze_time(T0)
def test_expires_becomes_the_jobs_deadline_and_the_routed_queue_applies():
    from tests.testapp.tasks import on_own_queue

    result = on_own_queue.apply_async(countdown=TWO_WEEKS, expires=TWO_WEEKS + 3600)
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert (job.deadline, job.queue) == (T0 + timedelta(days=14, hours=1), "own-queue")
    explicit = on_own_queue.apply_async(countdown=TWO_WEEKS, queue="elsewhere")
    assert ScheduledJob.objects.get(celery_task_id=explicit.id).queue == "elsewhere"


@freeze_time(T0)
def test_an_eta_and_expires_given_as_iso_8601_text_are_read_as_celery_reads_them():
    result = record.apply_async(
        ("/dev/null", "x"), eta="2026-12-08T12:00:00.5+01:00", expires="2026-12-09T12:00:00Z"
    )
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert job.run_at == datetime(2026, 12, 8, 11, 0, 0, 500000, tzinfo=UTC)
    assert job.deadline == datetime(2026, 12, 9, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a point in time"):
        record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS, expires="")


@freeze_time(T0)
def test_an_eta_given_as_a_date_is_read_as_celery_reads_it(monkeypatch):
    # Celery sends a date's isoformat(), which its worker reads as that midnight in UTC
    # (a naive time, whatever the app's time zone): the call raised TypeError.
    monkeypatch.setattr(record.app.conf, "timezone", "Europe/Paris")
    record.app.__dict__.pop("timezone", None)  # the app caches its zone
    try:
        result = record.apply_async(("/dev/null", "x"), eta=date(2026, 12, 24))
    finally:
        record.app.__dict__.pop("timezone", None)
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert job.run_at == datetime(2026, 12, 24, tzinfo=UTC)


@freeze_time(T0)
def test_tuples_in_the_arguments_are_kept_as_lists_as_celerys_json_sends_them():
    # A chain's delayed last step gets the step before's result first among its
    # arguments, in the worker: a tuple returned was refused there, after that step ran,
    # and the last never did. Celery's JSON serializer sends a tuple as a list.
    result = echo.apply_async(((1, (2, "b")),), {}, countdown=TWO_WEEKS)
    keyword = echo.apply_async((), {"value": {"pair": (1, 2)}}, countdown=TWO_WEEKS)
    jobs = ScheduledJob.objects.filter(celery_task_id__in=[result.id, keyword.id])
    assert sorted((job.args, job.kwargs) for job in jobs) == [
        ([], {"value": {"pair": [1, 2]}}),
        ([[1, [2, "b"]]], {}),
    ]


@freeze_time(T0)
@pytest.mark.parametrize(
    ("args", "options", "field"),
    [
        ((datetime.now(UTC), "x"), {}, "args"),  # JSON cannot store it
        ("/dev/null", {}, "args"),  # no list: Celery refuses it too, at any delay
        (("/dev/null", "x"), {"expires": float("nan")}, "expires"),
        (("/dev/null", "x"), {"link": record.s("/dev/null", "next")}, "link"),
        # Expires before its eta: the error names what the caller passed.
        (("/dev/null", "x"), {"expires": 60}, "expires"),
        # The job's messages carry none: result.get() waited for a result never stored.
        (("/dev/null", "x"), {"ignore_result": not record.ignore_result}, "ignore_result"),
        # Celery sends any id; a job keeps one as long as its column takes.
        (("/dev/null", "x"), {"task_id": "x" * 256}, "task_id"),
        (("/dev/null", "x"), {"task_id": "a\x00b"}, "task_id"),
    ],
)
def test_what_a_job_cannot_keep_is_refused_and_nothing_is_written(args, options, field):
    with pytest.raises(InvalidArgumentsError) as raised:
        record.apply_async(args, countdown=TWO_WEEKS, **options)
    assert raised.value.field == field
    assert str(raised.value).startswith(field)
    assert ScheduledJob.objects.count() == 0


@freeze_time(T0)
def test_a_chain_with_a_long_delay_before_its_last_step_is_refused_at_the_call(
    published, broker, sqs_queue
):
    # Its first step ran, then the worker could not send the long one (a job joins no
    # canvas): the caller had been told nothing, and the steps after it never ran.
    steps = chain(
        record.si("/dev/null", "first"),
        record.si("/dev/null", "in two weeks").set(countdown=TWO_WEEKS),
        record.si("/dev/null", "last"),
    )
    with pytest.raises(InvalidArgumentsError, match="chain") as raised:
        steps.apply_async(queue=sqs_queue.name, connection=broker)
    assert raised.value.field == "chain"
    assert published == []
    assert ScheduledJob.objects.count() == 0
    # Last in the chain, the long step is a job of its own, as it always was.
    chain(
        record.si("/dev/null", "first"),
        record.si("/dev/null", "in two weeks").set(countdown=TWO_WEEKS),
    ).apply_async(queue=sqs_queue.name, connection=broker)
    assert len(published) == 1


@freeze_time(T0)
@pytest.mark.parametrize("callback", ["on_error", "link_error", "link"])
def test_a_chain_whose_long_last_step_has_a_callback_is_refused_at_the_call(
    published, broker, sqs_queue, callback
):
    # Celery puts a chain's error callback on every step and its callback on the last:
    # once the first step ran, the worker could not make the long one a job (a job runs
    # no callback), the first step failed and the error callback ran, nothing told.
    steps = chain(
        record.si("/dev/null", "first"),
        record.si("/dev/null", "in two weeks").set(countdown=TWO_WEEKS),
    )
    handler = record.si("/dev/null", "callback")
    options = {"queue": sqs_queue.name, "connection": broker}
    if callback == "on_error":
        steps = steps.on_error(handler)
    else:
        options[callback] = handler
    with pytest.raises(InvalidArgumentsError, match="chain") as raised:
        steps.apply_async(**options)
    assert raised.value.field == "chain"
    assert published == []
    assert ScheduledJob.objects.count() == 0


@freeze_time(T0)
def test_a_long_member_of_a_group_becomes_a_job_that_keeps_its_own_id(published, broker, sqs_queue):
    # Celery sends a task's callbacks, when it has several, and its error callbacks
    # that take the task id as a group, whose members carry the group's id: a long one
    # was refused in the worker, after the task had run (reported failed, its other
    # callbacks lost). Without a chord nothing waits for a group's members together.
    later = record.si("/dev/null", "in two weeks").set(countdown=TWO_WEEKS)
    sent = group(later, record.si("/dev/null", "now")).apply_async(
        queue=sqs_queue.name, connection=broker
    )
    job = ScheduledJob.objects.get()
    assert (job.celery_task_id, job.args) == (sent.results[0].id, ["/dev/null", "in two weeks"])
    [message] = published
    assert message["headers"]["id"] == sent.results[1].id
    # A chain in a group: its long last step carries the group's id, kept as a job too.
    chain(record.si("/dev/null", "first"), later).apply_async(
        group_id="a-group", queue=sqs_queue.name, connection=broker
    )
    assert len(published) == 2


@freeze_time(T0)
def test_a_long_call_of_a_task_that_ignores_its_result_has_none_to_wait_for(monkeypatch):
    # As Celery's send_task: result.get() returns None at once, instead of waiting for a
    # result never stored (or raising, without a result backend).
    monkeypatch.setattr(record, "ignore_result", True)
    result = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS)
    assert result.ignored is True
    assert result.get(timeout=1) is None
    monkeypatch.setattr(record, "ignore_result", False)
    assert record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS).ignored is False


@freeze_time(T0)
def test_message_options_a_long_call_cannot_keep_are_named_in_a_warning(caplog):
    # A job has no message of the call's own to carry them: the task's settings apply.
    result = record.apply_async(
        ("/dev/null", "x"),
        countdown=TWO_WEEKS,
        headers={"tenant": "acme"},
        time_limit=5,
        soft_time_limit=3,
        shadow="billing.charge",
    )
    [line] = [r.getMessage() for r in caplog.records if "kept no" in r.getMessage()]
    assert line == (
        "call kept no headers,shadow,soft_time_limit,time_limit "
        f"celery_task_id={result.id} task=testapp.record"
    )
    caplog.clear()
    record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS, priority=None)
    assert "kept no" not in caplog.text


@freeze_time(T0)
def test_arguments_the_task_cannot_take_are_refused_at_the_call_as_celery_does():
    # Celery checks them when it sends the message; a job would fail two weeks later.
    with pytest.raises(TypeError):
        record.apply_async(("/dev/null", "x", "y", "z"), countdown=TWO_WEEKS)
    with pytest.raises(TypeError):
        record.apply_async(("/dev/null",), {"nope": 1}, countdown=TWO_WEEKS)
    assert ScheduledJob.objects.count() == 0


@freeze_time(T0)
def test_a_countdown_within_the_max_delay_goes_to_sqs_with_its_own_delay(
    published, broker, sqs_queue, settings
):
    settings.SCHEDULER_DELIVERY_LEAD_SECONDS = 2

    record.apply_async(("/dev/null", "soon"), countdown=60, queue=sqs_queue.name, connection=broker)

    [message] = published
    # SQS holds it until two seconds before its time; the exact eta travels with it.
    assert message["properties"]["delay_seconds"] == 58
    assert message["headers"]["eta"] == (T0 + timedelta(seconds=60)).isoformat()
    attributes = sqs_queue.client.get_queue_attributes(
        QueueUrl=sqs_queue.url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert ScheduledJob.objects.count() == 0


@freeze_time(T0)
def test_a_celery_queue_with_dots_is_the_sqs_queue_kombu_makes_of_it(monkeypatch):
    # "reports.slow" is the SQS queue "reports-slow" to a worker (kombu's naming): a long
    # countdown to it was refused, and a long self.retry (which Celery turns into a
    # Reject) dropped the task.
    monkeypatch.setattr(record, "queue", "reports.slow", raising=False)
    routed = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS)
    explicit = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS, queue="a.b+c")
    scheduled = schedule_at("testapp.record", T0 + timedelta(days=1), ["/dev/null", "x"])
    assert [
        ScheduledJob.objects.get(celery_task_id=result.id).queue for result in (routed, explicit)
    ] == ["reports-slow", "a-b_c"]
    assert scheduled.queue == "reports-slow"


@freeze_time(T0)
def test_a_long_countdown_without_a_route_goes_where_celery_sends_the_short_ones(monkeypatch):
    # An existing project's workers consume Celery's default queue, "celery": a long
    # countdown's job went to SCHEDULER_QUEUE_NAME, which no worker of theirs read.
    monkeypatch.setitem(record.app.conf, "task_default_queue", "legacy.default")
    result = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS)
    assert ScheduledJob.objects.get(celery_task_id=result.id).queue == "legacy-default"
    # The scheduler's own API keeps its documented default.
    scheduled = schedule_at("testapp.record", T0 + timedelta(days=1), ["/dev/null", "x"])
    assert scheduled.queue == "scheduler-jobs"


@freeze_time(T0)
def test_a_delayed_call_to_a_fifo_queue_is_refused_and_sends_nothing(
    published, broker, monkeypatch
):
    # SQS takes no per-message delay on a FIFO queue: kombu dropped it with a warning,
    # a worker got the message at once and held it until its eta, and SQS handed it out
    # again after each visibility timeout: the task ran several times.
    monkeypatch.setattr(record, "queue", "orders.fifo", raising=False)
    for call in (
        lambda: record.apply_async(("/dev/null", "x"), countdown=600, connection=broker),
        lambda: record.apply_async(
            ("/dev/null", "x"), countdown=60, queue="other.fifo", connection=broker
        ),
    ):
        with pytest.raises(InvalidArgumentsError, match="is an SQS FIFO queue") as refused:
            call()
        assert refused.value.field == "queue"
    assert published == []
    # Without a delay a FIFO queue is Celery's business, as before.
    record.apply_async(("/dev/null", "x"), connection=broker)
    assert [message["task"] for message in published] == ["testapp.record"]


@freeze_time(T0)
def test_an_ignore_result_a_job_keeps_anyway_is_no_refusal():
    result = record.apply_async(
        ("/dev/null", "x"), countdown=TWO_WEEKS, ignore_result=record.ignore_result
    )
    assert ScheduledJob.objects.filter(celery_task_id=result.id).exists()


@freeze_time(T0)
def test_a_call_without_countdown_is_an_ordinary_message(published, broker, sqs_queue):
    record.apply_async(("/dev/null", "now"), queue=sqs_queue.name, connection=broker)
    [message] = published
    assert "delay_seconds" not in message["properties"]
    assert message["headers"]["eta"] is None


def test_a_job_made_from_a_celery_call_is_not_retried_after_an_error_but_self_retry_is(
    tmp_path,
):
    path = str(tmp_path / "runs")
    with freeze_time(T0) as clock:
        failing = fail.apply_async((path, "once"), countdown=TWO_WEEKS)
        retrying = observed.apply_async((path, "twice", 60), countdown=TWO_WEEKS)
        clock.move_to(T0 + timedelta(days=14))
        outcomes = []
        for result in (failing, retrying):
            job = ScheduledJob.objects.get(celery_task_id=result.id)
            token = dispatch_one(job, now=T0 + timedelta(days=14))
            handled = deliver(job_id=job.pk, token=token, task_name=job.task_name)
            outcomes.append(handled.outcome)
    assert outcomes == [Outcome.FAILED, Outcome.RETRYING]
    failed = ScheduledJob.objects.get(celery_task_id=failing.id)
    assert (failed.status, failed.attempts) == (Status.FAILED, 1)  # as Celery: no retry
    retried = ScheduledJob.objects.get(celery_task_id=retrying.id)
    assert (retried.status, retried.run_at) == (
        Status.SCHEDULED,
        T0 + timedelta(days=14, seconds=60),
    )
    assert len(read_runs(path)) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "task", [atomic_retry_later, retry_later_in_a_transaction], ids=["atomic", "own-transaction"]
)
def test_a_long_retry_of_a_plain_message_from_inside_a_transaction_becomes_a_job_the_rollback_keeps(
    task,
):
    # Celery's retry sends the call again before it raises Retry, from inside the body's
    # transaction (atomic=True's, or one the body opened), which Retry rolls back: a retry
    # that became a job was lost with it.
    task_id = "celery-call-1"
    task.push_request(id=task_id, called_directly=False, is_eager=False, retries=0, hostname="test")
    try:
        with freeze_time(T0), pytest.raises(Retry):
            task("rolled back", TWO_WEEKS)
    finally:
        task.pop_request()
    assert not Effect.objects.exists()  # the body's own writes are rolled back
    job = ScheduledJob.objects.get(celery_task_id=task_id)
    assert (job.task_name, job.args, job.run_at) == (
        task.name,
        ["rolled back", TWO_WEEKS],
        T0 + timedelta(seconds=TWO_WEEKS),
    )


def test_the_jobs_message_carries_the_task_id_its_async_result_has(sqs_queue, publisher):
    # Celery's worker stores the outcome under the message's id: a random one would leave
    # the caller's AsyncResult pending for ever (and revoke() of it without effect).
    with freeze_time(T0) as clock:
        result = record.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS, queue=sqs_queue.name)
        plain = schedule_at("testapp.noop", T0 + timedelta(days=14), queue=sqs_queue.name)
        clock.move_to(T0 + timedelta(days=14))
        assert Dispatcher(publisher=publisher).run_once().sent == 2

    ids = {
        message["headers"]["scheduler_job_id"]: message["headers"]["id"]
        for message in sqs_queue.receive(wait=0)
    }
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert ids[str(job.pk)] == result.id
    assert ids[str(plain.pk)] != result.id  # a job of its own gets a fresh id per message


@pytest.mark.parametrize(
    "canvas",
    [
        {"callbacks": [record.s("/dev/null", "next")]},
        {"errbacks": [record.s("/dev/null", "on-error")]},
        {"chain": [record.s("/dev/null", "then")]},
        {"chord": record.s("/dev/null", "after-all"), "group": "a-group-id"},
    ],
    ids=["link", "link_error", "chain", "chord"],
)
def test_a_long_retry_of_a_task_in_a_canvas_becomes_a_job_without_the_canvas(
    tmp_path, caplog, canvas
):
    # Celery's retry carries the task's canvas on; a job cannot keep it. Refused, the
    # retry was lost: Celery turns an error of its send into Reject(requeue=False).
    task_id = f"in-canvas-{next(iter(canvas))}"
    observed.push_request(
        id=task_id, called_directly=False, is_eager=False, retries=0, hostname="t", **canvas
    )
    try:
        with freeze_time(T0), pytest.raises(Retry):
            observed(str(tmp_path / "runs"), "canvas", TWO_WEEKS)
    finally:
        observed.pop_request()
    job = ScheduledJob.objects.get(celery_task_id=task_id)
    assert job.run_at == T0 + timedelta(seconds=TWO_WEEKS)
    [line] = [r.getMessage() for r in caplog.records if "without its canvas" in r.getMessage()]
    assert f"celery_task_id={task_id}" in line


@freeze_time(T0)
def test_a_countdown_that_is_no_number_is_refused_as_celery_refuses_it():
    # Celery raises TypeError for countdown="60"; "1209600" made a two-week job.
    for countdown in ("60", str(TWO_WEEKS)):
        with pytest.raises(TypeError):
            record.apply_async(("/dev/null", "x"), countdown=countdown)
    assert ScheduledJob.objects.count() == 0


@pytest.mark.parametrize("retries", [0, 2])
def test_autoretry_with_max_retries_in_retry_kwargs_keeps_every_retry_celery_makes(
    tmp_path, retries
):
    # Celery's autoretry passes retry_kwargs' max_retries to every retry: the job had the
    # attempts the task's own max_retries (3) left, and failed after 4 runs, not 6.
    path = str(tmp_path / "runs")
    assert (autoretry_always.max_retries, autoretry_always.retry_kwargs["max_retries"]) == (3, 5)
    with freeze_time(T0):
        result = autoretry_always.apply_async((path, "call"), countdown=TWO_WEEKS, retries=retries)
        run_due_jobs(until=T0 + timedelta(days=15))
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert (job.status, job.attempts, job.max_attempts) == (Status.FAILED, 6, 6)
    assert [label for label, _ in read_runs(path)] == [f"call:{n}" for n in range(retries, 6)]


@pytest.mark.parametrize(
    ("task_max_retries", "max_attempts"),
    [(None, 6), (7, 8)],  # None: SCHEDULER_DEFAULT_MAX_ATTEMPTS (4), below 5 + 1
    ids=["task-unlimited", "task-higher"],
)
def test_a_task_allowing_more_retries_than_its_retry_kwargs_keeps_its_own(
    monkeypatch, settings, task_max_retries, max_attempts
):
    settings.SCHEDULER_DEFAULT_MAX_ATTEMPTS = 4
    monkeypatch.setattr(autoretry_always, "max_retries", task_max_retries)
    with freeze_time(T0):
        result = autoretry_always.apply_async(("/dev/null", "x"), countdown=TWO_WEEKS)
    assert ScheduledJob.objects.get(celery_task_id=result.id).max_attempts == max_attempts


@pytest.mark.django_db(transaction=True)
def test_a_long_countdown_from_async_code_becomes_a_job_as_from_sync_code():
    # An async view, an ASGI app, a Channels consumer: Celery's apply_async works there,
    # and the job's INSERT raised SynchronousOnlyOperation.
    async def view() -> Any:
        with pytest.raises(InvalidArgumentsError):  # refused to the caller, as from sync code
            record.apply_async(("/dev/null", {"at": date(2026, 1, 1)}), countdown=TWO_WEEKS)
        return record.apply_async(("/dev/null", "later"), countdown=TWO_WEEKS)

    result = asyncio.run(view())
    job = ScheduledJob.objects.get(celery_task_id=result.id)
    assert (job.args, job.status) == (["/dev/null", "later"], Status.SCHEDULED)
    assert ScheduledJob.objects.count() == 1
