"""No secret and no job argument reaches the logs of a real run."""

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from scheduler import schedule_at
from scheduler.models import ScheduledJob
from tests.processes import wait_until
from tests.testapp.tasks import read_runs

pytestmark = pytest.mark.timeout(120)

SECRET_KEY = "secret-key-3b6f0c2e9a7d4f18-" + "s" * 30
DATABASE_PASSWORD = "db-password-5e1d8c7b"
AWS_SECRET = "aws-secret-9c4a2f6e"
ARGUMENT_SECRET = "card-token-7f3e1a9d"
SECRETS = (SECRET_KEY, DATABASE_PASSWORD, AWS_SECRET, ARGUMENT_SECRET)


@pytest.fixture
def e2e_env(e2e_env):
    """The child processes get a secret key, a database password and AWS keys."""
    user, rest = e2e_env["DATABASE_URL"].removeprefix("postgres://").split("@", 1)
    return {
        **e2e_env,
        "DJANGO_SECRET_KEY": SECRET_KEY,
        # Trust authentication accepts any password: it only has to be in the URL.
        "DATABASE_URL": f"postgres://{user}:{DATABASE_PASSWORD}@{rest}",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }


def test_no_secret_or_argument_is_logged(worker, beat, dispatch_command, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    # The child processes had every secret to leak (this process never had the first three).
    children = {"worker": worker, "beat": beat, "scheduler_dispatch": dispatch_command}
    for name, process in children.items():
        environment = Path(f"/proc/{process.popen.pid}/environ").read_bytes().decode()
        for secret in (SECRET_KEY, DATABASE_PASSWORD, AWS_SECRET):
            assert secret in environment, f"{secret!r} is not in the {name} environment"
    path = str(tmp_path / "runs")
    soon = timezone.now() + timedelta(seconds=1)
    ok = schedule_at("testapp.record", soon, [path, ARGUMENT_SECRET])
    failing = schedule_at(
        "testapp.boom", soon, [ARGUMENT_SECRET], {"token": ARGUMENT_SECRET}, max_attempts=1
    )

    def finished() -> bool:
        statuses = set(
            ScheduledJob.objects.filter(pk__in=[ok.pk, failing.pk]).values_list("status", flat=True)
        )
        return statuses <= {"succeeded", "failed"}

    assert wait_until(finished, timeout=45, interval=0.2), worker.output()[-4000:]
    assert [label for label, _ in read_runs(path)] == [ARGUMENT_SECRET]  # it did run
    # The job's row is committed before its line is logged: wait for both lines.
    for line in ("job succeeded", "job error"):
        worker.wait_for_output(line, timeout=10)

    logs = {name: process.output() for name, process in children.items()}
    for name, text in logs.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} is in the {name} log"
    # This process had only the job's arguments (in schedule_at): its log, which holds
    # the scheduler's lines of the two calls, names the jobs without them.
    assert f"job scheduled job_id={failing.pk} task=testapp.boom" in caplog.text
    assert ARGUMENT_SECRET not in caplog.text
