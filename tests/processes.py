"""Starting and stopping the real processes tests need, on free ports."""

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import requests

from devtools.sqs_server import command as sqs_server_command

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def celery_worker_args(*, queue: str, name: str, concurrency: int = 2) -> list[str]:
    """`celery worker` as the Procfile runs it, on ``queue`` alone, named ``name@host``."""
    return [
        str(BIN / "celery"),
        "-A",
        "project",
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        queue,
        "-n",
        f"{name}@%h",
    ]


#: How a test stops a worker it is done with: Celery's cold shutdown. A warm one (SIGTERM)
#: first waits for the worker's long poll in flight, up to ``wait_time_seconds`` (10 s).
WORKER_STOP_SIGNAL = signal.SIGQUIT


def celery_beat_args(*, pidfile: Path) -> list[str]:
    """`celery beat` as the Procfile runs it (the dispatcher), with its pid file there."""
    return [
        str(BIN / "celery"),
        "-A",
        "project",
        "beat",
        "--loglevel=INFO",
        "--pidfile",
        str(pidfile),
    ]


#: Where :func:`free_port` looks first: below Linux's default ephemeral range
#: (``net.ipv4.ip_local_port_range``, 32768-60999), from which the kernel takes the source
#: port of every outgoing connection. A port chosen there may be taken by some client's
#: connection before the server binds it, or between a server's stop and its restart.
_QUIET_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback port nothing was bound to a moment ago.

    Still a race: another process may bind it before the caller does. A server started
    on it should be waited for with :meth:`Process.wait_until_ready`, which fails when
    the process exits, and started again on another port when it could not bind
    (:func:`start_server`).
    """
    for _ in range(20):
        port = random.choice(_QUIET_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


#: What a server that could not bind its port prints (Python's ``OSError`` for EADDRINUSE,
#: as moto's werkzeug and most servers print it).
BIND_ERROR = "Address already in use"


class ProcessExitedError(RuntimeError):
    """A process exited while a test waited for it to be ready."""

    def __init__(self, process: "Process", waiting_for: str) -> None:
        self.output = process.output()
        self.returncode = process.popen.returncode
        super().__init__(
            f"{process.name} (pid {process.popen.pid}) exited with code {self.returncode} "
            f"before {waiting_for}:\n{self.output[-5000:]}"
        )

    @property
    def bind_error(self) -> bool:
        """Whether it exited because its port was taken."""
        return BIND_ERROR in self.output


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Process:
    """A child process whose output goes to a temporary file, read by the test."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self._stopped = False
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"{name}-", suffix=".log", delete=False
        )
        try:
            self.popen = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        except BaseException:
            # Not started: no stop() will remove its log.
            self.log.close()
            Path(self.log.name).unlink()
            raise

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_until_ready(
        self, ready: Callable[[], bool], *, timeout: float, waiting_for: str = "it was ready"
    ) -> None:
        """Wait until ``ready()``; raise :class:`ProcessExitedError` as soon as the process
        has exited (whatever ``ready()`` says then: an answer on its port would come from
        another process), RuntimeError after ``timeout``."""
        wait_until(lambda: self.popen.poll() is not None or ready(), timeout=timeout)
        if self.popen.poll() is not None:
            raise ProcessExitedError(self, waiting_for)
        if not ready():
            raise RuntimeError(
                f"{self.name} (pid {self.popen.pid}) not ready within {timeout}s: "
                f"{waiting_for}:\n{self.output()[-5000:]}"
            )

    def wait_for_output(self, text: str, *, timeout: float) -> None:
        """Wait until the process has printed ``text`` (if only as it exited); raise
        :class:`ProcessExitedError` as soon as it has exited without."""
        wait_until(lambda: text in self.output() or self.popen.poll() is not None, timeout=timeout)
        if text in self.output():
            return
        waiting_for = f"it printed {text!r}"
        if self.popen.poll() is not None:
            raise ProcessExitedError(self, waiting_for)
        raise RuntimeError(
            f"{self.name} (pid {self.popen.pid}) not ready within {timeout}s: "
            f"{waiting_for}:\n{self.output()[-5000:]}"
        )

    def stop(self, timeout: float = 15) -> None:
        """Stop the process and whatever is left of its process group; once (a second call
        does nothing: its group id may be another's by then)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.popen.returncode is None:
                self._signal_group(self.stop_signal)
                if not self._exited(timeout):
                    self._signal_group(signal.SIGKILL)
                    self._exited(timeout)
                # Worker pool children are in the same group; make sure none outlived it.
                # The leader, exited but not reaped yet, keeps the group's id its own.
                self._signal_group(signal.SIGKILL)
                self.popen.wait(timeout)
            else:
                self._kill_reaped_group()
        finally:
            self.log.close()
            Path(self.log.name).unlink(missing_ok=True)

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL the process and its group, and reap it (as the OOM killer would)."""
        if self.popen.returncode is None:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout)
        else:
            self._kill_reaped_group()

    def _signal_group(self, signum: signal.Signals) -> None:
        """Signal the process group. Only while the group's id is its own: its leader not
        reaped yet, or (:meth:`_kill_reaped_group`) a member still alive."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def _kill_reaped_group(self) -> None:
        # Reaped elsewhere (a test's popen.wait() or poll()): the group's id stays its own
        # while a member lives; with none left it may be another process's now.
        if _group_members(self.popen.pid):
            self._signal_group(signal.SIGKILL)

    def _exited(self, timeout: float) -> bool:
        """Whether the process exited within ``timeout``; not reaped (``WNOWAIT``)."""

        def exited() -> bool:
            try:
                return (
                    os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                    is not None
                )
            except ChildProcessError:
                return True

        return wait_until(exited, timeout=timeout, interval=0.02)


def _group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


def start_server(
    name: str,
    command: Callable[[int], list[str]],
    *,
    ready: Callable[[Process, int], bool],
    port: int | None = None,
    move: bool = True,
    timeout: float = 30,
    attempts: int = 3,
) -> tuple[Process, int]:
    """Start ``command(port)`` and wait until ``ready(process, port)``: the process, and
    the port it serves.

    On ``port`` (a :func:`free_port` without one); with ``move``, on another free port
    when the process exits with a bind error (another process took the port meanwhile).
    Without ``move`` (a restart: its clients know the port), a bind error fails at once,
    as any exit does. ``ready`` should prove that the answer is the process's own, not
    only that something answers on the port.
    """
    chosen = port or free_port()
    for attempt in range(1, attempts + 1):
        process = Process(name, command(chosen))
        try:
            process.wait_until_ready(
                lambda: ready(process, chosen),  # noqa: B023 - called within the iteration
                timeout=timeout,
                waiting_for=f"it served port {chosen}",
            )
        except ProcessExitedError as error:
            process.stop()
            if not (move and error.bind_error and attempt < attempts):
                raise
            chosen = free_port()
            continue
        except BaseException:
            process.stop()
            raise
        return process, chosen
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt raised


def sqs_server_ready(process: Process, port: int) -> bool:
    """Whether the moto server ``process`` serves ``port``: it printed that it bound the
    port (in its own log: no other process's), and it answers there."""
    if f"Running on http://127.0.0.1:{port}" not in process.output():
        return False
    try:
        return requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1).status_code < 500
    except requests.RequestException:
        return False


def start_sqs_server(port: int | None = None, *, move: bool = True) -> tuple[Process, int]:
    """A moto SQS server (``devtools.sqs_server``) serving; see :func:`start_server`."""
    return start_server("moto", sqs_server_command, ready=sqs_server_ready, port=port, move=move)


def logged_at(output: str, pattern: str) -> list[tuple[float, str]]:
    """When each line of a process's ``output`` matching ``pattern`` was logged (the
    project's log format), with the pattern's last group (the time itself when it has
    none)."""
    stamped = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern, re.MULTILINE)
    return [
        (datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), match.groups()[-1])
        for match in stamped.finditer(output)
    ]


@contextlib.contextmanager
def running(
    name: str,
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> Iterator[Process]:
    process = Process(name, args, env, stop_signal=stop_signal)
    try:
        yield process
    except BaseException:
        sys.stderr.write(f"--- {name} output ---\n{process.output()[-8000:]}\n")
        raise
    finally:
        process.stop()


def postgres_processes(data_dir: Path) -> list[int]:
    """Live processes serving ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(data_dir) in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
    return found
