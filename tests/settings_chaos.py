"""The test settings for the chaos suite's processes: every period lowered to seconds.

A lease of 5 s, a re-send after 2 s and a tick every 0.5 s make crashes, outages and
backlogs play out within a test; the SQS visibility timeout is short so that a message a
killed worker held comes back within the test too.
"""

from tests.settings import *  # noqa: F403
from tests.settings import CELERY_BROKER_TRANSPORT_OPTIONS

SCHEDULER_MAX_DELAY_SECONDS = 4
SCHEDULER_LOOKAHEAD_SECONDS = 3
SCHEDULER_DISPATCH_INTERVAL_SECONDS = 0.5
SCHEDULER_RECOVERY_INTERVAL_SECONDS = 0.5
SCHEDULER_STALE_AFTER_SECONDS = 2
SCHEDULER_LEASE_SECONDS = 5
SCHEDULER_HEARTBEAT_INTERVAL_SECONDS = 1
SCHEDULER_DELIVERY_LEAD_SECONDS = 1
SCHEDULER_RETRY_BACKOFF_SECONDS = 1
SCHEDULER_RETRY_BACKOFF_MAX_SECONDS = 2
SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS = 10
SCHEDULER_SQS_WAIT_TIME_SECONDS = 1

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "visibility_timeout": SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS,
    "wait_time_seconds": SCHEDULER_SQS_WAIT_TIME_SECONDS,
}
