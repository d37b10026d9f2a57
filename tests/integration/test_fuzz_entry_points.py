"""Bad input, fuzzed: every public entry point refuses it clearly and writes nothing.

Hypothesis throws odd values at ``schedule_at``, ``schedule_in``, ``schedule_many``,
``reschedule``, ``cancel``, ``retry``, ``run_now`` and the bulk services of
:mod:`scheduler.services.bulk`, and odd form data at the admin's
add and reschedule forms through the test client. An entry point may accept a value (then
what it stored must read back the same) or refuse it with a clear exception (a
``SchedulerError``, ``ValueError`` or ``TypeError``; a form error in the admin); it must
never fail with a database error or leave anything written.
"""

import json
import traceback
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scheduler
from scheduler import cancel, reschedule, schedule_at, schedule_in, schedule_many
from scheduler.admin.forms import UNITS, WhenForm
from scheduler.exceptions import InvalidArgumentsError, SchedulerError
from scheduler.models import AuditEntry, JobAttempt, ScheduledJob
from scheduler.services import bulk, retry, run_now
from tests.integration.admin_helpers import ADD, change_url, job, job_fields
from tests.testapp.tasks import nested

pytestmark = pytest.mark.django_db

#: What a caller can catch and understand: the scheduler's errors, and a TypeError or
#: ValueError the scheduler raises itself. Database errors are not among them, nor
#: psycopg2's ValueError for text PostgreSQL cannot store.
CLEAR = (SchedulerError, TypeError, ValueError)
SCHEDULER = str(Path(scheduler.__file__).parent)
#: Hypothesis's hundred examples a test (fewer in the Django 6.0 leg: tests/conftest.py).
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text PostgreSQL cannot store (NUL, lone surrogates) comes up often, not by luck.
characters = st.characters() | st.sampled_from("\x00\ud800\udfff\u2028é")
text = st.text(characters, max_size=300)
# Form data travels as UTF-8, which has no lone surrogates (JSON text can escape them).
form_text = st.text(st.characters(codec="utf-8"), max_size=300)
edge_integers = st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, -(2**63) - 1])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
anything = (
    json_values
    | edge_integers
    | st.binary(max_size=20)
    | st.decimals()
    | st.tuples(st.integers())
    | st.sets(st.integers(), max_size=3)
    | st.dates()
    | st.datetimes()
    | st.timedeltas()
    | st.builds(object)
)
# The ends of the datetime range, in a zone that pushes them out of it in UTC.
edge_datetimes = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.sampled_from([datetime.min, datetime.max]),
    st.sampled_from([UTC, *map(zoneinfo.ZoneInfo, ["Pacific/Kiritimati", "Pacific/Pago_Pago"])]),
)
aware_datetimes = st.datetimes(timezones=st.timezones()) | edge_datetimes
instants = aware_datetimes | st.datetimes() | anything
tasks = st.sampled_from(["testapp.noop", "testapp.nope", "scheduler.dispatch", ""]) | anything
argument_lists = st.lists(json_values, max_size=4) | anything
keyword_arguments = st.dictionaries(text, json_values, max_size=4) | st.none() | anything
queues = st.none() | st.sampled_from(["", "jobs", "a" * 81]) | text | anything
attempts = st.none() | st.integers() | edge_integers | anything
unique_keys = st.none() | text | st.text(characters, min_size=250, max_size=260) | anything
job_references = st.integers() | st.booleans() | st.none() | text | anything


def _database() -> tuple[Any, ...]:
    """Everything an entry point could write."""
    return (
        tuple(ScheduledJob.objects.order_by("pk").values_list()),
        tuple(JobAttempt.objects.order_by("pk").values_list()),
    )


def _call(entry_point: Any, *args: Any, **kwargs: Any) -> Any:
    """Call in a savepoint: a refusal must be clear and must leave the tables as they were."""
    before = _database()
    try:
        with transaction.atomic():
            return entry_point(*args, **kwargs)
    except CLEAR as error:
        refusal = error
    raised_in = traceback.extract_tb(refusal.__traceback__)[-1].filename
    assert isinstance(refusal, SchedulerError) or raised_in.startswith(SCHEDULER), refusal
    assert _database() == before
    assert not connection.needs_rollback
    return None


