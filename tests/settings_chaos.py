"""The test settings for the chaos suite's processes: every period lowered to seconds.

A lease of 5 s, a re-send after 2 s and a tick every 0.5 s make crashes, outages and
backlogs play out within a test; the SQS visibility timeout is short so that a message a
killed worker held comes back within the test too.
"""

from tests.settings import *  # noqa: F403
from tests.settings import CELERY_BROKER_TRANSPORT_OPTIONS, DATABASES

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
    # The project's client-config (2 tries of 15 s to read): a worker's acks and
    # hand-backs give up after 2 s on a client of their own (the app's transport), so an
    # SQS stopped for longer than that fails them, as in production.
}

# A connection to a primary that went silent is given up within about 3 s. (A new dict:
# the test process imports this module for its periods, and must keep its own.)
DATABASES = {
    **DATABASES,
    "default": {
        **DATABASES["default"],
        "OPTIONS": {
            **DATABASES["default"]["OPTIONS"],
            "connect_timeout": 2,
            "keepalives_idle": 1,
            "keepalives_interval": 1,
            "keepalives_count": 2,
            "tcp_user_timeout": 3000,
        },
    },
}
