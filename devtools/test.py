"""``python -m devtools.test [pytest arguments]`` (``make test``): the test suite.

Runs pytest with the given arguments. With none, the whole suite runs as three pytest
processes at once, each on a test database of its own (:data:`PARTS`): the end-to-end
and chaos tests mostly wait on real processes, and the unit and integration tests use
the CPU meanwhile (the first part prints as it runs, the others once all have ended).
When DATABASE_URL is unset and nothing answers on 127.0.0.1:5432, it first starts an
embedded PostgreSQL (:mod:`devtools.database`), points pytest at it, and stops it once
pytest has exited (also on Ctrl-C or a failure). The exit code is pytest's.
"""

import os
import sys
import tempfile
import time
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from devtools.database import (
    EmbeddedPostgresError,
    database,
    run_child,
    run_children,
    stop_on_termination,
)

#: The whole suite as pytest processes run at once, by name: the end-to-end and chaos
#: tests, which mostly wait on real processes, in two of about equal length (every chaos
#: test in one: they share the kernel's packet filter; the upgrade tests, which wait on
#: lock timeouts, with the other), and the unit and integration tests, which keep the CPU
#: busy meanwhile. The first prints as it runs.
PARTS = {
    "chaos": [
        "tests/chaos",
        "tests/e2e/test_busy_workers.py",
        "tests/e2e/test_delivery.py",
        "tests/e2e/test_leases.py",
        "tests/e2e/test_deploys.py",
        "tests/e2e/test_beat_stop.py",
    ],
    "e2e": [
        "tests/e2e",
        "--ignore=tests/e2e/test_busy_workers.py",
        "--ignore=tests/e2e/test_delivery.py",
        "--ignore=tests/e2e/test_leases.py",
        "--ignore=tests/e2e/test_deploys.py",
        "--ignore=tests/e2e/test_beat_stop.py",
        "tests/integration/test_upgrade.py",
    ],
    # The rest, so that a new folder of tests runs too.
    "cpu": [
        "tests",
        "--ignore=tests/chaos",
        "--ignore=tests/e2e",
        "--ignore=tests/integration/test_upgrade.py",
    ],
}


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
            return _run_parts()
    except EmbeddedPostgresError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 130


def _run_parts() -> int:
    """The whole suite as :data:`PARTS` at once; the first failing part's exit code."""
    url = urlsplit(os.environ.get("DATABASE_URL") or settings.DEFAULT_DATABASE_URL)
    pytest = [sys.executable, "-m", "pytest"]
    (_, first_args), *others = PARTS.items()
    with ExitStack() as stack:
        logs = {name: stack.enter_context(tempfile.TemporaryFile()) for name, _ in others}
        # pytest-django names its test database after this one: the parts must not share it.
        code = run_children(
            [(pytest + first_args, dict(os.environ), None)]
            + [
                (
                    pytest + args,
                    {
                        **os.environ,
                        "DATABASE_URL": urlunsplit(url._replace(path=f"{url.path}_{name}")),
                    },
                    logs[name],
                )
                for name, args in others
            ]
        )
        for name, args in others:
            say(f"the {name} part: {' '.join(args)}")
            logs[name].seek(0)
            # As text: the terminal's stream stays safe from a hangup (HangupSafe).
            sys.stdout.write(logs[name].read().decode(errors="replace"))
            sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