#: A valid value for each of schedule_at's parameters, and anything for a fuzzed one.
VALID = {
    "task": st.just("testapp.noop"),
    "run_at": st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.timezones(),
    ),
    "args": st.lists(json_values, max_size=4),
    "kwargs": st.dictionaries(text, json_values, max_size=4),
    "queue": st.sampled_from([None, "jobs"]),
    "max_attempts": st.none() | st.integers(1, 10),
    "unique_key": st.none() | st.uuids().map(str),
    "deadline": st.none(),
}
FUZZED = {
    "task": tasks,
    "run_at": instants,
    "args": argument_lists,
    "kwargs": keyword_arguments,
    "queue": queues,
    "max_attempts": attempts,
    "unique_key": unique_keys,
    "deadline": instants | st.none(),
}


@FUZZ
@given(data=st.data())
def test_schedule_at(data):
    # One or two parameters fuzzed at a time, so that the others let it reach the database.
    fuzzed = data.draw(st.sets(st.sampled_from(sorted(VALID)), min_size=1, max_size=2))
    value = {
        name: data.draw((FUZZED if name in fuzzed else VALID)[name], label=name) for name in VALID
    }
    created = _call(schedule_at, **value)
    if created is not None:
        stored = ScheduledJob.objects.get(pk=created.pk)
        assert stored.args == list(value["args"])
        assert stored.kwargs == (value["kwargs"] or {})
        # As instants: a local time in a DST gap compares unequal across zones (PEP 495).
        assert stored.run_at == value["run_at"].astimezone(UTC)
        stored.delete()


@FUZZ
@given(data=st.data())
def test_schedule_many(data):
    # A valid item, then one with one or two fuzzed fields: all or nothing.
    items = []
    for _ in range(2):
        fuzzed = data.draw(st.sets(st.sampled_from(sorted(VALID)), max_size=2))
        value = {
            name: data.draw((FUZZED if name in fuzzed else VALID)[name], label=name)
            for name in VALID
        }
        items.append(value)
    created = _call(schedule_many, items)
    if created is not None:
        assert ScheduledJob.objects.filter(pk__in=[job.pk for job in created]).count() == 2
        ScheduledJob.objects.filter(pk__in=[job.pk for job in created]).delete()


@FUZZ
@given(
    delay=st.floats() | st.integers() | st.timedeltas() | edge_integers.map(float) | anything,
    args=argument_lists,
    unique_key=unique_keys,
)
def test_schedule_in(delay, args, unique_key):
    created = _call(schedule_in, "testapp.noop", delay, args, unique_key=unique_key)
    if created is not None:
        assert ScheduledJob.objects.get(pk=created.pk).run_at == created.run_at
        created.delete()


@pytest.fixture
def one_of_each():
    """A job in every status, and one unique key held."""
    now = timezone.now()
    return [
        job(status, run_at=now, unique_key="held" if status == "scheduled" else None)
        for status in ScheduledJob.Status.values
    ]


@FUZZ
@given(data=st.data())
def test_operations_on_jobs(one_of_each, data):
    ids = [j.pk for j in one_of_each]
    references = st.sampled_from([*one_of_each, *ids, max(ids) + 1]) | job_references
    operation = data.draw(st.sampled_from(["cancel", "reschedule", "retry", "run_now"]))
    reference = data.draw(references)
    # Every operation records who did it and why in the audit trail.
    actors = st.sampled_from(["ops", None]) | text | anything
    who = {"reason": data.draw(text | anything), "actor": data.draw(actors)}
    if operation == "cancel":
        _call(cancel, reference, **who)
    elif operation == "run_now":
        _call(run_now, reference, **who)
    else:
        run_at = data.draw(instants | st.none() if operation == "retry" else instants)
        entry_point = reschedule if operation == "reschedule" else retry
        changed = _call(entry_point, reference, run_at, **who)
        if changed is not None and run_at is not None:
            assert ScheduledJob.objects.get(pk=changed.pk).run_at == run_at.astimezone(UTC)
    # Reset the statuses for the next example.
    for original in one_of_each:
        ScheduledJob.objects.filter(pk=original.pk).update(
            **job_fields(original.status, run_at=original.run_at)
        )


