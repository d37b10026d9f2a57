"""Celery's worker and beat, and the web server, refuse to start when Django's system
checks report an error."""

import time
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
from django.utils import timezone

from scheduler import schedule_at
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.models import DispatcherHeartbeat, ScheduledJob
from tests.conftest import SqsQueue
from tests.e2e.test_image_command import image_command
from tests.processes import (
    BIN,
    WORKER_STOP_SIGNAL,
    Process,
    celery_beat_args,
    celery_worker_args,
    free_port,
    running,
)

pytestmark = pytest.mark.timeout(60)

#: The check tests.settings_check_error fails, and the settings module that fails it.
CHECK_ID = "scheduler.E003"
FAILING_SETTINGS = "tests.settings_check_error"
#: Long enough for a loaded machine to start Python, Django and Celery; a process that
#: ignored the error would run on until the test's own timeout.
EXIT_WITHIN_SECONDS = 15


def refused(process: Process) -> str:
    """Wait for ``process`` to exit; assert it failed, naming the check; its output."""
    started = time.monotonic()
    returncode = process.popen.wait(EXIT_WITHIN_SECONDS)
    output = process.output()
    assert returncode != 0, output
    assert CHECK_ID in output, output
    assert "SystemCheckError" in output, output
    assert time.monotonic() - started < EXIT_WITHIN_SECONDS
    return output


def test_beat_refuses_to_start_and_dispatches_nothing(
    e2e_env: dict[str, str], tmp_path: Path
) -> None:
    job = schedule_at("testapp.noop", timezone.now())  # due: a tick would send it
    env = {**e2e_env, "DJANGO_SETTINGS_MODULE": FAILING_SETTINGS}
    with running("beat", celery_beat_args(pidfile=tmp_path / "beat.pid"), env) as process:
        output = refused(process)
    assert "dispatch tick" not in output
    assert ScheduledJob.objects.get(pk=job.pk).status == "scheduled"
    assert not DispatcherHeartbeat.objects.exists()


def test_beat_on_a_database_never_migrated_exits_with_a_readable_error(
    e2e_env: dict[str, str], tmp_path: Path, new_database_url: str
) -> None:
    # A first deploy that forgot `migrate`: the traceback beat prints as it exits came
    # through Celery's stdout logger as a thousand one-fragment WARNING lines.
    base, name = new_database_url.rsplit("/", 1)
    with closing(psycopg2.connect(f"{base}/postgres")) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    env = {**e2e_env, "DATABASE_URL": new_database_url}
    with running("beat", celery_beat_args(pidfile=tmp_path / "beat.pid"), env) as process:
        returncode = process.popen.wait(EXIT_WITHIN_SECONDS)
        output = process.output()
    assert returncode != 0, output
    assert 'relation "django_celery_beat_intervalschedule" does not exist' in output
    assert "celery.redirected" not in output, output[-3000:]


def test_the_worker_refuses_to_start_and_receives_nothing(
    e2e_env: dict[str, str], sqs_queue: SqsQueue
) -> None:
    job = schedule_at("testapp.noop", timezone.now())
    Dispatcher(judge_leases_at_once=True).run_once()  # its message waits in the queue
    env = {**e2e_env, "DJANGO_SETTINGS_MODULE": FAILING_SETTINGS}
    args = celery_worker_args(queue=sqs_queue.name, name="refused")
    with running("worker", args, env, stop_signal=WORKER_STOP_SIGNAL) as process:
        output = refused(process)
    assert "ready." not in output
    assert ScheduledJob.objects.get(pk=job.pk).status == "enqueued"
    [message] = sqs_queue.receive()
    assert message["headers"]["task"] == "testapp.noop"


def test_the_web_server_refuses_to_start(e2e_env: dict[str, str]) -> None:
    # A WSGI server runs no system check of its own: the image's gunicorn served the
    # site, and a web process sent due jobs to SQS, with a configuration the checks refuse.
    command = image_command()
    env = {**e2e_env, "DJANGO_SETTINGS_MODULE": FAILING_SETTINGS, "PORT": str(free_port())}
    with running("web", [str(BIN / command[0]), *command[1:]], env) as process:
        output = refused(process)
    assert "Booting worker" in output  # gunicorn got as far as loading the application


def test_the_worker_refuses_to_start_on_a_server_whose_default_level_breaks_atomic_jobs(
    e2e_env: dict[str, str], sqs_queue: SqsQueue
) -> None:
    # The connection's own server-side default (as `ALTER DATABASE … SET` or a role's
    # setting gives it) above READ COMMITTED: the worker started, and every atomic job
    # longer than a heartbeat interval failed at each attempt.
    serializable = "?options=-c%20default_transaction_isolation%3Dserializable"
    env = {**e2e_env, "DATABASE_URL": e2e_env["DATABASE_URL"] + serializable}
    args = celery_worker_args(queue=sqs_queue.name, name="serializable")
    with running("worker", args, env, stop_signal=WORKER_STOP_SIGNAL) as process:
        returncode = process.popen.wait(EXIT_WITHIN_SECONDS)
        output = process.output()
    assert returncode != 0, output
    assert "scheduler.E024" in output, output
    assert "SERIALIZABLE" in output
    assert "ready." not in output
