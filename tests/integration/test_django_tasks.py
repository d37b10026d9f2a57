"""django.tasks on the scheduler: enqueue() stores a job, get_result() reads it back.

Runs on Django 5.2 with the django-tasks backport and on Django 6.0's django.tasks
(the CI's two legs). The job's execution on a real worker is in tests/e2e.
"""

import os
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import django
import pytest
from celery import Task, current_app
from django.core.management import call_command
from django.db import transaction
from django.db.models import IntegerChoices, TextChoices
from django.utils import timezone
from django.utils.safestring import mark_safe
from freezegun import freeze_time

from scheduler import JobSpec, services
from scheduler.backends import SchedulerBackend
from scheduler.exceptions import InvalidArgumentsError
from scheduler.integrations import django_tasks
from scheduler.integrations.django_tasks import WorkerLost
from scheduler.models import JobAttempt, ScheduledJob
from scheduler.testing import run_due_jobs
from tests.integration.admin_helpers import T0, Status, job
from tests.tasksapp import tasks
from tests.testapp.tasks import read_runs

if TYPE_CHECKING or django.VERSION < (6, 0):
    from django_tasks import TaskResultStatus, default_task_backend, task, task_backends
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_finished
else:
    from django.tasks import TaskResultStatus, default_task_backend, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_finished

pytestmark = pytest.mark.django_db

ADD = "tests.tasksapp.tasks.add"
WHOAMI = "tests.tasksapp.tasks.whoami"


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(T0) as frozen_time:
        yield frozen_time


def test_the_default_backend_is_the_schedulers():
    backend = task_backends["default"]
    assert isinstance(backend, SchedulerBackend)
    assert default_task_backend.alias == "default"
    assert (backend.supports_defer, backend.supports_get_result) == (True, True)
    assert (backend.supports_async_task, backend.supports_priority) == (True, False)


def test_enqueue_two_weeks_ahead_stores_a_job():
    run_after = T0 + timedelta(days=14)
    result = tasks.add.using(run_after=run_after).enqueue(2, b=3)
    job = ScheduledJob.objects.get()
    assert result.id == str(job.pk)
    assert (job.task_name, job.args, job.kwargs) == (ADD, [2], {"b": 3})
    assert (job.run_at, job.status, job.queue) == (run_after, Status.SCHEDULED, "scheduler-jobs")
    assert result.status == TaskResultStatus.READY
    assert (result.args, result.kwargs, result.backend) == ([2], {"b": 3}, "default")
    assert result.enqueued_at == T0
    assert result.task.func is tasks.add.func
    assert (result.errors, result.worker_ids, result.attempts) == ([], [], 0)
    assert not result.is_finished


def test_enqueue_without_run_after_is_as_soon_as_possible():
    tasks.add.enqueue(1, 1)
    assert ScheduledJob.objects.get().run_at == T0


def test_enqueue_belongs_to_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(1, 1)
        raise RuntimeError("the business transaction fails")
    assert not ScheduledJob.objects.exists()


def test_tuples_become_lists_as_in_django_tasks():
    tasks.add.enqueue((1, 2), b={"k": (3,)})
    assert ScheduledJob.objects.get().args == [[1, 2]]


def test_strings_and_choices_are_stored_as_their_plain_values():
    # normalize_json keeps str and int subclasses, which the scheduler refused: a
    # template's output (SafeString), a model's choices, as in any Django project.
    class Colour(TextChoices):
        RED = "red"

    class Size(IntegerChoices):
        BIG = 3

    tasks.add.enqueue(
        mark_safe("<p>x"), b={"colour": Colour.RED, "size": Size.BIG, mark_safe("k"): [1.5]}
    )
    job = ScheduledJob.objects.get()
    assert (job.args, job.kwargs) == (["<p>x"], {"b": {"colour": "red", "size": 3, "k": [1.5]}})


@pytest.mark.parametrize("bad", [timezone.now, object, {1, 2}])
def test_arguments_that_are_not_json_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        tasks.add.enqueue(bad, 1)
    assert not ScheduledJob.objects.exists()


def test_a_naive_run_after_is_refused():
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=T0.replace(tzinfo=None))
    assert not ScheduledJob.objects.exists()


def test_priority_is_not_supported():
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=10)