@FUZZ
@given(data=st.data())
def test_operations_on_many_jobs(one_of_each, data):
    # The admin's bulk actions, on every job or on none: odd arguments of the whole action.
    jobs = data.draw(st.sampled_from([ScheduledJob.objects.all(), ScheduledJob.objects.none()]))
    actors = st.sampled_from(["ops", None]) | text | anything
    who = {"reason": data.draw(text | anything), "actor": data.draw(actors)}
    operation = data.draw(st.sampled_from(["cancel", "run_now", "retry", "reschedule", "shift"]))
    offsets = st.timedeltas() | st.sampled_from([timedelta.min, timedelta.max]) | anything
    arguments = {
        "cancel": (bulk.cancel_many, {}),
        "run_now": (bulk.run_many_now, {}),
        "retry": (bulk.retry_many, {"deadline": data.draw(instants | st.none())}),
        "reschedule": (bulk.reschedule_many, {"to": data.draw(instants)}),
        "shift": (bulk.shift_many, {"offset": data.draw(offsets)}),
    }
    entry_point, given = arguments[operation]
    result = _call(entry_point, jobs, **given, **who)
    if result is not None:
        assert result.changed + result.skipped.total() == jobs.count()
    for original in one_of_each:
        ScheduledJob.objects.filter(pk=original.pk).update(
            **job_fields(original.status, run_at=original.run_at)
        )


NOON = datetime(2030, 1, 1, 12, tzinfo=UTC)


@FUZZ
@given(
    reason=st.sampled_from(["why\x00", "\udc80", " why "]) | text | anything,
    actor=st.just("ops") | text | anything,
)
def test_the_audit_trail_stores_every_reason_and_actor_or_refuses_them_clearly(reason, actor):
    created = schedule_at("testapp.noop", NOON)
    if _call(cancel, created, reason=reason, actor=actor):
        entries = list(AuditEntry.objects.filter(job=created).values_list("reason", "actor"))
        # No actor, no entry: code that passes none writes none (`anything` has None).
        assert entries == ([] if actor is None else [(reason.strip(), actor)])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: schedule_at("testapp.noop", NOON, ["\x00"]), "args"),
        (lambda: schedule_at("testapp.noop", NOON, [], {"k\x00": 1}), "kwargs"),
        (lambda: schedule_at("testapp.noop", NOON, ["\ud800"]), "args"),
        (lambda: schedule_at("testapp.noop", NOON, [[-8.36e78]]), "args"),
        (lambda: schedule_at("testapp.noop", NOON, unique_key="key\x00"), "unique_key"),
        (lambda: schedule_at("testapp.noop", NOON, unique_key="\udfff"), "unique_key"),
        (lambda: schedule_at("testapp.noop", NOON, max_attempts=2**31), "max_attempts"),
        (
            lambda: schedule_at(
                "testapp.noop", datetime.max.replace(tzinfo=zoneinfo.ZoneInfo("Pacific/Pago_Pago"))
            ),
            "run_at",
        ),
        (lambda: schedule_in("testapp.noop", 1e20), "delay"),
        (lambda: schedule_in("testapp.noop", timedelta.max), "delay"),
        (lambda: schedule_in("testapp.noop", timedelta.min), "delay"),
        # Past the round trip's reach on Python 3.11 (about 330 levels) and 3.12 (about 500).
        (lambda: schedule_at("testapp.noop", NOON, [nested(1000)]), "args"),
        (lambda: schedule_at("testapp.noop", NOON, [], {"k": nested(5000)}), "kwargs"),
    ],
    ids=[
        "nul-in-args",
        "nul-in-a-key",
        "lone-surrogate",
        "float-read-back-as-int",
        "nul-in-unique-key",
        "surrogate-unique-key",
        "max-attempts-over-int4",
        "run-at-past-9999-in-utc",
        "delay-overflows-timedelta",
        "delay-past-9999",
        "delay-before-year-1",
        "args-nested-1000-levels",
        "kwargs-nested-5000-levels",
    ],
)
def test_what_fuzzing_found_is_refused_clearly(call, field):
    # Each of these once reached PostgreSQL (a DataError), or was stored and then could not
    # be read back, or overflowed in datetime arithmetic.
    with pytest.raises(InvalidArgumentsError) as error, transaction.atomic():
        call()
    assert error.value.field == field
    assert not ScheduledJob.objects.exists()


# --- the admin's forms, through the test client ---------------------------------------

