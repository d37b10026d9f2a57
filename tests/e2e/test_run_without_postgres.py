"""`make run` on a machine with only Python: no PostgreSQL server anywhere in reach.

The runner starts in a network namespace of its own, where nothing answers on
127.0.0.1:5432 (the system PostgreSQL is invisible there), with DATABASE_URL unset. It
must start the embedded PostgreSQL from the wheel, say where it is, run the demo through
the real beat, SQS server and worker, and on Ctrl-C stop everything, PostgreSQL last.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_run_command import descendants, kill_left_over, run_env, still_running
from tests.processes import ROOT, postgres_processes, wait_until

pytestmark = pytest.mark.timeout(240)

#: In the runner's namespace: each demo capture's (job status, payment status), by run_at.
CAPTURES = """
import json, psycopg2, sys
with psycopg2.connect(sys.argv[1]) as db, db.cursor() as cursor:
    cursor.execute(
        "SELECT j.status, p.status FROM payments_payment p "
        "JOIN scheduler_scheduledjob j ON p.capture_job_id = j.id ORDER BY j.run_at"
    )
    print(json.dumps(cursor.fetchall()))
"""


def isolated(command: list[str]) -> list[str]:
    """``command`` in a new network namespace with only a loopback interface, up."""
    namespace = ["--net"] if os.geteuid() == 0 else ["--user", "--map-current-user", "--net"]
    script = 'ip link set lo up && exec "$@"'
    return ["unshare", *namespace, "--fork", "sh", "-c", script, "sh", *command]


def in_namespace_of(pid: int, command: list[str]) -> list[str]:
    """``command`` run in the network namespace of process ``pid``."""
    enter = ["-n"] if os.geteuid() == 0 else ["-U", "-n", "--preserve-credentials"]
    return ["nsenter", "-t", str(pid), *enter, *command]


def test_make_run_without_postgres_starts_an_embedded_one(data_dir: Path, tmp_path: Path) -> None:
    env = run_env("unused")
    del env["DATABASE_URL"]
    log_path = tmp_path / "make-run.log"
    command = [sys.executable, "-m", "devtools.run", "--port", "8000", "--pgdata", str(data_dir)]
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            isolated(command),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, like a terminal's job
        )
    started: dict[int, tuple[int, str]] = {}
    try:
        ready = "ready: admin at http://127.0.0.1:8000/admin/"
        wait_until(
            lambda: ready in log_path.read_text() or runner.poll() is not None,
            timeout=120,
            interval=0.5,
        )
        assert ready in log_path.read_text(), log_path.read_text()[-5000:]
        output = log_path.read_text()
        assert "PostgreSQL: nothing answers on 127.0.0.1:5432 and DATABASE_URL is unset" in output
        assert (
            f"PostgreSQL: starting the embedded server (data in {data_dir.relative_to(ROOT)})"
            in output
        )
        [location] = [
            line for line in output.splitlines() if "PostgreSQL: embedded server at" in line
        ]
        port = int(location.split("embedded server at 127.0.0.1:")[1].split(",")[0])
        assert (data_dir / "PG_VERSION").exists()

        # unshare's child: the runner itself, inside the namespace.
        inside = int(Path(f"/proc/{runner.pid}/task/{runner.pid}/children").read_text().split()[0])
        url = f"postgres://postgres@127.0.0.1:{port}/longdelay"

        def captures() -> list[list[str]]:
            result = subprocess.run(
                in_namespace_of(inside, [sys.executable, "-c", CAPTURES, url]),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            rows: list[list[str]] = json.loads(result.stdout)
            return rows

        # The demo ran on first start; its +10 s capture goes through beat, SQS and a worker.
        assert len(captures()) == 4
        assert wait_until(
            lambda: captures()[0] == ["succeeded", "captured"], timeout=90, interval=1
        ), log_path.read_text()[-5000:]

        started = descendants(runner.pid)
        commands = " | ".join(cmdline for _, cmdline in started.values())
        for expected in ("devtools.sqs_server", "runserver", "worker", "beat"):
            assert expected in commands, commands
        # PostgreSQL runs in a session of its own (so Ctrl-C reaches it only through the runner).
        assert postgres_processes(data_dir)

        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C in the terminal
        runner.wait(timeout=90)
        assert wait_until(lambda: not still_running(started), timeout=15), still_running(started)
        assert not postgres_processes(data_dir)
        output = log_path.read_text()
        assert output.rstrip().endswith("every process has stopped"), output[-3000:]
        # PostgreSQL goes last, once nothing uses it any more.
        stopped = output.index("PostgreSQL: embedded server stopped")
        for label in ("web.1", "worker.1", "beat.1"):
            assert output.index(f"{label} stopped") < stopped, output[-3000:]
        assert "Successful postgres command" not in output  # the wheel's own chatter
    finally:
        kill_left_over(runner, started)