def test_queues(settings):
    with pytest.raises(InvalidTask, match="Queue 'reports' is not valid"):
        tasks.add.using(queue_name="reports")
    settings.TASKS = {
        "default": {
            "BACKEND": "scheduler.backends.SchedulerBackend",
            "QUEUES": ["default", "reports", "bad.name"],
        }
    }
    tasks.add.using(queue_name="reports").enqueue(1, 2)
    assert ScheduledJob.objects.get().queue == "reports"
    with pytest.raises(InvalidTask, match=r"'bad\.name' is no SQS queue's name"):
        tasks.add.using(queue_name="bad.name")
    assert ScheduledJob.objects.count() == 1


def test_a_queue_name_no_sqs_queue_can_have_is_an_invalid_task(settings):
    # With QUEUES empty, django.tasks takes any name: enqueue() then raised the
    # scheduler's own error, and code catching InvalidTask missed it.
    settings.TASKS = {"default": {"BACKEND": "scheduler.backends.SchedulerBackend", "QUEUES": []}}
    with pytest.raises(InvalidTask, match="'bad name' is no SQS queue's name"):
        tasks.add.using(queue_name="bad name")
    tasks.add.using(queue_name="reports").enqueue(1, 2)
    assert ScheduledJob.objects.get().queue == "reports"


def test_a_result_read_through_a_second_backend_keeps_its_queue(settings):
    # The copy read back was validated by the task's own backend, whose QUEUES lack the
    # second one's: reading the result raised InvalidTask.
    settings.TASKS = {
        "default": {"BACKEND": "scheduler.backends.SchedulerBackend"},
        "critical": {"BACKEND": "scheduler.backends.SchedulerBackend", "QUEUES": ["urgent"]},
    }
    result = tasks.add.using(backend="critical", queue_name="urgent").enqueue(1, 2)
    result.refresh()
    read = task_backends["critical"].get_result(result.id)
    assert (read.task.queue_name, read.task.backend, read.backend) == (
        "urgent",
        "critical",
        "critical",
    )
    # A job of a queue the second alias lacks reads back as the task declared it.
    deferred = tasks.add.using(run_after=T0 + timedelta(days=3)).enqueue(1, 2)
    read = task_backends["critical"].get_result(deferred.id)
    assert (read.task.queue_name, read.task.backend) == ("default", "default")


def test_a_result_read_back_names_the_queue_and_time_it_was_enqueued_with(settings):
    # get_result() gave the task as declared: no run_after, the default queue. Another
    # process (and the function's own context) could not tell when or where it runs.
    settings.TASKS = {
        "default": {
            "BACKEND": "scheduler.backends.SchedulerBackend",
            "QUEUES": ["default", "reports"],
        }
    }
    run_after = T0 + timedelta(days=14)
    enqueued = tasks.add.using(run_after=run_after, queue_name="reports").enqueue(1, 2)
    read = task_backends["default"].get_result(enqueued.id)
    assert (read.task.run_after, read.task.queue_name) == (run_after, "reports")
    assert read.task.func is tasks.add.func
    now = tasks.add.enqueue(3, 4)
    assert task_backends["default"].get_result(now.id).task == tasks.add


def test_max_attempts_option(settings):
    tasks.add.enqueue(1, 2)
    settings.TASKS = {
        "default": {
            "BACKEND": "scheduler.backends.SchedulerBackend",
            "OPTIONS": {"MAX_ATTEMPTS": 1},
        }
    }
    tasks.add.enqueue(1, 2)
    assert list(ScheduledJob.objects.order_by("pk").values_list("max_attempts", flat=True)) == [
        5,
        1,
    ]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"OPTIONS": {"MAX_ATTEMPTS": 0}}, "scheduler.E031"),
        ({"OPTIONS": {"MAX_ATTEMPTS": "3"}}, "scheduler.E031"),
        ({"OPTIONS": {"RETRIES": 3}}, "scheduler.E030"),
        # No SQS queue's name: every enqueue() on it failed, the checks passed.
        ({"QUEUES": ["default", "my queue"]}, "scheduler.E032"),
        # Not a dict, and a name that is no text: the checks crashed.
        ({"OPTIONS": ["MAX_ATTEMPTS"]}, "scheduler.E030"),
        ({"QUEUES": ["default", None, "my queue"]}, "scheduler.E032"),
    ],
)
def test_bad_options_fail_the_system_checks(settings, options, expected):
    settings.TASKS = {"default": {"BACKEND": "scheduler.backends.SchedulerBackend", **options}}
    assert [message.id for message in task_backends["default"].check()] == [expected]
    with pytest.raises(Exception, match=expected):
        call_command("check")


