"""`make run`, as the README documents it: the whole system up, a job through it, Ctrl-C.

The command runs as a user would start it (its own process group, as a terminal gives
it), on free ports, against a database of its own that it creates and this test drops.
It runs the demo on first start; the demo's +10 s capture must then succeed through the
real beat (dispatcher), SQS server and worker. Ctrl-C is a SIGINT to the process group.
"""

import contextlib
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import honcho.manager
import psycopg2
import pytest
import requests
from django.db import connection
from psycopg2 import sql

import devtools.run
from payments.models import Payment
from scheduler.models import ScheduledJob
from tests.processes import ROOT, free_port, wait_until

pytestmark = pytest.mark.timeout(180)


#: How long a stopping run may take: its processes' warm shutdowns (killed after
#: STOP_WAIT_SECONDS), then the SQS server's (killed after 10 s).
STOPS_WITHIN = devtools.run.STOP_WAIT_SECONDS + 15


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    if fields[0] in {"Z", "X"}:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """Every live descendant of ``root``: pid -> (start time, command line)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))):
            children.setdefault(stat[1], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    found: dict[int, tuple[int, str]] = {}
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            found[pid] = (starts[pid], cmdline)
        pending.extend(children.get(pid, []))
    return found


def still_running(processes: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Those of ``processes`` still alive (the same start time rules out a reused pid)."""
    return {
        pid: cmdline
        for pid, (start, cmdline) in processes.items()
        if (stat := proc_stat(pid)) is not None and stat[2] == start
    }


