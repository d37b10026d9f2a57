"""This host's clock against PostgreSQL's, checked as each process starts.

Every host judges time by its own clock: the dispatcher computes SQS delays and expires
leases by it, a worker waits out a job's eta and renews the job's lease by it. A worker
whose clock is ahead starts jobs early by as much; a clock behind the dispatcher's by
nearly a lease makes it retry jobs that are still running. Hosts keep time with NTP
(Amazon Time Sync on AWS: well under a millisecond), and PostgreSQL's clock, which they
all reach, is the reference each process compares its own with when it starts.
"""

import logging
from datetime import datetime
from typing import Any

from celery.signals import worker_ready
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils import timezone

logger = logging.getLogger(__name__)

#: How far a host's clock may be off PostgreSQL's before its processes warn: the
#: precision a job's start keeps (tens of milliseconds) with room for the measure's own
#: error, half a round trip to PostgreSQL.
CLOCK_TOLERANCE_SECONDS = 0.1


def clock_offset(*, using: str = DEFAULT_DB_ALIAS) -> float:
    """How many seconds this host's clock is ahead of PostgreSQL's (behind: negative),
    to within half a round trip."""
    connection = connections[using]
    # Connected first: half a connection's set-up would count as an offset, "behind".
    connection.ensure_connection()
    before = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        server: datetime = cursor.fetchone()[0]
    after = timezone.now()
    return ((before + (after - before) / 2) - server).total_seconds()


def check_clock(*, process: str, using: str = DEFAULT_DB_ALIAS) -> float | None:
    """Log this host's clock offset from PostgreSQL's, as a warning past the tolerance.

    Returns the offset, or None when PostgreSQL cannot be reached (the process's own
    queries say so, and it goes on).
    """
    try:
        offset = clock_offset(using=using)
    except DatabaseError as error:
        logger.warning("clock not checked process=%s error=%s", process, type(error).__name__)
        return None
    if abs(offset) > CLOCK_TOLERANCE_SECONDS:
        logger.warning(
            "clock offset process=%s seconds=%+.3f: this host's clock is %s PostgreSQL's, so "
            "its jobs may start %s and leases be misjudged by as much; keep it in sync (NTP)",
            process,
            offset,
            "ahead of" if offset > 0 else "behind",
            "early" if offset > 0 else "late",
        )
    else:
        logger.info("clock offset process=%s seconds=%+.3f", process, offset)
    return offset


@worker_ready.connect(weak=False)
def _check_worker_clock(**_: Any) -> None:
    check_clock(process="worker")
    # The pool may fork again (a child replaced): none may inherit this connection.
    connections.close_all()
