"""``python -m devtools.test [pytest arguments]`` (``make test``): the test suite.

Runs pytest with the given arguments. When DATABASE_URL is unset and nothing answers on
127.0.0.1:5432, it first starts an embedded PostgreSQL (:mod:`devtools.database`), points
pytest at it, and stops it once pytest has exited (also on Ctrl-C or a failure). The exit
code is pytest's.
"""

import os
import sys
import time

from devtools.database import EmbeddedPostgresError, database, run_child, stop_on_sigterm


def say(message: str) -> None:
    """One line from the runner, labelled like ``make run``'s."""
    print(f"{time.strftime('%H:%M:%S')} test   | {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run pytest, with a database server to talk to."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    stop_on_sigterm()
    try:
        with database(say):
            return run_child([sys.executable, "-m", "pytest", *(argv or [])], dict(os.environ))
    except EmbeddedPostgresError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
