"""The scheduler's services: every write to a job goes through one of these modules.

The public API is re-exported here (``scheduler.services.retry`` …); the dispatcher's
and the worker's transitions live in :mod:`.dispatching` and :mod:`.running`.
"""

from scheduler.services.operations import cancel, reschedule, retry, run_now
from scheduler.services.scheduling import JobSpec, schedule_at, schedule_in, schedule_many

__all__ = [
    "JobSpec",
    "cancel",
    "reschedule",
    "retry",
    "run_now",
    "schedule_at",
    "schedule_in",
    "schedule_many",
]