def test_a_task_declared_for_another_backend_is_refused(settings):
    immediate = "django_tasks" if django.VERSION < (6, 0) else "django.tasks"
    settings.TASKS = {
        "default": {"BACKEND": "scheduler.backends.SchedulerBackend"},
        "other": {"BACKEND": f"{immediate}.backends.immediate.ImmediateBackend"},
    }
    elsewhere = task(backend="other")(tasks.add.func)
    with pytest.raises(InvalidTask, match="must be declared with the 'default' backend"):
        elsewhere.using(backend="default")


def attempt(of, number, *, outcome, error="", worker="w1:1", started=T0):
    return JobAttempt.objects.create(
        job=of,
        number=number,
        dispatch_token=uuid.uuid4(),
        scheduled_for=of.run_at,
        started_at=started,
        finished_at=None if outcome == JobAttempt.Outcome.RUNNING else started,
        outcome=outcome,
        error=error,
        worker=worker,
    )


TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'


@pytest.mark.parametrize(
    ("status", "django_status", "finished"),
    [
        ("scheduled", "READY", False),
        ("enqueued", "READY", False),
        ("running", "RUNNING", False),
        ("succeeded", "SUCCESSFUL", True),
        ("failed", "FAILED", True),
        ("cancelled", "FAILED", True),
        ("expired", "FAILED", True),
    ],
)
def test_status_mapping(status, django_status, finished):
    row = job(status, task_name=ADD, args=[1, 2])
    result = task_backends["default"].get_result(str(row.pk))
    assert result.status == TaskResultStatus[django_status]
    assert result.is_finished is finished


def test_a_success_reads_back_its_return_value():
    row = job(Status.SUCCEEDED, task_name=ADD, args=[2, 3], result=5, finished_at=T0)
    attempt(row, 1, outcome=JobAttempt.Outcome.SUCCEEDED, worker="w1@host:7")
    result = tasks.add.get_result(str(row.pk))
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert (result.started_at, result.last_attempted_at, result.finished_at) == (T0, T0, T0)
    assert (result.worker_ids, result.attempts) == (["w1@host:7"], 1)


def test_a_retry_pending_is_ready_with_its_errors_then_fails():
    row = job(Status.SCHEDULED, task_name=ADD, attempts=2)
    attempt(
        row, 1, outcome=JobAttempt.Outcome.ERROR, error=TRACEBACK, started=T0 - timedelta(hours=1)
    )
    attempt(
        row, 2, outcome=JobAttempt.Outcome.LEASE_EXPIRED, error="lease expired: …", worker="w2:9"
    )
    result = tasks.add.get_result(str(row.pk))
    assert result.status == TaskResultStatus.READY
    assert [error.exception_class for error in result.errors] == [ValueError, WorkerLost]
    assert result.errors[0].traceback == TRACEBACK
    assert (result.attempts, result.worker_ids) == (2, ["w1:1", "w2:9"])
    assert (result.started_at, result.last_attempted_at) == (T0 - timedelta(hours=1), T0)
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value

    ScheduledJob.objects.filter(pk=row.pk).update(status=Status.FAILED, finished_at=T0)
    result.refresh()
    assert (result.status, result.finished_at) == (TaskResultStatus.FAILED, T0)
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_a_result_after_an_operator_retry_reads_its_attempts_in_the_order_they_ran():
    # A retry numbers its attempts from 1 again: read by number, the newest attempt was
    # not the last (last_attempted_at, errors[-1]), and the two number 1s came in any order.
    row = job(Status.SUCCEEDED, task_name=ADD, attempts=1, result=5, finished_at=T0)
    hours = [T0 - timedelta(hours=3), T0 - timedelta(hours=2)]
    for number, started in enumerate(hours, start=1):
        attempt(row, number, outcome=JobAttempt.Outcome.ERROR, error=TRACEBACK, started=started)
    attempt(row, 1, outcome=JobAttempt.Outcome.SUCCEEDED, worker="w2:9", started=T0)
    result = tasks.add.get_result(str(row.pk))
    assert (result.started_at, result.last_attempted_at) == (hours[0], T0)
    assert result.worker_ids == ["w1:1", "w1:1", "w2:9"]


@pytest.mark.parametrize("max_attempts", [2**31, 10**12])
def test_a_max_attempts_no_job_can_take_fails_the_system_checks(settings, max_attempts):
    # Past the jobs' own limit: the checks passed and every enqueue() raised.
    backend = {"BACKEND": "scheduler.backends.SchedulerBackend"}
    settings.TASKS = {"default": {**backend, "OPTIONS": {"MAX_ATTEMPTS": max_attempts}}}
    [error] = task_backends["default"].check()
    assert error.id == "scheduler.E031"
    assert "from 1 to 2147483647" in error.msg


