"""Celery's soft time limit, held back while a delivery records how its body ended.

A prefork pool process learns of a task's soft time limit by a SIGUSR1, whose handler
raises SoftTimeLimitExceeded wherever the process is. After the body has returned or
raised, that would abandon the outcome's recording: the job would stay ``running``
until its lease expired and ran a body that had completed again. Meanwhile the signal
only notes the limit, and the delivery goes on to its end; the hard time limit still
applies.
"""

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler

logger = logging.getLogger(__name__)


@contextmanager
def soft_time_limit_held(*, job_id: int) -> Iterator[None]:
    """Within the block, Celery's soft time limit is noted (one log line), not raised.

    Only where the limit would be raised: in a pool process's main thread with the
    pool's handler installed. Anywhere else the block runs as it is.
    """
    if (
        SIG_SOFT_TIMEOUT is None
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(SIG_SOFT_TIMEOUT) is not soft_timeout_sighandler
    ):
        yield
        return
    reached = False

    def note(_signum: int, _frame: FrameType | None) -> None:
        nonlocal reached
        reached = True

    signal.signal(SIG_SOFT_TIMEOUT, note)
    try:
        yield
    finally:
        signal.signal(SIG_SOFT_TIMEOUT, soft_timeout_sighandler)
        if reached:
            logger.warning(
                "job soft time limit reached after its body ended job_id=%s outcome=recorded",
                job_id,
            )