zones = st.sampled_from(["UTC", "Europe/Paris", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
local_times = (
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
    ).map(lambda value: value.strftime("%Y-%m-%dT%H:%M"))
    | form_text
)
numbers = st.integers().map(str) | st.floats().map(str) | form_text
json_texts = json_values.map(json.dumps) | st.lists(json_values).map(json.dumps) | form_text


@pytest.fixture
def staff(settings):
    settings.SCHEDULER_ADMIN_TASKS = ["testapp.noop"]
    return Client(raise_request_exception=True)


def _login(client):
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(
        username="fuzz", defaults={"is_staff": True, "is_superuser": True}
    )
    client.force_login(user)


#: The fields saying when, shared by the add and the reschedule forms.
WHEN_FIELDS = {
    "when": st.sampled_from(["at", "in"]) | form_text,
    "run_at_local": local_times,
    "time_zone": zones | form_text,
    "delay_amount": numbers,
    "delay_unit": st.sampled_from(["minutes", "hours", "days"]) | form_text,
}


ADD_FORM_FIELDS = {
    **WHEN_FIELDS,
    "task_name": st.just("testapp.noop") | form_text,
    "args_json": json_texts,
    "kwargs_json": st.dictionaries(form_text, json_values).map(json.dumps) | json_texts,
    "queue_name": st.sampled_from(["", "jobs", "a" * 81]) | form_text,
    "attempts_limit": numbers,
    "key": form_text,
}
#: An add form the page accepts: fuzzed one field at a time, examples reach schedule_at
#: (with every field fuzzed at once, one in a thousand did).
VALID_ADD_FORM = {
    "when": "at",
    "run_at_local": "2030-01-01T09:30",
    "time_zone": "Europe/Paris",
    "delay_amount": "",
    "delay_unit": "minutes",
    "task_name": "testapp.noop",
    "args_json": "[1]",
    "kwargs_json": "{}",
    "queue_name": "",
    "attempts_limit": "",
    "key": "",
}
add_forms = (
    st.just(VALID_ADD_FORM)
    | st.fixed_dictionaries(ADD_FORM_FIELDS)
    | st.sampled_from(sorted(ADD_FORM_FIELDS)).flatmap(
        lambda name: ADD_FORM_FIELDS[name].map(lambda value: {**VALID_ADD_FORM, name: value})
    )
)


@FUZZ
@given(form=add_forms)
def test_admin_add_form(staff, form):
    _login(staff)
    ScheduledJob.objects.all().delete()
    # A token of its own, as each add page gives: without one, every example was refused
    # for it, and none reached schedule_at.
    response = staff.post(ADD, {**form, "submission": str(uuid.uuid4())})
    if response.status_code == 302:
        stored = ScheduledJob.objects.get()
        assert stored.task_name == "testapp.noop"
        assert stored.args == json.loads(form["args_json"])
    else:
        assert response.status_code == 200
        assert response.context["adminform"].form.errors
        assert not ScheduledJob.objects.exists()


@pytest.fixture
def management_forms(staff):
    """The inlines' management form data, as a new scheduled job's change page sends it."""
    _login(staff)
    page = staff.get(change_url(job("scheduled", run_at=datetime(2030, 1, 1, tzinfo=UTC))))
    return {
        f"{inline.formset.prefix}-{name}": value
        for inline in page.context["inline_admin_formsets"]
        for name, value in inline.formset.management_form.initial.items()
    }


@FUZZ
@given(form=st.fixed_dictionaries(WHEN_FIELDS))
def test_admin_reschedule_form(staff, management_forms, form):
    _login(staff)
    run_at = datetime(2030, 1, 1, tzinfo=UTC)
    moved = job("scheduled", run_at=run_at)
    data = {**form, **management_forms}
    before = timezone.now()
    response = staff.post(change_url(moved), data)
    after = timezone.now()
    moved.refresh_from_db()
    if response.status_code == 302:
        # Where the operator asked, read back with the form's own fields.
        fields = WhenForm.base_fields
        if form["when"] == WhenForm.IN:
            unit = timedelta(seconds=UNITS[form["delay_unit"]])
            delay = fields["delay_amount"].clean(form["delay_amount"]) * unit
            assert before + delay <= moved.run_at <= after + delay
        else:
            local = fields["run_at_local"].clean(form["run_at_local"])
            zone = zoneinfo.ZoneInfo(fields["time_zone"].clean(form["time_zone"]))
            assert moved.run_at == local.replace(tzinfo=zone)
    else:
        assert response.status_code == 200
        assert moved.run_at == run_at
    moved.delete()


@pytest.mark.parametrize("reason", ["why\x00", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_reason_postgresql_cannot_store_is_refused_clearly(reason):
    # The audit trail's reason reached PostgreSQL: psycopg2's ValueError or
    # UnicodeEncodeError, not the scheduler's error naming the argument.
    created = schedule_at("testapp.noop", NOON)
    with pytest.raises(InvalidArgumentsError) as error, transaction.atomic():
        cancel(created, reason=reason, actor="ops")
    assert error.value.field == "reason"
    assert ScheduledJob.objects.get(pk=created.pk).status == ScheduledJob.Status.SCHEDULED