def test_an_exception_of_a_module_is_found_again():
    row = job(Status.FAILED, task_name=ADD)
    error = "Traceback …\nscheduler.exceptions.DuplicateJobError: an active job holds it\n"
    attempt(row, 1, outcome=JobAttempt.Outcome.ERROR, error=error)
    [task_error] = tasks.add.get_result(str(row.pk)).errors
    assert task_error.exception_class_path == "scheduler.exceptions.DuplicateJobError"


def test_an_exception_group_is_found_again():
    # Its lines carry a "  | " margin: no frame was found, and the last line named the
    # last sub-exception's class, not the group's.
    row = job(Status.FAILED, task_name=ADD)
    error = (
        "  + Exception Group Traceback (most recent call last):\n"
        '  |   File "/app/tasks.py", line 4, in f\n'
        "  | ExceptionGroup: many (2 sub-exceptions)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | ValueError: a\n"
        "    +---------------- 2 ----------------\n"
        "    | KeyError: 'b'\n"
        "    +------------------------------------\n"
    )
    attempt(row, 1, outcome=JobAttempt.Outcome.ERROR, error=error)
    [task_error] = tasks.add.get_result(str(row.pk)).errors
    assert task_error.exception_class_path == "builtins.ExceptionGroup"


@pytest.mark.django_db(transaction=True)
def test_an_exception_whose_message_spans_lines_is_found_again():
    # As PostgreSQL's errors do ("…\nDETAIL: Key (id)=(1) already exists."): the last
    # line of the traceback is no exception's name.
    result = tasks.explode.enqueue("duplicate key value\nDETAIL:  Key (id)=(1) exists.")
    run_due_jobs()
    result.refresh()
    assert [error.exception_class for error in result.errors] == [ValueError]


@pytest.mark.parametrize(
    "result_id", ["999999", "abc", "", "-1", "1.5", "²", "9" * 30, "9" * 5000, " 1", "1\n"]
)
def test_unknown_ids(result_id):
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(result_id)


