"""The scheduler's services: every write to a job goes through one of these modules.

The public API is re-exported here (``scheduler.services.retry`` …); the dispatcher's
and the worker's transitions live in :mod:`.dispatching` and :mod:`.running`.
"""

from scheduler.services.operations import cancel, reschedule, resend, retry, run_now
from scheduler.services.pausing import pause, resume
from scheduler.services.scheduling import JobSpec, schedule_at, schedule_in, schedule_many

__all__ = [
    "JobSpec",
    "cancel",
    "pause",
    "reschedule",
    "resend",
    "resume",
    "retry",
    "run_now",
    "schedule_at",
    "schedule_in",
    "schedule_many",
]
