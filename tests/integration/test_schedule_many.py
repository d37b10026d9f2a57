"""schedule_many: many jobs in one statement, all-or-nothing, the same validation as schedule_at."""

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection, connections, transaction
from django.db.models import Field
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from scheduler import JobSpec, cancel, schedule_at, schedule_many
from scheduler.exceptions import DuplicateJobError, InvalidArgumentsError, UnknownTaskError
from scheduler.models import ScheduledJob
from scheduler.services import bulk, scheduling
from tests.testapp.tasks import noop, record

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Status = ScheduledJob.Status


def _stored(job):
    row = dict(ScheduledJob.objects.filter(pk=job.pk).values().get())
    row.pop("created_at"), row.pop("updated_at")
    return row


@freeze_time(T0)
def test_stores_every_job_as_schedule_at_would(settings):
    settings.SCHEDULER_QUEUE_NAME = "jobs-default"
    specs = [
        JobSpec(noop, T0 + timedelta(days=14), [1, "two"], {"three": [3.0, None]}),
        JobSpec(
            "testapp.record",
            T0,
            kwargs={"path": "/tmp/x", "label": "a"},
            queue="payments",
            max_attempts=1,
            unique_key="k1",
            deadline=T0 + timedelta(hours=1),
        ),
    ]
    jobs = schedule_many(specs)
    assert [job.task_name for job in jobs] == ["testapp.noop", "testapp.record"]
    assert all(job.pk for job in jobs)
    with transaction.atomic():
        alone = [
            schedule_at(noop, T0 + timedelta(days=14), [1, "two"], {"three": [3.0, None]}),
            schedule_at(
                "testapp.record",
                T0,
                kwargs={"path": "/tmp/x", "label": "a"},
                queue="payments",
                max_attempts=1,
                unique_key="k1-alone",
                deadline=T0 + timedelta(hours=1),
            ),
        ]
        expected_rows = [_stored(job) for job in alone]
        transaction.set_rollback(True)
    for many, expected in zip(jobs, expected_rows, strict=True):
        got = _stored(many)
        got.pop("id"), expected.pop("id")
        # The one-by-one call used another key, so that both could be active at once.
        if expected["unique_key"] is not None:
            expected["unique_key"] = expected["unique_key"].removesuffix("-alone")
        assert got == expected
    assert [_stored(job)["unique_key"] for job in jobs] == [None, "k1"]
    assert _stored(jobs[0])["queue"] == "jobs-default"
    assert _stored(jobs[1])["deadline"] == T0 + timedelta(hours=1)


def test_accepts_dicts_and_returns_jobs_in_order():
    jobs = schedule_many(
        [{"task": noop, "run_at": T0 + timedelta(seconds=i), "args": [i]} for i in range(5)]
    )
    assert [job.args for job in jobs] == [[i] for i in range(5)]
    assert [ScheduledJob.objects.get(pk=job.pk).args for job in jobs] == [[i] for i in range(5)]
    assert all(job.status == Status.SCHEDULED for job in jobs)


def test_inserts_in_one_statement_whatever_the_number_of_jobs():
    specs = [JobSpec(noop, T0, [i], unique_key=f"key:{i}") for i in range(3000)]
    with CaptureQueriesContext(connection) as queries:
        schedule_many(specs)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    # A savepoint around it, so a duplicate key leaves the caller's transaction usable.
    assert len(queries.captured_queries) <= 3
    assert ScheduledJob.objects.count() == 3000


def test_reads_the_fields_defaults_once_a_batch_not_once_a_job(monkeypatch):
    # Django's keyword __init__ looked up every field's default for every job: with the
    # settings read job by job, as long as the validation of 10,000 jobs.
    lookups = []
    get_default = Field.get_default

    def counted(field):
        lookups.append(field)
        return get_default(field)

    monkeypatch.setattr(Field, "get_default", counted)
    jobs = schedule_many(JobSpec(noop, T0, [i], {"n": i}) for i in range(200))
    assert len(lookups) <= len(ScheduledJob._meta.concrete_fields)
    fresh = ScheduledJob(task_name="testapp.noop", run_at=T0)
    for job in jobs:
        stored = ScheduledJob.objects.get(pk=job.pk)
        for field in ScheduledJob._meta.concrete_fields:
            assert getattr(job, field.attname) == getattr(stored, field.attname), field.name
        assert (job.status, job.attempts, job.sends, job.last_error, job.held) == (
            fresh.status,
            fresh.attempts,
            fresh.sends,
            fresh.last_error,
            fresh.held,
        )
    # Each job's arguments its own, not one list shared by the batch.
    jobs[0].args.append("more")
    assert jobs[1].args == [1]