def test_an_id_in_other_digits_is_not_the_job_with_that_number():
    row = job(Status.SCHEDULED, task_name=ADD, args=[1, 2])
    arabic_indic = str(row.pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert task_backends["default"].get_result(str(row.pk)).id == str(row.pk)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(arabic_indic)


@pytest.mark.parametrize("task_name", [".x", "..x"])
def test_a_job_of_a_task_name_no_module_can_have_is_not_a_django_task_result(task_name):
    row = job(Status.SCHEDULED, task_name=task_name)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(str(row.pk))


def test_a_celery_job_is_not_a_django_task_result():
    row = job(Status.SCHEDULED, task_name="testapp.noop")
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(str(row.pk))


def test_each_task_is_also_a_celery_task_of_its_path():
    from scheduler.registry import get_task

    for declared in (tasks.add, tasks.whoami, tasks.add_later):
        celery_task = get_task(declared.module_path)
        assert celery_task.name == declared.module_path


def test_run_due_jobs_runs_django_tasks_in_a_test(frozen):
    later = tasks.whoami.using(run_after=T0 + timedelta(days=30)).enqueue("later")
    now = tasks.add.enqueue(2, 3)
    assert [job.pk for job in run_due_jobs()] == [int(now.id)]
    now.refresh()
    assert (now.status, now.return_value) == (TaskResultStatus.SUCCESSFUL, 5)
    later.refresh()
    assert later.status == TaskResultStatus.READY
    frozen.move_to(T0 + timedelta(days=30))
    run_due_jobs()
    later.refresh()
    assert later.return_value == {"id": later.id, "attempt": 1, "label": "later"}


@pytest.mark.parametrize(
    ("kind", "error", "said"),
    [
        ("uuid", TypeError, "Unsupported"),
        ("decimal", TypeError, "Unsupported"),
        ("datetime", TypeError, "Unsupported"),
        ("set", TypeError, "Unsupported"),
        ("bytes", ValueError, "Unsupported"),  # not UTF-8
        # JSON to Python, not to PostgreSQL: they read back as a success returning None.
        ("nan", ValueError, "Out of range float"),
        ("infinity", ValueError, "Out of range float"),
        ("nul", ValueError, "PostgreSQL cannot store"),
        ("surrogate", ValueError, "PostgreSQL cannot store"),
        ("deep", RecursionError, "maximum recursion depth"),
    ],
)
def test_a_return_value_a_job_cannot_hold_fails_the_task_after_one_run(tmp_path, kind, error, said):
    # As django.tasks' ImmediateBackend: the function ran, its result cannot be kept, the
    # task failed. Retried, its effects would happen again on each attempt.
    path = str(tmp_path / "runs")
    result = tasks.record_unstorable.enqueue(path, kind)
    run_due_jobs(until=T0 + timedelta(days=30))
    assert [label for label, _ in read_runs(path)] == [kind], "the function ran again"
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [failure.exception_class for failure in result.errors] == [error]
    assert said in result.errors[0].traceback


@pytest.mark.parametrize(
    "changes",
    [
        {"run_after": T0 + timedelta(days=30), "queue_name": "reports"},
        {"backend": "other"},
    ],
)
def test_using_makes_copies_that_leave_the_declared_task_alone(settings, changes):
    immediate = "django_tasks" if django.VERSION < (6, 0) else "django.tasks"
    settings.TASKS = {
        "default": {
            "BACKEND": "scheduler.backends.SchedulerBackend",
            "QUEUES": ["default", "reports"],
        },
        "other": {"BACKEND": f"{immediate}.backends.immediate.ImmediateBackend"},
    }
    tasks.whoami.using(**changes)
    result = tasks.whoami.enqueue("ctx")
    run_due_jobs()
    result.refresh()
    assert (result.status, result.errors) == (TaskResultStatus.SUCCESSFUL, [])
    assert result.return_value == {"id": result.id, "attempt": 1, "label": "ctx"}
    # Enqueued as declared, it reads back as the task the decorator made.
    assert task_backends["default"].get_result(result.id).task == tasks.whoami


def test_a_cancelled_task_is_finished_for_django_tasks_receivers(
    django_capture_on_commit_callbacks,
):
    # get_result() says FAILED and finished, but task_finished never came: only a job
    # that succeeded or failed sent it.
    finished = []

    def receive(sender, task_result, **kwargs):
        finished.append((task_result.id, task_result.status))

    result = tasks.add.using(run_after=T0 + timedelta(days=1)).enqueue(1, b=2)
    task_finished.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert services.cancel(int(result.id), reason="no longer needed")
    finally:
        task_finished.disconnect(receive)
    assert finished == [(result.id, TaskResultStatus.FAILED)]


def test_a_task_ends_for_receivers_in_a_process_that_never_imported_it(
    monkeypatch, django_capture_on_commit_callbacks
):
    # The web process cancels, and scheduler_dispatch expires, jobs of modules it never
    # imported (Celery's autodiscovery runs in workers and beat): task_finished never came.
    finished, imported = [], []

    def receive(sender, task_result, **kwargs):
        finished.append((task_result.id, task_result.status))

    def first_import(path):
        # What importing the module does the first time: its decorator declares the task.
        imported.append(path)
        django_tasks._declared[ADD] = tasks.add

    job_id = services.schedule_at(ADD, T0 + timedelta(days=1), [1], {"b": 2}).pk
    monkeypatch.delitem(django_tasks._declared, ADD)
    monkeypatch.setattr(django_tasks, "import_string", first_import)
    task_finished.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert services.cancel(job_id, reason="no longer needed")
    finally:
        task_finished.disconnect(receive)
    assert finished == [(str(job_id), TaskResultStatus.FAILED)]
    assert imported == [ADD]


def test_a_process_that_never_used_the_backend_still_tells_django_tasks_its_jobs_ended():
    # A web process (no system checks run) cancels a job before anything there touched
    # task_backends: the receivers that send task_finished were never connected.
    probe = (
        "import django; django.setup()\n"
        "from scheduler import signals\n"
        "from scheduler.models import ScheduledJob\n"
        # The backend's own receiver: the payments demo listens to job_cancelled too.
        "receivers = signals.job_cancelled._live_receivers(ScheduledJob)[0]\n"
        "print(any(r.__module__ == 'scheduler.integrations.django_tasks' for r in receivers))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    ran = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("args", "kwargs"), [((1,), {}), ((1, 2, 3), {}), ((1,), {"c": 2})], ids=["few", "many", "kw"]
)
def test_arguments_the_function_cannot_take_are_refused_at_enqueue(args, kwargs):
    # Stored as they were, they failed only at the task's time, on every attempt.
    with pytest.raises(TypeError):
        tasks.add.using(run_after=T0 + timedelta(days=14)).enqueue(*args, **kwargs)
    assert not ScheduledJob.objects.exists()


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (lambda: services.schedule_at(ADD, T0, [1, 2, 3]), "args"),
        (lambda: services.schedule_at(ADD, T0, [1, 2], {"zzz": 1}), "kwargs"),
        (lambda: services.schedule_many([JobSpec(ADD, T0, [1, 2]), JobSpec(ADD, T0, [1])]), "args"),
        (lambda: services.schedule_at(WHOAMI, T0), "args"),
    ],
    ids=["many", "unknown-keyword", "batch", "context-only"],
)
def test_arguments_the_function_cannot_take_are_refused_when_scheduled_by_its_path(schedule, field):
    # The Celery task that runs it takes anything: the job was stored, and failed at its
    # time with a TypeError on every attempt.
    with pytest.raises(InvalidArgumentsError) as raised:
        schedule()
    assert raised.value.field == field
    assert not ScheduledJob.objects.exists()


