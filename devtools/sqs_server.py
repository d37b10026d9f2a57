"""``python -m devtools.sqs_server -H 127.0.0.1 -p PORT``: the local SQS server.

moto's server (what ``moto_server`` runs, same options), with one change: its SQS
backend reads the clock with ``time.time()``. moto computes the same number through two
``datetime`` objects, once per message each time it asks whether a message is visible
or delayed, and every send, receive and delete asks that of every message in the queue
(a send even counts the queue three times). With 2,000 messages in a queue a
SendMessageBatch took 1.3 s here instead of 56 ms: a burst of due jobs and their
re-sends made moto time out, and the clients' retries added copies. Nothing else
changes. Development and test tooling: a deployment talks to Amazon SQS.
"""

import sys
import time
from datetime import datetime


def _unix_time(dt: datetime | None = None) -> float:
    if dt is None:
        return time.time()
    from moto.core import utils

    return utils.unix_time(dt)


def _unix_time_millis(dt: datetime | None = None) -> float:
    return _unix_time(dt) * 1000.0


def command(port: int) -> list[str]:
    """The command line of a server on loopback ``port``, with this Python."""
    return [sys.executable, "-m", "devtools.sqs_server", "-H", "127.0.0.1", "-p", str(port)]


def run() -> None:
    """Patch moto's SQS clock, then run moto's server with the command line's options."""
    # Imported here: the callers of command() need not load moto.
    import moto.sqs.models
    from moto.server import main

    # moto.sqs.models imported both helpers by name: that module's names are the ones read.
    moto.sqs.models.unix_time = _unix_time  # type: ignore[attr-defined]
    moto.sqs.models.unix_time_millis = _unix_time_millis  # type: ignore[attr-defined]
    main()


if __name__ == "__main__":
    run()