def kill_left_over(group: subprocess.Popen[bytes], started: dict[int, tuple[int, str]]) -> None:
    """After a failure: kill the process group ``group`` leads and every process it
    started, those in sessions of their own too (honcho's, the SQS server's), which a
    signal to the group misses, whether or not the test got as far as ``started``."""
    started = {**started, **descendants(group.pid)}
    if group.poll() is None:
        os.killpg(group.pid, signal.SIGKILL)
        group.wait()
    for pid in still_running(started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def write_calls(pid: int) -> int:
    """How many write system calls process ``pid`` made, failed ones included."""
    io = Path(f"/proc/{pid}/io").read_text()
    return int(next(line for line in io.splitlines() if line.startswith("syscw:")).split()[1])


def run_env(database_url: str) -> dict[str, str]:
    """The caller's environment without any SQS configuration, and with AWS credentials,
    as on a laptop whose default profile reaches a real account: SQS is embedded all the
    same (with them, `make run` used to send its worker and beat to Amazon SQS)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "SQS_", "SCHEDULER_", "DJANGO_"))
    }
    env.update(
        DATABASE_URL=database_url,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
        AWS_SECRET_ACCESS_KEY="not-a-real-secret-for-make-run",
    )
    return env


def capture_rows(database_url: str) -> list[tuple[str, str]]:
    """(job status, payment status) of each demo payment, soonest capture first."""
    query = sql.SQL(
        "SELECT j.status, p.status FROM {payment} p JOIN {job} j ON p.capture_job_id = j.id "
        "ORDER BY j.run_at"
    ).format(
        payment=sql.Identifier(Payment._meta.db_table),
        job=sql.Identifier(ScheduledJob._meta.db_table),
    )
    with contextlib.closing(psycopg2.connect(database_url)) as db, db.cursor() as cursor:
        cursor.execute(query)
        return list(cursor.fetchall())


def test_make_run_serves_runs_jobs_and_stops_everything_on_ctrl_c(
    new_database_url: str, tmp_path: Path
) -> None:
    web_port, sqs_port = free_port(), free_port()
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            ["make", "run", f"ARGS=--port {web_port} --sqs-port {sqs_port}"],
            cwd=ROOT,
            env=run_env(new_database_url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, like a terminal's job
        )
    started: dict[int, tuple[int, str]] = {}
    try:

        def web_answers() -> bool:
            try:
                response = requests.get(f"http://127.0.0.1:{web_port}/admin/login/", timeout=2)
            except requests.RequestException:
                return False
            return response.status_code == 200

        assert wait_until(web_answers, timeout=90, interval=0.5), log_path.read_text()
        assert wait_until(
            lambda: f"ready: admin at http://127.0.0.1:{web_port}/admin/" in log_path.read_text(),
            timeout=10,
        )
        # The first start ran the demo: captures at +10 s, +2 min, +20 min and +14 days.
        rows = capture_rows(new_database_url)
        assert len(rows) == 4
        assert [payment for _, payment in rows[1:]] == ["authorized"] * 3

        assert wait_until(
            lambda: capture_rows(new_database_url)[0] == ("succeeded", "captured"),
            timeout=60,
            interval=0.5,
        ), log_path.read_text()[-5000:]
        assert [job for job, _ in capture_rows(new_database_url)[2:]] == ["scheduled", "scheduled"]

        started = descendants(make.pid)
        commands = " | ".join(cmdline for _, cmdline in started.values())
        for expected in ("devtools.run", "devtools.sqs_server", "runserver", "worker", "beat"):
            assert expected in commands, commands

        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        make.wait(timeout=STOPS_WITHIN)
        assert wait_until(lambda: not still_running(started), timeout=10), still_running(started)
        output = log_path.read_text()
        for label in ("web.1", "worker.1", "beat.1"):
            assert f"{label} stopped" in output, output[-3000:]
        # Each stopped on its own: the worker's warm shutdown outlasted honcho's 5 s and
        # was killed, its running job left to its lease.
        assert "SIGKILL" not in output, output[-3000:]
        assert "every process has stopped" in output, output[-3000:]
    finally:
        kill_left_over(make, started)


def _run_refused(env: dict[str, str]) -> tuple[int, str]:
    """``make run``'s exit code and stderr, for a run expected to stop before it starts."""
    run = subprocess.Popen(
        [sys.executable, "-m", "devtools.run", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = run.communicate(timeout=60)
    finally:
        # Should it start the system after all, nothing it started outlives the test.
        kill_left_over(run, {})
    return run.returncode, stderr


@pytest.mark.parametrize("postgresql", ["down", "refusing the user"])
def test_make_run_without_a_database_to_use_says_why_in_one_line(postgresql: str) -> None:
    db = connection.settings_dict
    if postgresql == "down":
        where, user, advice = f"127.0.0.1:{free_port()}", "postgres", "Start PostgreSQL"
    else:
        # It answers: starting it is no advice (it was given for a wrong password too).
        where, user, advice = f"{db['HOST']}:{db['PORT']}", "no_such_role", "user and password"
    returncode, stderr = _run_refused(run_env(f"postgres://{user}@{where}/longdelay"))
    assert returncode == 2
    assert "Traceback" not in stderr
    [line] = stderr.splitlines()
    assert line.startswith(f"error: cannot connect to PostgreSQL at {where}"), line
    assert advice in line
    assert ("Start PostgreSQL" in line) == (postgresql == "down")
    assert "DATABASE_URL" in line


def test_a_closed_terminal_stops_everything_the_run_started(
    new_database_url: str, tmp_path: Path
) -> None:
    # Closing the terminal hangs it up (writes to it then fail) and the shell sends SIGHUP
    # to its jobs: the runner died at once and left web, worker, beat and the SQS server.
    web_port, sqs_port = free_port(), free_port()
    master, terminal = pty.openpty()
    ports = ["--port", str(web_port), "--sqs-port", str(sqs_port)]
    run = subprocess.Popen(
        [sys.executable, "-m", "devtools.run", "--no-demo", *ports],
        cwd=ROOT,
        env=run_env(new_database_url),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output = bytearray()
    closing = threading.Event()

    def read_terminal() -> None:
        # Until told to stop, and never blocked in a read: a read of a closed descriptor
        # read whatever reused its number next (the test's own HTTP response).
        while not closing.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the runner and its children closed the terminal
                    return
                output.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()

    def close_terminal() -> None:
        closing.set()
        reader.join()
        os.close(master)

    started: dict[int, tuple[int, str]] = {}
    try:

        def all_started() -> bool:
            started.update(descendants(run.pid))
            commands = " | ".join(cmdline for _, cmdline in started.values())
            return all(name in commands for name in ("sqs_server", "runserver", "worker", "beat"))

        assert wait_until(lambda: b"ready: admin at" in output, timeout=60, interval=0.2), output
        assert wait_until(all_started, timeout=10), started
        close_terminal()
        # The hangup comes before SIGHUP: a line printed in between (here the web server's
        # request line) failed with EIO and ended the runner before its clean-up.
        writes = write_calls(run.pid)
        requests.get(f"http://127.0.0.1:{web_port}/", timeout=60, allow_redirects=False)
        assert wait_until(lambda: write_calls(run.pid) > writes, timeout=30)
        os.killpg(run.pid, signal.SIGHUP)
        run.wait(timeout=STOPS_WITHIN)
        assert wait_until(lambda: not still_running(started), timeout=10), still_running(started)
        assert run.returncode == 0, output.decode(errors="replace")[-3000:]
    finally:
        if not closing.is_set():
            close_terminal()
        kill_left_over(run, started)


def test_a_port_in_use_names_the_run_that_may_hold_it() -> None:
    # "pass --port to pick another" started a second system beside a killed run's
    # leftovers, which kept running jobs from the same database.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "devtools.run", "--port", str(port)],
            cwd=ROOT,
            env=run_env("postgres://postgres@127.0.0.1:1/unused"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2
    [line] = run.stderr.splitlines()
    assert line.startswith(f"error: port {port} is already in use"), line
    for advice in ("make run", "pgrep", "--port"):
        assert advice in line, line


def test_ctrl_c_while_the_processes_start_stops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C before honcho had read every process's pid failed in its handler
    # (KeyError: 'pid') and left the processes started so far running.
    marker = f"{time.time():.6f}"  # only this test's processes sleep this long
    procfile = tmp_path / "Procfile"
    procfile.write_text("".join(f"p{n}: exec sleep 5{n}.{marker}\n" for n in range(3)))
    monkeypatch.setattr(devtools.run, "PROCFILE", procfile)
    start = honcho.manager.Manager._start

    def start_then_ctrl_c(manager: honcho.manager.Manager) -> None:
        start(manager)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(honcho.manager.Manager, "_start", start_then_ctrl_c)
    try:
        assert devtools.run.run_procfile(free_port(), dict(os.environ)) == 0
        assert wait_until(
            lambda: not any(marker in cmd for _, cmd in descendants(os.getpid()).values()),
            timeout=10,
        )
    finally:
        for pid, (_, cmdline) in descendants(os.getpid()).items():
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("fault", ["SQS_ENDPOINT_URL", "DATABASE_URL"])
def test_a_bad_endpoint_or_database_url_is_one_line(fault: str, new_database_url: str) -> None:
    # Both ended in chained tracebacks, where every other fault is one line.
    env = run_env(new_database_url)
    if fault == "SQS_ENDPOINT_URL":
        endpoint = f"http://127.0.0.1:{free_port()}"
        env["SQS_ENDPOINT_URL"] = endpoint
        expected = f"error: SQS refused or could not be reached ({endpoint})"
    else:
        env["DATABASE_URL"] = "mysql://root@127.0.0.1/longdelay"
        expected = "error: DATABASE_URL must name a PostgreSQL database"
    returncode, stderr = _run_refused(env)
    assert returncode == 2, stderr
    assert "Traceback" not in stderr, stderr
    [line] = stderr.splitlines()
    assert line.startswith(expected), line