def test_arguments_the_function_takes_are_scheduled_by_its_path():
    services.schedule_at(WHOAMI, T0, ["by path"])
    services.schedule_at(
        "tests.tasksapp.tasks.takes_the_wrappers_name", T0, kwargs={"celery_task": 2, "args": 3}
    )
    assert [job.status for job in run_due_jobs()] == [Status.SUCCEEDED] * 2


@pytest.fixture
def celery_add() -> Iterator[Task[Any, Any]]:
    """A Celery task named as tasks.add's function."""

    @current_app.task(name="add", shared=False)  # no other app gets it
    def add(a: int, b: int) -> int:
        return a - b

    yield add
    current_app.tasks.pop("add")


def test_a_django_task_given_to_schedule_at_or_pause_is_named_by_its_module_path(
    frozen, celery_add
):
    # Named by its function's name ("add"), it was refused as no Celery task, or, as
    # here, the Celery task of that name was scheduled and paused instead.
    job = services.schedule_at(tasks.add, T0 + timedelta(days=14), [2, 3])
    assert job.task_name == ADD
    assert services.pause(tasks.add).task_name == ADD
    services.resume(tasks.add)
    frozen.move_to(T0 + timedelta(days=14))
    run_due_jobs()
    assert tasks.add.get_result(str(job.pk)).return_value == 5


def test_a_parameter_named_as_the_celery_wrappers_is_the_functions():
    result = tasks.takes_the_wrappers_name.enqueue(celery_task=2, args=3)
    run_due_jobs()
    result.refresh()
    assert result.return_value == [2, 3]


NESTED = "tests.tasksapp.tasks.Namespace.nested"


def test_a_task_of_a_class_body_is_found_in_a_process_that_never_imported_it(monkeypatch):
    # Its path is no module's attribute: importing it fails, though the import of its
    # module, on the way, declared it.
    def first_import(path):
        django_tasks._declared[NESTED] = tasks.Namespace.nested
        raise ImportError(f"No module named {path.rpartition('.')[0]!r}")

    result = tasks.Namespace.nested.enqueue(7)
    monkeypatch.delitem(django_tasks._declared, NESTED)
    monkeypatch.setattr(django_tasks, "import_string", first_import)
    assert task_backends["default"].get_result(result.id).task == tasks.Namespace.nested


@pytest.fixture
def declared_paths(monkeypatch):
    # Paths a test declares are forgotten after it, by this backend and by Celery.
    monkeypatch.setattr(django_tasks, "_declared", dict(django_tasks._declared))
    before = set(current_app.tasks)
    yield
    for name in set(current_app.tasks) - before:
        current_app.tasks.pop(name)


def _one() -> int:
    return 1


def _two() -> int:
    return 2


def _at(path: str, function):
    """A copy of ``function`` whose module path is ``path``."""
    copy = types.FunctionType(function.__code__, function.__globals__)
    copy.__module__, _, copy.__qualname__ = path.rpartition(".")
    return copy


def test_two_functions_of_one_path_are_refused(declared_paths):
    # Two module-level lambdas, say: the jobs of the first would run the second.
    path = "tests.tasksapp.tasks.<lambda>"
    first = task(_at(path, _one))
    with pytest.raises(InvalidTask, match="already names"):
        task(_at(path, _two))
    # The same function's module run again (a reload) declares it again.
    assert task(_at(path, _one)).func is not first.func
    result = first.enqueue()
    run_due_jobs()
    result.refresh()
    assert result.return_value == 1
