"""``python -m devtools.test [pytest arguments]`` (``make test``): the test suite.

Runs pytest with the given arguments. With none, the whole suite runs as two pytest
processes at once, each on a test database of its own: the end-to-end and chaos tests
mostly wait on real processes, and the unit and integration tests use the CPU meanwhile
(their output is printed once the other half has ended). When DATABASE_URL is unset and
nothing answers on 127.0.0.1:5432, it first starts an embedded PostgreSQL
(:mod:`devtools.database`), points pytest at it, and stops it once pytest has exited
(also on Ctrl-C or a failure). The exit code is pytest's.
"""

import os
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from devtools.database import (
    EmbeddedPostgresError,
    database,
    run_child,
    run_children,
    stop_on_termination,
)

#: The whole suite's two halves: the one that keeps the CPU busy, printed second, and
#: the one that mostly waits on real processes, printed as it runs.
CPU_HALF = ["tests/unit", "tests/integration"]
PROCESS_HALF = ["tests/e2e", "tests/chaos"]


def say(message: str) -> None:
    """One line from the runner, labelled like ``make run``'s."""
    print(f"{time.strftime('%H:%M:%S')} test   | {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run pytest, with a database server to talk to."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    stop_on_termination()
    try:
        with database(say):
            if argv:
                return run_child([sys.executable, "-m", "pytest", *argv], dict(os.environ))
            return _run_halves()
    except EmbeddedPostgresError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 130


def _run_halves() -> int:
    """The whole suite as its two halves at once; the first failing half's exit code."""
    url = urlsplit(os.environ.get("DATABASE_URL") or settings.DEFAULT_DATABASE_URL)
    # pytest-django names its test database after this one: the halves must not share it.
    cpu_env = {**os.environ, "DATABASE_URL": urlunsplit(url._replace(path=f"{url.path}_cpu"))}
    pytest = [sys.executable, "-m", "pytest"]
    with tempfile.TemporaryFile() as cpu_log:
        code = run_children(
            [(pytest + CPU_HALF, cpu_env, cpu_log), (pytest + PROCESS_HALF, dict(os.environ), None)]
        )
        say(f"the other half: {' '.join(CPU_HALF)}")
        cpu_log.seek(0)
        sys.stdout.flush()
        sys.stdout.buffer.write(cpu_log.read())
        sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