def test_sends_once_what_every_job_of_the_batch_has_in_common():
    specs = [JobSpec(noop, T0 + timedelta(seconds=i), [i], queue="payments") for i in range(50)]
    with CaptureQueriesContext(connection) as queries:
        jobs = schedule_many(specs)
    (insert,) = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    # The rows carry each job's own values; the status, task and queue go once.
    rows = insert[insert.index("json_to_recordset") : insert.index("json_to_record(")]
    assert rows.count('"2026-11-24T12:00:') == 50
    assert "scheduled" not in rows
    assert "payments" not in rows
    assert "testapp.noop" not in rows
    stored = {job.pk: job for job in ScheduledJob.objects.filter(pk__in=[job.pk for job in jobs])}
    for i, job in enumerate(jobs):
        row = stored[job.pk]
        assert (row.task_name, row.queue, row.status, row.args) == (
            "testapp.noop",
            "payments",
            Status.SCHEDULED,
            [i],
        )
        assert (row.created_at, row.updated_at) == (job.created_at, job.updated_at)


def test_keeps_arguments_python_finds_equal_but_json_does_not():
    # [1] == [True] == [1.0] in Python: judged the same in every job, one job's
    # arguments would have been stored for all.
    values = [[1], [True], [1.0], [1]]
    jobs = schedule_many(JobSpec(noop, T0, args, {"n": args[0]}) for args in values)
    stored = [ScheduledJob.objects.get(pk=job.pk) for job in jobs]
    assert [(type(job.args[0]), type(job.kwargs["n"])) for job in stored] == [
        (int, int),
        (bool, bool),
        (float, float),
        (int, int),
    ]


def test_a_batch_too_large_for_one_insert_goes_in_several_all_or_none(monkeypatch):
    # One INSERT of the whole batch's JSON: 6,000 jobs with 100 KB of arguments each
    # failed in PostgreSQL ("invalid memory alloc request size"), and 11,000 lost the
    # connection, with the caller's transaction. Shown here with a smaller limit.
    monkeypatch.setattr(scheduling, "MAX_INSERT_JSON", 4_000)
    payload = "x" * 1_000
    specs = [JobSpec(noop, T0, [payload, i], unique_key=f"k{i:02}") for i in range(10)]
    specs.append(JobSpec(noop, T0, ["y" * 5_000]))  # larger than the limit: alone
    with CaptureQueriesContext(connection) as queries:
        jobs = schedule_many(specs)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) >= 4
    assert [ScheduledJob.objects.get(pk=job.pk).args for job in jobs] == [
        spec.args for spec in specs
    ]
    # Numbered in key order, the order every batch takes its keys in.
    assert [job.pk for job in jobs[:10]] == sorted(job.pk for job in jobs[:10])
    # The last key held: the statements before it are undone with the batch.
    ScheduledJob.objects.all().delete()
    held = schedule_at(noop, T0, unique_key="k09")
    with pytest.raises(DuplicateJobError, match="k09"):
        schedule_many(specs[:10])
    assert list(ScheduledJob.objects.values_list("pk", flat=True)) == [held.pk]


def test_an_empty_batch_writes_nothing_and_runs_no_query():
    with CaptureQueriesContext(connection) as queries:
        assert schedule_many([]) == []
    assert queries.captured_queries == []


