"""The operator's interface in the Django admin (registered on import, as Django expects).

``jobs`` is the ModelAdmin; ``forms``, ``changelist``, ``bulk``, ``monitoring`` and
``display`` are its parts; ``audit`` lists the audit trail and ``attempts`` every attempt
(a job's page shows only the latest of each).
"""

from scheduler.admin.attempts import JobAttemptAdmin
from scheduler.admin.audit import AuditEntryAdmin
from scheduler.admin.jobs import JobAttemptInline, ScheduledJobAdmin

__all__ = ["AuditEntryAdmin", "JobAttemptAdmin", "JobAttemptInline", "ScheduledJobAdmin"]
