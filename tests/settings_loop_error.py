"""The end-to-end settings, with a broker error raised in the worker's event loop."""

from tests.settings_fast import *  # noqa: F403
from tests.settings_fast import CELERY_BROKER_TRANSPORT_OPTIONS

#: tests.testapp.signals raises it this long after the worker is ready.
TESTAPP_BROKER_ERROR_AFTER_SECONDS = 1.0

# The long poll in flight at the error is abandoned, not ended: SQS may still hand it a
# message, which is then hidden for the visibility timeout. A short one ends soon.
SCHEDULER_SQS_WAIT_TIME_SECONDS = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,
    "wait_time_seconds": SCHEDULER_SQS_WAIT_TIME_SECONDS,
}
