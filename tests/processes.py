"""Starting and stopping the real processes tests need, on free ports."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"{name}-", suffix=".log", delete=False
        )
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches its children
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_output(self, text: str, *, timeout: float) -> None:
        if (
            not wait_until(
                lambda: text in self.output() or self.popen.poll() is not None,
                timeout=timeout,
                interval=0.1,
            )
            or text not in self.output()
        ):
            raise RuntimeError(
                f"{self.name} did not print {text!r} within {timeout}s "
                f"(exit code {self.popen.poll()}):\n{self.output()[-5000:]}"
            )

    def stop(self, timeout: float = 15) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, self.stop_signal)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout)
        self.log.close()
        # Worker pool children are in the same group; make sure none outlived it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        Path(self.log.name).unlink(missing_ok=True)


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