BAD_ITEMS = [
    pytest.param(
        JobSpec(noop, datetime(2026, 12, 1, 12, 0)), ValueError, "timezone-aware", id="naive"
    ),
    pytest.param(JobSpec(noop, date(2026, 12, 1)), TypeError, "datetime", id="date"),
    pytest.param(JobSpec("testapp.nope", T0), UnknownTaskError, "testapp.nope", id="unknown"),
    pytest.param(JobSpec(noop, T0, (1, (2, 3))), InvalidArgumentsError, "args", id="tuple-arg"),
    pytest.param(JobSpec(noop, T0, kwargs={1: 2}), InvalidArgumentsError, "kwargs", id="int-key"),
    pytest.param(JobSpec(noop, T0, queue="bad name"), InvalidArgumentsError, "queue", id="queue"),
    pytest.param(
        JobSpec(noop, T0, max_attempts=0), InvalidArgumentsError, "max_attempts", id="att"
    ),
    pytest.param(JobSpec(noop, T0, unique_key=" "), InvalidArgumentsError, "unique_key", id="key"),
    pytest.param(JobSpec(noop, T0, deadline=T0), InvalidArgumentsError, "deadline", id="deadline"),
    pytest.param({"task": noop}, TypeError, "run_at", id="dict-without-run_at"),
    pytest.param({"task": noop, "run_at": T0, "when": 1}, TypeError, "when", id="dict-unknown-key"),
    pytest.param(42, TypeError, "JobSpec", id="not-a-spec"),
    pytest.param(JobSpec(noop.s("card-token"), T0), TypeError, "signature", id="signature"),
    pytest.param(("testapp.noop", T0, ["card-token"]), TypeError, "tuple", id="a-tuple"),
]


@pytest.mark.parametrize(("bad", "error", "message"), BAD_ITEMS)
def test_a_bad_item_raises_naming_its_index_and_writes_nothing(bad, error, message):
    existing = schedule_at(noop, T0)
    specs = [JobSpec(noop, T0), JobSpec(record, T0, ["/tmp/x", "y"]), bad, JobSpec(noop, T0)]
    with pytest.raises(error, match=message) as raised:
        schedule_many(specs)
    assert "jobs[2]" in str(raised.value)
    # Every kind of refusal (TypeError too: README), never quoting the item's arguments.
    assert raised.value.index == 2
    assert "card-token" not in str(raised.value)
    assert list(ScheduledJob.objects.values_list("pk", flat=True)) == [existing.pk]


def test_a_key_repeated_within_the_batch_raises_and_writes_nothing():
    specs = [JobSpec(noop, T0, unique_key=key) for key in ("a", "b", "c", "b")]
    with pytest.raises(DuplicateJobError, match=r"jobs\[3\].*'b'.*jobs\[1\]") as raised:
        schedule_many(specs)
    assert (raised.value.unique_key, raised.value.index) == ("b", 3)
    assert not ScheduledJob.objects.exists()


def test_a_key_held_by_an_active_job_raises_and_keeps_the_callers_transaction_usable():
    holder = schedule_at(noop, T0, unique_key="payment:7")
    ended = schedule_at(noop, T0, unique_key="payment:8")
    ScheduledJob.objects.filter(pk=ended.pk).update(status=Status.CANCELLED, finished_at=T0)
    specs = [JobSpec(noop, T0, unique_key=f"payment:{i}") for i in range(10)]
    with transaction.atomic():
        with pytest.raises(DuplicateJobError, match="payment:7") as raised:
            schedule_many(specs)
        assert raised.value.holder_id == holder.pk
        assert raised.value.index == 7
        # Nothing of the batch was written, and the transaction goes on.
        assert ScheduledJob.objects.count() == 2
    # Without the holder's key the same batch goes in whole (a cancelled job frees its key).
    jobs = schedule_many([spec for spec in specs if spec.unique_key != "payment:7"])
    assert len(jobs) == 9


def test_a_held_key_is_named_on_a_server_that_speaks_another_language(monkeypatch):
    # lc_messages translates "Key (unique_key)=(…) already exists.": the detail says
    # nothing this code can read, and the held key is looked up instead.
    monkeypatch.setattr(scheduling, "_CONFLICT_DETAIL", re.compile(r"Schlüssel \((.*)\)"))
    holder = schedule_at(noop, T0, unique_key="payment:7")
    with pytest.raises(DuplicateJobError, match=r"^jobs\[2\]: .*payment:7") as raised:
        schedule_many([JobSpec(noop, T0, unique_key=f"payment:{i}") for i in (5, 6, 7, 8)])
    assert (raised.value.unique_key, raised.value.holder_id, raised.value.index) == (
        "payment:7",
        holder.pk,
        2,
    )


