"""The end-to-end settings with a lease of seconds, for the heartbeat and crash tests."""

from tests.settings_fast import *  # noqa: F403
from tests.settings_fast import CELERY_BROKER_TRANSPORT_OPTIONS

SCHEDULER_LEASE_SECONDS = 3
SCHEDULER_HEARTBEAT_INTERVAL_SECONDS = 0.5
# A SIGKILLed worker's long poll stays open on the SQS server and takes the next
# message that arrives (invisible then for the visibility timeout, until re-sent):
# with one-second polls, it is over before a lease of three seconds expires.
SCHEDULER_SQS_WAIT_TIME_SECONDS = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "wait_time_seconds": 1}
