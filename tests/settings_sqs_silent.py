"""The end-to-end settings, the dispatcher's SQS endpoint a socket of the process's own
that takes connections and never answers (Celery's broker stays the test's SQS): a
tick waits there, its batch's transaction open, for the client's read timeout (10 s)."""

import socket

from tests.settings_fast import *  # noqa: F403

_SILENT = socket.create_server(("127.0.0.1", 0), backlog=64)
SCHEDULER_SQS_ENDPOINT_URL = f"http://127.0.0.1:{_SILENT.getsockname()[1]}"
# The broker's endpoint differs on purpose: no worker is to run the jobs.
SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "scheduler.E025"]  # noqa: F405