def test_a_batch_of_one_whose_key_is_held_names_its_item_too():
    holder = schedule_at(noop, T0, unique_key="payment:7")
    with pytest.raises(DuplicateJobError, match=r"^jobs\[0\]: ") as raised:
        schedule_many([JobSpec(noop, T0, unique_key="payment:7")])
    assert (raised.value.holder_id, raised.value.index) == (holder.pk, 0)


def test_a_rolled_back_transaction_leaves_no_job():
    with pytest.raises(RuntimeError), transaction.atomic():
        schedule_many([JobSpec(noop, T0), JobSpec(noop, T0)])
        raise RuntimeError("the business transaction failed")
    assert not ScheduledJob.objects.exists()


def test_takes_any_iterable_once():
    jobs = schedule_many(JobSpec(noop, T0 + timedelta(minutes=i)) for i in range(3))
    assert len(jobs) == 3


@pytest.fixture
def slow_inserts():
    """PostgreSQL takes 0.4 s over each job it inserts or updates, before checking its
    unique key: two batches' writes then overlap as they would with thousands of jobs
    each."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.4); RETURN NEW; END $$; "
            "CREATE TRIGGER test_slow_insert BEFORE INSERT OR UPDATE ON scheduler_scheduledjob "
            "FOR EACH ROW EXECUTE FUNCTION test_slow_insert()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER test_slow_insert ON scheduler_scheduledjob; "
                "DROP FUNCTION test_slow_insert()"
            )


@pytest.fixture
def keys_given_back():
    """Two cancelled jobs, whose keys ("b", then "a", in id order) a retry takes back."""
    jobs = [schedule_at(noop, T0, unique_key=key) for key in ("b", "a")]
    for job in jobs:
        cancel(job.pk)
    return jobs


@pytest.mark.django_db(transaction=True)
def test_a_batch_taking_keys_a_bulk_retry_takes_back_raises_the_key_held(
    keys_given_back, slow_inserts
):
    # The batch takes "a" at 0.4 s, then waits for "b", which the retry (started at 0.2
    # s, in id order) took at 0.6 s; the retry then waits for "a" at 1.0 s. PostgreSQL
    # failed the batch with "deadlock detected": a key held, reported as a database error.
    outcomes: dict[str, object] = {}

    def run(name: str, call: Callable[[], object], after: float) -> None:
        time.sleep(after)
        try:
            outcomes[name] = call()
        except Exception as error:  # reported by the assertions below
            outcomes[name] = error
        finally:
            connections.close_all()

    batch = [JobSpec(noop, T0, unique_key=key) for key in ("a", "b")]
    retried = ScheduledJob.objects.filter(pk__in=[job.pk for job in keys_given_back])
    threads = [
        threading.Thread(target=run, args=("batch", lambda: schedule_many(batch), 0)),
        threading.Thread(target=run, args=("retry", lambda: bulk.retry_many(retried), 0.2)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(outcomes["batch"], DuplicateJobError), outcomes["batch"]
    assert (outcomes["batch"].unique_key, outcomes["batch"].index) == ("a", 0)
    assert outcomes["retry"].changed == 2, outcomes["retry"]
    assert ScheduledJob.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_batches_with_the_same_keys_in_opposite_orders_do_not_deadlock(slow_inserts):
    # The first takes "a" at 0.4 s and "b" at 0.8 s; the second, started 0.2 s later,
    # would take "b" at 0.6 s: each would then wait for the other, and PostgreSQL would
    # fail one with "deadlock detected", a key held reported as a database error.
    outcomes: dict[str, object] = {}

    def batch(name: str, keys: list[str], after: float) -> None:
        time.sleep(after)
        try:
            jobs = schedule_many([JobSpec(noop, T0, unique_key=key) for key in keys])
            outcomes[name] = [job.unique_key for job in jobs]
        except Exception as error:  # reported by the assertion below
            outcomes[name] = error
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=batch, args=("first", ["a", "b"], 0)),
        threading.Thread(target=batch, args=("second", ["b", "a"], 0.2)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["first"] == ["a", "b"]
    assert isinstance(outcomes["second"], DuplicateJobError), outcomes["second"]
    assert outcomes["second"].unique_key == "a"
    assert outcomes["second"].index == 1
    assert sorted(ScheduledJob.objects.values_list("unique_key", flat=True)) == ["a", "b"]
