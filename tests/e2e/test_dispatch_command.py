"""End to end with the dispatcher as a management command instead of beat."""

import fcntl
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import DispatcherHeartbeat, ScheduledJob
from tests.e2e.conftest import a_burst_due_now, ctrl_c_twice_in_a_stuck_tick
from tests.processes import BIN, ROOT, free_port, running, wait_until
from tests.testapp.tasks import read_runs

#: fcntl's F_SETPIPE_SZ (Linux), which Python 3.11's fcntl does not name.
F_SETPIPE_SZ = 1031

pytestmark = pytest.mark.timeout(120)


def test_the_dispatch_command_sends_jobs_and_stops_cleanly_on_sigterm(
    worker, dispatch_command, tmp_path
):
    path = str(tmp_path / "runs")
    job = schedule_at("testapp.record", timezone.now() + timedelta(seconds=6), [path, "cmd"])
    assert wait_until(lambda: len(read_runs(path)) == 1, timeout=30), dispatch_command.output()
    [(_, ran_at)] = read_runs(path)
    assert 0 <= ran_at - job.run_at.timestamp() < 2.0
    # The body ran; the outcome is recorded just after it.
    assert wait_until(lambda: ScheduledJob.objects.get(pk=job.pk).status == "succeeded", timeout=5)
    heartbeat = DispatcherHeartbeat.objects.get(
        dispatcher__contains=f":{dispatch_command.popen.pid}:"
    )
    assert heartbeat.errors == 0

    dispatch_command.popen.send_signal(signal.SIGTERM)
    assert dispatch_command.popen.wait(10) == 0
    assert "signal 15: stopped after the current tick" in dispatch_command.output()


def test_ctrl_c_again_stops_the_dispatch_command_at_once_its_tick_rolled_back(sqs_sends_stuck):
    # Ctrl-C again did nothing: a tick stuck on SQS (or PostgreSQL) could only be killed.
    jobs = a_burst_due_now(sqs_sends_stuck["SCHEDULER_QUEUE_NAME"])
    args = [str(BIN / "python"), "manage.py", "scheduler_dispatch"]
    with running("scheduler_dispatch", args, sqs_sends_stuck) as command:
        output = ctrl_c_twice_in_a_stuck_tick(command, jobs)
    assert "dispatcher stopping now signal=2 tick=cut short" in output


def test_sigterm_stops_the_dispatch_command_while_its_log_is_stuck_behind_a_slow_reader():
    # The handler wrote to stderr first: a signal that landed while a log line waited
    # for the pipe (buffered output, an outage logging tracebacks, a reader behind)
    # raised "reentrant call" there, and the stop was lost: it ran until killed.
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/none"}
    env.pop("PYTHONUNBUFFERED", None)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)  # full after a few tracebacks
    command = subprocess.Popen(
        [str(BIN / "python"), "manage.py", "scheduler_dispatch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        start_new_session=True,
    )
    os.close(write_end)
    stderr = os.fdopen(read_end, "rb")
    reader = threading.Thread(target=stderr.read, daemon=True)
    try:
        time.sleep(6)  # nobody reads: the dispatcher is stuck writing to stderr
        command.send_signal(signal.SIGTERM)
        reader.start()
        assert command.wait(30) == 0
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait(10)
        if reader.is_alive():
            reader.join(10)  # at the pipe's end once the process is gone
        stderr.close()


@pytest.mark.parametrize("mode", [[], ["--once"]])
def test_the_dispatch_command_refuses_a_database_never_migrated(new_database_url, mode):
    # Its loop logged four tracebacks a tick ("relation … does not exist") for as long as
    # it ran, where beat stops: the database was a wrong one, or migrate never ran.
    db = connection.settings_dict
    admin = psycopg2.connect(dbname="postgres", user=db["USER"], host=db["HOST"], port=db["PORT"])
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {new_database_url.rsplit('/', 1)[1]}")
    admin.close()
    env = {**os.environ, "DATABASE_URL": new_database_url}
    command = subprocess.run(
        [str(BIN / "python"), "manage.py", "scheduler_dispatch", *mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 1
    assert "Traceback" not in command.stderr
    assert "python manage.py migrate" in command.stderr.splitlines()[-1], command.stderr
