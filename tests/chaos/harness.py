"""Real processes to break: an SQS server, Celery workers and dispatchers.

Used by the chaos suite's fixtures and by ``bench/soak.py``. Every process runs in its
own process group, so a kill reaches a worker's pool children too, and
:class:`Cluster` stops whatever is left when it closes, even after a failure.
"""

import contextlib
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection

from tests.conftest import SqsQueue, sqs_client
from tests.processes import (
    BIN,
    WORKER_STOP_SIGNAL,
    Process,
    celery_beat_args,
    celery_worker_args,
    free_port,
    start_sqs_server,
)

#: Child processes' Django settings: every period lowered to seconds.
CHAOS_SETTINGS_MODULE = "tests.settings_chaos"
_START_TIMEOUT = 60.0


class SqsServer:
    """A moto SQS server of one's own, to pause (state kept) or restart (state lost)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: Process | None = None
        self._paused = False
        #: Whether a client may know the port (given, read as :attr:`endpoint`, or served
        #: on): then a start never moves to another port.
        self._port_known = port is not None

    @property
    def endpoint(self) -> str:
        self._port_known = True
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it answers on its port.

        Fails at once, with its output, if it exits (a port another process took: on
        the first start, before anyone knew the port, it moves to another one).
        """
        self.process, self.port = start_sqs_server(self.port, move=not self._port_known)
        self._port_known = True

    def pause(self) -> None:
        """SIGSTOP: connections hang, nothing is lost."""
        assert self.process is not None
        os.killpg(self.process.popen.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        os.killpg(self.process.popen.pid, signal.SIGCONT)
        self._paused = False

    def pause_for(self, seconds: float) -> None:
        """Stopped for ``seconds``, then on again."""
        self.pause()
        try:
            time.sleep(seconds)
        finally:
            self.resume()

    def messages(self, queue: str) -> int:
        """Messages in ``queue`` (visible, delayed and in flight), as SQS counts them."""
        client = sqs_client(self.endpoint)
        url = client.get_queue_url(QueueName=queue)["QueueUrl"]
        return SqsQueue(name=queue, url=url, client=client).count()

    def restart(self) -> None:
        """Stop and start on the same port: every queue and message is gone. Fails if
        the new server cannot bind the port, rather than talk to whatever holds it."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stop the server (resumed first, so that it can exit)."""
        if self.process is None:
            return
        if self._paused:
            self.resume()
        self.process.stop()
        self.process = None


#: The comment on every iptables rule the harness adds: :func:`purge_iptables_rules`
#: deletes those that a run killed before its clean-up (SIGKILL, a CI timeout) left.
IPTABLES_TAG = "longdelay-chaos"
#: ``-w``: wait for another iptables command's lock (up to 10 s) instead of failing.
IPTABLES = ("iptables", "-w", "10")

IptablesRunner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def run_iptables(args: list[str]) -> "subprocess.CompletedProcess[str]":
    """``iptables -w 10 *args``; CalledProcessError (with its stderr) if it fails."""
    return subprocess.run([*IPTABLES, *args], check=True, capture_output=True, text=True)


def _iptables_error(error: Exception) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        return f"{shlex.join(error.cmd)}: {(error.stderr or '').strip() or error}"
    return str(error)


class PacketDrops:
    """The tagged iptables rules that drop loopback TCP packets, added by one test.

    A rule is forgotten only once the kernel deleted it; :meth:`clear` tries every rule
    even when deleting another failed.
    """

    def __init__(self, run: IptablesRunner = run_iptables) -> None:
        self._run = run
        #: The matches of the rules in the kernel now, in the order added.
        self.matches: list[tuple[str, ...]] = []

    @staticmethod
    def rule(*match: str) -> list[str]:
        """The rule (chain and specification) dropping the packets ``match`` selects."""
        comment = ["-m", "comment", "--comment", IPTABLES_TAG]
        return ["INPUT", "-i", "lo", "-p", "tcp", *match, *comment, "-j", "DROP"]

    def drop(self, *match: str) -> None:
        self._run(["-I", *self.rule(*match)])
        self.matches.append(match)

    def let_through(self, *match: str) -> None:
        self._run(["-D", *self.rule(*match)])
        self.matches.remove(match)

    def clear(self) -> None:
        """Delete every rule (the latest first); raise after, naming those left."""
        errors = []
        for match in reversed(self.matches.copy()):
            try:
                self.let_through(*match)
            except (subprocess.CalledProcessError, OSError) as error:
                errors.append(_iptables_error(error))
        if errors:
            raise RuntimeError(
                f"{len(errors)} iptables rule(s) tagged {IPTABLES_TAG} not deleted "
                "(run purge_iptables_rules()):\n" + "\n".join(errors)
            )


def purge_iptables_rules(run: IptablesRunner = run_iptables) -> list[str]:
    """Delete every rule tagged :data:`IPTABLES_TAG` from INPUT and OUTPUT; those deleted.

    Nothing to do without iptables or root (such a run adds no rule either). Raises
    after trying them all if one could not be deleted.
    """
    deleted, errors = [], []
    for chain in ("INPUT", "OUTPUT"):
        try:
            listing = run(["-S", chain]).stdout
        except (subprocess.CalledProcessError, OSError):
            continue
        for line in listing.splitlines():
            words = shlex.split(line)
            tagged = any(words[i : i + 2] == ["--comment", IPTABLES_TAG] for i in range(len(words)))
            if words[:1] != ["-A"] or not tagged:
                continue
            try:
                run(["-D", *words[1:]])
            except (subprocess.CalledProcessError, OSError) as error:
                errors.append(_iptables_error(error))
            else:
                deleted.append(line)
    if errors:
        raise RuntimeError(f"iptables rules tagged {IPTABLES_TAG} left:\n" + "\n".join(errors))
    return deleted


class PostgresProxy:
    """A TCP proxy in front of PostgreSQL that a test can cut, as a failover does.

    Processes given :attr:`port` reach PostgreSQL through it. :meth:`cut` drops every
    connection and closes each new one at once until :meth:`restore`.
    :meth:`blackhole` has the kernel drop every packet to and from :attr:`port`
    instead (iptables, as root, rules tagged :data:`IPTABLES_TAG`), as when the primary
    is lost with its host or its network: nothing is closed or refused, nothing
    answers; :meth:`fail_over` then lets new connections through, as to a new primary,
    while those open before stay unanswered for good.
    """

    def __init__(self, *, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        #: The iptables rules dropping packets now.
        self._drops = PacketDrops()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self._accepting.start()

    def cut(self) -> None:
        """Drop every connection; refuse new ones until :meth:`restore`."""
        self._cut.set()
        self._drop_all()

    def blackhole(self) -> None:
        """Drop every packet to and from the proxy, until :meth:`fail_over`."""
        for end in ("dport", "sport"):
            self._drop_packets(f"--{end}", str(self.port))

    def fail_over(self) -> None:
        """Let new connections through again; those open now stay blackholed."""
        with self._lock:
            clients = [
                sock.getpeername()[1] for sock in self._open if sock.getsockname()[1] == self.port
            ]
        for client in clients:
            self._drop_packets("--sport", str(client), "--dport", str(self.port))
            self._drop_packets("--sport", str(self.port), "--dport", str(client))
        for end in ("dport", "sport"):
            self._pass_packets(f"--{end}", str(self.port))

    def restore(self) -> None:
        self._cut.clear()

    def _drop_packets(self, *match: str) -> None:
        self._drops.drop(*match)

    def _pass_packets(self, *match: str) -> None:
        self._drops.let_through(*match)

    def stop(self) -> None:
        """Delete every rule (raising after if one is left) and close every socket."""
        try:
            self._drops.clear()
        finally:
            self._cut.set()
            self._listener.close()
            self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            if self._cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [])
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._open.difference_update(peers)
            for sock in peers:
                sock.close()


@dataclass(frozen=True)
class Send:
    """One message a chaos dispatcher handed to SQS, from its journal."""

    dispatcher: str
    job_id: int
    token: str
    #: When the dispatcher called the publisher: its transaction had claimed the job.
    called_at: float
    #: When the publisher returned: the dispatch commits after this.
    returned_at: float


class Cluster:
    """Workers and dispatchers against one database, SQS server and queue.

    ``env`` is the child processes' environment (database URL without options, SQS
    endpoint, queue name); ``settings_module`` their Django settings (the chaos suite's
    lowered periods by default; the benchmarks run the project's). Each process's
    database connections carry an ``application_name`` (``chaos-worker-N``,
    ``chaos-dispatcher-N``), so a test can terminate them with ``pg_terminate_backend``.
    """

    def __init__(
        self, *, env: dict[str, str], workdir: Path, settings_module: str = CHAOS_SETTINGS_MODULE
    ) -> None:
        self.env = {**env, "DJANGO_SETTINGS_MODULE": settings_module}
        self.workdir = workdir
        self.workers: list[Process] = []
        self.dispatchers: list[Process] = []
        #: Processes killed (:meth:`kill`) or that exited on their own, kept for their logs.
        self.exited: list[Process] = []
        self._count: dict[str, int] = defaultdict(int)
        self._journals: list[Path] = []

    def save_logs(self, directory: Path) -> None:
        """Write every process's whole log to ``directory/<name>.log``."""
        directory.mkdir(parents=True, exist_ok=True)
        for process in [*self.workers, *self.dispatchers, *self.exited]:
            (directory / f"{process.name}.log").write_text(process.output())

    def dump_output(self, tail: int = 6000) -> None:
        """Write the end of every process's log to stderr (after a failure)."""
        for process in [*self.workers, *self.dispatchers, *self.exited]:
            sys.stderr.write(f"--- {process.name} output ---\n{process.output()[-tail:]}\n")

    def _env(self, role: str) -> tuple[str, dict[str, str]]:
        self._count[role] += 1
        name = f"chaos-{role}-{self._count[role]}"
        url = self.env["DATABASE_URL"]
        separator = "&" if "?" in url else "?"
        return name, {**self.env, "DATABASE_URL": f"{url}{separator}application_name={name}"}

    def start_workers(self, count: int = 1, *, concurrency: int = 2) -> list[Process]:
        """Start ``count`` `celery worker` processes and wait until each is ready."""
        started = []
        for _ in range(count):
            name, env = self._env("worker")
            args = celery_worker_args(
                queue=self.env["SCHEDULER_QUEUE_NAME"], name=name, concurrency=concurrency
            )
            started.append(Process(name, args, env, stop_signal=WORKER_STOP_SIGNAL))
        self.workers.extend(started)
        for process in started:
            process.wait_for_output("ready.", timeout=_START_TIMEOUT)
        return started

    def start_dispatchers(
        self, count: int = 1, *, fault: str = "none", wait: bool = True
    ) -> list[Process]:
        """Start ``count`` dispatcher processes whose publisher injects ``fault``.

        See :mod:`tests.chaos.dispatcher` for the faults. With ``wait``, returns once
        each has ticked.
        """
        started = []
        for _ in range(count):
            name, env = self._env("dispatcher")
            journal = self.workdir / f"{name}.journal"
            self._journals.append(journal)
            args = [
                str(BIN / "python"),
                "-m",
                "tests.chaos.dispatcher",
                "--name",
                name,
                "--fault",
                fault,
                "--journal",
                str(journal),
            ]
            started.append(Process(name, args, env))
        self.dispatchers.extend(started)
        if wait:
            for process in started:
                process.wait_for_output("dispatch tick", timeout=_START_TIMEOUT)
        return started

    def start_beat(self) -> Process:
        """`celery -A project beat`: the deployment's dispatcher, ticking in-process.

        Counted as a dispatcher (its connections are ``chaos-dispatcher-N``); no journal.
        """
        # Imported here: the soak imports this module before Django is set up.
        from scheduler.dispatch.beat import ensure_dispatch_schedule

        ensure_dispatch_schedule()
        name, env = self._env("dispatcher")
        args = celery_beat_args(pidfile=self.workdir / f"{name}.pid")
        process = Process(name, args, env)
        self.dispatchers.append(process)
        process.wait_for_output("dispatch tick", timeout=_START_TIMEOUT)
        return process

    def kill(self, process: Process) -> None:
        """SIGKILL a process and its children, as the OOM killer or a power cut would."""
        process.kill()
        for group in (self.workers, self.dispatchers):
            if process in group:
                group.remove(process)
        self.exited.append(process)

    def replace_exited_workers(self, *, concurrency: int) -> int:
        """Start a worker for each that exited on its own, as a supervisor would; how many."""
        exited = [process for process in self.workers if process.popen.poll() is not None]
        for process in exited:
            self.workers.remove(process)
            self.exited.append(process)
        if exited:
            self.start_workers(len(exited), concurrency=concurrency)
        return len(exited)

    def terminate_connections(self, role: str) -> int:
        """``pg_terminate_backend`` every connection of this cluster's ``role`` processes."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE %s",
                [f"chaos-{role}-%"],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def sends(self) -> list[Send]:
        """Every message the dispatchers handed to SQS, from their journals."""
        sends = []
        for journal in self._journals:
            if journal.exists():
                for line in journal.read_text().splitlines():
                    job_id, token, called_at, returned_at = line.split()
                    sends.append(
                        Send(journal.stem, int(job_id), token, float(called_at), float(returned_at))
                    )
        return sends

    def worker_output(self) -> str:
        """Every worker's log so far (exited ones included), concatenated."""
        return "".join(
            process.output()
            for process in [*self.workers, *self.exited]
            if "worker" in process.name
        )

    def close(self) -> None:
        """Stop every process still running, each even if stopping another failed."""
        with contextlib.ExitStack() as stopping:
            for process in [*self.dispatchers, *self.workers, *self.exited]:
                stopping.callback(process.stop)
        self.dispatchers.clear()
        self.workers.clear()
        self.exited.clear()


def child_env(*, database: dict[str, Any], endpoint: str, queue: str) -> dict[str, str]:
    """The environment of a cluster's processes for this database, server and queue."""
    return {
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        ),
        "SQS_ENDPOINT_URL": endpoint,
        "SCHEDULER_QUEUE_NAME": queue,
    }
